"""What a training run says before it starts: steps it will redo, and a length worth a second look.

Pure functions of numbers the runner has anyway (the last step metrics.jsonl logged,
the checkpoint it resumes from, pairs, batch sizes), so each message is tested alone.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from divtune.io import is_stage_done
from divtune.methods import METHODS, Family
from divtune.models import adapter_base_spec, is_adapter_dir, resolve_model_source
from divtune.train.config import resolved_training
from divtune.train.memory import model_shape

#: More epochs than this is almost always a mistake (``max_steps`` meant for a larger data set).
MAX_SENSIBLE_EPOCHS = 50
#: A CPU run expected to take longer than this is announced before it starts.
LONG_CPU_RUN_HOURS = 3.0
#: Seconds per token per parameter of one CPU optimizer step (forward, backward and DPO's
#: reference pass), from SmolLM2-135M with LoRA on every linear layer on the shared 2-core
#: CPU: 100 steps of the CPU defaults (batch 2 x accumulation 4 x 2 sequences x 128 tokens,
#: 2,048 tokens a step) took about 22 min, 6.4 ms a token (docs/train.md, "Long runs").
#: Time grows with the parameters a token passes through; other CPUs and LoRA settings
#: differ, so the estimate is rough, and an upper bound where sequences are shorter than max_length.
CPU_SECONDS_PER_TOKEN_PARAMETER = 6.4e-3 / 135e6


def last_logged_step(output: str | Path) -> int | None:
    """The highest optimizer step in ``output/metrics.jsonl`` (a line cut by a kill is skipped), or None."""
    path = Path(output) / "metrics.jsonl"
    if not path.is_file():
        return None
    steps = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            steps.append(record["step"])
    return max(steps) if steps else None


def unfinished_step(output: str | Path) -> int | None:
    """The last step an unfinished run in ``output`` logged (None for a finished run or none at all)."""
    return None if is_stage_done(output) else last_logged_step(output)


def checkpoint_step(checkpoint: str | Path | None) -> int | None:
    """``.../checkpoint-200`` -> 200."""
    return None if checkpoint is None else int(Path(checkpoint).name.split("-")[-1])


def restart_warning(output: str | Path, reached: int | None, resume_step: int | None) -> str | None:
    """One line when a rerun loses steps: it starts over, or resumes before the step the run had reached."""
    if not reached:
        return None
    if resume_step is None:
        return (f"{output}: starting over at step 0; the interrupted run had reached step {reached} "
                "and left no checkpoint to resume from")
    if resume_step < reached:
        return (f"{output}: resuming from step {resume_step} (checkpoint-{resume_step}); the interrupted run had "
                f"reached step {reached}, so steps {resume_step + 1}-{reached} are trained again")
    return None


def lost_steps_warning(output: str | Path, resume_from: str | Path | None) -> str | None:
    """:func:`restart_warning` of a run in ``output`` about to resume from ``resume_from`` (None: start over)."""
    return restart_warning(output, unfinished_step(output), checkpoint_step(resume_from))


def planned_steps(n_pairs: int, per_step_pairs: int, max_steps: int, epochs: float) -> tuple[int, float]:
    """(optimizer steps, epochs) of a run: ``max_steps`` when set (> 0), else ``epochs`` over the pairs."""
    steps_per_epoch = max(1, math.ceil(n_pairs / per_step_pairs))
    if max_steps > 0:
        return max_steps, max_steps * per_step_pairs / n_pairs
    return math.ceil(steps_per_epoch * epochs), float(epochs)


def epochs_warning(n_pairs: int, steps: int, epochs: float, per_step_pairs: int) -> str | None:
    if epochs <= MAX_SENSIBLE_EPOCHS:
        return None
    return (f"{steps:,} steps of {per_step_pairs} pairs on {n_pairs:,} pairs is {epochs:,.0f} epochs (more than "
            f"{MAX_SENSIBLE_EPOCHS}): each pair would be trained on about {epochs:,.0f} times; "
            "lower max_steps, or set num_train_epochs with max_steps=-1")


def cpu_hours(steps: int, tokens_per_step: int, parameters: int) -> float:
    return steps * tokens_per_step * parameters * CPU_SECONDS_PER_TOKEN_PARAMETER / 3600


def cpu_duration_warning(steps: int, tokens_per_step: int, parameters: int) -> str | None:
    hours = cpu_hours(steps, tokens_per_step, parameters)
    if hours <= LONG_CPU_RUN_HOURS:
        return None
    return (f"this CPU run may take about {hours:,.1f} h ({steps:,} steps x up to {tokens_per_step:,} tokens, "
            f"{parameters / 1e6:,.0f}M parameters; a rough estimate from ~6 ms a token for SmolLM2-135M on a "
            f"2-core CPU, scaled by parameters); checkpoints are saved every save_steps steps and save_minutes "
            "minutes, and --resume continues a stopped run")


# --------------------------------------------------------------------------- what the runner calls


def world_size() -> int:
    """Processes training together (torchrun / accelerate set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def length_warnings(cfg: Any, device: str, n_pairs: int) -> list[str]:
    """The epochs warning, and on CPU the duration warning, of an offline run on ``n_pairs`` pairs."""
    training = resolved_training(cfg, device)
    per_step = int(training["per_device_train_batch_size"]) * int(training["gradient_accumulation_steps"]) * world_size()
    steps, epochs = planned_steps(n_pairs, per_step, int(training.get("max_steps", -1)),
                                  float(training.get("num_train_epochs", 3)))
    notices = [epochs_warning(n_pairs, steps, epochs, per_step)]
    if device == "cpu":
        notices.append(cpu_duration_warning(steps, per_step * (1 if METHODS[cfg.method].family is Family.SFT else 2) * int(cfg.max_length),
                                            _parameters(cfg)))
    return [n for n in notices if n]


def _parameters(cfg: Any) -> int:
    """The base model's parameter count, from its config on the meta device (no weights loaded)."""
    source = resolve_model_source(cfg.init or cfg.model)
    if is_adapter_dir(source):
        source = resolve_model_source(adapter_base_spec(source))
    return model_shape(source, trust_remote_code=cfg.trust_remote_code).parameters


def save_by_time(cfg: Any, device: str) -> list[Any]:
    """The time-based checkpoint callback of this run (train/save_by_time.py), or none."""
    from divtune.train.save_by_time import resolved_save_minutes, save_by_time_callbacks  # heavy: loads transformers

    minutes = resolved_save_minutes(cfg.save_minutes, device)
    strategy = resolved_training(cfg, device).get("save_strategy", "steps")
    return save_by_time_callbacks(minutes, strategy, world_size())
