"""Stage runner semantics (skip finished, redo changed or killed stages) and the
quickstart smoke run, which checks every artefact of the main job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from divtune.experiments import ExperimentConfig, Stage, run_stages
from divtune.quickstart import quickstart_config
from divtune.reporting.tables import summary_table


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
    from divtune.experiments import build_stages

    path = Path(__file__).parents[1] / "configs" / "experiments" / "wp_smollm2.yaml"
    cfg = ExperimentConfig.load(path, output="/tmp/never-written")
    stages, paths = build_stages(cfg)
    names = [s.name for s in stages]
    for system in ("base", "sft", "dpo", "ddpo-sem", "ddpo-sty", "ddpo-both", "orpo", "dorpo-both", "divpo", "dqo", "darling"):
        assert f"generate {system}" in names
    assert names[-3:] == ["evaluate", "report", "diagnostics"]
    # Inference-only systems: the base model, sampled with another strategy, and no train stage.
    generate = {s.name: s for s in stages if s.name.startswith("generate ")}
    assert generate["generate base-iterative"].config["strategy"] == "iterative"
    assert generate["generate base-verbalized"].config["verbalized"]["unstructured"] == "one_response"
    assert generate["generate base"].config["strategy"] == "independent"
    assert generate["generate base-iterative"].config["model"] == cfg.model
    assert generate["generate base-iterative"].config["max_new_tokens"] == cfg.generate["max_new_tokens"]
    assert "train base-iterative" not in names
    assert not Path("/tmp/never-written").exists()


def test_speed_only_train_settings_leave_the_stage_fingerprints_alone():
    """Switching the frozen-prefix cache (or upgrading to a divtune that has it) reuses finished trainings."""
    from divtune.experiments import build_stages

    path = Path(__file__).parents[1] / "configs" / "experiments" / "typicality_modes.yaml"

    def train_fingerprints(*overrides):
        cfg = ExperimentConfig.load(path, overrides=list(overrides), output="/tmp/never-written")
        return {s.name: s.fingerprint for s in build_stages(cfg)[0] if s.name.startswith("train ")}

    default = train_fingerprints()
    assert len(default) == 6
    assert train_fingerprints("train.prefix_cache=false", "train.prefix_cache_dir=/elsewhere") == default
    changed = train_fingerprints("train.beta=0.2")
    assert all(changed[name] != default[name] for name in default)


def test_prefix_cache_is_turned_on_only_for_pairs_several_runs_share():
    from divtune.experiments import build_stages

    path = Path(__file__).parents[1] / "configs" / "experiments" / "typicality_modes.yaml"

    def prefix_settings(*overrides):
        cfg = ExperimentConfig.load(path, overrides=list(overrides), output="/tmp/never-written")
        return {s.name: s.run.__defaults__[0].prefix_cache for s in build_stages(cfg)[0] if s.name.startswith("train ")}

    # DPO and DDPO-both on the same pairs, 3 seeds: 6 runs share them.
    assert set(prefix_settings().values()) == {True}
    # One seed: 2 runs, under the break-even of 3: left to the run's own default (off).
    assert set(prefix_settings("seeds=[0]").values()) == {None}
    # An explicit setting is kept either way.
    assert set(prefix_settings("train.prefix_cache=false").values()) == {False}


def test_shared_train_settings_reach_only_the_methods_that_have_them():
    """A train block shared by DPO and SFT systems probes the DPO family and leaves SFT without
    probes and without DPO-only training keys, instead of failing SFT's stage hours into the run."""
    from divtune.experiments import build_stages
    from divtune.train import TrainConfig

    path = Path(__file__).parents[1] / "configs" / "experiments" / "wp_record.yaml"
    cfg = ExperimentConfig.load(path, output="/tmp/never-written")
    trains = {s.name: s.run.__defaults__[0] for s in build_stages(cfg)[0] if s.name.startswith("train ")}
    assert len(trains) == 9
    for name, tcfg in trains.items():
        probes = (tcfg.probe_pairs, tcfg.probe_heldout_pairs, tcfg.probe_steps)
        assert probes == ((0, 0, None) if name.startswith("train sft") else (32, 32, 45)), name
        assert ("precompute_ref_batch_size" in tcfg.training) == (not name.startswith("train sft")), name
        assert tcfg.training["num_train_epochs"] == 2 and tcfg.training["learning_rate"] == 2e-4, name
    # Asked of a method without probes directly, it is refused when the settings are read.
    with pytest.raises(ValueError, match="probe_heldout_pairs: probes are implemented for dpo, ddpo, divpo, not orpo"):
        TrainConfig(method="orpo", probe_heldout_pairs=4)
    assert TrainConfig(method="sft", probe_steps=5).probe_steps == 5  # when, without what: nothing to refuse
    with pytest.raises(ValueError, match="training.precompute_ref_batch_size: not a field of SFTConfig, which trains method sft"):
        TrainConfig(method="sft", training={"precompute_ref_batch_size": 16})
    assert TrainConfig(method="dpo", training={"precompute_ref_batch_size": 16}).training["precompute_ref_batch_size"] == 16
    assert TrainConfig(method="divpo", probe_pairs=4).probe_pairs == 4


