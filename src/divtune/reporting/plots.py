"""The matplotlib figures of the reports (``divtune report``, ``divtune diagnostics``), drawn headless.

For the report:

- ``quality_vs_semantic.png`` / ``quality_vs_style.png``: quality (x) against
  diversity (y), one point per system with 95% interval bars, the human
  ``gold`` row marked apart (the paper's main figure); when no system has a
  quality score, a diversity-only strip chart that says so;
- ``metrics_bars.png``: one panel per metric, a bar per system with its interval;
- ``modes.png``: the share of each surface mode among each system's samples.

For the diagnostics: the training curves of each run, and the histogram of the
pair weights of each data variant. matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from divtune.evaluation.keys import extra_metric_base
from divtune.quality_status import MARK
from divtune.reporting.systems import HIGHER_IS_MORE_DIVERSE, SystemResult, metric_keys
from divtune.reporting.training_logs import CURVES, running_mean

GOLD_COLOUR = "#d4a017"
#: Bars of a metric that is not measurable here (quality from a reward model at chance).
GREYED_COLOUR = "#dddddd"
PLOTS = ("quality_vs_semantic.png", "quality_vs_style.png", "metrics_bars.png")
MODES_PLOT = "modes.png"


def pyplot():
    """matplotlib.pyplot on the Agg backend: never needs a display."""
    import matplotlib  # heavy

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy

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
    plt = pyplot()
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
    plt = pyplot()
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


def plot_modes(counts: dict[str, dict[str, int]], typical: str, path: Path) -> str:
    """Stacked bars: the share of each surface mode among each system's samples."""
    plt = pyplot()
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


# ---------------------------------------------------------------- diagnostics


def plot_training_curves(logs: dict[str, dict[str, np.ndarray]], path: Path, window: int) -> None:
    """One panel per logged curve (CURVES), a line per run: its running mean over ``window`` steps."""
    plt = pyplot()
    keys = [k for k in CURVES if any(k in log and not np.all(np.isnan(log[k])) for log in logs.values())]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(5.2 * max(len(keys), 1), 4.2), squeeze=False)
    colours = plt.get_cmap("tab10")
    # Runs of one system over several seeds (``name-s0``, ``name-s1``) share a colour; the seed sets the line style.
    systems = list(dict.fromkeys(re.sub(r"-s\d+$", "", name) for name in logs))
    styles = ["-", "--", ":", "-."]
    for ax, key in zip(axes.flat, keys):
        for name, log in logs.items():
            if key not in log or np.all(np.isnan(log[key])):
                continue
            system = re.sub(r"-s\d+$", "", name)
            seed = re.search(r"-s(\d+)$", name)
            ax.plot(log["step"], running_mean(log[key], window), label=name,
                    color=colours(systems.index(system) % 10),
                    linestyle=styles[int(seed.group(1)) % len(styles)] if seed else "-", linewidth=1.4)
        ax.set_title(f"{CURVES[key]}\n(running mean over {window} steps)", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if key == "rewards/margins":
            ax.axhline(0.0, color="black", linewidth=0.8)
    if keys:
        axes.flat[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_weight_histograms(weights: dict[str, np.ndarray], path: Path) -> None:
    """One histogram of the pair weights per data variant, DPO's w = 1 marked."""
    plt = pyplot()
    n = max(len(weights), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False, sharey=True)
    for ax, (variant, w) in zip(axes.flat, weights.items()):
        ax.hist(w, bins=30, color="#1f77b4", edgecolor="black", linewidth=0.4)
        ax.axvline(1.0, color="#d62728", linestyle="--", linewidth=1, label="DPO (w = 1)")
        ax.set_title(f"data {variant}: {w.size} train pairs", fontsize=9)
        ax.set_xlabel("pair weight w")
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("pairs")
    if weights:  # with no weighted data the panel is empty: no legend to draw
        axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
