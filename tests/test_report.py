"""divtune report: files, embedded images, baseline choice, paired differences."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from divtune.config import ConfigError
from divtune.evaluation.keys import METRIC_KEYS
from divtune.io import InputError, write_json, write_jsonl
from divtune.reporting.comparisons import paired_differences
from divtune.reporting.plots import PLOTS
from divtune.reporting.run import run_report
from divtune.reporting.systems import choose_baseline, load_systems

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _eval_dir(root: Path, systems: dict[str, float], with_quality: bool, n_prompts: int = 8, seed: int = 0) -> Path:
    """A small evaluation folder: per-prompt semantic diversity around each system's level."""
    rng = np.random.default_rng(seed)
    table, lines = {}, []
    for name, level in systems.items():
        per_prompt = []
        for p in range(n_prompts):
            row = {key: float(level + rng.normal(0, 0.01)) for key in METRIC_KEYS}
            row["quality"] = float(0.3 + rng.normal(0, 0.05)) if with_quality else None
            row["effective_semantic_diversity"] = row["effective_semantic_diversity"] if with_quality else None
            per_prompt.append(row)
            lines.append({"system": name, "prompt_id": p, "n_samples": 4, **row})
        entry = {}
        for key in METRIC_KEYS:
            values = [r[key] for r in per_prompt]
            if values[0] is None:
                entry[key], entry[f"{key}_ci"] = None, None
            else:
                entry[key] = float(np.mean(values))
                entry[f"{key}_ci"] = [float(np.min(values)), float(np.max(values))]
        entry["n_prompts"], entry["n_samples"] = n_prompts, 4 * n_prompts
        table[name] = entry
    write_json(root / "metrics.json", table)
    write_jsonl(root / "per_prompt.jsonl", lines)
    return root


@pytest.mark.parametrize("with_quality", [True, False])
def test_report_writes_md_html_and_embedded_pngs(tmp_path, with_quality):
    eval_dir = _eval_dir(tmp_path / "eval", {"dpo": 0.30, "ddpo": 0.40, "gold": 0.50}, with_quality)
    html_path = run_report([eval_dir], tmp_path / "report", n_boot=200)

    assert html_path == tmp_path / "report" / "report.html"
    for name in PLOTS:
        assert (tmp_path / "report" / name).read_bytes().startswith(PNG_MAGIC), name
    page = html_path.read_text()
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(PLOTS)
    for encoded in images:
        assert base64.b64decode(encoded).startswith(PNG_MAGIC)
    # Self-contained: nothing fetched from elsewhere.
    assert not re.search(r'(src|href)="(?!data:)', page)
    md = (tmp_path / "report" / "report.md").read_text()
    for name in PLOTS:
        assert f"({name})" in md
    assert "Baseline for paired differences: **dpo**" in md
    if with_quality:
        assert "Quality vs semantic diversity" in page
    else:
        assert "no quality scores" in page and "strip chart" in page


def test_paired_difference_sign_and_interval(tmp_path):
    eval_dir = _eval_dir(tmp_path / "eval", {"dpo": 0.30, "ddpo": 0.40}, with_quality=True, n_prompts=30)
    systems = load_systems([eval_dir])
    base = choose_baseline(systems, None)
    diffs = paired_differences(systems, base, n_boot=300)
    d = diffs["ddpo"]["semantic_diversity"]
    assert d["n"] == 30
    assert d["diff"] == pytest.approx(0.10, abs=0.01)
    assert 0.0 < d["low"] < d["diff"] < d["high"]
    md_path = run_report([eval_dir], tmp_path / "r", n_boot=300)
    assert "+0.10" in (tmp_path / "r" / "report.md").read_text()
    assert md_path.is_file()


def test_baseline_choice(tmp_path):
    eval_dir = _eval_dir(tmp_path / "eval", {"gold": 0.5, "smollm2-ddpo": 0.4, "smollm2-dpo": 0.3}, True)
    systems = load_systems([eval_dir])
    assert choose_baseline(systems, None).name == "smollm2-dpo"  # not the ddpo one
    assert choose_baseline(systems, "smollm2-ddpo").name == "smollm2-ddpo"
    with pytest.raises(ConfigError, match="not among"):
        choose_baseline(systems, "nope")
    other = load_systems([_eval_dir(tmp_path / "e2", {"gold": 0.5, "base": 0.2}, True)])
    assert choose_baseline(other, None).name == "base"  # first non-gold system