def test_check_config_shrinks_every_stage_and_leaves_the_experiment_alone():
    from divtune.experiments import SystemSpec, build_stages, check_config

    path = Path(__file__).parents[1] / "configs" / "experiments" / "wp_smollm2.yaml"
    full = ExperimentConfig.load(path, overrides=["seeds=[3,4]"], output="/tmp/never-written")
    before = full.to_dict()
    check = check_config(full)
    assert full.to_dict() == before  # a copy: the full run's settings and fingerprints are untouched
    assert check.output == "/tmp/never-written-check" and check.seeds == [3]
    assert check_config(full, output="/tmp/elsewhere").output == "/tmp/elsewhere"
    stages = build_stages(check)[0]
    trains = {s.name: s.run.__defaults__[0] for s in stages if s.name.startswith("train ")}
    # Every training, including dqo and darling whose own block sets max_steps 6, makes 2 steps.
    assert len(trains) == 10 and "train dqo" in trains and "train darling" in trains
    for name, tcfg in trains.items():
        assert (tcfg.training["max_steps"], tcfg.training["save_steps"], tcfg.prefix_cache) == (2, 1, False), name
        assert tcfg.training["learning_rate"] == (1e-4 if name == "train sft" else 5e-5), name  # the rest is kept
    generate = [s.config for s in stages if s.name.startswith("generate ")]
    assert {(g["num_samples"], g["max_new_tokens"], g["max_prompts"]) for g in generate} == {(2, 8, 2)}
    assert {g["strategy"] for g in generate} == {"independent", "iterative", "verbalized"}
    assert next(s.config for s in stages if s.name == "evaluate")["bootstrap"] == 20
    assert next(s.config for s in stages if s.name == "reward model")["max_epochs"] == 1
    record = check_config(ExperimentConfig.load(path.with_name("wp_record.yaml"), output="/tmp/never-written"))
    probes = {(t.probe_pairs, t.probe_heldout_pairs, t.probe_steps)
              for s in build_stages(record)[0] if s.name.startswith("train ") and (t := s.run.__defaults__[0]).method != "sft"}
    assert probes == {(4, 4, 1)}
    assert check_config(ExperimentConfig.load(path.with_name("typicality.yaml"))).reward is None
    # What a system's own train block sets is shrunk too.
    own = record.model_copy(update={"systems": [
        SystemSpec(name="dpo", method="dpo", data="both", train={"probe_pairs": 64, "prefix_cache": True})]})
    tcfg = next(s for s in build_stages(check_config(own))[0] if s.name == "train dpo").run.__defaults__[0]
    assert (tcfg.probe_pairs, tcfg.prefix_cache, tcfg.training["max_steps"]) == (4, False, 2)
    assert not Path("/tmp/never-written-check").exists()


