"""What the experiment's report compares: each run with its baseline's run of the same seed, the
systems pooled over seeds, the human gold row, and the difference-of-differences interactions."""

from __future__ import annotations

from divtune.evaluation.keys import GOLD, GOLD_MATCHED
from divtune.experiments.config import ExperimentConfig, system_label


def _check_comparison_targets(cfg: ExperimentConfig) -> None:
    names = [s.name for s in cfg.systems]
    for system in cfg.systems:
        if system.compare_to is not None and system.compare_to not in names:
            raise ValueError(f"system {system.name!r}: compare_to {system.compare_to!r} is not one of {names}")
        if system.compare_to == system.name:
            raise ValueError(f"system {system.name!r} cannot be compared with itself")
    if cfg.baseline is not None and cfg.baseline not in names:
        raise ValueError(f"baseline {cfg.baseline!r} is not one of the systems {names}")


def report_comparisons(cfg: ExperimentConfig) -> tuple[dict[str, str] | None, dict[str, list[str]] | None]:
    """What the report compares: (system label → baseline label, pooled name → per-seed labels).

    With one seed and no ``compare_to``, ``(None, None)``: the report compares every
    system with ``baseline``. Otherwise each run is paired with its baseline's run
    of the same seed, and with several seeds each system is also pooled over seeds
    and compared, pooled, with its pooled baseline. The human gold row is compared
    with the (pooled) experiment baseline.
    """
    _check_comparison_targets(cfg)
    n_seeds = len(cfg.seeds)
    if n_seeds == 1 and all(s.compare_to is None for s in cfg.systems):
        return None, None
    comparisons: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    by_name = {s.name: s for s in cfg.systems}
    for system in cfg.systems:
        target = system.compare_to or cfg.baseline
        runs = [system_label(system, seed, n_seeds) for seed in cfg.seeds]
        if n_seeds > 1:
            groups[system.name] = runs
        if target is None or target == system.name:
            continue
        if n_seeds > 1:  # the pooled column first, then one per seed
            comparisons[system.name] = target
        for seed, run in zip(cfg.seeds, runs):
            comparisons[run] = system_label(by_name[target], seed, n_seeds)
    if cfg.baseline is not None:
        comparisons[GOLD] = cfg.baseline
        if cfg.evaluate.get("gold_matched"):
            comparisons[GOLD_MATCHED] = cfg.baseline
    return comparisons, (groups or None)


def report_interactions(cfg: ExperimentConfig) -> dict[str, dict[str, str]]:
    """The experiment's ``interactions`` as the report takes them; refuses unknown systems and incomplete terms."""
    from divtune.reporting.comparisons import INTERACTION_TERMS  # heavy: loads numpy

    by_name = {s.name: s for s in cfg.systems}
    out: dict[str, dict[str, str]] = {}
    for name, terms in cfg.interactions.items():
        if not isinstance(terms, dict) or sorted(terms) != sorted(INTERACTION_TERMS):
            raise ValueError(f"interaction {name!r}: give exactly {', '.join(INTERACTION_TERMS)}")
        unknown = [v for v in terms.values() if v not in by_name]
        if unknown:
            raise ValueError(f"interaction {name!r}: {unknown[0]!r} is not one of the systems {sorted(by_name)}")
        # One seed: the run is called by the system's name; several: the pooled system is.
        out[name] = {t: terms[t] for t in INTERACTION_TERMS}
    return out