def test_same_system_in_two_folders_is_kept_apart(tmp_path):
    a = _eval_dir(tmp_path / "run_a", {"dpo": 0.3, "gold": 0.5}, True)
    b = _eval_dir(tmp_path / "run_b", {"dpo": 0.35, "gold": 0.5}, True, seed=1)
    names = [s.name for s in load_systems([a, b])]
    assert names == ["dpo [run_a]", "gold [run_a]", "dpo [run_b]", "gold [run_b]"]


def test_missing_metric_is_reported(tmp_path):
    eval_dir = _eval_dir(tmp_path / "eval", {"dpo": 0.3}, True)
    table = json.loads((eval_dir / "metrics.json").read_text())
    del table["dpo"]["self_bleu"]
    write_json(eval_dir / "metrics.json", table)
    with pytest.raises(InputError, match="self_bleu"):
        load_systems([eval_dir])


def test_report_cli(tmp_path):
    from typer.testing import CliRunner

    from divtune.cli import app

    eval_dir = _eval_dir(tmp_path / "eval", {"base": 0.3, "tuned": 0.4}, with_quality=True)
    result = CliRunner().invoke(app, ["report", str(eval_dir), "--output", str(tmp_path / "r"), "--baseline", "tuned",
                                      "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    assert "Paired difference against tuned" in (tmp_path / "r" / "report.md").read_text()
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere"), "--output", str(tmp_path / "r2")])
    assert bad.exit_code != 0


def _eval_from_values(root: Path, values: dict[str, dict[int, float | None]]) -> Path:
    """An evaluation folder whose semantic diversity per prompt is given exactly (other metrics = 0.5)."""
    table, lines = {}, []
    for name, per_prompt in values.items():
        for p, v in per_prompt.items():
            row = {key: 0.5 for key in METRIC_KEYS}
            row["semantic_diversity"] = v
            lines.append({"system": name, "prompt_id": p, "n_samples": 4, **row})
        defined = [v for v in per_prompt.values() if v is not None]
        entry = {key: 0.5 for key in METRIC_KEYS} | {f"{key}_ci": [0.5, 0.5] for key in METRIC_KEYS}
        entry["semantic_diversity"] = float(np.mean(defined))
        entry["n_prompts"], entry["n_samples"] = len(per_prompt), 4 * len(per_prompt)
        table[name] = entry
    write_json(root / "metrics.json", table)
    write_jsonl(root / "per_prompt.jsonl", lines)
    return root


def test_pool_seeds_averages_each_prompt_over_runs(tmp_path):
    from divtune.reporting.systems import pool_seeds

    eval_dir = _eval_from_values(
        tmp_path / "eval",
        {
            "dpo-s0": {0: 0.2, 1: 0.4, 2: None, 3: 0.9},
            "dpo-s1": {0: 0.4, 1: 0.6, 2: 0.8},  # never saw prompt 3: it is left out of the pool
        },
    )
    (pooled,) = pool_seeds(load_systems([eval_dir]), {"dpo": ["dpo-s0", "dpo-s1"]}, n_boot=200)
    assert pooled.name == "dpo"
    assert sorted(pooled.per_prompt) == ["0", "1", "2"]
    assert pooled.per_prompt["0"]["semantic_diversity"] == pytest.approx(0.3)
    assert pooled.per_prompt["1"]["semantic_diversity"] == pytest.approx(0.5)
    assert pooled.per_prompt["2"]["semantic_diversity"] == pytest.approx(0.8)  # the undefined run is left out
    assert pooled.metrics["semantic_diversity"] == pytest.approx((0.3 + 0.5 + 0.8) / 3)
    low, high = pooled.metrics["semantic_diversity_ci"]
    assert 0.3 - 1e-9 <= low <= pooled.metrics["semantic_diversity"] <= high <= 0.8 + 1e-9
    assert pooled.metrics["n_prompts"] == 3 and pooled.metrics["n_seeds"] == 2 and pooled.metrics["n_samples"] == 28
    with pytest.raises(ConfigError, match="not found"):
        pool_seeds(load_systems([eval_dir]), {"ddpo": ["ddpo-s0"]})
    with pytest.raises(ConfigError, match="already a system"):
        pool_seeds(load_systems([eval_dir]), {"dpo-s0": ["dpo-s1"]})


def test_each_system_against_its_own_baseline_and_pooled_over_seeds(tmp_path):
    prompts = range(20)
    eval_dir = _eval_from_values(
        tmp_path / "eval",
        {
            "dpo-s0": {p: 0.30 + 0.01 * p for p in prompts},
            "dpo-s1": {p: 0.32 + 0.01 * p for p in prompts},
            "ddpo-s0": {p: 0.40 + 0.01 * p for p in prompts},
            "ddpo-s1": {p: 0.36 + 0.01 * p for p in prompts},
            "dpo-cap-s0": {p: 0.50 for p in prompts},
            "ddpo-cap-s0": {p: 0.45 for p in prompts},
        },
    )
    comparisons = {"ddpo": "dpo", "ddpo-s0": "dpo-s0", "ddpo-s1": "dpo-s1", "ddpo-cap-s0": "dpo-cap-s0"}
    groups = {"dpo": ["dpo-s0", "dpo-s1"], "ddpo": ["ddpo-s0", "ddpo-s1"]}
    run_report([eval_dir], tmp_path / "r", baseline="dpo", n_boot=200, comparisons=comparisons, seed_groups=groups)

    saved = json.loads((tmp_path / "r" / "paired_differences.json").read_text())
    assert set(saved) == set(comparisons)
    assert saved["ddpo-cap-s0"]["baseline"] == "dpo-cap-s0"
    sem = {name: saved[name]["metrics"]["semantic_diversity"] for name in saved}
    assert sem["ddpo-s0"]["diff"] == pytest.approx(0.10)
    assert sem["ddpo-s1"]["diff"] == pytest.approx(0.04)
    assert sem["ddpo"]["diff"] == pytest.approx(0.07)  # seed-means paired per prompt
    assert sem["ddpo-cap-s0"]["diff"] == pytest.approx(-0.05)  # against dpo-cap, not dpo
    assert sem["ddpo"]["n"] == 20
    # Pooled against pooled: seeds paired (s0 - s0 = 0.10, s1 - s1 = 0.04, the same on every prompt),
    # so only the seed draw moves the resampled mean: the interval spans the two seeds' differences.
    assert sem["ddpo"]["n_seeds"] == 2
    assert sem["ddpo"]["low"] == pytest.approx(0.04) and sem["ddpo"]["high"] == pytest.approx(0.10)
    assert "n_seeds" not in sem["ddpo-s0"]  # one run against one run: prompts only
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## Paired differences" in md and "ddpo-cap-s0 − dpo-cap-s0" in md and "+0.070" in md
    assert "dpo = mean of dpo-s0 + dpo-s1" in md
    with pytest.raises(ConfigError, match="not among"):
        run_report([eval_dir], tmp_path / "r2", comparisons={"ddpo-s0": "nope"})


def test_report_cli_compare_and_pool(tmp_path):
    from typer.testing import CliRunner

    from divtune.cli import app

    eval_dir = _eval_from_values(
        tmp_path / "eval",
        {"a-s0": {0: 0.1, 1: 0.2}, "a-s1": {0: 0.3, 1: 0.4}, "b-s0": {0: 0.5, 1: 0.5}, "b-s1": {0: 0.5, 1: 0.5}},
    )
    args = ["report", str(eval_dir), "--output", str(tmp_path / "r"), "--bootstrap", "50",
            "--pool", "a=a-s0,a-s1", "--pool", "b=b-s0,b-s1", "--compare", "b=a"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r" / "paired_differences.json").read_text())
    assert list(saved) == ["b"] and saved["b"]["metrics"]["semantic_diversity"]["diff"] == pytest.approx(0.25)
    bad = CliRunner().invoke(app, ["report", str(eval_dir), "--output", str(tmp_path / "r3"), "--compare", "b"])
    assert bad.exit_code != 0 and isinstance(bad.exception, ConfigError) and "NAME=VALUE" in str(bad.exception)


def _assert_close(got, want):
    """Nested dicts and lists equal, numbers to 1e-9."""
    if isinstance(want, dict):
        assert set(got) == set(want)
        for key in want:
            _assert_close(got[key], want[key])
    elif isinstance(want, list):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            _assert_close(g, w)
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-9, nan_ok=True)
    else:
        assert got == want


def test_pooled_differences_carry_seed_level_intervals_and_interactions_are_reported(tmp_path):
    """3 seeds x 10 prompts: each pooled difference keeps its crossed bootstrap and adds the t over seed
    means and the nested bootstrap; an interaction (A − B at b) − (A − B at 0) is computed seed by seed."""
    from scipy import stats

    from divtune import statistics as metrics

    rng = np.random.default_rng(4)
    prompts = range(10)
    shift = {"dpo-b": 0.0, "ddpo-b": 0.05, "dpo-0": 0.01, "ddpo-0": 0.02}
    values = {f"{name}-s{s}": {p: float(0.6 + shift[name] + rng.normal(0, 0.02)) for p in prompts}
              for name in shift for s in range(3)}
    eval_dir = _eval_from_values(tmp_path / "eval", values)
    groups = {name: [f"{name}-s{s}" for s in range(3)] for name in shift}
    comparisons = {"ddpo-b": "dpo-b", "ddpo-0": "dpo-0"}
    interactions = {"sem-x-b": {"system": "ddpo-b", "baseline": "dpo-b", "system_control": "ddpo-0",
                                "baseline_control": "dpo-0"}}
    run_report([eval_dir], tmp_path / "r", n_boot=300, comparisons=comparisons, seed_groups=groups,
               interactions=interactions)

    grid = lambda name: np.array([[values[f"{name}-s{s}"][p] for p in prompts] for s in range(3)])  # noqa: E731
    saved = json.loads((tmp_path / "r" / "paired_differences.json").read_text())
    sem = saved["ddpo-b"]["metrics"]["semantic_diversity"]
    diff = grid("ddpo-b") - grid("dpo-b")
    means = diff.mean(axis=1)
    assert sem["seed_t"]["seed_means"] == pytest.approx(means.tolist())
    t_low, t_high = stats.t.interval(0.95, 2, loc=means.mean(), scale=means.std(ddof=1) / np.sqrt(3))
    assert (sem["seed_t"]["low"], sem["seed_t"]["high"]) == pytest.approx((t_low, t_high))
    assert sem["interval"].startswith("crossed bootstrap")
    _assert_close(sem, json.loads(json.dumps(metrics.seed_level_difference(diff, n_boot=300))))
    assert "seed_nested_bootstrap" in sem

    inter = json.loads((tmp_path / "r" / "interactions.json").read_text())["sem-x-b"]
    assert inter["terms"]["system_control"] == "ddpo-0" and inter["n_seeds"] == 3
    expected = metrics.interaction_difference(grid("ddpo-b"), grid("dpo-b"), grid("ddpo-0"), grid("dpo-0"), n_boot=300)
    _assert_close(inter["metrics"]["semantic_diversity"], json.loads(json.dumps(expected)))
    assert inter["metrics"]["semantic_diversity"]["diff"] == pytest.approx(
        ((grid("ddpo-b") - grid("dpo-b")) - (grid("ddpo-0") - grid("dpo-0"))).mean())
    md = (tmp_path / "r" / "report.md").read_text()
    for title in ("## Seed-level intervals: Student t over the seed means", "## Seed-level intervals: nested bootstrap",
                  "## Interactions: crossed bootstrap", "## Interactions: Student t over the seed means"):
        assert title in md, title
    assert "sem-x-b: (ddpo-b − dpo-b) − (ddpo-0 − dpo-0)" in md
    assert f"{sem['seed_t']['diff']:+.3f} [{sem['seed_t']['low']:+.3f}, {sem['seed_t']['high']:+.3f}]" in md
    with pytest.raises(ConfigError, match="different numbers of seeds"):
        run_report([eval_dir], tmp_path / "r2", seed_groups={**groups, "dpo-0": ["dpo-0-s0"]}, comparisons=comparisons,
                   interactions=interactions)
    with pytest.raises(ConfigError, match="names no system"):
        run_report([eval_dir], tmp_path / "r3", interactions={"x": {**interactions["sem-x-b"], "baseline": "zzz"}})


def test_report_cli_interaction_and_a_report_without_seeds_has_no_seed_tables(tmp_path):
    from typer.testing import CliRunner

    from divtune.cli import app

    eval_dir = _eval_from_values(tmp_path / "eval", {n: {0: v, 1: v + 0.1} for n, v in
                                                     {"a1": 0.5, "b1": 0.4, "a0": 0.3, "b0": 0.3}.items()})
    result = CliRunner().invoke(app, ["report", str(eval_dir), "--output", str(tmp_path / "r"), "--bootstrap", "50",
                                      "--baseline", "b1", "--interaction", "x=a1,b1,a0,b0"])
    assert result.exit_code == 0, result.output
    inter = json.loads((tmp_path / "r" / "interactions.json").read_text())["x"]
    assert inter["metrics"]["semantic_diversity"]["diff"] == pytest.approx(0.1)  # (0.5 - 0.4) - (0.3 - 0.3)
    assert inter["metrics"]["semantic_diversity"]["seed_t"]["n_seeds"] == 1  # one run each: no t interval
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Seed-level intervals" not in md and "## Interactions: crossed bootstrap" in md
    bad = CliRunner().invoke(app, ["report", str(eval_dir), "--output", str(tmp_path / "r2"), "--interaction", "x=a1,b1"])
    assert bad.exit_code != 0 and "four systems" in str(bad.exception)
