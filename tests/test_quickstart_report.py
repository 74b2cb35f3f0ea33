"""Issue 24.3: the quickstart does not mislead. It compares samples with length-matched gold,
its tables mark quality as not measurable when the report greys it out, its report says in a
box that a demonstration-sized run is not evidence (linking the recorded results), and the
report shows 3 samples of each system."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from test_quality_status import ABOVE_CHANCE, AT_CHANCE
from test_report import _eval_dir

from divtune.commands.evaluate import evaluate_table
from divtune.experiments import build_stages, demonstration_caveat
from divtune.io import write_json, write_jsonl
from divtune.quality_status import quality_status
from divtune.quickstart import quickstart_config
from divtune.reporting.document import RESULTS_INDEX
from divtune.reporting.run import run_report
from divtune.reporting.tables import summary_table

SYSTEMS = {"base": 0.2, "dpo": 0.30, "ddpo": 0.40, "gold": 0.50}


def _stage(cfg, name):
    stages, _ = build_stages(cfg)
    return next(stage for stage in stages if stage.name == name)


def test_the_quickstart_compares_samples_with_length_matched_gold(tmp_path):
    for preset in ("default", "smoke"):
        evaluate = _stage(quickstart_config(str(tmp_path / preset), preset), "evaluate")
        assert evaluate.config["gold_matched"] == "smollm2", preset


def _with_generations(eval_dir: Path, n_prompts: int = 2, n_samples: int = 4) -> dict[str, list[Path]]:
    """Generation files for the non-gold systems, named in the evaluation's config.yaml as evaluate does."""
    files = []
    for name in SYSTEMS:
        if name == "gold":
            continue
        path = eval_dir.parent / "gen" / f"{name}.jsonl"
        write_jsonl(path, [{"prompt_id": f"p{p}", "prompt": f"Prompt {p}.", "sample_index": i, "model": name,
                            "text": f"{name} story {i} for prompt {p}."}
                           for p in range(n_prompts) for i in range(n_samples)])
        files.append(path)
    config_path = eval_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    config_path.write_text(yaml.safe_dump({**config, "output": str(eval_dir), "generations": [str(f) for f in files]}))
    return files


def _at_chance(eval_dir: Path, reward_metrics) -> Path:
    reward_dir = eval_dir.parent / "reward"
    write_json(reward_dir / "metrics.json", reward_metrics)
    (eval_dir / "config.yaml").write_text(yaml.safe_dump({"output": str(eval_dir), "reward": str(reward_dir)}))
    return eval_dir


def test_the_printed_tables_mark_quality_when_the_report_greys_it_out(tmp_path):
    eval_dir = _at_chance(_eval_dir(tmp_path / "eval", SYSTEMS, with_quality=True), AT_CHANCE)
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    status = quality_status([eval_dir])
    for table in (summary_table(metrics, quality=status), evaluate_table(metrics, str(eval_dir))):
        header, *rows = table.splitlines()
        assert "quality †" in header
        dpo = next(row for row in rows if row.startswith("dpo "))
        assert re.search(r"0\.\d{3} †", dpo)
        assert table.splitlines()[-1] == status.footnote
        assert "quality not measurable here: reward model held-out pairwise accuracy 0.490" in table
    # A reward model that beats chance: nothing marked.
    (tmp_path / "reward" / "metrics.json").write_text(json.dumps(ABOVE_CHANCE))
    assert "†" not in evaluate_table(metrics, str(eval_dir))


def test_the_quickstart_report_opens_with_the_caveat_and_shows_samples(tmp_path):
    cfg = quickstart_config(str(tmp_path / "qs"), "default")
    eval_dir = _eval_dir(tmp_path / "qs" / "eval", SYSTEMS, with_quality=False, n_prompts=6)
    _with_generations(eval_dir)
    report = _stage(cfg, "report")
    assert report.config["demonstration"] is True
    report.run()
    md = (tmp_path / "qs" / "report" / "report.md").read_text()
    page = (tmp_path / "qs" / "report" / "report.html").read_text()
    caveat = ("This is a demonstration of the pipeline, not evidence: each model trained 8 steps of 2 pairs and is "
              "evaluated on 6 prompts")
    assert caveat in md.split("## Metrics")[0] and caveat in page.split("<h2>Metrics</h2>")[0]
    assert '<div class="caveat">' in page
    link = re.search(r'<div class="caveat">.*?<a href="([^"]+)">docs/results/README.md</a>', page).group(1)
    assert (tmp_path / "qs" / "report" / link).resolve() == RESULTS_INDEX.resolve() and RESULTS_INDEX.is_file()
    # Three samples of each generated system, for the prompt they share.
    samples = md.split("## Samples")[1].split("## Plots")[0]
    for name in ("base", "dpo", "ddpo"):
        block = samples.split(f"### {name}\n")[1].split("###")[0]
        assert re.findall(r"^\d\. (.*)$", block, re.M) == [f"{name} story {i} for prompt 0." for i in range(3)]
    assert page.count('<li class="sample">') == 9


def test_a_report_without_a_caveat_has_no_box(tmp_path):
    eval_dir = _eval_dir(tmp_path / "eval", SYSTEMS, with_quality=False)
    run_report([eval_dir], tmp_path / "report", n_boot=50)
    assert "Caveat" not in (tmp_path / "report" / "report.md").read_text()
    assert 'class="caveat"' not in (tmp_path / "report" / "report.html").read_text()


def test_the_caveat_gives_the_runs_size(tmp_path):
    eval_dir = _eval_dir(tmp_path / "eval", SYSTEMS, with_quality=False, n_prompts=3)
    cfg = quickstart_config(str(tmp_path / "qs"), "smoke")
    assert "each model trained 2 steps of 2 pairs and is evaluated on 3 prompts" in demonstration_caveat(cfg, eval_dir)
