"""``divtune report``: tables and plots from one or more evaluation folders.

Writes ``report.md``, a self-contained ``report.html`` (plots embedded as
base64 PNG data URIs, inline CSS, no external assets) and the PNG plots:

- ``quality_vs_semantic.png`` / ``quality_vs_style.png``: quality (x) against
  diversity (y), one point per system with 95% interval bars, the human
  ``gold`` row marked apart (the paper's main figure); when no system has a
  quality score, a diversity-only strip chart that says so;
- ``metrics_bars.png``: one panel per metric, a bar per system with its interval.

Each system is compared with a baseline system by a paired bootstrap over the
prompts both were evaluated on (from ``per_prompt.jsonl``). ``comparisons`` may
give each system its own baseline (e.g. DDPO on capped data against DPO on the
same data), and ``seed_groups`` pools the runs of one system over seeds: per
prompt, the mean over seeds, so a pooled difference pairs each prompt's seed-mean
of the system with the seed-mean of its baseline.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from divtune import statistics as metric_fns
from divtune.config import ConfigError
from divtune.evaluation.keys import GOLD, GOLD_MATCHED, METRIC_KEYS, MODES_FILE, extra_metric_base, ordered_metric_keys
from divtune.evaluation.scores import aggregate
from divtune.io import InputError, atomic_write_text, iter_jsonl, write_json
from divtune.quality_status import MARK, QUALITY_KEYS, quality_status

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
GOLD_COLOUR = "#d4a017"
#: Bars of a metric that is not measurable here (quality from a reward model at chance).
GREYED_COLOUR = "#dddddd"
PLOTS = ("quality_vs_semantic.png", "quality_vs_style.png", "metrics_bars.png")
INTERACTIONS_FILE = "interactions.json"
MODES_PLOT = "modes.png"


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
    for path in (metrics_path, per_prompt_path):
        if not path.is_file():
            raise InputError(path, "not found (run `divtune evaluate --output DIR` first)")
    try:
        table = json.loads(metrics_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(metrics_path, f"malformed JSON ({err.msg})", line=err.lineno) from None
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
    for pattern in (r"^dpo$", r"(^|[^a-z0-9])dpo($|[^a-z0-9])"):
        for s in systems:
            if re.search(pattern, s.name.lower()):
                return s
    non_gold = [s for s in systems if not s.is_gold]
    return (non_gold or systems)[0]


def paired_difference(
    system: SystemResult, baseline: SystemResult, n_boot: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """``{metric: paired_bootstrap_diff(system - baseline)}`` over the prompts both have."""
    common = sorted(set(system.per_prompt) & set(baseline.per_prompt))
    out: dict[str, dict[str, float]] = {}
    for key in metric_keys([system, baseline]):
        a = np.array([_num(system.per_prompt[p].get(key)) for p in common], dtype=np.float64)
        b = np.array([_num(baseline.per_prompt[p].get(key)) for p in common], dtype=np.float64)
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
    common = sorted(set.intersection(*(set(r.per_prompt) for r in everyone)))
    out: dict[str, dict[str, float]] = {}
    for key in metric_keys(everyone):
        grid = _grid(runs, common, key) - _grid(baselines, common, key)
        out[key] = metric_fns.seed_level_difference(grid, n_boot=n_boot, seed=seed)
    return out


def _grid(runs: list[SystemResult], prompts: list[str], key: str) -> np.ndarray:
    """(runs, prompts) array of one metric's per-prompt values (nan where undefined)."""
    return np.array([[_num(r.per_prompt[p].get(key)) for p in prompts] for r in runs],
                    dtype=np.float64).reshape(len(runs), len(prompts))


#: The four systems of an interaction, in the order of metrics.interaction_grid.
INTERACTION_TERMS = ("system", "baseline", "system_control", "baseline_control")


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
    groups = seed_groups or {}
    out: dict[str, dict[str, Any]] = {}
    for name, terms in interactions.items():
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
        everyone = [r for rs in runs.values() for r in rs]
        common = sorted(set.intersection(*(set(r.per_prompt) for r in everyone)))
        metrics_out = {}
        for key in metric_keys(everyone):
            grids = [_grid(runs[term], common, key) for term in INTERACTION_TERMS]
            metrics_out[key] = metric_fns.interaction_difference(*grids, n_boot=n_boot, seed=seed)
        out[name] = {"terms": dict(terms), "n_seeds": sizes.pop(), "metrics": metrics_out}
    return out


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


