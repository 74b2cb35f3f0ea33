"""Checkpoints by time as well as by step: a killed CPU run loses minutes, not up to save_steps steps.

On the 2-core CPU a step of the defaults takes ~13 s, so ``save_steps=100`` is a checkpoint
every ~22 min: a run killed just before one loses all of that. :class:`SaveEveryMinutes`
asks the Trainer for a checkpoint whenever ``minutes`` have passed since the last one
(a step-based one included). ``save_minutes`` (TrainConfig) defaults to 10 on CPU and off
on a GPU, where steps are fast and checkpoints of large models are costly; 0 turns it off.

With several processes the decision would be each process's own clock, and a checkpoint
that one process saves and another does not can hang a distributed run: time-based saving
is for one process only.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from transformers import TrainerCallback

#: ``save_minutes`` when unset, per device.
DEFAULT_SAVE_MINUTES = {"cpu": 10.0, "cuda": 0.0}


def resolved_save_minutes(save_minutes: float | None, device: str) -> float:
    """The minutes between time-based checkpoints of a run on ``device`` (0: none)."""
    if save_minutes is not None:
        return float(save_minutes)
    return DEFAULT_SAVE_MINUTES["cpu" if device == "cpu" else "cuda"]


def save_by_time_callbacks(minutes: float, save_strategy: Any, world_size: int) -> list[Any]:
    """The callback, or none: off (0), checkpoints off (``save_strategy=no``) or several processes."""
    if minutes <= 0 or str(getattr(save_strategy, "value", save_strategy)) == "no" or world_size > 1:
        return []
    return [SaveEveryMinutes(minutes)]


class SaveEveryMinutes(TrainerCallback):
    """Sets ``control.should_save`` at the end of the first step after ``minutes`` without a checkpoint."""

    def __init__(self, minutes: float, clock: Callable[[], float] = time.monotonic):
        self.seconds = minutes * 60
        self.clock = clock
        self.last = clock()

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = self.clock()

    def on_step_end(self, args, state, control, **kwargs):
        if self.clock() - self.last >= self.seconds:
            control.should_save = True
        return control

    def on_save(self, args, state, control, **kwargs):
        self.last = self.clock()  # any checkpoint, by step or by time, restarts the clock
