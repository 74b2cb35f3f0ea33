"""The ``divtune`` command: a thin layer that parses arguments and calls the
stage functions. Each stage registers its own subcommands from
``divtune.commands.<stage>``; heavy imports (torch, transformers) happen
inside the command bodies so ``divtune --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys

import typer

from divtune import __version__
from divtune.commands import (
    diagnostics, evaluate, experiment, export, generate, humaneval, prepare, quickstart, report, reward, train,
    typicality,
)

app = typer.Typer(
    name="divtune",
    help="Post-train language models for creative writing that is good and diverse (DDPO, DORPO, ...).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _stage in (
    prepare, typicality, train, generate, reward, evaluate, report, diagnostics, humaneval, export, quickstart, experiment,
):
    _stage.register(app)


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
    from divtune.config import ConfigError
    from divtune.io import InputError
    from divtune.resources import MissingResourceError

    try:
        app()
    except (InputError, ConfigError, FileNotFoundError, MissingResourceError) as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
