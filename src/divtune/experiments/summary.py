"""The caveat that opens a demonstration-sized run's report."""

from __future__ import annotations

import json
from pathlib import Path

from divtune.experiments.config import ExperimentConfig


def demonstration_caveat(cfg: ExperimentConfig, eval_dir: Path) -> str:
    """What a demonstration-sized run is: how many steps of how many pairs, evaluated on how many prompts."""
    training = cfg.train.get("training") or {}
    steps = training.get("max_steps")
    pairs = int(training.get("per_device_train_batch_size", 1)) * int(training.get("gradient_accumulation_steps", 1))
    metrics = json.loads((Path(eval_dir) / "metrics.json").read_text(encoding="utf-8"))
    prompts = max((int(row.get("n_prompts") or 0) for row in metrics.values()), default=0)
    size = (f"each model trained {steps} steps of {pairs} pairs" if steps else "each model trained briefly")
    return (f"This is a demonstration of the pipeline, not evidence: {size} and is evaluated on {prompts} "
            "prompts, so its differences between systems are mostly noise and say nothing about the methods.")
