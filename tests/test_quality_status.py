"""Quality "not measurable here": the rule, finding the reward model of an evaluation,
and the greyed-out quality rows of `divtune report`."""

from __future__ import annotations

import re

import yaml

from divtune.io import write_json
from divtune.quality_status import QualityStatus, quality_measurable, quality_status, reward_dir_of
from divtune.reporting.run import run_report
from test_report import _eval_dir

AT_CHANCE = {"pairwise_accuracy": 0.49, "pairwise_accuracy_ci": [0.43, 0.56]}
ABOVE_CHANCE = {"pairwise_accuracy": 0.62, "pairwise_accuracy_ci": [0.55, 0.68]}


def test_quality_measurable_needs_the_interval_above_chance():
    assert quality_measurable(ABOVE_CHANCE)
    assert not quality_measurable(AT_CHANCE)
    assert not quality_measurable({"pairwise_accuracy": 0.7, "pairwise_accuracy_ci": [0.5, 0.9]})  # 0.5 is chance
    assert quality_measurable({"pairwise_accuracy_ci": [0.501, 0.6]})
    # Without an interval nothing shows the model beats chance.
    assert not quality_measurable({"pairwise_accuracy": 0.9})
    assert not quality_measurable({"pairwise_accuracy": 0.9, "pairwise_accuracy_ci": [None, None]})



def test_quality_measurable_needs_the_openings_above_chance_too():
    """A model that beats chance on whole stories only (e.g. by their length) cannot rank fixed-length samples."""
    whole_only = {**ABOVE_CHANCE, "openings": {"words": 100, "pairwise_accuracy": 0.54,
                                               "pairwise_accuracy_ci": [0.47, 0.60]}}
    assert not quality_measurable(whole_only)
    both = {**ABOVE_CHANCE, "openings": {"words": 100, "pairwise_accuracy": 0.6, "pairwise_accuracy_ci": [0.52, 0.67]}}
    assert quality_measurable(both)
    # Openings above chance do not rescue whole responses at chance.
    assert not quality_measurable({**AT_CHANCE, "openings": both["openings"]})
    assert not quality_measurable({**ABOVE_CHANCE, "openings": {"words": 100, "pairwise_accuracy": 0.6}})

def _with_reward(tmp_path, reward_metrics, name="eval", reward_value=None):
    """An evaluation folder whose config.yaml names a reward folder holding ``reward_metrics``."""
    eval_dir = _eval_dir(tmp_path / name, {"dpo": 0.30, "ddpo": 0.40, "gold": 0.50}, with_quality=True)
    reward_dir = tmp_path / "reward"
    if reward_metrics is not None:
        write_json(reward_dir / "metrics.json", reward_metrics)
    (eval_dir / "config.yaml").write_text(yaml.safe_dump({"output": str(eval_dir),
                                                          "reward": reward_value or str(reward_dir)}))
    return eval_dir


def test_the_reward_folder_is_found_through_the_evaluation_config(tmp_path):
    eval_dir = _with_reward(tmp_path, AT_CHANCE)
    assert reward_dir_of(eval_dir) == tmp_path / "reward"
    assert quality_status([eval_dir]).measurable is False
    # No config, or an evaluation without a reward model: nothing to judge.
    bare = _eval_dir(tmp_path / "bare", {"dpo": 0.3}, with_quality=True)
    assert reward_dir_of(bare) is None and quality_status([bare]) == QualityStatus(None)
    (bare / "config.yaml").write_text(yaml.safe_dump({"reward": None}))
    assert quality_status([bare]).measurable is None


def test_status_over_folders_and_missing_metrics(tmp_path):
    good = _with_reward(tmp_path / "a", ABOVE_CHANCE)
    assert quality_status([good]) == QualityStatus(True)
    missing = _with_reward(tmp_path / "b", None)
    status = quality_status([good, missing])
    assert status.measurable is False and "metrics not found" in status.footnote
    bad = _with_reward(tmp_path / "c", AT_CHANCE)
    status = quality_status([good, bad])
    assert status.measurable is False
    assert "quality not measurable here: reward model held-out pairwise accuracy 0.490 [0.430, 0.560]" in (
        status.footnote)


