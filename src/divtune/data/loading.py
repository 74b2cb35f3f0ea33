"""Read every input file into pools (one per distinct prompt), validating rows."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from divtune.config import did_you_mean
from divtune.data.layouts import LAYOUTS, REQUIRED_COLUMNS, RowError, detect_layout, parse_row, prompt_of_row
from divtune.data.readers import detect_file_format, iter_rows
from divtune.io import InputError

#: Row errors about the file's columns rather than one row's values.
COLUMN_REASONS = ("unknown_layout", "missing_column")


@dataclass
class Pool:
    pool_id: str
    prompt: str
    layout: str
    texts: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


@dataclass
class LoadReport:
    files: dict[str, str] = field(default_factory=dict)  # path -> layout
    rows_read: int = 0
    rows_invalid: Counter = field(default_factory=Counter)
    responses_read: int = 0


def _rename(row: dict, columns: dict[str, str]) -> dict:
    """``columns`` maps divtune's column name to the file's column name."""
    if not columns:
        return row
    renamed = dict(row)
    for canonical, source in columns.items():
        if source in row:
            renamed[canonical] = row[source]
    return renamed


def column_error(path: Path, err: RowError, raw: dict, row: dict, columns: dict[str, str], line: int) -> InputError:
    """A missing or unknown column, named, with the columns the file has.

    A ``--column NAME=SOURCE`` whose SOURCE the file lacks is the likely cause, so it is
    named first (with the closest column). ``raw`` is the row as read, ``row`` after the
    mapping. In a CSV the columns are its header: line 1.
    """
    present = sorted(str(k) for k in raw)
    header_line = 1 if detect_file_format(path) == "csv" else line
    absent = [(name, source) for name, source in columns.items() if source not in raw]
    if absent:
        name, source = absent[0]
        return InputError(
            path, f"no column {source!r} (from --column {name}={source}); the columns are {present}"
            + did_you_mean(source, present),
            line=header_line, field=source,
        )
    if err.reason == "missing_column":
        return InputError(
            path, f"missing column; the columns are {present}" + (did_you_mean(err.field, present)
                  or f"; map one with --column {err.field}=SOURCE"),
            line=header_line, field=err.field,
        )
    return InputError(path, str(err) + closest_layout(set(row)), line=header_line)


def closest_layout(present: set) -> str:
    """"; closest: flat, which lacks 'response'" for the layout with most of its columns present, or ""."""
    have = {name: [c for c in cols if c in present] for name, cols in REQUIRED_COLUMNS.items()}
    best = max(REQUIRED_COLUMNS, key=lambda name: len(have[name]))
    if not have[best]:
        return ""
    lacking = [c for c in REQUIRED_COLUMNS[best] if c not in present]
    others = sorted(str(c) for c in present - set(REQUIRED_COLUMNS[best]))
    return f"; closest: {best}, which lacks {', '.join(map(repr, lacking))}" + did_you_mean(lacking[0], others)


def _fallback_id(prompt: str) -> str:
    return "p-" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


def unique_pool_id(given: str | None, prompt: str, used_ids: set[str]) -> str:
    """The id column's value, else a hash of the prompt; made unique when another prompt has it."""
    pool_id = given or _fallback_id(prompt)
    if pool_id in used_ids:  # same id, different prompt: keep ids unique
        pool_id = f"{pool_id}-{_fallback_id(prompt)}"
    used_ids.add(pool_id)
    return pool_id


#: A table of prompts alone (``generate --prompts``): a ``prompt`` column, optional ``prompt_id`` or ``id``.
PROMPTS_LAYOUT = "prompts"


def _prompts_layout(row: dict) -> str:
    """The layout a prompt file is read in: prepare's, when its columns fit one; else a table of prompts."""
    try:
        return detect_layout(set(row))
    except RowError:
        return "reddit" if "post_title" in row else PROMPTS_LAYOUT


def load_prompts(
    path: str | Path, layout: str = "auto", columns: dict[str, str] | None = None
) -> list[tuple[str, str]]:
    """``(id, prompt)`` of every distinct prompt of a data file, in first-seen order.

    Read as ``prepare`` reads it (same readers, ``--column`` mapping and layouts): the
    prompt is the one prepare builds (a reddit title without its tag, then the post
    text) and the id the pool id prepare gives it, so generations from the file match
    a gold row or prepared folder made from it. Responses and scores are not needed:
    a table with just a ``prompt`` column (optional ``prompt_id`` or ``id``) works too.
    """
    if layout != "auto" and layout not in LAYOUTS:
        raise ValueError(f"format must be auto or one of {LAYOUTS}, got {layout!r}")
    path = Path(path)
    columns = columns or {}
    file_layout = None if layout == "auto" else layout
    prompts: dict[str, str] = {}
    used_ids: set[str] = set()
    for line, raw in iter_rows(path):
        row = _rename(raw, columns)
        file_layout = file_layout or _prompts_layout(row)
        try:
            prompt, given_id = prompt_of_row(row, file_layout)
        except RowError as err:
            if err.reason in COLUMN_REASONS:
                raise column_error(path, err, raw, row, columns, line) from None
            raise InputError(path, str(err), line=line, field=err.field) from None
        if not prompt.strip():
            raise InputError(path, "empty prompt", line=line, field="prompt")
        if prompt not in prompts:
            prompts[prompt] = unique_pool_id(given_id, prompt, used_ids)
    return [(pool_id, prompt) for prompt, pool_id in prompts.items()]


def load_pools(
    inputs: list[str | Path],
    layout: str = "auto",
    columns: dict[str, str] | None = None,
    skip_invalid: bool = False,
) -> tuple[list[Pool], LoadReport]:
    """Pools in first-seen order. Rows with the same prompt text (in any file) join
    one pool, so the prompt split cannot leak. Bad rows raise InputError, or with
    ``skip_invalid`` are counted in ``report.rows_invalid`` by reason."""
    if layout != "auto" and layout not in LAYOUTS:
        raise ValueError(f"format must be auto or one of {LAYOUTS}, got {layout!r}")
    columns = columns or {}
    report = LoadReport()
    pools: dict[str, Pool] = {}
    used_ids: set[str] = set()
    for path in inputs:
        path = Path(path)
        file_layout = None if layout == "auto" else layout
        for line, raw in iter_rows(path):
            report.rows_read += 1
            row = _rename(raw, columns)
            try:
                if file_layout is None:
                    file_layout = detect_layout(set(row))
                parsed = parse_row(row, file_layout)
            except RowError as err:
                # A column missing from a CSV/Parquet header is missing from every row: never a row to skip.
                whole_file = err.reason == "unknown_layout" or (
                    err.reason == "missing_column" and detect_file_format(path) != "jsonl")
                if whole_file or not skip_invalid:
                    if err.reason in COLUMN_REASONS:
                        raise column_error(path, err, raw, row, columns, line) from None
                    raise InputError(path, str(err), line=line, field=err.field) from None
                report.rows_invalid[err.reason] += 1
                continue
            report.files[str(path)] = file_layout
            report.responses_read += len(parsed.responses)
            pool = pools.get(parsed.prompt)
            if pool is None:
                pool_id = unique_pool_id(parsed.pool_id, parsed.prompt, used_ids)
                pool = pools[parsed.prompt] = Pool(pool_id, parsed.prompt, file_layout)
            for text, score in parsed.responses:
                pool.texts.append(text)
                pool.scores.append(score)
    return list(pools.values()), report
