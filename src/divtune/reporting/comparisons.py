"""Paired comparisons of systems: differences against a baseline, and interactions.

Each system is compared with a baseline system by a paired bootstrap over the
prompts both were evaluated on (from ``per_prompt.jsonl``). ``comparisons`` may
give each system its own baseline (e.g. DDPO on capped data against DPO on the
same data), and ``seed_groups`` pools the runs of one system over seeds: per
prompt, the mean over seeds, so a pooled difference pairs each prompt's seed-mean
of the system with the seed-mean of its baseline. The statistics themselves are
the pure functions of divtune.metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from divtune import statistics as metric_fns
from divtune.config import ConfigError
from divtune.reporting.systems import (
    SystemResult,
    choose_baseline,
    common_prompts,
    grid,
    metric_keys,
    metric_value,
    pool_seeds,
)

#: The four systems of an interaction, in the order of metrics.interaction_grid.
INTERACTION_TERMS = ("system", "baseline", "system_control", "baseline_control")


def paired_difference(
    system: SystemResult, baseline: SystemResult, n_boot: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """``{metric: paired_bootstrap_diff(system - baseline)}`` over the prompts both have."""
    common = sorted(set(system.per_prompt) & set(baseline.per_prompt))
    out: dict[str, dict[str, float]] = {}
    for key in metric_keys([system, baseline]):
        a = np.array([metric_value(system.per_prompt[p].get(key)) for p in common], dtype=np.float64)
        b = np.array([metric_value(baseline.per_prompt[p].get(key)) for p in common], dtype=np.float64)
        out[key] = metric_fns.paired_bootstrap_diff(a, b, n_boot=n_boot, seed=seed)
    return out


def against_one_baseline(systems: list[SystemResult], baseline: SystemResult) -> dict[str, str]:
    """The default comparisons: every other system → ``baseline``."""
    return {s.name: baseline.name for s in systems if s is not baseline}


def seed_paired_difference(
    runs: list[SystemResult], baselines: list[SystemResult], n_boot: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Pooled difference of seed-paired runs (``runs[i]`` against ``baselines[i]``, the same seed):
    the two-way crossed bootstrap over seeds and prompts (metrics.seed_prompt_bootstrap_diff) at the top
    level, and beside it the seed-unit intervals ``seed_t`` and ``seed_nested_bootstrap``
    (metrics.seed_level_difference)."""
    everyone = [*runs, *baselines]
    common = common_prompts(everyone)
    out: dict[str, dict[str, float]] = {}
    for key in metric_keys(everyone):
        differences = grid(runs, common, key) - grid(baselines, common, key)
        out[key] = metric_fns.seed_level_difference(differences, n_boot=n_boot, seed=seed)
    return out


