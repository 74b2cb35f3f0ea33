"""The output-folder rule (docs/outputs.md), for every stage: a finished run with
the same settings is reused; other settings are refused, and --overwrite replaces
them without touching the user's files; a folder of files divtune did not write,
or another stage's run, is refused; a failed run leaves nothing behind."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import build_tiny_tokenizer, write_jsonl
from divtune.config import ConfigError
from divtune.io import read_stage_done
from divtune.outputs import RUN_MARKER, claim_output_dir, claim_output_file

# --------------------------------------------------------------------------- the rule itself


def test_claim_states(tmp_path):
    out = tmp_path / "out"
    assert claim_output_dir(out, "prepare", {"a": 1}).state == "new"
    claim = claim_output_dir(out, "prepare", {"a": 1})
    claim.begin()
    (out / "train.jsonl").write_text("x\n")
    assert claim_output_dir(out, "prepare", {"a": 1}).state == "continue"  # started, not finished
    claim.finish({"pairs": 3})
    assert read_stage_done(out)["stage"] == "prepare" and read_stage_done(out)["pairs"] == 3
    assert claim_output_dir(out, "prepare", {"a": 1}).state == "reuse"
    with pytest.raises(ConfigError) as err:
        claim_output_dir(out, "prepare", {"a": 2})
    assert str(err.value) == (
        f"{out}: holds a finished prepare run with other settings (a: 1 -> 2); "
        "pass --overwrite to replace it, or choose another --output"
    )
    replace = claim_output_dir(out, "prepare", {"a": 2}, overwrite=True)
    assert replace.state == "replace"
    (out / "notes.txt").write_text("mine")
    replace.begin()
    assert sorted(p.name for p in out.iterdir()) == [RUN_MARKER, "notes.txt"]  # only prepare's files went
    with pytest.raises(ConfigError, match=r"holds an unfinished prepare run; a train run needs its own --output"):
        claim_output_dir(out, "train", {"a": 2}, overwrite=True)


def test_changed_inputs_count_as_changed_settings(tmp_path):
    from divtune.outputs import stamped

    source = tmp_path / "in.jsonl"
    source.write_text("1\n")
    claim = claim_output_dir(tmp_path / "out", "evaluate", stamped({}, [source]))
    claim.begin()
    claim.finish()
    assert claim_output_dir(tmp_path / "out", "evaluate", stamped({}, [source])).state == "reuse"
    source.write_text("1\n2\n")
    with pytest.raises(ConfigError, match=rf"other settings \(inputs changed: {source}\)"):
        claim_output_dir(tmp_path / "out", "evaluate", stamped({}, [source]))


def test_single_file_rule(tmp_path):
    out = tmp_path / "g.jsonl"
    sidecar = tmp_path / "g.jsonl.config.yaml"
    sidecar.write_text("seed: 1\n")
    assert claim_output_file(out, {"seed": 2}, ["seed"]) == "new"  # a config without samples: go ahead
    out.write_text('{"x": 1}\n')
    assert claim_output_file(out, {"seed": 1}, ["seed"]) == "continue"
    with pytest.raises(ConfigError, match=r"g.jsonl: was written with other settings \(seed: 1 -> 2\)"):
        claim_output_file(out, {"seed": 2}, ["seed"])
    assert claim_output_file(out, {"seed": 2}, ["seed"], overwrite=True) == "replace"
    sidecar.unlink()
    with pytest.raises(ConfigError, match="was not written by divtune"):
        claim_output_file(out, {"seed": 1}, ["seed"], overwrite=True)


# --------------------------------------------------------------------------- every stage


WORDS = "the a dragon ran and she said quietly night I was sea light door".split()


def _story(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)) + "."


def _pools_file(root: Path) -> Path:
    if (root / "pools.jsonl").is_file():  # written once: a rewrite would be a changed input
        return root / "pools.jsonl"
    rng = random.Random(0)
    rows = [{"prompt": f"Prompt {p}", "responses": [_story(rng, 8 + i) for i in range(5)], "scores": [1, 3, 8, 20, 2]}
            for p in range(8)]
    return write_jsonl(root / "pools.jsonl", rows)


def _pairs_file(root: Path) -> Path:
    if (root / "train.jsonl").is_file():
        return root
    rng = random.Random(1)
    rows = []
    for p in range(6):
        for k in range(2):
            good = " ".join(rng.choice(["dragon", "light", "music"]) for _ in range(5))
            bad = " ".join(rng.choice(["sea", "hills", "door"]) for _ in range(5))
            rows.append({"pool_id": f"p{p}", "prompt": "Write a story.", "chosen": good, "rejected": bad,
                         "score_chosen": 5, "score_rejected": 1, "quality_chosen": 0.5, "quality_rejected": -0.5,
                         "weight": 1.0})
    write_jsonl(root / "train.jsonl", rows)
    write_jsonl(root / "test.jsonl", rows[:4])
    return root


def _generations(root: Path, name: str) -> Path:
    if (root / f"{name}.jsonl").is_file():
        return root / f"{name}.jsonl"
    rng = random.Random(len(name))
    return write_jsonl(root / f"{name}.jsonl", [
        {"prompt_id": f"p{p}", "prompt": f"Write about {p}.", "sample_index": i, "text": _story(rng, 12), "model": name}
        for p in range(4) for i in range(3)
    ])


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, max_position_embeddings=64))
    directory = tmp_path_factory.mktemp("tiny_bert")
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


@dataclass
class Stage:
    name: str
    #: (inputs folder, output, variant "a" or "b", overwrite) -> runs the stage
    run: Callable[[Path, Path, str, bool], Any]
    #: a file the stage writes (its modification time tells whether a rerun rewrote it)
    product: str


def _prepare(inputs, out, variant, overwrite):
    from divtune.prepare import PrepareConfig, run_prepare

    cfg = PrepareConfig(inputs=[str(_pools_file(inputs))], output=str(out), min_words=5 if variant == "a" else 6,
                        embedders={"style": "stylometric"}, cache_dir=str(inputs / "cache"), show_progress=False)
    return run_prepare(cfg, overwrite=overwrite)


def _typicality(inputs, out, variant, overwrite):
    from divtune.typicality import TypicalityConfig, run_typicality

    cfg = TypicalityConfig(inputs=[str(_pools_file(inputs))], output=str(out), term="mode", min_words=5,
                           strength=0.0 if variant == "a" else 0.5, show_progress=False)
    return run_typicality(cfg, overwrite=overwrite)


def _train(tiny_lm_dir):
    def run(inputs, out, variant, overwrite):
        from divtune.train import TrainConfig, run_train

        overrides = ["lora.r=2", "lora.alpha=4", "device=cpu", "report_to=[]", "save_strategy=no", "disable_tqdm=true",
                     "max_length=64", f"max_steps={1 if variant == 'a' else 2}", "per_device_train_batch_size=2",
                     "gradient_accumulation_steps=1"]
        cfg = TrainConfig.load(None, overrides, method="dpo", data=str(_pairs_file(inputs / "pairs")),
                               model=str(tiny_lm_dir), output=str(out))
        return run_train(cfg, overwrite=overwrite)
    return run


def _reward(tiny_bert):
    def run(inputs, out, variant, overwrite):
        from divtune.reward.config import RewardTrainConfig
        from divtune.reward.fit import train_reward_model

        cfg = RewardTrainConfig(data=str(_pairs_file(inputs / "pairs")), output=str(out), backbone=str(tiny_bert),
                                max_length=16, head_hidden=8, max_epochs=2 if variant == "a" else 3, patience=5,
                                bootstrap_samples=20, device="cpu", show_progress=False)
        return train_reward_model(cfg, overwrite=overwrite)
    return run


def _evaluate(inputs, out, variant, overwrite):
    from divtune.evaluation.config import EvaluateConfig
    from divtune.evaluation.run import run_evaluate

    gens = [str(_generations(inputs, "dpo")), str(_generations(inputs, "ddpo"))]
    cfg = EvaluateConfig(generations=gens, output=str(out), embedders={"semantic": "stylometric", "style": "stylometric"},
                         embed_cache_dir=str(inputs / "cache"), bootstrap=20 if variant == "a" else 30)
    return run_evaluate(cfg, overwrite=overwrite)


def _report(inputs, out, variant, overwrite):
    from divtune.reporting.run import run_report

    if not (inputs / "eval" / "metrics.json").is_file():
        _evaluate(inputs, inputs / "eval", "a", False)
    return run_report([inputs / "eval"], out, n_boot=20, seed=0 if variant == "a" else 1, overwrite=overwrite)


def _diagnostics(inputs, out, variant, overwrite):
    from divtune.reporting.diagnostics import run_diagnostics

    run = inputs / "exp" / "models" / "dpo"
    if not run.is_dir():
        write_jsonl(run / "metrics.jsonl", [{"step": i + 1, "loss": 0.69 - 0.01 * i} for i in range(4)])
        (run / "config.yaml").write_text("method: dpo\n")
    return run_diagnostics(inputs / "exp", out, window=2 if variant == "a" else 3, overwrite=overwrite)


def _humaneval_build(inputs, out, variant, overwrite):
    from _humaneval_support import SYSTEMS, write_generations
    from divtune.humaneval.study import BuildConfig, run_build

    gen = inputs / "gen"
    paths = sorted(gen.glob("gen_*.jsonl")) if gen.is_dir() else write_generations(gen)  # written once
    cfg = BuildConfig(generations=[str(p) for p in paths], pairs=[(SYSTEMS[0], SYSTEMS[1])], output=str(out),
                      seed=0 if variant == "a" else 1)
    return run_build(cfg, overwrite=overwrite)


def _answers_file(path: Path, study: Path, comment: str = "") -> Path:
    from _humaneval_support import write_answers

    key = json.loads((study / "key.json").read_text())
    records = [{"item_id": item, "answers": {"diverse": "A", "interesting": "B" if i % 2 else "tie"},
                "comment": comment if i == 0 else "", "timestamp": "2026-03-01T10:00:00Z"}
               for i, item in enumerate(sorted(key["items"]))]
    return write_answers(path, key["build_id"], "ann", records)


def _humaneval_analyze(inputs, out, variant, overwrite):
    from divtune.humaneval.analyze import AnalyzeConfig, run_analyze

    study, answers = inputs / "study", inputs / "answers.json"
    if not study.is_dir():
        _humaneval_build(inputs, study, "a", False)
    if not answers.is_file():
        _answers_file(answers, study, comment="B repeats itself")
    cfg = AnalyzeConfig(study=str(study), answers=[str(answers)], output=str(out),
                        confidence=0.95 if variant == "a" else 0.9)
    return run_analyze(cfg, overwrite=overwrite)


@pytest.fixture
def stages(tiny_lm_dir, tiny_bert):
    return {
        "prepare": Stage("prepare", _prepare, "train.jsonl"),
        "typicality": Stage("typicality", _typicality, "pools.jsonl"),
        "train": Stage("train", _train(tiny_lm_dir), "adapter_model.safetensors"),
        "reward": Stage("reward", _reward(tiny_bert), "head.safetensors"),
        "evaluate": Stage("evaluate", _evaluate, "metrics.json"),
        "report": Stage("report", _report, "report.html"),
        "diagnostics": Stage("diagnostics", _diagnostics, "diagnostics.md"),
        "humaneval build": Stage("humaneval build", _humaneval_build, "index.html"),
        "humaneval analyze": Stage("humaneval analyze", _humaneval_analyze, "results.json"),
    }


STAGES = ["prepare", "typicality", "train", "reward", "evaluate", "report", "diagnostics", "humaneval build",
          "humaneval analyze"]


@pytest.mark.parametrize("name", STAGES)
def test_same_settings_reuse_other_settings_refused_overwrite_replaces(name, stages, tmp_path):
    stage, inputs, out = stages[name], tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    stage.run(inputs, out, "a", False)
    assert read_stage_done(out)["stage"] == name
    product = out / stage.product
    first = product.stat().st_mtime_ns
    stage.run(inputs, out, "a", False)  # the same settings: reused, nothing rewritten
    assert product.stat().st_mtime_ns == first
    with pytest.raises(ConfigError) as err:
        stage.run(inputs, out, "b", False)
    assert str(err.value).startswith(f"{out}: holds a finished {name} run with other settings (")
    assert str(err.value).endswith("pass --overwrite to replace it, or choose another --output")
    assert product.stat().st_mtime_ns == first
    (out / "my-notes.txt").write_text("not divtune's")
    stage.run(inputs, out, "b", True)
    assert product.stat().st_mtime_ns != first and read_stage_done(out)["stage"] == name
    assert (out / "my-notes.txt").read_text() == "not divtune's"
    stage.run(inputs, out, "b", False)  # now b is the finished run: reused


@pytest.mark.parametrize("name", STAGES)
def test_a_folder_of_user_files_is_never_touched(name, stages, tmp_path):
    stage, inputs, out = stages[name], tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    (out / "config.yaml").write_text("mine: true\n")
    for overwrite in (False, True):
        with pytest.raises(ConfigError) as err:
            stage.run(inputs, out, "a", overwrite)
        assert str(err.value) == (
            f"{out}: not empty (config.yaml) and holds no divtune run; divtune never overwrites files it did not "
            "write: choose a new or empty --output"
        )
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]
    assert (out / "config.yaml").read_text() == "mine: true\n"


@pytest.mark.parametrize("name", [s for s in STAGES if s != "prepare"])
def test_another_stages_run_is_named(name, stages, tmp_path):
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    stages["prepare"].run(inputs, out, "a", False)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(ConfigError) as err:
        stages[name].run(inputs, out, "a", True)
    assert str(err.value) == f"{out}: holds a finished prepare run; a {name} run needs its own --output folder"
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_prepare_into_a_training_run_is_refused_naming_it(stages, tmp_path):
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    stages["evaluate"].run(inputs, out, "a", False)
    with pytest.raises(ConfigError, match=r"holds a finished evaluate run; a prepare run needs its own --output folder$"):
        stages["prepare"].run(inputs, out, "a", False)


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def test_humaneval_analyze_redownloaded_answers_are_a_changed_input(tmp_path):
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    _humaneval_analyze(inputs, out, "a", False)
    answers = inputs / "answers.json"
    assert json.loads((out / "comments.jsonl").read_text())["comment"] == "B repeats itself"
    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    _humaneval_analyze(inputs, out, "a", False)  # the same answers: reused, nothing rewritten
    assert _snapshot(out) == before
    _answers_file(answers, inputs / "study")  # downloaded again, now without the comment
    with pytest.raises(ConfigError) as err:
        _humaneval_analyze(inputs, out, "a", False)
    assert str(err.value) == (
        f"{out}: holds a finished humaneval analyze run with other settings (inputs changed: {answers}); "
        "pass --overwrite to replace it, or choose another --output"
    )
    assert _snapshot(out) == before
    _humaneval_analyze(inputs, out, "a", True)
    # The earlier analysis's comments.jsonl went with it; the user's file stayed.
    assert sorted(p.name for p in out.iterdir()) == sorted([
        ".divtune-done.json", RUN_MARKER, "config.yaml", "humaneval.html", "humaneval.md", "humaneval.png",
        "notes.txt", "results.json",
    ])
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "results.json").read_text())["counts"]["comments"] == 0


def test_humaneval_analyze_into_the_study_folder_is_refused(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    _humaneval_analyze(inputs, tmp_path / "out", "a", False)  # builds inputs/study
    study = inputs / "study"
    before = _snapshot(study)
    from divtune.humaneval.analyze import AnalyzeConfig, run_analyze

    with pytest.raises(ConfigError) as err:
        run_analyze(AnalyzeConfig(study=str(study), answers=[str(inputs / "answers.json")], output=str(study)),
                    overwrite=True)
    assert str(err.value) == (
        f"{study}: holds a finished humaneval build run; a humaneval analyze run needs its own --output folder"
    )
    assert _snapshot(study) == before


# --------------------------------------------------------------------------- failed runs leave nothing


def test_failed_prepare_and_report_leave_no_folder(tmp_path):
    from divtune.io import InputError
    from divtune.prepare import PrepareConfig, run_prepare
    from divtune.reporting.run import run_report

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "P", "responses": ["a"], "scores": [1]}\n{oops\n')
    with pytest.raises(InputError):
        run_prepare(PrepareConfig(inputs=[str(bad)], output=str(tmp_path / "prep"), embedders={"style": "stylometric"}))
    with pytest.raises(InputError):
        run_report([tmp_path / "no-eval"], tmp_path / "report")
    assert not (tmp_path / "prep").exists() and not (tmp_path / "report").exists()


def test_train_refuses_an_unfinished_prepare(tmp_path, tiny_lm_dir):
    from divtune.io import InputError
    from divtune.train import TrainConfig, run_train

    data = _pairs_file(tmp_path / "prep")
    (data / RUN_MARKER).write_text(json.dumps({"stage": "prepare", "settings_hash": "x", "settings": {}}))
    cfg = TrainConfig(method="dpo", data=str(data), model=str(tiny_lm_dir), output=str(tmp_path / "out"))
    with pytest.raises(InputError) as err:
        run_train(cfg)
    assert str(err.value) == f"{data}: holds an unfinished prepare run (no done marker); run `divtune prepare` again"
    assert not (tmp_path / "out").exists()


def test_train_resume_rules_on_an_unfinished_run(tmp_path, tiny_lm_dir):
    from divtune.outputs import OutputClaim
    from divtune.train import TrainConfig
    from divtune.train.run_output import claim_train_output

    data = _pairs_file(tmp_path / "prep")
    cfg = TrainConfig(method="dpo", data=str(data), model=str(tiny_lm_dir), output=str(tmp_path / "out"))
    claim, _ = claim_train_output(cfg, overwrite=False)
    claim.begin()
    (tmp_path / "out" / "checkpoint-2").mkdir()
    (tmp_path / "out" / "checkpoint-2" / "trainer_state.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"holds checkpoints of an unfinished train run; pass --resume"):
        claim_train_output(cfg, overwrite=False)
    resumed, checkpoint = claim_train_output(cfg.model_copy(update={"resume": True}), overwrite=False)
    assert isinstance(resumed, OutputClaim) and checkpoint == str(tmp_path / "out" / "checkpoint-2")
    other = cfg.model_copy(update={"beta": 0.5})
    with pytest.raises(ConfigError, match=r"unfinished train run with other settings \(beta: 0.1 -> 0.5\)"):
        claim_train_output(other, overwrite=False)
    replaced, checkpoint = claim_train_output(other, overwrite=True)
    replaced.begin()
    assert checkpoint is None and not (tmp_path / "out" / "checkpoint-2").exists()


# --------------------------------------------------------------------------- single-file stages


def test_generate_failed_run_then_corrected_rerun(tmp_path, tiny_lm_dir, monkeypatch):
    from divtune.generation.config import GenerateConfig
    from divtune.generation.run import run_generate

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Write a story.\nThe knight rode out.\n")
    out = tmp_path / "gen" / "g.jsonl"

    def cfg(**kw):
        values = dict(model=str(tiny_lm_dir), prompts=str(prompts), output=str(out), num_samples=2,
                      max_new_tokens=3, batch_size=4, seed=1, show_progress=False)
        return GenerateConfig(**{**values, **kw})

    # A model that loads nothing (it fails after the checks): its config alone must not block the rerun.
    import divtune.models

    real = divtune.models.load_causal_lm
    monkeypatch.setattr(divtune.models, "load_causal_lm", lambda *a, **k: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError):
        run_generate(cfg(temperature=0.5))
    assert not out.exists()
    monkeypatch.setattr(divtune.models, "load_causal_lm", real)
    run_generate(cfg())
    first = out.read_bytes()
    run_generate(cfg())  # same settings, finished: left as it is
    assert out.read_bytes() == first
    with pytest.raises(ConfigError, match=r"g.jsonl: was written with other settings \(seed: 1 -> 2\)"):
        run_generate(cfg(seed=2))
    run_generate(cfg(seed=2), overwrite=True)
    assert out.read_bytes() != first
    foreign = tmp_path / "mine.jsonl"
    foreign.write_text("my own file\n")
    with pytest.raises(ConfigError, match="was not written by divtune"):
        run_generate(cfg(output=str(foreign)), overwrite=True)
    assert foreign.read_text() == "my own file\n"


def test_reward_score_follows_the_rule(tmp_path, tiny_bert):
    from divtune.reward.score import score_generations

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    _reward(tiny_bert)(inputs, tmp_path / "rm", "a", False)
    gens = _generations(inputs, "dpo")
    out = tmp_path / "scored.jsonl"
    score_generations(tmp_path / "rm", gens, out)
    first = out.stat().st_mtime_ns
    score_generations(tmp_path / "rm", gens, out)  # same settings and inputs: reused
    assert out.stat().st_mtime_ns == first
    other = _generations(inputs, "ddpo")
    with pytest.raises(ConfigError, match="was written with other settings"):
        score_generations(tmp_path / "rm", other, out)
    score_generations(tmp_path / "rm", other, out, overwrite=True)
    assert {json.loads(line)["model"] for line in out.read_text().splitlines()} == {"ddpo"}
    mine = tmp_path / "mine.jsonl"
    mine.write_text("x\n")
    with pytest.raises(ConfigError, match="was not written by divtune"):
        score_generations(tmp_path / "rm", gens, mine, overwrite=True)


def test_experiment_refuses_a_folder_of_user_files(tmp_path):
    from divtune.experiments import ExperimentConfig, run_experiment

    out = tmp_path / "exp"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    cfg = ExperimentConfig(output=str(out), prepare={"inputs": ["shipped:wp_scored"]},
                           systems=[{"name": "base", "method": "base"}], baseline=None, reward=None)
    with pytest.raises(ConfigError, match=r"not empty \(thesis.tex\) and holds no divtune experiment"):
        run_experiment(cfg)
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_experiment_names_another_stages_run_in_its_folder(tmp_path, monkeypatch):
    import divtune.experiments.run
    from divtune.experiments import ExperimentConfig, run_experiment

    inputs, out = tmp_path / "inputs", tmp_path / "exp"
    inputs.mkdir()
    _prepare(inputs, out, "a", False)
    before = _snapshot(out)

    def no_stages(*args, **kwargs):
        raise AssertionError("the experiment ran its stages in a folder holding another stage's run")

    monkeypatch.setattr(divtune.experiments.run, "run_stages", no_stages)
    cfg = ExperimentConfig(output=str(out), prepare={"inputs": ["shipped:wp_scored"]},
                           systems=[{"name": "base", "method": "base"}], baseline=None, reward=None)
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg)
    assert str(err.value) == f"{out}: holds a finished prepare run; an experiment needs its own output folder"
    assert _snapshot(out) == before  # prepare's config.yaml was not replaced by the experiment's
