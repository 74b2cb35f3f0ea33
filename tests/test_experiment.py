"""Stage runner semantics (skip finished, redo changed or killed stages) and the
quickstart smoke run, which checks every artefact of the main job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from divtune.experiment import ExperimentConfig, Stage, run_stages, summary_table
from divtune.quickstart import quickstart_config


def _counting_stage(directory: Path, config: dict, calls: list, fail: bool = False) -> Stage:
    def work():
        calls.append(directory.name)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "out.txt").write_text("x")
        if fail:
            raise KeyboardInterrupt("killed halfway")

    return Stage(directory.name, directory, config, work)


def test_finished_stage_is_reused_and_changed_stage_redone(tmp_path):
    calls: list = []
    run_stages([_counting_stage(tmp_path / "a", {"k": 1}, calls), _counting_stage(tmp_path / "b", {"k": 1}, calls)])
    run_stages([_counting_stage(tmp_path / "a", {"k": 1}, calls), _counting_stage(tmp_path / "b", {"k": 2}, calls)])
    assert calls == ["a", "b", "b"]
    run_stages([_counting_stage(tmp_path / "a", {"k": 1}, calls)], fresh=True)
    assert calls == ["a", "b", "b", "a"]
    assert _counting_stage(tmp_path / "a", {"k": 1}, calls).recorded_seconds() >= 0.0
    assert _counting_stage(tmp_path / "never-run", {}, calls).recorded_seconds() == 0.0


def test_killed_stage_is_not_marked_done_and_is_redone(tmp_path):
    calls: list = []
    with pytest.raises(KeyboardInterrupt):
        run_stages([_counting_stage(tmp_path / "a", {}, calls, fail=True)])
    assert (tmp_path / "a" / "out.txt").exists() and not (tmp_path / "a" / ".divtune-done.json").exists()
    run_stages([_counting_stage(tmp_path / "a", {}, calls)])
    assert calls == ["a", "a"] and (tmp_path / "a" / ".divtune-done.json").exists()


def test_quickstart_preset_and_overrides_validate():
    cfg = quickstart_config("/tmp/x", "smoke", ["train.training.max_steps=3", "seeds=[1,2]"])
    assert cfg.output == "/tmp/x" and cfg.seeds == [1, 2] and cfg.train["training"]["max_steps"] == 3
    assert [s.method for s in cfg.systems] == ["base", "dpo", "ddpo"]
    with pytest.raises(Exception, match="nonsense"):
        quickstart_config(None, "smoke", ["nonsense=1"])


def test_experiment_config_shipped_in_repo_validates():
    from divtune.experiment import build_stages

    path = Path(__file__).parents[1] / "configs" / "experiments" / "wp_smollm2.yaml"
    cfg = ExperimentConfig.load(path, output="/tmp/never-written")
    stages, paths = build_stages(cfg)
    names = [s.name for s in stages]
    for system in ("base", "sft", "dpo", "ddpo-sem", "ddpo-sty", "ddpo-both", "orpo", "dorpo-both", "divpo", "dqo", "darling"):
        assert f"generate {system}" in names
    assert names[-2:] == ["evaluate", "report"]
    assert not Path("/tmp/never-written").exists()


def test_summary_table_shows_missing_values():
    table = summary_table({"dpo": {"quality": 0.5, "semantic_diversity": None}})
    assert "dpo" in table and "0.500" in table and "—" in table


@pytest.mark.slow
def test_quickstart_smoke_writes_every_artefact(tmp_path):
    from divtune.quickstart import run_quickstart

    out = tmp_path / "qs"
    result = run_quickstart(str(out), "smoke")
    for variant in ("train.jsonl", "test.jsonl", "responses.jsonl", "summary.json", "config.yaml"):
        assert (out / "data" / "both" / variant).is_file(), variant
    for system in ("dpo", "ddpo"):
        model_dir = out / "models" / system
        assert (model_dir / "adapter_config.json").is_file() and (model_dir / "config.yaml").is_file()
        assert any(model_dir.glob("checkpoint-*")), "checkpoints are kept for resuming"
    for system in ("base", "dpo", "ddpo"):
        lines = (out / "generations" / system / "generations.jsonl").read_text().splitlines()
        assert len(lines) == 4 * len({json.loads(line)["prompt_id"] for line in lines}) > 0
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"base", "dpo", "ddpo", "gold"}
    required = {
        "semantic_diversity", "style_diversity", "vendi_semantic", "distinct_1", "distinct_2", "distinct_3",
        "distinct_4", "self_bleu", "compression_ratio", "quality", "effective_semantic_diversity",
        "n_prompts", "n_samples",
    }
    for system, values in metrics.items():
        assert required <= set(values), (system, required - set(values))
        assert values["quality"] is not None
    report = out / "report"
    assert (report / "report.html").is_file() and (report / "report.md").is_file()
    assert len(list(report.glob("*.png"))) >= 3
    assert result["report_html"] == str(report / "report.html")
    # A second run reuses every finished stage.
    again = run_quickstart(str(out), "smoke")
    assert all(seconds == 0.0 for seconds in again["timings"].values())
    run_record = json.loads((out / "run.json").read_text())
    assert run_record["total_stage_seconds"] > 0 and run_record["versions"]["trl"]
