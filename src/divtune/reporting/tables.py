"""The report's tables as (header, rows) of formatted cells: metrics, paired differences,
seed-level intervals and surface modes; and the plain-text headline table printed at the end of an
experiment and by ``divtune evaluate`` (:func:`summary_table`). One row per metric, one column per system: a few
systems fit a page; a dozen metric columns do not."""

from __future__ import annotations

import math
from typing import Any

from divtune.evaluation.keys import extra_metric_base, ordered_metric_keys
from divtune.quality_status import MARK, QUALITY_KEYS
from divtune.reporting.systems import HIGHER_IS_MORE_DIVERSE, SystemResult, metric_keys

#: A table: its header, and its rows of formatted cells (the metric first).
Rows = tuple[list[str], list[list[str]]]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _fmt_ci(row: dict[str, Any], key: str) -> str:
    """``value [low, high]`` of a metric in a metrics.json row."""
    value = row.get(key)
    ci = row.get(f"{key}_ci")
    if value is None:
        return "n/a"
    if not ci or ci[0] is None:
        return _fmt(value)
    return f"{_fmt(value)} [{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _fmt_diff(d: dict[str, float]) -> str:
    """``+diff [+low, +high]``, starred when the interval excludes 0."""
    if not d or d.get("n", 0) == 0 or not math.isfinite(d["diff"]):
        return "n/a"
    mark = "*" if d["low"] > 0 or d["high"] < 0 else ""
    return f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{mark}"


def _direction(key: str) -> str:
    """↑ when higher is more diverse, ↓ when lower is, else nothing."""
    return {True: "↑", False: "↓"}.get(HIGHER_IS_MORE_DIVERSE.get(extra_metric_base(key) or key), "")


def _metric_label(key: str) -> str:
    return f"{key} {_direction(key)}".strip()


def metrics_table(systems: list[SystemResult]) -> Rows:
    """One row per metric, one column per system (a few systems fit a page; 14 metric columns do not)."""
    header = ["metric", *[s.name for s in systems]]
    rows = [[_metric_label(key), *[_fmt_ci(s.metrics, key) for s in systems]] for key in metric_keys(systems)]
    rows += [[key, *[_fmt(s.metrics.get(key)) for s in systems]] for key in ("n_prompts", "n_samples")]
    return header, rows


def _difference_keys(diffs: dict[str, dict[str, Any]], names: list[str]) -> list[str]:
    return [k for k in ordered_metric_keys({k for n in names for k in diffs[n]}) if any(k in diffs[n] for n in names)]


def diff_table(diffs: dict[str, dict[str, dict[str, float]]], baselines: dict[str, str] | None = None) -> Rows:
    """One row per metric, one column per compared system: difference to its baseline [interval].

    With ``baselines`` (system → baseline) the columns read ``system − baseline``."""
    names = list(diffs)
    header = ["metric", *[f"{n} − {baselines[n]}" if baselines else n for n in names]]
    rows = [[_metric_label(key), *[_fmt_diff(diffs[n].get(key, {})) for n in names]] for key in _difference_keys(diffs, names)]
    rows.append(["common prompts", *[str(max((d.get("n", 0) for d in diffs[n].values()), default=0)) for n in names]])
    return header, rows


def seed_interval_table(
    diffs: dict[str, dict[str, dict[str, Any]]], kind: str, headers: dict[str, str] | None = None
) -> Rows:
    """Like :func:`diff_table`, for the seed-unit interval ``kind`` (``seed_t`` or ``seed_nested_bootstrap``)
    of the differences that have one (pooled, seed-paired differences and interactions)."""
    names = [n for n in diffs if any(isinstance(d, dict) and kind in d for d in diffs[n].values())]
    if not names:
        return [], []
    header = ["metric", *[(headers or {}).get(n, n) for n in names]]

    def cell(d: dict[str, Any]) -> str:
        inner = d.get(kind) if isinstance(d, dict) else None
        if not inner or not math.isfinite(inner.get("diff", float("nan"))):
            return "n/a"
        if not math.isfinite(inner.get("low", float("nan"))):
            return f"{inner['diff']:+.3f} [n/a]"
        return _fmt_diff({**inner, "n": 1})

    rows = [[_metric_label(key), *[cell(diffs[n].get(key, {})) for n in names]] for key in _difference_keys(diffs, names)]
    rows.append(["seeds", *[str(max((d.get(kind, {}).get("n_seeds", 0) for d in diffs[n].values()), default=0))
                            for n in names]])
    return header, rows


def modes_table(counts: dict[str, dict[str, int]]) -> Rows:
    """One row per system: the share of its samples in each surface mode, and how many samples."""
    modes = list(next(iter(counts.values())))
    header = ["system", *modes, "samples"]
    rows = []
    for name, row in counts.items():
        total = sum(row.values())
        rows.append([name, *[f"{100 * row[m] / total:.1f}%" if total else "n/a" for m in modes], str(total)])
    return header, rows


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
