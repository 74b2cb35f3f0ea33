"""Trainer callbacks: one JSON line per logged step in ``OUTPUT/metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

METRICS_FILE = "metrics.jsonl"


class MetricsJsonlCallback(TrainerCallback):
    """Append each log event (loss, reward margins, accuracy, weight stats, ...) to metrics.jsonl."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / METRICS_FILE

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, **logs}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def truncate_metrics(output_dir: str | Path, last_step: int) -> None:
    """On resume from checkpoint ``last_step``, forget lines logged after it (they are redone)."""
    path = Path(output_dir) / METRICS_FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
        if record.get("step", 0) <= last_step and "train_runtime" not in record:
            kept.append(line)
    path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")


class EvaluateAtEndCallback(TrainerCallback):
    """Evaluate after the last step too, so the probes' final values are always logged."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.max_steps and state.global_step >= state.max_steps:
            control.should_evaluate = True
        return control
