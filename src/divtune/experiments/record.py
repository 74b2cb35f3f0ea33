"""The experiment's folder and its record: claiming the output folder, and ``run.json`` (versions,
commit and machine, what each stage took, and every invocation's wall time)."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from divtune.config import ConfigError
from divtune.experiments.stage import Stage
from divtune.io import RUN_MARKER, read_run_marker, run_kind, write_json

#: What an experiment folder holds besides its marker (an older divtune wrote no marker).
EXPERIMENT_ENTRIES = (
    "config.yaml", "run.json", "logs", "typicality", "data", "reward", "models", "generations", "eval", "report",
    "diagnostics",
)
RUN_RECORD = "run.json"


def claim_experiment_dir(root: Path) -> None:
    """The output rule at the experiment level: its stages reuse what they can, stage by stage,
    but a non-empty folder that is not an experiment's is refused (its files are not divtune's)."""
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root}: is a file; the experiment's output must be a folder")
    entries = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    if not entries:
        return
    marker = read_run_marker(root)
    found = run_kind(root)
    if found is not None and found[0] not in ("experiment", None):
        kind, finished = found
        raise ConfigError(
            f"{root}: holds {'a finished' if finished else 'an unfinished'} {kind} run; "
            "an experiment needs its own output folder"
        )
    if marker is None and not (set(entries) - {RUN_MARKER}) <= set(EXPERIMENT_ENTRIES):
        foreign = sorted(set(entries) - set(EXPERIMENT_ENTRIES))
        raise ConfigError(
            f"{root}: not empty ({foreign[0]}{', ...' if len(foreign) > 1 else ''}) and holds no divtune experiment; "
            "divtune never overwrites files it did not write: choose a new or empty output folder"
        )


def environment_record() -> dict[str, Any]:
    """Versions, commit and machine: written beside every experiment's results."""
    versions = {}
    for package in ("divtune", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "sentence-transformers"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "command": " ".join(sys.argv),
        "commit": commit,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
    }


def write_run_record(
    root: Path, stages: list[Stage], started_at: str, wall: float, jobs: int, finished: bool, fresh: bool = False
) -> None:
    """Add this invocation to ``run.json`` (a ``fresh`` run starts the list again).

    A resumed experiment ran its stages over several invocations: the markers keep what each
    stage took when it actually ran, and every invocation's wall time is kept, so the total
    covers all sittings.
    """
    path = root / RUN_RECORD
    previous = json.loads(path.read_text()) if path.is_file() and not fresh else {}
    environment = environment_record()
    # Each sitting's own commit: the top-level one is only the latest invocation's.
    invocations = [*previous.get("invocations", []), {
        "command": " ".join(sys.argv), "commit": environment["commit"], "started": started_at,
        "wall_seconds": wall, "jobs": jobs, "finished": finished,
    }]
    recorded = {stage.name: stage.recorded_seconds() for stage in stages}
    record = environment | {
        "stage_seconds": recorded,
        "total_stage_seconds": sum(recorded.values()),
        "wall_seconds_this_invocation": wall,
        "invocations": invocations,
        "wall_seconds_all_invocations": sum(i["wall_seconds"] for i in invocations),
    }
    write_json(path, record)
