"""Worker launched by the train tests.

- ``torchrun --nproc_per_node 2 _mp_train_worker.py run SPEC.json...``: each rank
  runs ``run_train`` on the config of each SPEC.json in turn; rank 0 writes the world size
  (torch.distributed and accelerate) to ``<output>/world_size.txt``.
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
    mode = sys.argv[1]
    if mode == "kill":
        _train(sys.argv[2], [_kill_at(int(sys.argv[3]))])
    for spec_path in sys.argv[2:] if mode == "run" else []:
        cfg = _train(spec_path, [])
        # Read after training: the Trainer set up the process group and accelerate's state.
        import torch.distributed as dist
        from accelerate import PartialState

        state = PartialState()
        world = dist.get_world_size() if dist.is_initialized() else 1
        if state.is_main_process:
            (Path(cfg.output) / "world_size.txt").write_text(f"{world} {state.num_processes} {state.distributed_type.value}\n")


def _train(spec_path: str, callbacks: list):
    from divtune.train import TrainConfig, run_train

    spec = json.loads(Path(spec_path).read_text())
    cfg = TrainConfig.load(None, spec["overrides"], **spec["explicit"])
    run_train(cfg, callbacks=callbacks)
    return cfg


def _kill_at(step: int):
    from transformers import TrainerCallback

    class KillAtStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                os.kill(os.getpid(), signal.SIGKILL)

    return KillAtStep()


if __name__ == "__main__":
    main()
