"""Issue 14, what a new user hits: each bad input ends in one line naming the file
and the line or field, exit code 2, and nothing written; `--set` values are
type-checked for every stage before anything loads; files with a UTF-8
byte-order mark are read."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest

from divtune.cli import main

GOOD = {"post_title": "[WP] T", "post_text": "", "comment_texts": ["a", "b"], "comment_scores": [1, 2]}
OFFLINE = "(offline: HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache)"


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """`divtune ARGS` in this process through the console entry point: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["divtune", *map(str, args)])
    with pytest.raises(SystemExit) as exited:
        main()
    return exited.value.code, capsys.readouterr().err


def _reddit_rows(n: int) -> bytes:
    return "".join(json.dumps(dict(GOOD, post_title=f"[WP] {i}")) + "\n" for i in range(n)).encode()


def test_truncated_gzip_names_file_and_line(tmp_path, monkeypatch, capsys):
    compressed = gzip.compress(_reddit_rows(400))
    path = tmp_path / "truncated.jsonl.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    # The lines that survive the cut: the error points at the first one that does not.
    complete = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(path.read_bytes()).count(b"\n")
    code, err = run_cli(["prepare", "--input", path, "--output", tmp_path / "out"], monkeypatch, capsys)
    assert code == 2
    assert err == f"error: {path}, line {complete + 1}: the gzip data ends early: the file was cut short\n"
    assert not (tmp_path / "out").exists()


def test_plain_text_named_gz(tmp_path, monkeypatch, capsys):
    path = tmp_path / "notgzip.jsonl.gz"
    path.write_bytes(_reddit_rows(3))
    code, err = run_cli(["prepare", "--input", path, "--output", tmp_path / "out"], monkeypatch, capsys)
    assert code == 2
    assert err == f"error: {path}: not gzip data, though the name ends in .gz (rename it, or compress it with gzip)\n"
    assert not (tmp_path / "out").exists()


def test_typo_of_a_shipped_model_alias(tmp_path, monkeypatch, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Write a story.\n")
    output = tmp_path / "gen" / "out.jsonl"
    code, err = run_cli(["generate", "--model", "smolm2", "--prompts", prompts, "--output", output], monkeypatch, capsys)
    assert code == 2
    assert err == (
        f"error: model 'smolm2' is neither a shipped alias (smollm2), a local folder nor a reachable hub id "
        f"{OFFLINE}; did you mean 'smollm2'?\n"
    )
    assert not (tmp_path / "gen").exists()  # no OUT.config.yaml, not even the folder


def test_unknown_embedder(tmp_path, monkeypatch, capsys, wp_scored_path):
    code, err = run_cli(
        ["prepare", "--input", "shipped:wp_scored", "--embedder", "semantic=nosuchmodel", "--output", tmp_path / "out"],
        monkeypatch, capsys,
    )
    assert code == 2
    assert err == (
        "error: embedder semantic 'nosuchmodel' is neither a shipped alias (minilm, mpnet, stylometric), a local folder "
        f"nor a reachable hub id {OFFLINE}\n"
    )
    assert not (tmp_path / "out").exists()


def test_near_miss_of_an_embedder_alias_is_suggested():
    from divtune.config import ConfigError
    from divtune.embedders import check_embedder_spec

    with pytest.raises(ConfigError, match=r"did you mean 'minilm'\?$"):
        check_embedder_spec("minilmm", "semantic")


class _NoSuchRepoHub(http.server.BaseHTTPRequestHandler):
    """A local stand-in for the hub: every repo is unknown (HTTP 404, RepoNotFound)."""

    def _not_found(self):
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = _not_found

    def log_message(self, *args):
        pass


def test_online_hub_error_becomes_the_same_one_line(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoSuchRepoHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Write a story.\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}", HF_HOME=str(tmp_path / "hf"),
               PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "divtune", "generate", "--model", "smolm2", "--prompts", str(prompts),
             "--output", str(tmp_path / "gen" / "out.jsonl")],
            capture_output=True, text=True, env=env, timeout=300,
        )
    finally:
        server.shutdown()
    assert (result.returncode, "Traceback" in result.stderr) == (2, False)
    assert result.stderr.splitlines()[-1] == (
        "error: model 'smolm2' is neither a shipped alias (smollm2), a local folder nor a reachable hub id "
        "(the hub has no such repository); did you mean 'smollm2'?"
    )
    assert not (tmp_path / "gen").exists()


