"""Carrying an unfinished experiment to another machine: --pack / --unpack (divtune.experiments.carry)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from _cli_support import run_cli
from divtune.experiments import carry
from divtune.config import ConfigError
from divtune.experiments import Stage, run_stages


def _stages(root: Path, calls: list) -> list[Stage]:
    """prepare → train a → generate a; train b → generate b; b's generation is the one left to run."""

    def writer(name: str, files: dict[str, str]):
        def work():
            calls.append(name)
            for relative, text in files.items():
                path = root / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)

        return work

    def stage(name, folder, files, after=()):
        return Stage(name, root / folder, {"name": name}, writer(name, files), after=after)

    train_files = lambda m: {  # noqa: E731
        f"models/{m}/adapter_model.safetensors": "weights",
        f"models/{m}/checkpoint-2/optimizer.pt": "optimizer",
        f"models/{m}/checkpoint-2/adapter_model.safetensors": "weights",
        f"models/{m}/trainer_log.jsonl": '{"loss": 0.69}',
    }
    return [
        stage("prepare d", "data/d", {"data/d/train.jsonl": "{}"}),
        stage("train a", "models/a", train_files("a"), after=("prepare d",)),
        stage("generate a", "generations/a", {"generations/a/generations.jsonl": "{}"}, after=("train a",)),
        stage("train b", "models/b", train_files("b"), after=("prepare d",)),
        stage("generate b", "generations/b", {"generations/b/generations.jsonl": "{}"}, after=("train b",)),
        stage("evaluate", "eval", {"eval/metrics.json": "{}"}, after=("generate a", "generate b")),
    ]


def _members(archive: Path) -> set[str]:
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name for m in tar.getmembers()}


def test_pack_keeps_finished_stages_and_only_the_weights_a_pending_stage_loads(tmp_path):
    root, calls = tmp_path / "run", []
    stages = _stages(root, calls)
    run_stages(stages[:4])  # everything but b's generation and the evaluation
    archive = tmp_path / "carry.tar.gz"
    manifest = carry.pack(stages, root, archive)
    members = _members(archive)
    # a's generation is done: a's weights are left behind, its log and marker travel
    assert "models/a/trainer_log.jsonl" in members and "models/a/.divtune-done.json" in members
    assert "models/a/adapter_model.safetensors" not in members
    # b's generation still has to load b's final weights
    assert "models/b/adapter_model.safetensors" in members
    # no optimizer checkpoints, no unfinished stage
    assert not any("checkpoint-" in m for m in members)
    assert not any(m.startswith(("generations/b", "eval")) for m in members)
    assert manifest["stages"]["generate b"]["packed"] is False
    assert manifest["stages"]["train a"]["files_left_out"] == 3
    assert carry.MANIFEST in members


def test_unpack_on_a_fresh_machine_resumes_with_only_the_unfinished_stages(tmp_path):
    first, calls = tmp_path / "first" / "run", []
    run_stages(_stages(first, calls)[:4])
    archive = tmp_path / "carry.tar.gz"
    carry.pack(_stages(first, calls), first, archive)

    second, later = tmp_path / "second" / "run", []
    stages = _stages(second, later)
    restored = carry.unpack(stages, second, archive)
    assert restored == ["prepare d", "train a", "generate a", "train b"]
    run_stages(stages)
    assert later == ["generate b", "evaluate"]
    assert (second / "models" / "b" / "adapter_model.safetensors").read_text() == "weights"


def test_unpack_keeps_a_stage_already_finished_here(tmp_path):
    first, calls = tmp_path / "first", []
    run_stages(_stages(first, calls)[:2])
    archive = tmp_path / "carry.tar.gz"
    carry.pack(_stages(first, calls), first, archive)
    second = tmp_path / "second"
    run_stages(_stages(second, [])[:1])
    (second / "data" / "d" / "train.jsonl").write_text("mine")
    restored = carry.unpack(_stages(second, []), second, archive)
    assert restored == ["train a"]
    assert (second / "data" / "d" / "train.jsonl").read_text() == "mine"


def _archive_with(tmp_path: Path, name: str, manifest: bool = True) -> Path:
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for member in ([carry.MANIFEST] if manifest else []) + [name]:
            info = tarfile.TarInfo(member)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    return archive


def _plain_file(path: Path) -> Path:
    path.write_text("not gzip")
    return path


@pytest.mark.parametrize(
    "archive_of, message",
    [
        (lambda tmp: _archive_with(tmp, "../escape.txt"), "member '../escape.txt' is not a plain file inside"),
        (lambda tmp: _archive_with(tmp, "models/a/x", manifest=False), "holds no divtune-carry.json"),
        (lambda tmp: _plain_file(tmp / "plain.tar.gz"), "not a .tar.gz archive"),
        (lambda tmp: tmp / "missing.tar.gz", "no such archive"),
    ],
)
def test_bad_archives_are_refused_before_anything_is_written(tmp_path, archive_of, message):
    archive = archive_of(tmp_path)
    root = tmp_path / "run"
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        carry.unpack(_stages(root, []), root, archive)
    assert not root.exists() and not (tmp_path / "escape.txt").exists()


def test_pack_on_the_command_line(tmp_path, monkeypatch, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text(json.dumps({
        "output": str(tmp_path / "run"), "seeds": [0],
        "prepare": {"inputs": ["shipped:wp_scored"]}, "data": {"d": {}}, "gold_data": "d",
        "systems": [{"name": "base", "method": "base"}], "baseline": None,
    }))
    code, output = run_cli(["experiment", str(config), "--pack", str(tmp_path / "c.tar.gz")], monkeypatch, capsys)
    assert code == 2 and output.strip() == f"error: {tmp_path / 'run'}: no experiment folder to pack"
    assert not (tmp_path / "c.tar.gz").exists()
    (tmp_path / "run").mkdir()
    code, output = run_cli(["experiment", str(config), "--pack", str(tmp_path / "c.tar.gz")], monkeypatch, capsys)
    assert code == 0, output
    assert "packed 0 of" in output and carry.MANIFEST in _members(tmp_path / "c.tar.gz")
