"""The prepared-folder contract: what ``divtune prepare`` writes and how every stage reads it.

A prepared folder holds ``train.jsonl`` and ``test.jsonl`` (preference pairs:
``pool_id``, ``prompt``, ``chosen``, ``rejected``, ``weight``, ...),
``responses.jsonl`` (every kept response with its score), ``summary.json``
(written last but the done marker) and ``config.yaml``. This module alone
names those files; a stage that reads a prepared folder goes through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divtune.io import InputError, iter_jsonl, run_kind
from divtune.methods import METHODS

SPLITS = ("train", "test")
TRAIN_FILE = "train.jsonl"
TEST_FILE = "test.jsonl"
RESPONSES_FILE = "responses.jsonl"
#: prepare's summary: its last file before the done marker.
SUMMARY_FILE = "summary.json"
#: What prepare writes besides its summary and config.
PREPARED_FILES = (TRAIN_FILE, TEST_FILE, RESPONSES_FILE)
#: A training file may be gzipped.
TRAIN_FILE_NAMES = (TRAIN_FILE, TRAIN_FILE + ".gz")


def pairs_file(folder: str | Path, split: str) -> Path:
    """The pairs of ``split`` (``train`` or ``test``) in a prepared folder."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return Path(folder) / f"{split}.jsonl"


def responses_file(folder: str | Path) -> Path:
    return Path(folder) / RESPONSES_FILE


def is_prepared_dir(path: str | Path) -> bool:
    """A folder written by ``divtune prepare`` (rather than a raw data file or a ``datasets`` folder)."""
    path = Path(path)
    return path.is_dir() and responses_file(path).is_file()


def is_prepared_file(path: str | Path) -> bool:
    """One of a prepared folder's JSONL files (its folder holds ``responses.jsonl`` too)."""
    path = Path(path)
    return path.name in PREPARED_FILES and responses_file(path.parent).is_file()


@dataclass
class PairRow:
    line: int
    prompt: str
    chosen: str
    rejected: str | None
    weight: float
    pool_id: Any = None
    #: The numeric fields ``read_pairs`` was asked for (``numbers=``), by name.
    numbers: dict[str, float] = field(default_factory=dict)


def train_file(data: str | Path) -> Path:
    """``data`` is a prepared folder (its train.jsonl) or a JSONL file."""
    path = Path(data)
    if path.is_dir():
        check_finished_prepare(path)
        for name in TRAIN_FILE_NAMES:
            if (path / name).is_file():
                return path / name
        raise InputError(path, f"no {TRAIN_FILE_NAMES[0]} in this folder (run `divtune prepare` first)")
    if path.is_file():
        return path
    raise InputError(path, "training data not found")


def check_finished_prepare(folder: Path) -> None:
    """A prepared folder must hold a finished prepare run: a killed one has partial or stale files."""
    found = run_kind(folder)
    if found is None:
        if (folder / SUMMARY_FILE).is_file():  # prepare's last file, but no done marker
            raise InputError(folder, "holds an unfinished prepare run (no done marker); run `divtune prepare` again")
        return  # a folder of hand-made pairs
    kind, finished = found
    if kind not in (None, "prepare"):
        raise InputError(folder, f"holds a {kind} run, not prepared data (give the folder `divtune prepare` wrote)")
    if not finished:
        raise InputError(folder, "holds an unfinished prepare run (no done marker); run `divtune prepare` again")


def read_pairs(path: str | Path, method: str | None = None, *, pool_ids: bool = False,
               numbers: tuple[str, ...] = (), allow_empty: bool = False) -> list[PairRow]:
    """All rows of a pairs file, checked; raises InputError on the first bad row or an empty file.

    ``method`` decides what a row must hold: a rejected response unless the method trains on
    chosen responses only, a deviation weight when its loss is weighted. Without a method a
    row is a plain preference pair (prompt, chosen, rejected). ``pool_ids``: each row must
    name its prompt's pool (a string or an integer). ``numbers``: fields that must be numbers,
    kept in ``PairRow.numbers``. ``allow_empty``: an empty file gives no rows, not an error.
    """
    path = Path(path)
    needs_rejected = method is None or METHODS[method].needs_rejected
    needs_weight = method is not None and METHODS[method].weighted
    rows: list[PairRow] = []
    for line, obj in iter_jsonl(path):
        if not isinstance(obj, dict):
            raise InputError(path, "each line must be a JSON object", line=line)
        pool_id = _pool_id(obj, path, line) if pool_ids else obj.get("pool_id")
        prompt = _text(obj, "prompt", path, line)
        chosen = _text(obj, "chosen", path, line)
        rejected = _text(obj, "rejected", path, line) if needs_rejected else None
        weight = _weight(obj, path, line, method) if needs_weight else 1.0
        values = {name: _number(obj, name, path, line) for name in numbers}
        rows.append(PairRow(line, prompt, chosen, rejected, weight, pool_id, values))
    if not rows and not allow_empty:
        raise InputError(path, "no preference pairs: the file is empty")
    return rows


def _present(obj: dict, name: str, path: Path, line: int) -> Any:
    if name not in obj:
        raise InputError(path, "missing field", line=line, field=name)
    return obj[name]


def _pool_id(obj: dict, path: Path, line: int) -> str | int:
    value = _present(obj, "pool_id", path, line)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(path, f"must be a string or an integer, got {value!r:.60}", line=line, field="pool_id")
    return value


def _number(obj: dict, name: str, path: Path, line: int) -> float:
    value = _present(obj, name, path, line)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(path, f"must be a number, got {value!r:.60}", line=line, field=name)
    return float(value)


def _text(obj: dict, name: str, path: Path, line: int) -> str:
    value = _present(obj, name, path, line)
    if not isinstance(value, str):
        raise InputError(path, f"must be a string, got {type(value).__name__}", line=line, field=name)
    return value


def _weight(obj: dict, path: Path, line: int, method: str) -> float:
    if "weight" not in obj or obj["weight"] is None:
        raise InputError(
            path, f"missing pair weight; method {method} needs the deviation weights of `divtune prepare`",
            line=line, field="weight",
        )
    value = obj["weight"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(path, f"must be a number, got {value!r}", line=line, field="weight")
    if not math.isfinite(value) or value < 0:
        raise InputError(path, f"must be a finite number >= 0, got {value!r}", line=line, field="weight")
    return float(value)