# --------------------------------------------------------------------------- --set types, every stage


def _generations(tmp_path) -> Path:
    path = tmp_path / "g.jsonl"
    path.write_text("".join(
        json.dumps({"prompt_id": p, "prompt": "P", "sample_index": s, "text": f"t{s}"}) + "\n"
        for p in range(2) for s in range(2)
    ))
    return path


def _stage_args(stage: str, tmp_path) -> list:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Write a story.\n")
    return {
        "prepare": ["prepare", "--input", "shipped:wp_scored", "--output", tmp_path / "out", "--set", "min_words=abc"],
        "train": ["train", "--data", tmp_path, "--output", tmp_path / "out", "--set", "max_steps=abc"],
        "train-passthrough": ["train", "--data", tmp_path, "--output", tmp_path / "out", "--set", "warmup_steps=lots"],
        "generate": ["generate", "--model", "smollm2", "--prompts", prompts, "--output", tmp_path / "out" / "g.jsonl",
                     "--set", "num_samples=abc"],
        "reward": ["reward", "train", "--data", tmp_path, "--output", tmp_path / "out", "--set", "max_epochs=abc"],
        "evaluate": ["evaluate", "--generations", _generations(tmp_path), "--output", tmp_path / "out",
                     "--set", "bootstrap=abc"],
        "quickstart": ["quickstart", "--output", tmp_path / "out", "--set", "train.training.max_steps=abc"],
        "typicality": ["typicality", "--input", "shipped:wp_scored", "--output", tmp_path / "out",
                       "--set", "opening_words=abc"],
        "export": ["export", tmp_path, "--output", tmp_path / "out", "--set", "merge=maybe"],
        "humaneval-build": ["humaneval", "build", "--generations", _generations(tmp_path), "--pair", "a=b",
                            "--output", tmp_path / "out", "--set", "seed=abc"],
    }[stage]


EXPECTED = {
    "prepare": "error: min_words: expected an integer, got 'abc'",
    "train": "error: max_steps: expected an integer, got 'abc'",
    "train-passthrough": "error: warmup_steps: expected a number, got 'lots'",
    "generate": "error: num_samples: expected an integer, got 'abc'",
    "reward": "error: max_epochs: expected an integer, got 'abc'",
    "evaluate": "error: bootstrap: expected an integer, got 'abc'",
    "quickstart": "error: TrainConfig: max_steps: expected an integer, got 'abc'",
    "typicality": "error: opening_words: expected an integer, got 'abc'",
    "export": "error: merge: expected true or false, got 'maybe'",
    "humaneval-build": "error: seed: expected an integer, got 'abc'",
}


@pytest.mark.parametrize("stage", sorted(EXPECTED))
def test_set_values_are_type_checked_before_anything_loads(stage, tmp_path, monkeypatch, capsys):
    import divtune.models

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr(divtune.models, "load_causal_lm", no_loading)
    monkeypatch.setattr(divtune.models, "load_tokenizer", no_loading)
    code, err = run_cli(_stage_args(stage, tmp_path), monkeypatch, capsys)
    assert (code, err) == (2, EXPECTED[stage] + "\n")
    assert not (tmp_path / "out").exists()