def parse_assignments(items: list[str], option: str) -> dict[str, str]:
    """``["a=b", ...]`` → ``{"a": "b"}``, with an error naming the option for a malformed item."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{option} {item!r}: expected NAME=VALUE")
        if key.strip() in out:
            raise ConfigError(f"{option} {item!r}: {key.strip()!r} given twice")
        out[key.strip()] = value.strip()
    return out


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
        common = sorted(set.intersection(*(set(r.per_prompt) for r in runs)))
        per_prompt: dict[str, dict[str, float | None]] = {}
        values: dict[str, np.ndarray] = {}
        keys = metric_keys(runs)
        for key in keys:
            table = np.array([[_num(r.per_prompt[p].get(key)) for r in runs] for p in common], dtype=np.float64)
            table = table.reshape(len(common), len(runs))
            defined = ~np.isnan(table)
            sums = np.where(defined, table, 0.0).sum(axis=1)
            counts = defined.sum(axis=1)
            values[key] = np.divide(sums, counts, out=np.full(len(common), np.nan), where=counts > 0)
        for i, p in enumerate(common):
            per_prompt[p] = {key: (None if np.isnan(values[key][i]) else float(values[key][i])) for key in keys}
        # The same mean-and-interval over prompts that evaluate gives every system.
        row = aggregate(values, has_quality=bool(np.any(~np.isnan(values["quality"]))), n_boot=n_boot, seed=seed)
        row["n_prompts"] = len(common)
        row["n_samples"] = sum(int(r.metrics.get("n_samples") or 0) for r in runs)
        row["n_seeds"] = len(runs)
        pooled.append(SystemResult(name, runs[0].eval_dir, row, per_prompt))
    return pooled


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


# ---------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    return plt


def _colours(systems: list[SystemResult]) -> dict[str, str]:
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]
    colours, i = {}, 0
    for s in systems:
        if s.is_gold:
            colours[s.name] = GOLD_COLOUR
        else:
            colours[s.name] = palette[i % len(palette)]
            i += 1
    return colours


def _err(value: float | None, ci: list | None) -> tuple[float, float]:
    """Asymmetric error-bar lengths from a [low, high] interval (0 when unknown)."""
    if value is None or not ci or ci[0] is None or ci[1] is None:
        return 0.0, 0.0
    return max(value - ci[0], 0.0), max(ci[1] - value, 0.0)


def plot_quality_vs_diversity(
    systems: list[SystemResult], metric: str, label: str, path: Path, quality_greyed: bool = False
) -> str:
    """Scatter of quality vs diversity; returns the caption. A strip chart of diversity alone
    when no system has a quality score, or when ``quality_greyed`` (a reward model at chance:
    an axis of its scores would only look meaningful)."""
    plt = _plt()
    colours = _colours(systems)
    with_quality = [] if quality_greyed else [
        s for s in systems if s.metrics.get("quality") is not None and s.metrics.get(metric) is not None]
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    if with_quality:
        for i, s in enumerate(with_quality):
            x, y = s.metrics["quality"], s.metrics[metric]
            xerr = np.array(_err(x, s.metrics.get("quality_ci"))).reshape(2, 1)
            yerr = np.array(_err(y, s.metrics.get(f"{metric}_ci"))).reshape(2, 1)
            ax.errorbar(
                x, y, xerr=xerr, yerr=yerr, fmt="*" if s.is_gold else "o", markersize=16 if s.is_gold else 8,
                color=colours[s.name], ecolor=colours[s.name], elinewidth=1.2, capsize=4,
                markeredgecolor="black", label=f"{s.name} (human)" if s.is_gold else s.name,
            )
            # Alternate label offsets so systems at nearly the same point stay readable.
            ax.annotate(s.name, (x, y), textcoords="offset points", xytext=(8, 6 if i % 2 == 0 else -14), fontsize=9)
        # Gold without a quality score still anchors the diversity axis: a horizontal band.
        for s in systems:
            if s.is_gold and s not in with_quality and s.metrics.get(metric) is not None:
                y = s.metrics[metric]
                ax.axhline(y, color=GOLD_COLOUR, linestyle="--", linewidth=1.5, label=f"{s.name} (human, no quality score)")
                ci = s.metrics.get(f"{metric}_ci")
                if ci and ci[0] is not None:
                    ax.axhspan(ci[0], ci[1], color=GOLD_COLOUR, alpha=0.15)
        ax.legend(fontsize=8, loc="best")
        ax.set_xlabel("quality (mean reward-model score)")
        left_out = [s.name for s in systems if s not in with_quality and not s.is_gold]
        caption = f"Quality (x) against {label} (y); bars are 95% bootstrap intervals over prompts."
        if any(s.is_gold for s in with_quality):
            caption += " The star is the gold row (human responses)."
        if left_out:
            caption += f" Not shown (no quality score): {', '.join(left_out)}."
        if any(s.is_gold and s not in with_quality for s in systems):
            caption += " The gold row has no quality score, so it is the dashed line with its interval shaded."
        ax.set_title(f"Quality vs {label}")
    else:
        shown = [s for s in systems if s.metrics.get(metric) is not None]
        for i, s in enumerate(shown):
            y = s.metrics[metric]
            yerr = np.array(_err(y, s.metrics.get(f"{metric}_ci"))).reshape(2, 1)
            ax.errorbar(
                i, y, yerr=yerr, fmt="*" if s.is_gold else "o", markersize=16 if s.is_gold else 8,
                color=colours[s.name], capsize=4, markeredgecolor="black",
            )
        ax.set_xticks(range(len(shown)), [s.name for s in shown], rotation=20, ha="right")
        ax.set_xlim(-0.7, len(shown) - 0.3)
        why_title, why = (
            (f"quality not measurable here {MARK}: not plotted",
             "The reward model does not beat chance, so quality is left off this plot:")
            if quality_greyed else
            ("no quality scores: run evaluate with --reward",
             "No system has a quality score (evaluate ran without --reward), so this is")
        )
        ax.set_title(f"{label} ({why_title})")
        caption = (f"{label.capitalize()} per system with 95% bootstrap intervals. {why} "
                   "a diversity-only strip chart instead of quality vs diversity.")
    ax.set_ylabel(f"{label} (mean pairwise cosine distance)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return caption


def plot_metric_bars(systems: list[SystemResult], path: Path, greyed_keys: tuple[str, ...] = ()) -> str:
    """One panel per metric, one bar per system with its 95% interval; the panels of
    ``greyed_keys`` (quality from a reward model at chance) drawn in grey and marked."""
    plt = _plt()
    colours = _colours(systems)
    keys = [k for k in metric_keys(systems) if any(s.metrics.get(k) is not None for s in systems)]
    cols = 4
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.9 * rows), squeeze=False)
    x = np.arange(len(systems))
    for ax, key in zip(axes.flat, keys):
        values = [s.metrics.get(key) for s in systems]
        heights = [v if v is not None else 0.0 for v in values]
        errs = np.array([_err(v, s.metrics.get(f"{key}_ci")) for v, s in zip(values, systems)]).T
        greyed = key in greyed_keys
        bar_colours = [GREYED_COLOUR if greyed else colours[s.name] for s in systems]
        bars = ax.bar(x, heights, yerr=errs, capsize=3, color=bar_colours, edgecolor="#999" if greyed else "black",
                      linewidth=0.5, ecolor="#999" if greyed else "black")
        for xi, bar, s, v in zip(x, bars, systems, values):
            if s.is_gold:
                bar.set_hatch("//")
            if v is None:
                ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=7, color="#666")
        arrow = {True: " (higher = more diverse)", False: " (lower = more diverse)"}.get(
            HIGHER_IS_MORE_DIVERSE.get(extra_metric_base(key) or key), "")
        if greyed:
            ax.set_title(f"{key} {MARK} not measurable here", fontsize=8.5, color="#888")
            ax.tick_params(colors="#888")
        else:
            ax.set_title(key + arrow, fontsize=8.5)
        ax.set_xticks(x, [s.name for s in systems], rotation=30, ha="right", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        finite = [h for h, v in zip(heights, values) if v is not None]
        if finite and key in ("vendi_semantic", "compression_ratio"):
            # These live far from 0 (Vendi >= 1, ratio > 1): start the axis near the data to show differences.
            low = min(finite) - 0.15 * (max(finite) - min(finite) + 1e-9) - 0.05 * max(finite)
            ax.set_ylim(bottom=max(low, 0.0))
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    caption = "Every metric per system with 95% bootstrap intervals over prompts; the gold (human) bar is hatched."
    if any(k in greyed_keys for k in keys):
        caption += f" Panels marked {MARK} are greyed out (see the note on {MARK})."
    return caption


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


def plot_modes(counts: dict[str, dict[str, int]], typical: str, path: Path) -> str:
    """Stacked bars: the share of each surface mode among each system's samples."""
    plt = _plt()
    names = list(counts)
    modes = list(next(iter(counts.values())))
    colours = {"dialogue": "#1f77b4", "first_person": "#2ca02c", "second_person": "#9467bd", "other": "#bbbbbb"}
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.4))
    left = np.zeros(len(names))
    for mode in modes:
        shares = np.array([counts[n][mode] / max(sum(counts[n].values()), 1) for n in names])
        ax.barh(names, shares, left=left, color=colours.get(mode, "#888"), edgecolor="white",
                label=f"{mode} (typical)" if mode == typical else mode)
        left += shares
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("share of samples")
    # Above the bars, whatever the number of rows: below them it collided with the axis label.
    ax.legend(fontsize=8, ncol=len(modes), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f"Share of each surface mode (divtune.modes) among each system's samples; the typical mode is {typical}."


def modes_table(counts: dict[str, dict[str, int]]) -> tuple[list[str], list[list[str]]]:
    modes = list(next(iter(counts.values())))
    header = ["system", *modes, "samples"]
    rows = []
    for name, row in counts.items():
        total = sum(row.values())
        rows.append([name, *[f"{100 * row[m] / total:.1f}%" if total else "n/a" for m in modes], str(total)])
    return header, rows


# ---------------------------------------------------------------- tables


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _fmt_ci(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    ci = row.get(f"{key}_ci")
    if value is None:
        return "n/a"
    if not ci or ci[0] is None:
        return _fmt(value)
    return f"{_fmt(value)} [{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _fmt_diff(d: dict[str, float]) -> str:
    if not d or d.get("n", 0) == 0 or not math.isfinite(d["diff"]):
        return "n/a"
    mark = "*" if d["low"] > 0 or d["high"] < 0 else ""
    return f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{mark}"


def _direction(key: str) -> str:
    return {True: "↑", False: "↓"}.get(HIGHER_IS_MORE_DIVERSE.get(extra_metric_base(key) or key), "")


def metrics_table(systems: list[SystemResult]) -> tuple[list[str], list[list[str]]]:
    """One row per metric, one column per system (a few systems fit a page; 14 metric columns do not)."""
    header = ["metric", *[s.name for s in systems]]
    rows = [[f"{key} {_direction(key)}".strip(), *[_fmt_ci(s.metrics, key) for s in systems]] for key in metric_keys(systems)]
    rows += [[key, *[_fmt(s.metrics.get(key)) for s in systems]] for key in ("n_prompts", "n_samples")]
    return header, rows


def diff_table(
    diffs: dict[str, dict[str, dict[str, float]]], baselines: dict[str, str] | None = None
) -> tuple[list[str], list[list[str]]]:
    """One row per metric, one column per compared system: difference to its baseline [interval].

    With ``baselines`` (system → baseline) the columns read ``system − baseline``."""
    names = list(diffs)
    header = ["metric", *[f"{n} − {baselines[n]}" if baselines else n for n in names]]
    keys = [k for k in ordered_metric_keys({k for n in names for k in diffs[n]}) if any(k in diffs[n] for n in names)]
    rows = [[f"{key} {_direction(key)}".strip(), *[_fmt_diff(diffs[n].get(key, {})) for n in names]] for key in keys]
    rows.append(["common prompts", *[str(max((d.get("n", 0) for d in diffs[n].values()), default=0)) for n in names]])
    return header, rows


def seed_interval_table(
    diffs: dict[str, dict[str, dict[str, Any]]], kind: str, headers: dict[str, str] | None = None
) -> tuple[list[str], list[list[str]]]:
    """Like :func:`diff_table`, for the seed-unit interval ``kind`` (``seed_t`` or ``seed_nested_bootstrap``)
    of the differences that have one (pooled, seed-paired differences and interactions)."""
    names = [n for n in diffs if any(isinstance(d, dict) and kind in d for d in diffs[n].values())]
    if not names:
        return [], []
    header = ["metric", *[(headers or {}).get(n, n) for n in names]]
    keys = [k for k in ordered_metric_keys({k for n in names for k in diffs[n]}) if any(k in diffs[n] for n in names)]

    def cell(d: dict[str, Any]) -> str:
        inner = d.get(kind) if isinstance(d, dict) else None
        if not inner or not math.isfinite(inner.get("diff", float("nan"))):
            return "n/a"
        if not math.isfinite(inner.get("low", float("nan"))):
            return f"{inner['diff']:+.3f} [n/a]"
        return _fmt_diff({**inner, "n": 1})

    rows = [[f"{key} {_direction(key)}".strip(), *[cell(diffs[n].get(key, {})) for n in names]] for key in keys]
    rows.append(["seeds", *[str(max((d.get(kind, {}).get("n_seeds", 0) for d in diffs[n].values()), default=0))
                            for n in names]])
    return header, rows


def _md_table(header: list[str], rows: list[list[str]], greyed: list[int] = ()) -> str:
    """Markdown has no colour: a greyed-out row's values are set in italics."""
    rows = [[row[0], *[f"_{c}_" for c in row[1:]]] if i in greyed else row for i, row in enumerate(rows)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]], greyed: list[int] = ()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(('<tr class="greyed">' if i in greyed else "<tr>")
                   + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for i, row in enumerate(rows))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


_NOTES = [
    "Values are means over prompts with 95% percentile-bootstrap intervals over prompts, shown as value [low, high].",
    "↑ higher is more diverse, ↓ lower is more diverse. Higher is more diverse for semantic/style diversity, Vendi and distinct-n; lower is more diverse for self-BLEU and the gzip compression ratio (original/compressed bytes).",
    "gold = human responses to the same test prompts, with the same number of responses per prompt as the samples.",
    "gold-matched (when shown) = the same human responses cut to the samples' length in tokens (per prompt, the median token count of the samples, same tokenizer): compare samples with gold-matched; the full gold row mixes length with diversity.",
    "effective_semantic_diversity keeps only samples whose quality passes the threshold (prompts with fewer than 2 passing samples count as 0).",
    "Paired differences are system minus baseline over the prompts both share; * marks intervals that exclude 0.",
    "Seed-paired (pooled) differences: the main table's interval is the crossed bootstrap (seeds, then prompts, one prompt draw for all drawn seeds). The seed-level tables treat the training run as the unit: a Student-t interval over the per-seed means (each seed's mean over prompts of its paired difference; undefined with one seed), and a nested bootstrap that draws seeds, then prompts within each drawn seed. With few seeds they are wider, as they should be.",
    "Interactions (when shown): (system − baseline) − (control system − control baseline), seeds paired by index and prompts by id, e.g. the b × method interaction (DDPO − DPO at b > 0) − (DDPO − DPO at b = 0); in interactions.json.",
    "centrality (when shown): each sample's mean cosine similarity (semantic embedder) to its prompt's human responses, standardised by those responses' own centralities (0 = as typical as the average human response; higher = more typical, less diverse).",
    "typical_mode_share, mode_entropy (bits, 0 to 2) and modes_seen (when shown): the surface modes of the openings (dialogue, first person, second person, other), per prompt.",
    "distinct_k (when shown): per prompt, the number of meaning classes among its k samples (NoveltyBench), by DARLING's partition: two samples are one class when their semantic cosine reaches the threshold (default 0.9), classes are connected components; 1 = all alike, k = all distinct. Compare rows with the same k (the gold rows may have fewer texts).",
    "chatbot_share (when shown): the share of samples whose opening reads like a chatbot reply rather than a story (divtune.chatbot's rule: acknowledgements, 'Here is a story', 'Let's', titles and headings, talk about 'your text', emoji, other scripts, lists); lower is more story-like.",
    "KEY_NAME metrics (e.g. semantic_diversity_minilm, when shown): the same metric in a further semantic space (evaluate's extra_semantic).",
]

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1150px;
       color: #222; line-height: 1.45; padding: 0 16px; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: 6px; }
h2 { font-size: 1.25em; margin-top: 1.8em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 4px 6px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; font-weight: 600; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 16px 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #555; }
ul.notes { font-size: 13px; color: #444; }
tr.greyed td { color: #a0a0a0; } p.footnote { font-size: 13px; color: #777; }
div.caveat { border: 2px solid #d4a017; background: #fff8e1; padding: 10px 14px; margin: 12px 0; }
li.sample, blockquote.sample { white-space: pre-wrap; font-size: 13px; margin-bottom: 8px; }
"""

#: Where the recorded results and their caveats are, in a source checkout of divtune.
RESULTS_INDEX = Path(__file__).resolve().parents[2] / "docs" / "results" / "README.md"


def results_link(output: Path) -> str | None:
    """The results index relative to the report folder, when this divtune is a source checkout."""
    import os

    if not RESULTS_INDEX.is_file():
        return None
    return Path(os.path.relpath(RESULTS_INDEX, output.resolve())).as_posix()


def caveat_markdown(caveat: str, link: str | None) -> list[str]:
    where = f"[docs/results/README.md]({link})" if link else "docs/results/README.md in the divtune repository"
    return [f"> **Caveat.** {caveat} The recorded results, with their own caveats: {where}.", ""]


def caveat_html(caveat: str, link: str | None) -> str:
    where = (f'<a href="{html.escape(link)}">docs/results/README.md</a>' if link
             else "docs/results/README.md in the divtune repository")
    return (f'<div class="caveat"><strong>Caveat.</strong> {html.escape(caveat)} '
            f"The recorded results, with their own caveats: {where}.</div>")


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def run_report(
    eval_dirs: list[str | Path],
    output: str | Path,
    baseline: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    comparisons: dict[str, str] | None = None,
    seed_groups: dict[str, list[str]] | None = None,
    overwrite: bool = False,
    interactions: dict[str, dict[str, str]] | None = None,
    caveat: str | None = None,
) -> Path:
    """Write report.md, report.html, paired_differences.json and the PNG plots to ``output``.

    ``comparisons`` (system → its baseline) replaces "everything against
    ``baseline``"; ``seed_groups`` (pooled name → per-seed systems) adds one pooled
    system per group, and the plots then show the pooled systems instead of the
    per-seed runs. ``interactions`` (name → {system, baseline, system_control, baseline_control})
    adds difference-of-differences contrasts (:func:`interaction_differences`), written to
    ``interactions.json``. A seed-paired difference carries, beside its crossed bootstrap, the
    seed-unit intervals (``seed_t``, ``seed_nested_bootstrap``), shown in their own tables.
    ``caveat`` is set in a box at the top, with a link to the recorded results (the quickstart:
    a demonstration-sized run is no evidence). The report also shows the first samples of each
    system (divtune.report_samples). Returns the HTML path. The output folder follows
    divtune.outputs' rule.
    """
    from divtune.outputs import claim_output_dir, stamped

    if not eval_dirs:
        raise ConfigError("give at least one evaluation folder")
    output = Path(output)
    per_run = load_systems(list(eval_dirs))
    settings = {"eval_dirs": [str(d) for d in eval_dirs], "baseline": baseline, "n_boot": n_boot, "seed": seed,
                "comparisons": comparisons, "seed_groups": seed_groups, **({"caveat": caveat} if caveat else {})}
    if interactions:  # only when given: reports written before interactions existed keep their settings
        settings["interactions"] = interactions
    claim = claim_output_dir(output, "report", stamped(settings, eval_dirs), overwrite)
    if claim.state == "reuse":
        return output / "report.html"
    pooled = pool_seeds(per_run, seed_groups, n_boot=n_boot, seed=seed) if seed_groups else []
    systems = per_run + pooled
    base = choose_baseline(systems, baseline)
    if comparisons is None:
        comparisons = against_one_baseline(systems, base)
    diffs = paired_differences(systems, base, n_boot=n_boot, seed=seed, comparisons=comparisons, seed_groups=seed_groups)
    contrasts = interaction_differences(systems, interactions, seed_groups, n_boot=n_boot, seed=seed) if interactions else {}
    claim.begin()
    if contrasts:
        write_json(output / INTERACTIONS_FILE, contrasts)
    write_json(
        output / "paired_differences.json",
        {name: {"baseline": comparisons[name], "metrics": d} for name, d in diffs.items()},
    )
    grouped = {m for members in (seed_groups or {}).values() for m in members}
    # With seed groups the plots show pooled systems: one point per system, not per run.
    plotted = [s for s in systems if s.name not in grouped]
    mixed_baselines = any(b != base.name for b in comparisons.values())

    # A reward model at chance: grey out the quality rows and panels, claim no difference of quality.
    quality = quality_status(list(eval_dirs))
    has_quality = any(s.metrics.get("quality") is not None for s in systems)

    def scatter_title(label: str) -> str:
        if quality.greyed:
            return f"{label.capitalize()} (quality not measurable here)"
        return f"Quality vs {label}" if has_quality else f"{label.capitalize()} (no quality scores)"

    figures = [
        (PLOTS[0], scatter_title("semantic diversity"), plot_quality_vs_diversity(
            plotted, "semantic_diversity", "semantic diversity", output / PLOTS[0], quality_greyed=quality.greyed)),
        (PLOTS[1], scatter_title("style diversity"), plot_quality_vs_diversity(
            plotted, "style_diversity", "style diversity", output / PLOTS[1], quality_greyed=quality.greyed)),
        (PLOTS[2], "All metrics", plot_metric_bars(
            plotted, output / PLOTS[2], greyed_keys=QUALITY_KEYS if quality.greyed else ())),
    ]
    modes = read_mode_counts(eval_dirs, seed_groups)
    mode_tables = []
    if modes is not None:
        typical, counts = modes
        shown = {s.name: counts[s.name] for s in plotted if s.name in counts}
        figures.append((MODES_PLOT, "Surface modes", plot_modes(shown, typical, output / MODES_PLOT)))
        mode_tables.append(modes_table(counts))
    m_header, m_rows = metrics_table(systems)
    d_header, d_rows = diff_table(diffs, comparisons if mixed_baselines else None)
    m_rows, m_greyed = quality.mark_rows(m_rows)
    d_rows, d_greyed = quality.mark_rows(d_rows, replace_cells_with="not claimed")
    # The seed-unit intervals of the pooled differences and of the interactions, each kind its own table.
    heads = {n: f"{n} − {comparisons[n]}" for n in diffs} if mixed_baselines else None
    seed_tables = []
    for kind, title in (("seed_t", "Seed-level intervals: Student t over the seed means"),
                        ("seed_nested_bootstrap", "Seed-level intervals: nested bootstrap (seeds, then prompts within each seed)")):
        header, rows = seed_interval_table(diffs, kind, heads)
        if rows:
            rows, greyed = quality.mark_rows(rows, replace_cells_with="not claimed")
            seed_tables.append((title, header, rows, greyed))
    if contrasts:
        inter = {n: c["metrics"] for n, c in contrasts.items()}
        names = {n: "({system} − {baseline}) − ({system_control} − {baseline_control})".format(**c["terms"])
                 for n, c in contrasts.items()}
        header, rows = diff_table(inter, None)
        header = ["metric", *[f"{n}: {names[n]}" for n in inter]]
        rows, greyed = quality.mark_rows(rows, replace_cells_with="not claimed")
        seed_tables.append(("Interactions: crossed bootstrap (seeds, then prompts)", header, rows, greyed))
        for kind, label in (("seed_t", "Student t over the seed means"), ("seed_nested_bootstrap", "nested bootstrap")):
            h, r = seed_interval_table(inter, kind, {n: f"{n}: {names[n]}" for n in inter})
            if r:
                r, g = quality.mark_rows(r, replace_cells_with="not claimed")
                seed_tables.append((f"Interactions: {label}", h, r, g))
    footnote = [quality.footnote] if quality.footnote else []
    if footnote:
        figures = [(f, t, f"{c} {quality.footnote}" if f in PLOTS else c) for f, t, c in figures]
    diff_title = "Paired differences" if mixed_baselines else f"Paired difference against {base.name}"
    pooling_note = (
        " Seeds pooled: " + "; ".join(f"{n} = mean of {' + '.join(m)}" for n, m in seed_groups.items()) + ";"
        " the plots show the pooled systems. A pooled system's own interval resamples prompts; a difference"
        " between two pooled systems pairs their runs seed by seed and resamples seeds, then prompts."
        if seed_groups
        else ""
    )
    sources = ", ".join(str(Path(d)) for d in eval_dirs)
    from divtune.report_samples import read_samples, samples_html, samples_markdown

    samples = read_samples(list(eval_dirs))
    link = results_link(output) if caveat else None

    md = [
        "# divtune evaluation report",
        "",
        *(caveat_markdown(caveat, link) if caveat else []),
        f"Evaluation folders: {sources}. Baseline for paired differences: **{base.name}**"
        + (" unless a column names another." if mixed_baselines else ".")
        + pooling_note,
        "",
        "## Metrics",
        "",
        _md_table(m_header, m_rows, m_greyed),
        "",
        *[f"{n}\n" for n in footnote],
        f"## {diff_title}",
        "",
        _md_table(d_header, d_rows, d_greyed) if d_rows else "_Only one system: nothing to compare._",
        "",
        *[f"{n}\n" for n in footnote],
        *[line for title, header, rows, greyed in seed_tables
          for line in (f"## {title}", "", _md_table(header, rows, greyed), "")],
        *[line for header, rows in mode_tables for line in ("## Surface modes of the samples", "", _md_table(header, rows), "")],
        *samples_markdown(samples),
        "## Plots",
        "",
    ]
    for file, title, caption in figures:
        md += [f"### {title}", "", f"![{title}]({file})", "", caption, ""]
    md += ["## Notes", "", *[f"- {n}" for n in _NOTES], ""]
    atomic_write_text(output / "report.md", "\n".join(md))

    figures_html = "".join(
        f'<h3>{html.escape(title)}</h3><figure><img alt="{html.escape(title)}" src="{_data_uri(output / file)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for file, title, caption in figures
    )
    diff_html = _html_table(d_header, d_rows, d_greyed) if d_rows else "<p><em>Only one system: nothing to compare.</em></p>"
    footnote_html = "".join(f'<p class="footnote">{html.escape(n)}</p>' for n in footnote)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>divtune evaluation report</title>
<style>{_CSS}</style></head>
<body>
<h1>divtune evaluation report</h1>
{caveat_html(caveat, link) if caveat else ""}
<p>Evaluation folders: {html.escape(sources)}. Baseline for paired differences: <strong>{html.escape(base.name)}</strong>{" unless a column names another." if mixed_baselines else "."}{html.escape(pooling_note)}</p>
<h2>Metrics</h2>
{_html_table(m_header, m_rows, m_greyed)}
{footnote_html}
<h2>{html.escape(diff_title)}</h2>
{diff_html}
{footnote_html}
{"".join(f"<h2>{html.escape(t)}</h2>" + _html_table(h, r, g) for t, h, r, g in seed_tables)}
{"".join("<h2>Surface modes of the samples</h2>" + _html_table(h, r) for h, r in mode_tables)}
{samples_html(samples)}
<h2>Plots</h2>
{figures_html}
<h2>Notes</h2>
<ul class="notes">{''.join(f'<li>{html.escape(n)}</li>' for n in _NOTES)}</ul>
</body></html>
"""
    html_path = atomic_write_text(output / "report.html", page)
    claim.finish()
    return html_path