@pytest.mark.slow
def test_check_runs_every_stage_small_in_its_own_folder(tmp_path, tiny_lm_dir, monkeypatch, capsys):
    from _cli_support import run_cli

    config = tmp_path / "exp.yaml"
    config.write_text(json.dumps({
        "output": str(tmp_path / "run"), "model": str(tiny_lm_dir), "device": "cpu", "seeds": [0, 1],
        "prepare": {"inputs": ["shipped:wp_scored"], "max_prompts": 10, "test_fraction": 0.3, "min_words": 100},
        "data": {"both": {}}, "gold_data": "both", "reward": None,
        "train": {"max_length": 400, "precompute_ref": True, "probe_pairs": 8,
                  "training": {"num_train_epochs": 3, "per_device_train_batch_size": 2, "precompute_ref_batch_size": 8}},
        "systems": [{"name": "base", "method": "base"}, {"name": "dpo", "method": "dpo"}, {"name": "sft", "method": "sft"}],
        "generate": {"num_samples": 6, "max_new_tokens": 32}, "baseline": "dpo",
    }))
    code, output = run_cli(["experiment", str(config), "--check"], monkeypatch, capsys)
    assert code == 0, output
    assert "check passed: every stage ran at check size in" in output and f"(folder {tmp_path / 'run'}-check;" in output
    assert not (tmp_path / "run").exists()
    root = tmp_path / "run-check"
    for system in ("dpo", "sft"):
        state = json.loads((root / "models" / system / "checkpoint-2" / "trainer_state.json").read_text())
        assert state["global_step"] == 2 and not (root / "models" / system / "checkpoint-3").exists(), system
    probe_rows = [json.loads(line) for line in (root / "models" / "dpo" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_train_probe_rewards/accuracies" in row for row in probe_rows)
    for system in ("base", "dpo", "sft"):
        rows = [json.loads(line) for line in (root / "generations" / system / "generations.jsonl").read_text().splitlines()]
        assert len(rows) == 4 and len({r["prompt_id"] for r in rows}) == 2, system
    assert (root / "report" / "report.md").is_file()
    code, output = run_cli(["experiment", str(config), "--check", "--pack", str(tmp_path / "c.tar.gz")], monkeypatch, capsys)
    assert code == 2 and "it does not go with --pack" in output


def test_sigterm_stops_the_run_and_still_records_the_invocation(tmp_path, monkeypatch):
    """`kill PID` (a machine shutting down, a CI timeout, a background run) ends the run with exit
    code 143, and run.json still counts that invocation's wall time, like Ctrl-C does."""
    import os
    import signal
    import time

    import divtune.experiments.run
    from divtune.experiments import run_experiment

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the signal arrives first; without the handler pytest itself would be killed
        raise AssertionError("SIGTERM did not stop the stages")

    monkeypatch.setattr(divtune.experiments.run, "run_stages", killed)
    before = signal.getsignal(signal.SIGTERM)
    cfg = ExperimentConfig(output=str(tmp_path / "exp"), prepare={"inputs": ["shipped:wp_scored"]},
                           systems=[{"name": "base", "method": "base"}], baseline=None, reward=None)
    with pytest.raises(SystemExit) as stopped:
        run_experiment(cfg)
    assert stopped.value.code == 128 + signal.SIGTERM
    record = json.loads((tmp_path / "exp" / "run.json").read_text())
    assert [i["finished"] for i in record["invocations"]] == [False]
    assert 0 <= record["invocations"][0]["wall_seconds"] < 30
    assert signal.getsignal(signal.SIGTERM) is before  # the handler lives only while stages run


def test_stopped_parallel_run_stops_its_workers(tmp_path, monkeypatch):
    import subprocess
    import time

    import divtune.experiments.schedule
    from divtune.experiments import run_stages_parallel

    workers: list = []
    real_popen = subprocess.Popen

    def sleeper(command, **kwargs):
        workers.append(real_popen(["sleep", "60"]))
        return workers[-1]

    real_sleep, interrupts = time.sleep, []

    def interrupted(seconds):  # Ctrl-C once both workers run; later sleeps (waiting for them) are real
        if len(workers) == 2 and not interrupts:
            interrupts.append(1)
            raise KeyboardInterrupt
        real_sleep(min(seconds, 0.05))

    monkeypatch.setattr(divtune.experiments.schedule.subprocess, "Popen", sleeper)
    monkeypatch.setattr(divtune.experiments.schedule.time, "sleep", interrupted)
    stages = [Stage(name, tmp_path / name, {}, lambda: None) for name in ("a", "b")]
    (tmp_path / "config.yaml").write_text("{}")
    with pytest.raises(KeyboardInterrupt):
        run_stages_parallel(stages, tmp_path / "config.yaml", 2)
    assert len(workers) == 2 and all(w.poll() is not None for w in workers)


def test_summary_table_shows_missing_values():
    table = summary_table({"dpo": {"quality": 0.5, "semantic_diversity": None}})
    assert "dpo" in table and "0.500" in table and "—" in table


@pytest.mark.slow
def test_quickstart_smoke_writes_every_artefact(tmp_path):
    from divtune.quickstart import run_quickstart

    out = tmp_path / "qs"
    # Two stages at a time, each in its own worker process (the sequential path reruns it below).
    result = run_quickstart(str(out), "smoke", overrides=["jobs=2"])
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
    assert set(metrics) == {"base", "dpo", "ddpo", "gold", "gold-matched"}  # gold cut to the samples' length
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
    md = (report / "report.md").read_text()
    assert "> **Caveat.** This is a demonstration of the pipeline, not evidence: each model trained 2 steps" in md
    assert md.count("### ") >= 3 and "## Samples" in md
    assert result["table"].splitlines()[0].startswith("system")
    diagnostics = json.loads((out / "diagnostics" / "diagnostics.json").read_text())
    assert {name: run["steps"] for name, run in diagnostics["runs"].items()} == {"dpo": 2, "ddpo": 2}
    assert diagnostics["weights"]["both"]["n"] == len((out / "data" / "both" / "train.jsonl").read_text().splitlines())
    assert (out / "diagnostics" / "training_curves.png").is_file() and (out / "diagnostics" / "weights.png").is_file()
    # The workers ran at the same time: some two stages' [start, finish] intervals overlap.
    markers = [json.loads(p.read_text()) for p in out.glob("**/.divtune-done.json")]
    spans = sorted((m["finished_at"] - m["seconds"], m["finished_at"]) for m in markers if "finished_at" in m)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))
    assert {p.stem for p in (out / "logs").glob("*.log")} >= {"train_dpo", "generate_base", "evaluate"}
    # A second run, sequential, reuses every finished stage.
    again = run_quickstart(str(out), "smoke")
    assert all(seconds == 0.0 for seconds in again["timings"].values())
    run_record = json.loads((out / "run.json").read_text())
    assert run_record["total_stage_seconds"] > 0 and run_record["versions"]["trl"]
    assert [i["jobs"] for i in run_record["invocations"]] == [2, 1]
    assert run_record["wall_seconds_all_invocations"] >= run_record["wall_seconds_this_invocation"]


