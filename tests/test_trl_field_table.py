"""Issue 24.8: a bad `--set` is refused before torch, transformers or TRL load.

The names and types of TRL's config fields ship as a generated table
(src/divtune/train/trl_fields.json); these tests regenerate it from the installed TRL
and compare, check that the stored types judge values exactly as the classes'
own annotations do, and run the refusal in a fresh interpreter to see what it
imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from divtune.train import trl_field_table as table
from divtune.train.training_args import _fits, check_training_value, describe_type

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_table_is_what_the_installed_trl_gives():
    fresh = table.render(table.build_table())
    assert fresh == table.GENERATED.read_text(encoding="utf-8"), (
        "src/divtune/train/trl_fields.json is out of date with the installed transformers/TRL: "
        "run `python -m divtune.train.trl_field_table` and commit the result"
    )


def _real_annotations() -> dict[str, list]:
    annotations: dict[str, list] = {}
    for name in table.CONFIG_CLASSES:
        config_class = table._config_class(name)
        hints = typing.get_type_hints(config_class)
        for f in __import__("dataclasses").fields(config_class):
            if f.init and hints[f.name] not in annotations.setdefault(f.name, []):
                annotations[f.name].append(hints[f.name])
    return annotations


PROBES = [5, -1, 0.5, "1e-5", "abc", "steps", True, None, [], ["tensorboard"], {"a": 1}, [0.5, 1.0], False]


def test_the_stored_types_judge_every_value_as_the_classes_do():
    real = _real_annotations()
    stored = table.field_annotations()
    assert set(stored) == set(real)
    differences = []
    for name, annotations in real.items():
        assert len(stored[name]) == len(annotations), name
        assert describe_type(stored[name][0]) == describe_type(annotations[0]), name
        for value in PROBES:
            want = any(_fits(value, a) for a in annotations)
            got = any(_fits(value, a) for a in stored[name])
            if want != got:
                differences.append((name, value, want, got))
    assert not differences


def test_each_method_accepts_the_fields_of_its_trl_config():
    from divtune.train.config import method_config_class, method_field_names

    import dataclasses

    for method in ("sft", "dpo", "ddpo", "divpo", "orpo", "dorpo", "grpo", "dqo", "darling"):
        expected = {f.name for f in dataclasses.fields(method_config_class(method)) if f.init}
        assert method_field_names(method) == expected, method


def test_other_installed_versions_are_read_from_the_classes(monkeypatch):
    monkeypatch.setattr(table, "installed_versions", lambda: {"transformers": "0.0.0", "trl": "0.0.0"})
    table.current_table.cache_clear()
    monkeypatch.setattr(table, "build_table", lambda: {"versions": {}, "fields": {}, "types": {"max_steps": ["str"]}})
    try:
        assert table.field_annotations() == {"max_steps": (str,)}
    finally:
        table.current_table.cache_clear()


_REFUSE = """
import json, sys
sys.argv = ["divtune", *json.loads(sys.argv[1])]
from divtune.cli import main
try:
    main()
except SystemExit as stop:
    code = stop.code
heavy = sorted(m for m in ("torch", "transformers", "trl", "peft", "datasets") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""


@pytest.mark.parametrize("setting, message", [
    ("max_steps=abc", "error: max_steps: expected an integer, got 'abc'"),
    ("learning_rate=fast", "error: learning_rate: expected a number, got 'fast'"),
    ("max_step=1", "error: max_step: not a setting of this stage; did you mean 'max_steps'?"),
    ("training.weight_decay=x", "error: weight_decay: expected a number, got 'x'"),
])
def test_a_bad_set_is_refused_before_torch_loads(tmp_path, setting, message):
    args = ["train", "--data", str(tmp_path / "prep"), "--output", str(tmp_path / "out"), "--set", setting]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))  # this checkout's divtune, not an installed one
    result = subprocess.run([sys.executable, "-c", _REFUSE, json.dumps(args)], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=120)
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"code": 2, "heavy": []}, result.stderr
    assert result.stderr.strip().splitlines()[-1] == message
    assert not (tmp_path / "out").exists()


def test_values_are_still_checked_against_each_fields_type():
    assert check_training_value("max_steps", "abc") == "max_steps: expected an integer, got 'abc'"
    assert check_training_value("save_strategy", "steps") is None
    assert check_training_value("report_to", ["tensorboard"]) is None
    assert check_training_value("learning_rate", 1) is None