def interaction_differences(
    systems: list[SystemResult],
    interactions: dict[str, dict[str, str]],
    seed_groups: dict[str, list[str]] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """``{name: {"terms": {...}, "metrics": {metric: difference}}}`` for each interaction
    ``(system − baseline) − (system_control − baseline_control)`` (e.g. (DDPO − DPO at b > 0) −
    (DDPO − DPO at b = 0)). A term names a seed group (its runs, paired with the other terms' runs
    by seed index) or one system; prompts are those all runs share. Each metric has the crossed
    bootstrap and the seed-unit intervals (metrics.interaction_difference)."""
    by_name = {s.name: s for s in systems}
    out: dict[str, dict[str, Any]] = {}
    for name, terms in interactions.items():
        runs = _interaction_runs(name, terms, by_name, seed_groups or {})
        everyone = [r for rs in runs.values() for r in rs]
        common = common_prompts(everyone)
        metrics_out = {}
        for key in metric_keys(everyone):
            grids = [grid(runs[term], common, key) for term in INTERACTION_TERMS]
            metrics_out[key] = metric_fns.interaction_difference(*grids, n_boot=n_boot, seed=seed)
        out[name] = {"terms": dict(terms), "n_seeds": len(runs[INTERACTION_TERMS[0]]), "metrics": metrics_out}
    return out


def _interaction_runs(
    name: str, terms: dict[str, str], by_name: dict[str, SystemResult], groups: dict[str, list[str]]
) -> dict[str, list[SystemResult]]:
    """The runs of each term of interaction ``name``, checked: every term given, known, and as many seeds."""
    if sorted(terms) != sorted(INTERACTION_TERMS):
        raise ConfigError(f"interaction {name!r}: give exactly {', '.join(INTERACTION_TERMS)}; got {sorted(terms)}")
    runs = {}
    for term in INTERACTION_TERMS:
        members = groups.get(terms[term], [terms[term]])
        missing = [m for m in members if m not in by_name]
        if missing:
            raise ConfigError(f"interaction {name!r}: {term} {terms[term]!r} names no system ({missing[0]!r})")
        runs[term] = [by_name[m] for m in members]
    sizes = {len(r) for r in runs.values()}
    if len(sizes) != 1:
        raise ConfigError(f"interaction {name!r}: its terms have different numbers of seeds "
                          f"{ {t: len(r) for t, r in runs.items()} }")
    return runs


def paired_differences(
    systems: list[SystemResult],
    baseline: SystemResult,
    n_boot: int = 1000,
    seed: int = 0,
    comparisons: dict[str, str] | None = None,
    seed_groups: dict[str, list[str]] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{system: {metric: diff}}``: every other system against ``baseline``, or, when
    ``comparisons`` (system → its baseline) is given, exactly those pairs.

    A comparison of two seed groups of the same size pairs their runs seed by seed
    (the i-th run of each) and resamples seeds and prompts; any other comparison is
    the paired bootstrap over prompts."""
    if comparisons is None:
        comparisons = against_one_baseline(systems, baseline)
    by_name = {s.name: s for s in systems}
    unknown = sorted({n for pair in comparisons.items() for n in pair} - set(by_name))
    if unknown:
        raise ConfigError(f"comparison names {unknown} are not among the systems {sorted(by_name)}")
    groups = seed_groups or {}
    out = {}
    for name, base in comparisons.items():
        if name in groups and base in groups and len(groups[name]) == len(groups[base]):
            out[name] = seed_paired_difference(
                [by_name[m] for m in groups[name]], [by_name[m] for m in groups[base]], n_boot=n_boot, seed=seed
            )
        else:
            out[name] = paired_difference(by_name[name], by_name[base], n_boot=n_boot, seed=seed)
    return out


@dataclass
class Comparison:
    """Everything a report compares: its systems (runs and pooled), baseline, pairs and their differences."""

    #: The per-seed runs, then the pooled systems.
    systems: list[SystemResult]
    #: The systems the plots show: with seed groups, the pooled ones instead of their runs.
    plotted: list[SystemResult]
    baseline: SystemResult
    #: system → its baseline.
    comparisons: dict[str, str]
    #: system → metric → paired difference (paired_differences).
    differences: dict[str, dict[str, dict[str, Any]]]
    #: interaction name → its terms and differences (interaction_differences); empty without interactions.
    interactions: dict[str, dict[str, Any]]

    @property
    def mixed_baselines(self) -> bool:
        """Some system is compared with another baseline than the report's."""
        return any(b != self.baseline.name for b in self.comparisons.values())


def compare(
    per_run: list[SystemResult],
    baseline: str | None = None,
    comparisons: dict[str, str] | None = None,
    seed_groups: dict[str, list[str]] | None = None,
    interactions: dict[str, dict[str, str]] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Pool the seed groups, choose the baseline, and compute the paired differences and interactions."""
    pooled = pool_seeds(per_run, seed_groups, n_boot=n_boot, seed=seed) if seed_groups else []
    systems = per_run + pooled
    base = choose_baseline(systems, baseline)
    if comparisons is None:
        comparisons = against_one_baseline(systems, base)
    diffs = paired_differences(systems, base, n_boot=n_boot, seed=seed, comparisons=comparisons, seed_groups=seed_groups)
    contrasts = interaction_differences(systems, interactions, seed_groups, n_boot=n_boot, seed=seed) if interactions else {}
    grouped = {m for members in (seed_groups or {}).values() for m in members}
    plotted = [s for s in systems if s.name not in grouped]
    return Comparison(systems, plotted, base, comparisons, diffs, contrasts)