def _config(seeds, systems, baseline="dpo") -> ExperimentConfig:
    return ExperimentConfig.from_dict({"output": "/tmp/never-written", "seeds": seeds, "systems": systems, "baseline": baseline})


def test_report_comparisons_pair_runs_of_the_same_seed():
    from divtune.experiments import report_comparisons

    systems = [
        {"name": "dpo", "method": "dpo"},
        {"name": "ddpo", "method": "ddpo"},
        {"name": "dpo-cap", "method": "dpo"},
        {"name": "ddpo-cap", "method": "ddpo", "compare_to": "dpo-cap"},
    ]
    comparisons, groups = report_comparisons(_config([0, 1], systems))
    assert comparisons == {
        "ddpo": "dpo", "ddpo-s0": "dpo-s0", "ddpo-s1": "dpo-s1",
        "dpo-cap": "dpo", "dpo-cap-s0": "dpo-s0", "dpo-cap-s1": "dpo-s1",
        "ddpo-cap": "dpo-cap", "ddpo-cap-s0": "dpo-cap-s0", "ddpo-cap-s1": "dpo-cap-s1",
        "gold": "dpo",
    }
    assert groups == {s["name"]: [f"{s['name']}-s0", f"{s['name']}-s1"] for s in systems}
    # One seed, no compare_to: the report's default (everything against the baseline).
    assert report_comparisons(_config([0], systems[:2])) == (None, None)
    one_seed, no_groups = report_comparisons(_config([3], systems))
    assert one_seed["ddpo-cap"] == "dpo-cap" and one_seed["ddpo"] == "dpo" and no_groups is None
    with pytest.raises(ValueError, match="compare_to"):
        report_comparisons(_config([0], [{"name": "a", "method": "dpo", "compare_to": "zzz"}], baseline=None))
    with pytest.raises(ValueError, match="baseline"):
        report_comparisons(_config([0], systems, baseline="zzz"))


