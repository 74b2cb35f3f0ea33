"""Docs and CLI cannot drift apart: every option of every command appears in the
command's docs page, every setting of a stage config in its page; every command's
--help has examples, a description per option and one way of showing defaults.

To add a command: add it to COMMAND_PAGES (and its config class to CONFIG_PAGES).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from divtune.cli import app

DOCS = Path(__file__).resolve().parents[1] / "docs"

#: Command path -> the docs pages that document its options.
COMMAND_PAGES: dict[str, tuple[str, ...]] = {
    "prepare": ("prepare.md",),
    "train": ("train.md", "online.md"),
    "generate": ("generate.md",),
    "reward train": ("reward.md",),
    "reward score": ("reward.md",),
    "evaluate": ("evaluate.md",),
    "report": ("evaluate.md",),
    "diagnostics": ("experiment.md",),
    "quickstart": ("experiment.md",),
    "experiment": ("experiment.md",),
    "typicality": ("typicality.md",),
    "export": ("export.md",),
    "humaneval build": ("humaneval.md",),
    "humaneval analyze": ("humaneval.md",),
}


def _config_pages():
    from divtune.evaluation.config import EvaluateConfig
    from divtune.experiments import ExperimentConfig, SystemSpec
    from divtune.export import ExportConfig
    from divtune.generation.config import GenerateConfig
    from divtune.prepare import PrepareConfig
    from divtune.reward.config import RewardTrainConfig
    from divtune.train import TrainConfig
    from divtune.train.online_config import OnlineConfig
    from divtune.typicality import TypicalityConfig

    return {
        PrepareConfig: "prepare.md",
        TrainConfig: "train.md",
        OnlineConfig: "online.md",
        GenerateConfig: "generate.md",
        RewardTrainConfig: "reward.md",
        EvaluateConfig: "evaluate.md",
        ExperimentConfig: "experiment.md",
        SystemSpec: "experiment.md",
        TypicalityConfig: "typicality.md",
        ExportConfig: "export.md",
    }


def _commands(command=None, prefix=()):
    """(command path, click command) of every leaf command of the typer app."""
    command = command or typer.main.get_command(app)
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*prefix, name))
    else:
        yield " ".join(prefix), command


ALL_COMMANDS = sorted(name for name, _ in _commands())


def _options(command):
    return [p for p in command.params if any(o.startswith("--") for o in p.opts)]


def test_every_command_has_a_docs_page():
    missing = [name for name in ALL_COMMANDS if name not in COMMAND_PAGES]
    assert not missing, f"add these commands to COMMAND_PAGES with their docs page: {missing}"


@pytest.mark.parametrize("name", ALL_COMMANDS)
def test_every_option_is_in_the_commands_docs_page(name):
    command = dict(_commands())[name]
    text = "".join((DOCS / page).read_text(encoding="utf-8") for page in COMMAND_PAGES.get(name, ()))
    missing = [
        option for param in _options(command) for option in param.opts
        if option.startswith("--") and option != "--help" and not re.search(re.escape(option) + r"(?![\w-])", text)
    ]
    assert not missing, f"`divtune {name}` options missing from docs/{'/'.join(COMMAND_PAGES.get(name, ()))}: {missing}"


def test_every_config_setting_is_in_its_docs_page():
    missing = {}
    for config_class, page in _config_pages().items():
        text = (DOCS / page).read_text(encoding="utf-8")
        # A setting is documented by its key (`min_words`) or by the flag of the same name (`--min-words`).
        absent = [
            f for f in config_class.model_fields
            if not re.search(rf"(?<![\w-]){re.escape(f)}(?!\w)|--{re.escape(f.replace('_', '-'))}(?![\w-])", text)
        ]
        if absent:
            missing[f"{config_class.__name__} (docs/{page})"] = absent
    assert not missing, f"settings missing from their docs page: {missing}"


@pytest.mark.parametrize("name", ALL_COMMANDS)
def test_help_has_examples_descriptions_and_one_default_style(name):
    result = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert re.search(r"Examples?:", text), f"`divtune {name} --help` has no example"
    assert f"divtune {name} " in text
    # One way of showing defaults: "(default X)" in the description, never typer's "[default: X]".
    assert "[default:" not in text
    command = dict(_commands())[name]
    undescribed = [p.opts[0] for p in _options(command) if p.opts[0] != "--help" and not (p.help or "").strip()]
    assert not undescribed, f"`divtune {name}` options without a description: {undescribed}"


def test_train_help_names_the_method_and_model_defaults_and_the_cpu_sizes():
    text = " ".join(CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "(default ddpo)" in text
    assert "(default smollm2" in text
    assert "max_length 128 and a batch of 2 per device" in text
