"""Config machinery, IO helpers, shipped resources and model loading."""

from __future__ import annotations

import gzip
import json

import pytest
from typer.testing import CliRunner

from divtune.cli import app
from divtune.config import ConfigError, StageConfig, parse_overrides
from divtune.io import InputError, atomic_path, iter_jsonl, write_jsonl
from divtune.resources import shipped_dataset


class _Nested(StageConfig):
    r: int = 8
    targets: list[str] = ["q_proj"]


class _Demo(StageConfig):
    name: str = "x"
    lr: float = 1e-3
    steps: int = 10
    lora: _Nested = _Nested()


def test_overrides_parse_yaml_types():
    assert parse_overrides(["a=3", "b=1e-5", "c=[q,v]", "d.e=null", "f=text"]) == {
        "a": 3,
        "b": 1e-5,
        "c": ["q", "v"],
        "d": {"e": None},
        "f": "text",
    }


def test_config_precedence_yaml_then_explicit_then_set(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("name: from_yaml\nsteps: 5\nlora:\n  r: 16\n")
    cfg = _Demo.load(yaml_file, overrides=["lora.r=32", "lr=2e-5"], steps=7, name=None)
    assert (cfg.name, cfg.steps, cfg.lr, cfg.lora.r, cfg.lora.targets) == ("from_yaml", 7, 2e-5, 32, ["q_proj"])
    saved = cfg.save(tmp_path / "out" / "config.yaml")
    assert _Demo.load(saved) == cfg


def test_config_rejects_unknown_and_mistyped_keys(tmp_path):
    with pytest.raises(ConfigError, match="stepz"):
        _Demo.load(overrides=["stepz=3"])
    with pytest.raises(ConfigError, match="steps"):
        _Demo.load(overrides=["steps=many"])
    with pytest.raises(ConfigError, match="key=value"):
        _Demo.load(overrides=["steps"])


def test_iter_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n')
    with pytest.raises(InputError, match=r"bad.jsonl, line 3: malformed JSON"):
        list(iter_jsonl(path))
    path.write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(InputError, match="undecodable"):
        list(iter_jsonl(path))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    write_jsonl(target, [{"a": 1}])
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == '{"a": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_shipped_data_is_the_full_reddit_sample():
    with gzip.open(shipped_dataset("wp_scored"), "rt") as handle:
        rows = [json.loads(line) for line in handle]
    assert len(rows) == 100
    assert sum(len(r["comment_texts"]) for r in rows) == 3031
    assert all(len(r["comment_texts"]) == len(r["comment_scores"]) for r in rows)
    with pytest.raises(Exception, match="available"):
        shipped_dataset("nope")


def test_cli_help_lists_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and "divtune" in result.output


def test_tiny_lm_loads_through_divtune(tiny_lm_dir):
    from divtune.models import load_causal_lm, load_tokenizer

    model = load_causal_lm(tiny_lm_dir, device="cpu")
    tokenizer = load_tokenizer(tiny_lm_dir)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "a story"}], add_generation_prompt=True)
    assert model.config.num_hidden_layers == 2 and tokenizer.pad_token is not None and len(ids) > 0


def test_missing_model_folder_is_a_clear_error(tmp_path):
    from divtune.models import resolve_model_source

    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_model_source(str(tmp_path / "nope"))


def test_atomic_writes_get_umask_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = write_jsonl(tmp_path / "p.jsonl", [{"a": 1}])
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
