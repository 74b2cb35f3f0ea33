"""The experiment's results in a few lines of text: the headline table printed at the end of a run
(and by ``divtune evaluate``), and the caveat that opens a demonstration-sized run's report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from divtune.experiments.config import ExperimentConfig
from divtune.quality_status import MARK, QUALITY_KEYS


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


def summary_table(metrics: dict[str, dict[str, Any]], keys: tuple[str, ...] = (
    "quality", "semantic_diversity", "style_diversity", "vendi_semantic", "distinct_2", "self_bleu"
), quality=None) -> str:
    """A plain-text table of the headline metrics, one row per system.

    ``quality`` (a divtune.quality_status.QualityStatus): when the report greys quality out,
    so does this table: its quality columns are marked † and its footnote follows the table.
    """
    greyed = quality is not None and quality.greyed
    header = ["system", *[f"{key} {MARK}" if greyed and key in QUALITY_KEYS else key for key in keys]]
    rows = [header]
    for system, values in metrics.items():
        row = [system]
        for key in keys:
            value = values.get(key)
            cell = "—" if value is None else str(value) if isinstance(value, int) else f"{value:.3f}"
            row.append(f"{cell} {MARK}" if greyed and key in QUALITY_KEYS and value is not None else cell)
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    table = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)
    return f"{table}\n{quality.footnote}" if greyed else table
