"""Worker launched by the train tests.

- ``torchrun --nproc_per_node 2 _mp_train_worker.py run SPEC.json``: each rank
  runs ``run_train`` on the config in SPEC.json; rank 0 writes the world size
  it saw to ``<output>/world_size.txt``.
- ``python _mp_train_worker.py kill SPEC.json STEP``: runs ``run_train`` and
  SIGKILLs its own process at the end of optimizer step STEP (before that
  step is logged or saved), like a crash mid-training.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def main() -> None:
    mode, spec_path = sys.argv[1], sys.argv[2]
    spec = json.loads(Path(spec_path).read_text())
    from divtune.train import TrainConfig, run_train

    cfg = TrainConfig.load(None, spec["overrides"], **spec["explicit"])
    callbacks = []
    if mode == "kill":
        callbacks.append(_kill_at(int(sys.argv[3])))
    elif mode == "run":
        import torch.distributed as dist

        from accelerate import PartialState

        state = PartialState()
        world = dist.get_world_size() if dist.is_initialized() else 1
        if state.is_main_process:
            Path(cfg.output).mkdir(parents=True, exist_ok=True)
            (Path(cfg.output) / "world_size.txt").write_text(f"{world} {state.num_processes}\n")
    run_train(cfg, callbacks=callbacks)


def _kill_at(step: int):
    from transformers import TrainerCallback

    class KillAtStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                os.kill(os.getpid(), signal.SIGKILL)

    return KillAtStep()


if __name__ == "__main__":
    main()
