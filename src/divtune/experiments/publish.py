"""``divtune experiment --publish``: copy a finished experiment's results (not its models or samples)
into a folder meant to be committed, e.g. ``docs/results/NAME``."""

from __future__ import annotations

import shutil
from pathlib import Path

from divtune.experiments.config import ExperimentConfig
from divtune.experiments.record import RUN_RECORD


def publish_results(cfg: ExperimentConfig, destination: str | Path) -> Path:
    """Copy the report (md, html, png, json), diagnostics, metrics and run record into ``destination``."""
    from divtune.reporting.diagnostics import FILES  # heavy: loads numpy

    root = Path(cfg.output)
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for source in sorted((root / "report").glob("*")):
        if source.suffix in {".md", ".html", ".png", ".json"} and not source.name.startswith("."):
            shutil.copy2(source, destination / source.name)
    if (root / "diagnostics").is_dir():
        (destination / "diagnostics").mkdir(exist_ok=True)
        for name in FILES:
            shutil.copy2(root / "diagnostics" / name, destination / "diagnostics" / name)
    for name in ("metrics.json",):
        shutil.copy2(root / "eval" / name, destination / name)
    shutil.copy2(root / RUN_RECORD, destination / RUN_RECORD)
    shutil.copy2(root / "config.yaml", destination / "config.yaml")
    return destination
