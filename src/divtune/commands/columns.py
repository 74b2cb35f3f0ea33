"""``--column NAME=SOURCE``: the column mapping of a data file, shared by every command that reads
one the way ``prepare`` does (prepare, generate --prompts, evaluate --gold)."""

from __future__ import annotations

import typer

COLUMN_HELP = "Column remap NAME=SOURCE, e.g. prompt=title or response=body. Repeatable."
FORMAT_HELP = "Layout of the data file: auto, reddit, pools or flat, as `prepare` reads them (default auto)."


def parse_columns(items: list[str] | None) -> dict[str, str] | None:
    """``["prompt=title"]`` -> ``{"prompt": "title"}``; None when no mapping is given."""
    if not items:
        return None
    columns = {}
    for item in items:
        name, sep, source = item.partition("=")
        if not sep or not name.strip() or not source.strip():
            raise typer.BadParameter(f"{item!r} is not of the form NAME=SOURCE (e.g. prompt=title)", param_hint="--column")
        columns[name.strip()] = source.strip()
    return columns