def test_experiment_set_is_checked_before_its_folder_is_made(tmp_path, monkeypatch, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text(
        f"output: {tmp_path / 'out'}\nprepare: {{inputs: ['shipped:wp_scored']}}\nsystems: [{{name: dpo, method: dpo}}]\n"
    )
    code, err = run_cli(["experiment", config, "--set", "generate.max_new_tokens=many"], monkeypatch, capsys)
    assert (code, err) == (2, "error: GenerateConfig: max_new_tokens: expected an integer, got 'many'\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value, accepted", [(-1, True), (5, True), (0, False), (-2, False)])
def test_max_steps_minus_one_means_epochs_other_negatives_are_refused(value, accepted):
    from divtune.config import ConfigError
    from divtune.train import TrainConfig

    if accepted:
        assert TrainConfig.load(None, [f"max_steps={value}"]).training["max_steps"] == value
    else:
        with pytest.raises(ConfigError, match=rf"max_steps: expected a positive number of steps, or -1 .*got {value}$"):
            TrainConfig.load(None, [f"max_steps={value}"])


def test_passthrough_values_are_checked_against_trainingarguments_types():
    from divtune.config import ConfigError
    from divtune.train import TrainConfig

    ok = TrainConfig.load(None, ["learning_rate=1e-5", "save_strategy=no", "report_to=[]", "bf16=false",
                                 "lr_scheduler_type=cosine", "per_device_train_batch_size=3"])
    assert ok.training == {"learning_rate": 1e-5, "save_strategy": "no", "report_to": [], "bf16": False,
                           "lr_scheduler_type": "cosine", "per_device_train_batch_size": 3}
    # YAML files read 1e-5 as text; a float field gets the number.
    assert TrainConfig.from_dict({"training": {"learning_rate": "1e-5"}}).training["learning_rate"] == 1e-5
    for override, message in [
        ("bf16=maybe", "bf16: expected true or false, got 'maybe'"),
        ("per_device_train_batch_size=0", "per_device_train_batch_size: expected at least 1, got 0"),
        ("max_steps=2.5", "max_steps: expected an integer, got 2.5"),
        ("training.logging_steps=often", "logging_steps: expected a number, got 'often'"),
    ]:
        with pytest.raises(ConfigError) as err:
            TrainConfig.load(None, [override])
        assert str(err.value) == message


# --------------------------------------------------------------------------- refusals: one line, exit 2


def test_train_memory_refusal_is_one_line_exit_2(tmp_path, tiny_lm_dir, monkeypatch, capsys):
    import divtune.train.memory as memory
    from _train_support import make_pairs, write_pairs
    from divtune.train import TrainConfig
    from divtune.train.memory import estimate_options, estimate_peak, model_shape

    data = write_pairs(tmp_path / "data", make_pairs(4))
    sizes = ["lora.r=2", "lora.alpha=4", "max_length=64", "per_device_train_batch_size=1"]
    monkeypatch.setattr(memory, "available_memory", lambda: 1)  # nothing fits, not even batch 1 at length 64
    args = ["train", "--method", "dpo", "--data", data, "--model", tiny_lm_dir, "--output", tmp_path / "out",
            "--device", "cpu"]
    code, err = run_cli([*args, *[a for s in sizes for a in ("--set", s)]], monkeypatch, capsys)
    shape = model_shape(str(tiny_lm_dir))
    options = estimate_options(TrainConfig.load(None, sizes, method="dpo"))
    estimate = estimate_peak(shape, batch=1, max_length=64, **options)
    assert (code, err) == (2, (
        f"error: train: the estimated peak memory, {estimate.describe()}, exceeds the 0.0 GiB available "
        f"({shape.parameters / 1e6:.0f}M parameters, batch 1, max_length 64); even batch 1 at max_length 64 "
        "does not fit: use a smaller model or a machine with more memory; --no-memory-check tries anyway\n"
    ))
    assert not (tmp_path / "out").exists()


def _pools(tmp_path) -> Path:
    words = "the a dragon ran and she said quietly night I was sea light door".split()
    rows = [{"prompt": f"Prompt {p}", "responses": [" ".join(words[(p + i + k) % len(words)] for k in range(8 + i))
                                                    for i in range(5)], "scores": [1, 3, 8, 20, 2]}
            for p in range(6)]
    path = tmp_path / "pools.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_output_rule_refusals_are_one_line_exit_2(tmp_path, monkeypatch, capsys):
    import divtune.experiments.run

    out = tmp_path / "prep"
    prepare = ["prepare", "--input", _pools(tmp_path), "--output", out, "--embedder", "style=stylometric",
               "--cache-dir", tmp_path / "cache"]
    assert run_cli([*prepare, "--min-words", "5"], monkeypatch, capsys)[0] == 0
    before = _mtimes(out)
    code, err = run_cli([*prepare, "--min-words", "6"], monkeypatch, capsys)
    assert (code, err) == (2, (
        f"error: {out}: holds a finished prepare run with other settings (min_words: 5 -> 6); "
        "pass --overwrite to replace it, or choose another --output\n"
    ))
    assert _mtimes(out) == before

    # The quickstart (an experiment) names the prepare run it finds in its folder.
    def no_stages(*args, **kwargs):
        raise AssertionError("the quickstart ran its stages in a folder holding a prepare run")

    monkeypatch.setattr(divtune.experiments.run, "run_stages", no_stages)
    code, err = run_cli(["quickstart", "--output", out], monkeypatch, capsys)
    assert (code, err) == (2, f"error: {out}: holds a finished prepare run; an experiment needs its own output folder\n")
    assert _mtimes(out) == before


def test_humaneval_output_rule_on_the_command_line(tmp_path, monkeypatch, capsys):
    from _humaneval_support import SYSTEMS, write_answers, write_generations

    gens = write_generations(tmp_path / "gen")
    study = tmp_path / "study"
    build = ["humaneval", "build", "--generations", *gens, "--pair", f"{SYSTEMS[0]}={SYSTEMS[1]}", "--output", study]
    assert run_cli(build, monkeypatch, capsys)[0] == 0
    (study / "notes.txt").write_text("mine")
    before = _mtimes(study)
    assert run_cli(build, monkeypatch, capsys)[0] == 0  # the same study: reused
    assert _mtimes(study) == before
    code, err = run_cli([*build, "--seed", "1"], monkeypatch, capsys)
    assert (code, err) == (2, (
        f"error: {study}: holds a finished humaneval build run with other settings (seed: 0 -> 1); "
        "pass --overwrite to replace it, or choose another --output\n"
    ))
    assert _mtimes(study) == before
    old_build = json.loads((study / "key.json").read_text())["build_id"]
    assert run_cli([*build, "--seed", "1", "--overwrite"], monkeypatch, capsys)[0] == 0
    assert json.loads((study / "key.json").read_text())["build_id"] != old_build
    assert "\nseed: 1\n" in (study / "config.yaml").read_text() and (study / "notes.txt").read_text() == "mine"

    key = json.loads((study / "key.json").read_text())
    answers = write_answers(tmp_path / "a.json", key["build_id"], "ann", [
        {"item_id": item, "answers": {"diverse": "A"}, "timestamp": "2026-03-01T10:00:00Z"} for item in key["items"]
    ])
    analysis = tmp_path / "analysis"
    analysis.mkdir()
    (analysis / "results.json").write_text("my own results")
    for extra in ([], ["--overwrite"]):  # a folder of the user's files: refused, even with --overwrite
        code, err = run_cli(["humaneval", "analyze", study, answers, "--output", analysis, *extra], monkeypatch, capsys)
        assert (code, err) == (2, (
            f"error: {analysis}: not empty (results.json) and holds no divtune run; divtune never overwrites "
            "files it did not write: choose a new or empty --output\n"
        ))
    assert [p.name for p in analysis.iterdir()] == ["results.json"]
    assert (analysis / "results.json").read_text() == "my own results"


# --------------------------------------------------------------------------- byte-order mark


BOM = "\ufeff"


def test_csv_with_a_byte_order_mark_is_read(tmp_path):
    from divtune.data import load_pools

    path = tmp_path / "excel.csv"
    path.write_text(BOM + "prompt,response,score\nP,one story,3\nP,another story,5\n", encoding="utf-8")
    pools, report = load_pools([path])
    assert report.files == {str(path): "flat"}
    assert [(p.prompt, p.texts, p.scores) for p in pools] == [("P", ["one story", "another story"], [3.0, 5.0])]


@pytest.mark.parametrize("name", ["bom.jsonl", "bom.jsonl.gz"])
def test_jsonl_with_a_byte_order_mark_is_read(tmp_path, name):
    from divtune.data import load_pools
    from divtune.generation.prompts import read_prompts

    rows = BOM + json.dumps({"prompt": "P", "responses": ["x", "y"], "scores": [1, 2]}) + "\n"
    path = tmp_path / name
    path.write_bytes(gzip.compress(rows.encode()) if name.endswith(".gz") else rows.encode())
    pools, _ = load_pools([path])
    assert [p.prompt for p in pools] == ["P"]
    assert [p.prompt for p in read_prompts(path)] == ["P"]