def test_report_greys_out_quality_and_claims_no_quality_difference(tmp_path):
    eval_dir = _with_reward(tmp_path, AT_CHANCE)
    run_report([eval_dir], tmp_path / "report", n_boot=100)
    md = (tmp_path / "report" / "report.md").read_text()
    page = (tmp_path / "report" / "report.html").read_text()
    footnote = "quality not measurable here: reward model held-out pairwise accuracy 0.490 [0.430, 0.560]"
    assert footnote in md and footnote in page
    metrics_part, diff_part = md.split("## Paired difference")[0], md.split("## Paired difference")[1]
    # Metrics table: the quality rows are marked and set apart; diversity rows are untouched.
    quality_row = next(line for line in metrics_part.splitlines() if line.startswith("| quality"))
    assert quality_row.startswith("| quality † |") and re.search(r"\| _0\.\d{3} \[", quality_row)
    assert next(line for line in metrics_part.splitlines() if line.startswith("| semantic_diversity")).count("_") == 1
    # Paired differences: no number is claimed for quality or the quality-filtered diversity.
    for key in ("quality", "effective_semantic_diversity"):
        row = next(line for line in diff_part.splitlines() if line.startswith(f"| {key}"))
        assert "not claimed" in row and not re.search(r"[+-]\d\.\d{3}", row)
    semantic = next(line for line in diff_part.splitlines() if line.startswith("| semantic_diversity"))
    assert re.search(r"[+-]0\.\d{3} \[", semantic)
    # HTML: exactly the two quality rows of each table are greyed.
    assert page.count('<tr class="greyed"><td>quality †</td>') == 2
    assert page.count('<tr class="greyed"><td>effective_semantic_diversity ↑ †</td>') == 2
    assert "tr.greyed td { color:" in page


def test_report_leaves_a_measurable_quality_alone(tmp_path):
    eval_dir = _with_reward(tmp_path, ABOVE_CHANCE)
    run_report([eval_dir], tmp_path / "report", n_boot=100)
    md = (tmp_path / "report" / "report.md").read_text()
    page = (tmp_path / "report" / "report.html").read_text()
    assert "not measurable" not in md and 'class="greyed"' not in page and "not claimed" not in md
    diff_part = md.split("## Paired difference")[1]
    quality = next(line for line in diff_part.splitlines() if line.startswith("| quality"))
    assert re.search(r"[+-]0\.\d{3} \[", quality)


def test_footnote_names_the_openings_figure_that_failed(tmp_path):
    whole_only = {**ABOVE_CHANCE, "openings": {"words": 100, "pairwise_accuracy": 0.54,
                                               "pairwise_accuracy_ci": [0.47, 0.60]}}
    status = quality_status([_with_reward(tmp_path, whole_only)])
    assert status.greyed
    assert ("reward model held-out pairwise accuracy 0.620 [0.550, 0.680], on first 100 words 0.540 [0.470, 0.600]"
            in status.footnote)


def _kept_figure(monkeypatch):
    """pyplot with ``close`` turned off, so a plot function's figure can be inspected after it returns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.close("all")
    monkeypatch.setattr(plt, "close", lambda *args, **kwargs: None)
    return plt


def test_plots_grey_out_quality_that_is_not_measurable(tmp_path, monkeypatch):
    from matplotlib.colors import to_hex

    from divtune.quality_status import QUALITY_KEYS
    from divtune.reporting.plots import GREYED_COLOUR, plot_metric_bars, plot_quality_vs_diversity
    from divtune.reporting.systems import load_systems

    systems = load_systems([_with_reward(tmp_path, AT_CHANCE)])
    plt = _kept_figure(monkeypatch)

    caption = plot_metric_bars(systems, tmp_path / "bars.png", greyed_keys=QUALITY_KEYS)
    panels = {ax.get_title().split(" ")[0]: ax for ax in plt.gcf().axes if ax.get_title()}
    assert {to_hex(bar.get_facecolor()) for bar in panels["quality"].patches} == {GREYED_COLOUR}
    assert "not measurable" in panels["quality"].get_title()
    assert GREYED_COLOUR not in {to_hex(bar.get_facecolor()) for bar in panels["semantic_diversity"].patches}
    assert "greyed out" in caption

    # Quality at chance: no quality axis, diversity alone; measurable: the quality scatter.
    plt.close("all")
    caption = plot_quality_vs_diversity(systems, "semantic_diversity", "semantic diversity", tmp_path / "s.png",
                                        quality_greyed=True)
    (ax,) = plt.gcf().axes
    assert "quality" not in ax.get_xlabel() and "not measurable" in ax.get_title()
    assert "quality is left off this plot" in caption
    plt.figure()
    plot_quality_vs_diversity(systems, "semantic_diversity", "semantic diversity", tmp_path / "q.png")
    assert plt.gcf().axes[0].get_xlabel().startswith("quality")


def test_report_titles_and_captions_say_quality_is_not_plotted(tmp_path):
    run_report([_with_reward(tmp_path, AT_CHANCE)], tmp_path / "report", n_boot=100)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Quality vs semantic diversity" not in md and "Semantic diversity (quality not measurable here)" in md
    assert "Panels marked † are greyed out" in md
