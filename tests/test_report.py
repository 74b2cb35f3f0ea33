"""divtune report: files, embedded images, baseline choice, paired differences."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from divtune.config import ConfigError
from divtune.evaluate import METRIC_KEYS
from divtune.io import InputError, write_json, write_jsonl
from divtune.report import PLOTS, choose_baseline, load_systems, paired_differences, run_report

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
