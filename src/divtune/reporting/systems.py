"""The systems a report compares, read from evaluation folders.

An evaluation folder (``divtune evaluate --output``) holds ``metrics.json`` (a row of
means and intervals per system) and ``per_prompt.jsonl`` (each system's metrics per
prompt), and ``modes.json`` when the surface modes were counted. This module loads
them as :class:`SystemResult`, names systems apart across folders, chooses the
default baseline, and pools the runs of one system over seeds.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from divtune.config import ConfigError
from divtune.evaluation.keys import GOLD, GOLD_MATCHED, METRIC_KEYS, MODES_FILE, ordered_metric_keys
from divtune.evaluation.scores import aggregate
from divtune.io import InputError, iter_jsonl, read_json
from divtune.methods import Family, Pairs, names

#: Direction per metric, shown in the tables so readers need not remember it.
HIGHER_IS_MORE_DIVERSE = {
    "semantic_diversity": True,
    "style_diversity": True,
    "vendi_semantic": True,
    "distinct_1": True,
    "distinct_2": True,
    "distinct_3": True,
    "distinct_4": True,
    "self_bleu": False,
    "compression_ratio": False,
    "effective_semantic_diversity": True,
    "centrality": False,
    "typical_mode_share": False,
    "mode_entropy": True,
    "modes_seen": True,
    "distinct_k": True,
}
#: The default baseline is a system named after plain DPO, the method the weighted ones modify.
DEFAULT_BASELINE_METHOD = names(family=Family.DPO, pairs=Pairs.PREFERENCE, weighted=False)[0]


@dataclass
class SystemResult:
    name: str
    eval_dir: Path
    metrics: dict[str, Any]
    per_prompt: dict[str, dict[str, float | None]]  # prompt id -> metric -> value

    @property
    def is_gold(self) -> bool:
        return self.name in (GOLD, GOLD_MATCHED) or self.name.startswith((f"{GOLD} [", f"{GOLD_MATCHED} ["))


def load_eval_dir(eval_dir: str | Path) -> list[SystemResult]:
    """Systems of one evaluation folder (metrics.json + per_prompt.jsonl)."""
    eval_dir = Path(eval_dir)
    metrics_path = eval_dir / "metrics.json"
    per_prompt_path = eval_dir / "per_prompt.jsonl"
    missing = "not found (run `divtune evaluate --output DIR` first)"
    for path in (metrics_path, per_prompt_path):  # both checked before either is read
        if not path.is_file():
            raise InputError(path, missing)
    table = read_json(metrics_path, missing)
    if not isinstance(table, dict) or not table:
        raise InputError(metrics_path, "expected an object keyed by system name")
    per_prompt: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in table}
    for lineno, obj in iter_jsonl(per_prompt_path):
        for key in ("system", "prompt_id"):
            if not isinstance(obj, dict) or key not in obj:
                raise InputError(per_prompt_path, "missing required field", line=lineno, field=key)
        if obj["system"] not in per_prompt:
            raise InputError(per_prompt_path, f"system {obj['system']!r} is not in metrics.json", line=lineno, field="system")
        per_prompt[obj["system"]][str(obj["prompt_id"])] = obj
    systems = []
    for name, row in table.items():
        missing = [k for k in METRIC_KEYS if k not in row]
        if missing:
            raise InputError(metrics_path, f"system {name!r} lacks {missing}", field=missing[0])
        systems.append(SystemResult(name, eval_dir, row, per_prompt[name]))
    return systems


def load_systems(eval_dirs: list[str | Path]) -> list[SystemResult]:
    """All systems of all folders; a name found in several folders gets ``name [folder]``."""
    systems = [s for d in eval_dirs for s in load_eval_dir(d)]
    counts: dict[str, int] = {}
    for s in systems:
        counts[s.name] = counts.get(s.name, 0) + 1
    for s in systems:
        if counts[s.name] > 1:
            s.name = f"{s.name} [{s.eval_dir.name}]"
    if len({s.name for s in systems}) != len(systems):
        raise ConfigError("evaluation folders share a name and a system; give folders distinct names")
    return systems


def metric_keys(systems: list[SystemResult]) -> list[str]:
    """The core metrics, then the optional ones (centrality, modes) that some system has."""
    return ordered_metric_keys({k for s in systems for k in s.metrics})


def choose_baseline(systems: list[SystemResult], baseline: str | None) -> SystemResult:
    """``--baseline`` if given; else a system named ``dpo`` (or ``...-dpo``), else the first non-gold one."""
    if baseline is not None:
        for s in systems:
            if s.name == baseline:
                return s
        raise ConfigError(f"--baseline {baseline!r} is not among the systems {[s.name for s in systems]}")
    method = re.escape(DEFAULT_BASELINE_METHOD)
    for pattern in (rf"^{method}$", rf"(^|[^a-z0-9]){method}($|[^a-z0-9])"):
        for s in systems:
            if re.search(pattern, s.name.lower()):
                return s
    non_gold = [s for s in systems if not s.is_gold]
    return (non_gold or systems)[0]


def metric_value(x: Any) -> float:
    """A per-prompt metric as a float: ``nan`` where it is undefined (null)."""
    return float("nan") if x is None else float(x)


def grid(runs: list[SystemResult], prompts: list[str], key: str) -> np.ndarray:
    """(runs, prompts) array of one metric's per-prompt values (nan where undefined)."""
    return np.array([[metric_value(r.per_prompt[p].get(key)) for p in prompts] for r in runs],
                    dtype=np.float64).reshape(len(runs), len(prompts))