def test_lever_experiment_config_validates():
    from divtune.experiments import build_stages, report_comparisons

    path = Path(__file__).parents[1] / "configs" / "experiments" / "wp_smollm2_levers.yaml"
    cfg = ExperimentConfig.load(path, output="/tmp/never-written")
    names = [s.name for s in build_stages(cfg)[0]]
    assert {"prepare both", "prepare both-floor", "prepare cap24"} <= set(names)
    comparisons, groups = report_comparisons(cfg)
    assert comparisons["ddpo-both-cap24-s1"] == "dpo-cap24-s1" and comparisons["ddpo-both-floor"] == "dpo"
    assert set(groups) == {"dpo", "ddpo-both", "ddpo-both-floor", "dpo-cap24", "ddpo-both-cap24"}
    assert not Path("/tmp/never-written").exists()


def test_ready_stages_wait_for_the_stages_they_read(tmp_path):
    from divtune.experiments import ready_stages

    stages = [Stage(n, tmp_path / n, {}, lambda: None, after=a) for n, a in
              [("prep", ()), ("train a", ("prep",)), ("train b", ("prep", "train a")), ("gen", ("train a",))]]
    assert [s.name for s in ready_stages(stages, set(), set())] == ["prep"]
    assert [s.name for s in ready_stages(stages, {"prep"}, {"prep"})] == ["train a"]
    assert [s.name for s in ready_stages(stages, {"prep", "train a"}, {"prep", "train a"})] == ["train b", "gen"]


@pytest.mark.parametrize("name", ["typicality.yaml", "typicality_modes.yaml", "typicality_tune.yaml", "wp_smollm2.yaml",
                                  "typicality_mpnet.yaml", "typicality_mpnet_tune.yaml"])
def test_shipped_experiments_order_stages_after_what_they_read(name):
    from divtune.experiments import build_stages

    path = Path(__file__).parents[1] / "configs" / "experiments" / name
    if not path.is_file():
        pytest.fail(f"{path} is missing")
    stages, _ = build_stages(ExperimentConfig.load(path, output="/tmp/never-written"))
    seen: set[str] = set()
    for stage in stages:
        assert set(stage.after) <= seen, (stage.name, set(stage.after) - seen)  # listed order is a valid order
        seen.add(stage.name)
    trains = {s.name: s for s in stages if s.name.startswith("train ")}
    if "typicality" in name:
        for stage in trains.values():
            if stage.name.startswith("train ddpo"):
                # every DDPO run reads the reference log-probs its data's first DPO-family run cached
                assert any(a.startswith("train dpo") for a in stage.after), stage.name


