"""Running (or resuming) a whole experiment, or one of its stages (a ``--jobs`` worker)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from divtune.experiments.config import ExperimentConfig
from divtune.experiments.gpus import partition_gpus, visible_gpus
from divtune.experiments.plan import build_stages
from divtune.experiments.record import claim_experiment_dir, write_run_record
from divtune.experiments.schedule import run_stages, run_stages_parallel, stop_on_sigterm
from divtune.io import RUN_MARKER, write_json


def run_experiment(cfg: ExperimentConfig, fresh: bool = False) -> dict[str, Any]:
    """Run (or resume) an experiment; returns paths, metrics and timings."""
    root = Path(cfg.output)
    stages, paths = build_stages(cfg)  # checks every stage's settings before anything is written
    gpus = partition_gpus(cfg.jobs, visible_gpus(), cfg.device) if cfg.jobs > 1 else None
    claim_experiment_dir(root)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / RUN_MARKER, {"stage": "experiment"})
    config_path = cfg.save(root / "config.yaml")
    start = time.perf_counter()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    error: BaseException | None = None
    try:
        with stop_on_sigterm():
            if cfg.jobs > 1:
                timings = run_stages_parallel(stages, config_path, cfg.jobs, fresh=fresh, gpus=gpus)
            else:
                timings = run_stages(stages, fresh=fresh)
    except BaseException as err:  # the invocation is recorded even when it stops early
        error, timings = err, {}
    wall = time.perf_counter() - start
    write_run_record(root, stages, started_at, wall, cfg.jobs, finished=error is None, fresh=fresh)
    if error is not None:
        raise error
    metrics = json.loads((paths["eval"] / "metrics.json").read_text())
    return {"paths": {k: str(v) for k, v in paths.items()}, "metrics": metrics, "timings": timings, "wall_seconds": wall}


def run_one_stage(cfg: ExperimentConfig, name: str) -> float:
    """Run the stage called ``name`` of the experiment (a worker of :func:`run_stages_parallel`)."""
    threads = os.environ.get("DIVTUNE_TORCH_THREADS")
    if threads:
        import torch  # heavy

        torch.set_num_threads(int(threads))
    stages, _ = build_stages(cfg)
    matching = [stage for stage in stages if stage.name == name]
    if not matching:
        raise ValueError(f"no stage {name!r}; the stages are {[s.name for s in stages]}")
    return run_stages(matching)[name]