def common_prompts(runs: list[SystemResult]) -> list[str]:
    """The prompts every run was evaluated on, sorted."""
    return sorted(set.intersection(*(set(r.per_prompt) for r in runs)))


def pool_seeds(
    systems: list[SystemResult], groups: dict[str, list[str]], n_boot: int = 1000, seed: int = 0
) -> list[SystemResult]:
    """One pooled system per group (pooled name → the per-seed system names).

    Per prompt, each metric is the mean over the group's runs (undefined runs are
    left out; a prompt counts only when every run evaluated it), and the pooled
    row is the mean over prompts with a bootstrap interval over prompts.
    """
    by_name = {s.name: s for s in systems}
    pooled: list[SystemResult] = []
    for name, members in groups.items():
        if name in by_name:
            raise ConfigError(f"pooled name {name!r} is already a system name")
        missing = [m for m in members if m not in by_name]
        if missing or not members:
            raise ConfigError(f"seed group {name!r}: systems {missing or members} not found among {sorted(by_name)}")
        runs = [by_name[m] for m in members]
        common = common_prompts(runs)
        keys = metric_keys(runs)
        values = {key: _mean_over_runs(grid(runs, common, key).T) for key in keys}
        per_prompt = {p: {key: (None if np.isnan(values[key][i]) else float(values[key][i])) for key in keys}
                      for i, p in enumerate(common)}
        # The same mean-and-interval over prompts that evaluate gives every system.
        row = aggregate(values, has_quality=bool(np.any(~np.isnan(values["quality"]))), n_boot=n_boot, seed=seed)
        row["n_prompts"] = len(common)
        row["n_samples"] = sum(int(r.metrics.get("n_samples") or 0) for r in runs)
        row["n_seeds"] = len(runs)
        pooled.append(SystemResult(name, runs[0].eval_dir, row, per_prompt))
    return pooled


def _mean_over_runs(table: np.ndarray) -> np.ndarray:
    """Per row (prompt) of a (prompts, runs) table, the mean of the defined values; nan when none is."""
    defined = ~np.isnan(table)
    sums = np.where(defined, table, 0.0).sum(axis=1)
    counts = defined.sum(axis=1)
    return np.divide(sums, counts, out=np.full(table.shape[0], np.nan), where=counts > 0)


def read_mode_counts(eval_dirs: list[str | Path], seed_groups: dict[str, list[str]] | None) -> tuple[str, dict[str, dict[str, int]]] | None:
    """Mode counts per system from the folders' ``modes.json`` (seed groups summed), or None without any."""
    typical, counts = None, {}
    for eval_dir in eval_dirs:
        path = Path(eval_dir) / MODES_FILE
        if path.is_file():
            table = json.loads(path.read_text(encoding="utf-8"))
            typical = typical or table["typical_mode"]
            counts.update(table["counts"])
    if not counts:
        return None
    for name, members in (seed_groups or {}).items():
        if all(m in counts for m in members):
            counts[name] = {mode: sum(counts[m][mode] for m in members) for mode in counts[members[0]]}
    return typical, counts