def test_second_round_draft_starts_every_run_from_its_seeds_sft_and_measures_in_both_spaces():
    """typicality_mpnet.yaml: bias in mpnet, weights in MiniLM (+ stylometric), every preference run
    initialised from (and referenced to) the SFT adapter of its own seed, the interaction in the report."""
    from divtune.experiments import build_stages, report_interactions

    path = Path(__file__).parents[1] / "configs" / "experiments" / "typicality_mpnet.yaml"
    cfg = ExperimentConfig.load(path, output="/tmp/never-written")
    assert len(cfg.seeds) >= 5
    assert {f["embedder"] for f in cfg.typicality.values()} == {"mpnet"}
    assert {f["term"] for f in cfg.typicality.values()} == {"semantic"}
    assert {f["strength"] for f in cfg.typicality.values()} >= {0.0} and max(f["strength"] for f in cfg.typicality.values()) > 0
    for variant in cfg.data.values():
        assert variant["embedders"].get("semantic") == "minilm"  # the weights stay in the default space
    stages, _ = build_stages(cfg)
    trains = {s.name: s.run.__defaults__[0] for s in stages if s.name.startswith("train ")}
    for name, tcfg in trains.items():
        seed = name.rsplit("-s", 1)[1]
        if tcfg.method == "sft":
            assert tcfg.init is None
        else:
            assert tcfg.init == f"/tmp/never-written/models/sft-s{seed}", name
            assert f"train sft-s{seed}" in next(s for s in stages if s.name == name).after
    assert {t.method for t in trains.values()} == {"sft", "dpo", "ddpo"}
    evaluate = next(s for s in stages if s.name == "evaluate").config
    assert evaluate["embedders"]["semantic"] == "mpnet" and evaluate["extra_semantic"] == {"minilm": "minilm"}
    assert evaluate["centrality"] is True
    report = next(s for s in stages if s.name == "report").config
    assert report["interactions"] == report_interactions(cfg)
    assert report["interactions"]["sem-x-b"] == {
        "system": "ddpo-sem-bX", "baseline": "dpo-bX", "system_control": "ddpo-sem-b0", "baseline_control": "dpo-b0"}
    with pytest.raises(ValueError, match="not one of the systems"):
        report_interactions(cfg.model_copy(update={"interactions": {"x": {**cfg.interactions["sem-x-b"], "baseline": "zzz"}}}))
    with pytest.raises(ValueError, match="give exactly"):
        report_interactions(cfg.model_copy(update={"interactions": {"x": {"system": "dpo-bX"}}}))
    # Experiments without interactions keep their report stage's fingerprint.
    old = ExperimentConfig.load(path.with_name("typicality.yaml"), output="/tmp/never-written")
    assert "interactions" not in next(s for s in build_stages(old)[0] if s.name == "report").config


def test_run_record_keeps_each_invocations_commit(tmp_path, monkeypatch):
    """A run resumed under newer code says which commit ran each sitting, not only the latest."""
    import divtune.experiments.record as record_module

    stage = Stage("evaluate", tmp_path / "eval", {}, lambda: None)
    for commit in ("a" * 40, "b" * 40):
        environment = {"command": "divtune experiment x.yaml", "commit": commit, "versions": {}}
        monkeypatch.setattr(record_module, "environment_record", lambda environment=environment: dict(environment))
        record_module.write_run_record(tmp_path, [stage], "2026-12-07T00:00:00Z", 1.0, 1, finished=False)
    record = json.loads((tmp_path / record_module.RUN_RECORD).read_text())
    assert [i["commit"] for i in record["invocations"]] == ["a" * 40, "b" * 40]
    assert record["commit"] == "b" * 40
