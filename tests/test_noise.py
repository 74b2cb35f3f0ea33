"""Issue 24.9, noise: no FutureWarning about transformers' checkpointing rename from code the user
does not own, help that shows every option name whole at 80 columns, and `humaneval build` that
compares the two systems it was given without asking for `--pair`."""

from __future__ import annotations

import json
import re
import warnings

import pytest
import typer
from typer.testing import CliRunner

from _cli_support import run_cli
from _humaneval_support import SYSTEMS, write_generations
from _train_support import make_pairs, tiny_overrides, write_pairs
from divtune.cli import app, summary
from divtune.models import load_causal_lm
from divtune.train import TrainConfig, run_train


def _checkpointing_warnings(action) -> list[str]:
    """Warnings that mention checkpointing while ``action`` runs, every one shown (none filtered by pytest)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        action()
    return [f"{w.category.__name__}: {w.message}" for w in caught if "checkpointing" in str(w.message)]


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("pairs"), make_pairs(8))


@pytest.mark.parametrize("method", ["ddpo", "sft", "dorpo"])
def test_training_prints_no_checkpointing_deprecation(method, tiny_lm_dir, pairs_dir, tmp_path):
    cfg = TrainConfig.load(None, tiny_overrides(max_steps=1), method=method, data=str(pairs_dir),
                           model=str(tiny_lm_dir), output=str(tmp_path / method))
    assert _checkpointing_warnings(lambda: run_train(cfg)) == []
    # Loading the adapter (generate, export) wraps the base in PEFT again.
    assert _checkpointing_warnings(lambda: load_causal_lm(tmp_path / method, device="cpu", merge_adapter=True)) == []


def test_online_training_prints_no_checkpointing_deprecation(tiny_lm_dir, tmp_path):
    from test_online_train import pair_row, smoke_cfg, vowel_share

    from divtune.train.online import run_online_train

    data = tmp_path / "prepared"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(pair_row(f"p{i}", f"Prompt {i}.")) + "\n" for i in range(2)))
    lora = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    cfg = smoke_cfg("grpo", tiny_lm_dir, data, tmp_path / "grpo", lora=lora, steps=1)
    assert _checkpointing_warnings(lambda: run_online_train(cfg, quality_fn=vowel_share)) == []


def test_a_lora_reward_model_prints_no_checkpointing_deprecation(tiny_lm_dir, tmp_path):
    from test_reward_model import _toy_cfg, _toy_prepared

    from divtune.reward.fit import train_reward_model
    from divtune.reward.model import RewardModel

    data = _toy_prepared(tmp_path / "data", n_pools=4)
    cfg = _toy_cfg(data, tmp_path / "rm", tiny_lm_dir, lora=True, lora_r=4, max_epochs=1, batch_size=8)
    assert _checkpointing_warnings(lambda: train_reward_model(cfg)) == []
    assert _checkpointing_warnings(lambda: RewardModel.load(tmp_path / "rm", device="cpu")) == []


def test_other_warnings_still_show_inside_the_silenced_calls():
    from divtune.deprecations import quiet_checkpointing_rename

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_checkpointing_rename():
            warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
            warnings.warn("something else is deprecated", FutureWarning)
    assert [str(w.message) for w in caught] == ["something else is deprecated"]


# ---------------------------------------------------------------- --help at 80 columns


def _commands(command=None, prefix=()):
    command = command or typer.main.get_command(app)
    yield " ".join(prefix), command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*prefix, name))


COMMANDS = sorted(name for name, _ in _commands())


@pytest.mark.parametrize("name", COMMANDS)
def test_help_at_80_columns_shows_every_option_name_whole(name):
    command = dict(_commands())[name]
    result = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "…" not in text
    names = [opt for param in command.params for opt in (*param.opts, *getattr(param, "secondary_opts", ()))
             if opt.startswith("--")]
    cut = [opt for opt in names if not re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text)]
    assert not cut, f"`divtune {name} --help` at 80 columns does not show {cut} whole"
    # A group lists each command with its whole summary.
    flat = " ".join(text.split())
    for sub_name, sub in getattr(command, "commands", {}).items():
        assert summary(sub.help) in flat, f"`divtune {name} --help` cuts the summary of {sub_name}"


def test_examples_keep_their_lines_at_80_columns():
    text = CliRunner().invoke(app, ["prepare", "--help"], env={"COLUMNS": "80"}).output
    assert ("divtune prepare --input my_votes.csv --column prompt=title --column response=body --output runs/prep "
            "--max-prompts 50") in text.splitlines()[-1]


# ---------------------------------------------------------------- humaneval build with two files


def test_humaneval_build_compares_the_two_systems_it_was_given(tmp_path, monkeypatch, capsys):
    paths = write_generations(tmp_path / "gen", systems=SYSTEMS[:2])
    out = tmp_path / "study"
    code, text = run_cli(["humaneval", "build", "--generations", *paths, "--output", out], monkeypatch, capsys)
    assert code == 0, text
    key = json.loads((out / "key.json").read_text())
    assert key["pairs"] == [[SYSTEMS[0], SYSTEMS[1]]]  # the first file's system against the second's
    assert len(json.loads((out / "study.json").read_text())["items"]) == 3


def test_humaneval_build_with_more_systems_asks_which_pairs(tmp_path, monkeypatch, capsys):
    paths = write_generations(tmp_path / "gen")
    code, text = run_cli(["humaneval", "build", "--generations", *paths, "--output", tmp_path / "study"],
                         monkeypatch, capsys)
    assert code == 2
    assert text == (f"error: give the pairs to compare (--pair SYSTEM=BASELINE): the generation files hold 3 systems "
                    f"{sorted(SYSTEMS)}, and only two are compared without --pair\n")
    assert not (tmp_path / "study").exists()


def test_the_silenced_calls_leave_the_warning_filters_as_they_found_them(tiny_lm_dir, tmp_path, pairs_dir):
    # load_causal_lm calls itself for an adapter's base: nested uses must not leak a filter.
    cfg = TrainConfig.load(None, tiny_overrides(max_steps=1), method="ddpo", data=str(pairs_dir),
                           model=str(tiny_lm_dir), output=str(tmp_path / "run"))
    run_train(cfg)
    before = list(warnings.filters)
    load_causal_lm(tmp_path / "run", device="cpu")
    assert warnings.filters == before
