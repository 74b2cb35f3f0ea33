"""``divtune quickstart``: the main job on the embedded default, end to end and
offline, sized for a 2-core laptop CPU (see docs/experiment.md, "What the quickstart runs").

It is an experiment (divtune.experiments) with a built-in preset:
shipped r/WritingPrompts sample → prepare → small reward model → LoRA DPO and
DDPO (same seed, steps and data order) → 4 samples per test prompt for base,
DPO and DDPO → evaluate with the human gold row → report.
"""

from __future__ import annotations

from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any, Iterable

from divtune.config import deep_merge, parse_overrides, read_yaml
from divtune.experiments import ExperimentConfig, run_experiment
from divtune.quality_status import quality_status
from divtune.reporting.tables import summary_table

PRESETS = ("default", "smoke")


def preset_path(name: str = "default") -> Path:
    if name not in PRESETS:
        raise ValueError(f"unknown quickstart preset {name!r}; choose from {PRESETS}")
    filename = "quickstart.yaml" if name == "default" else f"quickstart_{name}.yaml"
    return Path(str(importlib_resources.files("divtune") / "resources" / "configs" / filename))


def quickstart_config(output: str | None = None, preset: str = "default", overrides: Iterable[str] = ()) -> ExperimentConfig:
    """The preset, with ``smoke`` layered over ``default``, then the user's overrides."""
    data: dict[str, Any] = read_yaml(preset_path("default"))
    if preset != "default":
        data = deep_merge(data, read_yaml(preset_path(preset)))
    if output:
        data["output"] = output
    data = deep_merge(data, parse_overrides(overrides))
    return ExperimentConfig.from_dict(data, source=f"quickstart preset {preset!r}")


def run_quickstart(output: str | None = None, preset: str = "default", overrides: Iterable[str] = (), fresh: bool = False) -> dict[str, Any]:
    cfg = quickstart_config(output, preset, overrides)
    result = run_experiment(cfg, fresh=fresh)
    result["table"] = summary_table(result["metrics"], quality=quality_status([result["paths"]["eval"]]))
    result["report_html"] = str(Path(result["paths"]["report"]) / "report.html")
    return result
