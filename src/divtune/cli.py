"""The ``divtune`` command: a thin layer that parses arguments and calls the
stage functions. Each stage registers its own subcommands from
``divtune.commands.<stage>``; heavy imports (torch, transformers) happen
inside the command bodies so ``divtune --help`` stays fast.
"""

from __future__ import annotations

import inspect
import logging
import sys

import typer

from divtune import __version__
from divtune.commands import (
    diagnostics, evaluate, experiment, export, generate, humaneval, prepare, quickstart, report, reward, train,
    typicality,
)
from divtune.config import ConfigError
from divtune.io import InputError
from divtune.resources import MissingResourceError

app = typer.Typer(
    name="divtune",
    help="Post-train language models for creative writing that is good and diverse (DDPO, DORPO, ...).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Click's plain help, not rich's: rich lays options out as a table whose name column it
    # cuts at 80 columns (`--max-responses-per-p…`); click puts a long name on its own line.
    rich_markup_mode=None,
    # Click wraps at 80 columns whatever the terminal; use a wider terminal's width, up to 120.
    context_settings={"max_content_width": 120},
)

for _stage in (
    prepare, typicality, train, generate, reward, evaluate, report, diagnostics, humaneval, export, quickstart, experiment,
):
    _stage.register(app)


def unwrapped(epilog: str) -> str:
    """``epilog`` with every paragraph marked for click to print as written (``\\b``): an example
    command rewrapped at the terminal's width could no longer be copied as one line."""
    return "\n\n".join(f"\b\n{paragraph}" for paragraph in epilog.strip("\n").split("\n\n"))


def summary(help_text: str | None) -> str:
    """The first paragraph of a help text on one line: a command's entry in its group's list,
    given in full (click would cut it to the width left beside the name, ending in "...")."""
    return " ".join((help_text or "").strip().split("\n\n")[0].split())


def _help_of(value) -> str | None:
    return value if isinstance(value, str) else None  # typer keeps unset values as placeholders


def _print_help_whole(typer_app: typer.Typer) -> None:
    """Examples as written and command summaries in full, in every command and group of ``typer_app``."""
    for info in typer_app.registered_commands:
        if info.epilog:
            info.epilog = unwrapped(info.epilog)
        if not info.short_help:
            info.short_help = summary(info.help or inspect.getdoc(info.callback))
    for group in typer_app.registered_groups:
        sub_app = group.typer_instance
        if not _help_of(group.short_help):
            group.short_help = summary(_help_of(group.help) or _help_of(sub_app.info.help))
        _print_help_whole(sub_app)


_print_help_whole(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"divtune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # one line per HTTP request to the hub is noise, not progress
        for name in ("httpx", "httpx2", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main() -> None:
    """Console entry point: user errors print one clear line and exit 2, no traceback."""
    try:
        app()
    except (InputError, ConfigError, FileNotFoundError, MissingResourceError) as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
