"""``divtune report``: tables and plots from one or more evaluation folders.

Writes ``report.md``, a self-contained ``report.html`` (plots embedded as base64 PNG
data URIs, inline CSS, no external assets), ``paired_differences.json``
(``interactions.json`` when interactions are asked for) and the PNG plots
(divtune.reporting.plots). The steps: load the systems (reporting.systems), compare
them (reporting.comparisons), draw the plots, describe the report once
(reporting.document) and render it twice (reporting.render).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from divtune.config import ConfigError
from divtune.io import atomic_write_text, write_json
from divtune.outputs import claim_output_dir, stamped
from divtune.quality_status import QUALITY_KEYS, QualityStatus, quality_status
from divtune.reporting.comparisons import Comparison, compare
from divtune.reporting.document import report_document, results_link
from divtune.reporting.plots import MODES_PLOT, PLOTS, plot_metric_bars, plot_modes, plot_quality_vs_diversity
from divtune.reporting.render import Figure, to_html, to_markdown
from divtune.reporting.samples import read_samples
from divtune.reporting.systems import load_systems, read_mode_counts

INTERACTIONS_FILE = "interactions.json"
PAIRED_DIFFERENCES_FILE = "paired_differences.json"


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
    adds difference-of-differences contrasts (reporting.comparisons.interaction_differences), written to
    ``interactions.json``. A seed-paired difference carries, beside its crossed bootstrap, the
    seed-unit intervals (``seed_t``, ``seed_nested_bootstrap``), shown in their own tables.
    ``caveat`` is set in a box at the top, with a link to the recorded results (the quickstart:
    a demonstration-sized run is no evidence). The report also shows the first samples of each
    system (divtune.reporting.samples). Returns the HTML path. The output folder follows
    divtune.outputs' rule.
    """
    if not eval_dirs:
        raise ConfigError("give at least one evaluation folder")
    output = Path(output)
    per_run = load_systems(list(eval_dirs))
    settings = _settings(eval_dirs, baseline, n_boot, seed, comparisons, seed_groups, interactions, caveat)
    claim = claim_output_dir(output, "report", stamped(settings, eval_dirs), overwrite)
    if claim.state == "reuse":
        return output / "report.html"
    comparison = compare(per_run, baseline, comparisons, seed_groups, interactions, n_boot=n_boot, seed=seed)
    claim.begin()
    write_differences(comparison, output)
    # A reward model at chance: grey out the quality rows and panels, claim no difference of quality.
    quality = quality_status(list(eval_dirs))
    mode_counts = read_mode_counts(eval_dirs, seed_groups)
    figures = draw_figures(comparison, mode_counts, quality, output)
    samples = read_samples(list(eval_dirs))
    link = results_link(output) if caveat else None
    document = report_document(comparison, eval_dirs, seed_groups, quality, figures, mode_counts, samples, caveat, link)
    atomic_write_text(output / "report.md", to_markdown(document))
    html_path = atomic_write_text(output / "report.html", to_html(document, output))
    claim.finish()
    return html_path


def _settings(
    eval_dirs: list[str | Path],
    baseline: str | None,
    n_boot: int,
    seed: int,
    comparisons: dict[str, str] | None,
    seed_groups: dict[str, list[str]] | None,
    interactions: dict[str, dict[str, str]] | None,
    caveat: str | None,
) -> dict[str, Any]:
    """The settings that make a report folder reusable (divtune.outputs' stamp)."""
    settings = {"eval_dirs": [str(d) for d in eval_dirs], "baseline": baseline, "n_boot": n_boot, "seed": seed,
                "comparisons": comparisons, "seed_groups": seed_groups, **({"caveat": caveat} if caveat else {})}
    if interactions:  # only when given: reports written before interactions existed keep their settings
        settings["interactions"] = interactions
    return settings


def write_differences(comparison: Comparison, output: Path) -> None:
    """paired_differences.json (each system's baseline and differences), and interactions.json when any."""
    if comparison.interactions:
        write_json(output / INTERACTIONS_FILE, comparison.interactions)
    write_json(
        output / PAIRED_DIFFERENCES_FILE,
        {name: {"baseline": comparison.comparisons[name], "metrics": d} for name, d in comparison.differences.items()},
    )


def draw_figures(
    comparison: Comparison,
    mode_counts: tuple[str, dict[str, dict[str, int]]] | None,
    quality: QualityStatus,
    output: Path,
) -> list[Figure]:
    """Draw the plots of the plotted systems into ``output``; each with its title and caption."""
    plotted = comparison.plotted
    has_quality = any(s.metrics.get("quality") is not None for s in comparison.systems)

    def scatter_title(label: str) -> str:
        if quality.greyed:
            return f"{label.capitalize()} (quality not measurable here)"
        return f"Quality vs {label}" if has_quality else f"{label.capitalize()} (no quality scores)"

    figures = [
        Figure(PLOTS[0], scatter_title("semantic diversity"), plot_quality_vs_diversity(
            plotted, "semantic_diversity", "semantic diversity", output / PLOTS[0], quality_greyed=quality.greyed)),
        Figure(PLOTS[1], scatter_title("style diversity"), plot_quality_vs_diversity(
            plotted, "style_diversity", "style diversity", output / PLOTS[1], quality_greyed=quality.greyed)),
        Figure(PLOTS[2], "All metrics", plot_metric_bars(
            plotted, output / PLOTS[2], greyed_keys=QUALITY_KEYS if quality.greyed else ())),
    ]
    if mode_counts is not None:
        typical, counts = mode_counts
        shown = {s.name: counts[s.name] for s in plotted if s.name in counts}
        figures.append(Figure(MODES_PLOT, "Surface modes", plot_modes(shown, typical, output / MODES_PLOT)))
    if quality.footnote:
        figures = [replace(f, caption=f"{f.caption} {quality.footnote}") if f.file in PLOTS else f for f in figures]
    return figures
