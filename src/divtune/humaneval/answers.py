"""Annotators' answer files: read, check against the study, keep one answer per annotator and item.

Two forms are read:

- the JSON file the page downloads::

    {"format": "divtune-humaneval-answers", "version": 1, "build_id": "...", "annotator": "...",
     "answers": [{"item_id": "item-001", "answers": {"diverse": "A", ...}, "comment": "...",
                  "timestamp": "2026-01-02T10:11:12.000Z"}, ...]}

- a CSV (e.g. exported from a crowdsourcing tool that showed ``items.csv``) with
  the columns ``build_id, annotator, item_id, timestamp``, one column per
  question id holding ``A``, ``B`` or ``tie`` (empty = not answered) and an
  optional ``comment``; other columns are ignored and listed in the results.

Every problem raises :class:`~divtune.io.InputError` naming the file, the
line/row and the field. When one annotator answered one item more than once
(two downloads, or the same file given twice) the answer with the latest
timestamp counts (on equal timestamps, the one read last) and every dropped
answer is reported.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from divtune.config import ConfigError
from divtune.humaneval.study import ANSWERS_FORMAT, CHOICES
from divtune.io import InputError, undecodable_error

CSV_REQUIRED = ("build_id", "annotator", "item_id", "timestamp")


@dataclass
class StudyView:
    """What answer files are checked against (from ``study.json``)."""

    build_id: str
    item_ids: set[str]
    question_ids: list[str]


@dataclass
class Answer:
    annotator: str
    item_id: str
    choices: dict[str, str]  # question id -> "A" | "B" | "tie"; unanswered questions are absent
    comment: str
    timestamp: datetime
    source: str  # file
    where: str  # "answers[3]" (JSON) or "row 4" (CSV)
    order: int  # position in the read order over all files, breaks timestamp ties


@dataclass
class AnswerSet:
    kept: list[Answer]
    dropped: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)


def _timestamp(value: Any, path: Path, line: int | None, name: str) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise InputError(path, "missing or empty timestamp (ISO 8601 expected)", line=line, field=name)
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InputError(path, f"{value!r} is not an ISO 8601 timestamp", line=line, field=name) from None
    # Naive times are taken as UTC so they compare with the page's (which end in Z).
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _check_choices(raw: Any, study: StudyView, path: Path, line: int | None, prefix: str) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise InputError(path, "expected an object {question id: A, B or tie}", line=line, field=prefix)
    for question, choice in raw.items():
        if question not in study.question_ids:
            raise InputError(path, f"unknown question (the study asks {study.question_ids})", line=line, field=f"{prefix}.{question}")
        if choice not in CHOICES:
            raise InputError(path, f"{choice!r} is not one of {list(CHOICES)}", line=line, field=f"{prefix}.{question}")
    return dict(raw)


def _check_build(value: Any, study: StudyView, path: Path, line: int | None) -> None:
    if value != study.build_id:
        raise InputError(
            path, f"answers are from build {value!r}, this study is build {study.build_id!r} (answers from another build)",
            line=line, field="build_id",
        )


def _check_item(value: Any, study: StudyView, path: Path, line: int | None, name: str) -> str:
    if not isinstance(value, str) or value not in study.item_ids:
        raise InputError(path, f"unknown item id {value!r} (not in this study)", line=line, field=name)
    return value


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise InputError(path, "answer file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise undecodable_error(path) from None
    if not text.strip():
        raise InputError(path, "empty answer file")
    return text


def read_json_answers(path: Path, study: StudyView, start: int = 0) -> list[Answer]:
    """The answers of one file downloaded from the page; ``start`` numbers them in the global read order."""
    text = _read_text(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(path, f"malformed JSON ({err.msg} at column {err.colno})", line=err.lineno) from None
    if not isinstance(doc, dict):
        raise InputError(path, f"expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != ANSWERS_FORMAT:
        raise InputError(path, f"expected {ANSWERS_FORMAT!r}, got {doc.get('format')!r}: not an answer file of the page", field="format")
    _check_build(doc.get("build_id"), study, path, None)
    annotator = doc.get("annotator")
    if not isinstance(annotator, str) or not annotator.strip():
        raise InputError(path, "missing or empty annotator id", field="annotator")
    records = doc.get("answers")
    if not isinstance(records, list):
        raise InputError(path, "expected a list of answers", field="answers")
    if not records:
        raise InputError(path, "holds no answers (was it downloaded before answering?)", field="answers")
    out = []
    for index, record in enumerate(records):
        where = f"answers[{index}]"
        if not isinstance(record, dict):
            raise InputError(path, "expected an object", field=where)
        item_id = _check_item(record.get("item_id"), study, path, None, f"{where}.item_id")
        choices = _check_choices(record.get("answers", {}), study, path, None, f"{where}.answers")
        comment = record.get("comment", "")
        if not isinstance(comment, str):
            raise InputError(path, "must be a string", field=f"{where}.comment")
        stamp = _timestamp(record.get("timestamp"), path, None, f"{where}.timestamp")
        out.append(Answer(annotator.strip(), item_id, choices, comment, stamp, str(path), where, start + index))
    return out


def read_csv_answers(path: Path, study: StudyView, start: int = 0) -> tuple[list[Answer], list[str]]:
    """The answers of a CSV with one row per annotator and item; also returns the ignored columns."""
    text = _read_text(path)
    reader = csv.DictReader(text.splitlines(keepends=True))
    columns = reader.fieldnames or []
    for name in CSV_REQUIRED:
        if name not in columns:
            raise InputError(path, f"missing column (needs {list(CSV_REQUIRED)} and question columns)", line=1, field=name)
    questions = [q for q in study.question_ids if q in columns]
    if not questions:
        raise InputError(path, f"no question column: expected at least one of {study.question_ids}", line=1)
    ignored = [c for c in columns if c not in (*CSV_REQUIRED, *questions, "comment")]
    out = []
    for row in reader:
        line = reader.line_num
        if None in row:
            raise InputError(path, "more cells than header columns", line=line)
        _check_build(row["build_id"], study, path, line)
        annotator = (row["annotator"] or "").strip()
        if not annotator:
            raise InputError(path, "missing or empty annotator id", line=line, field="annotator")
        item_id = _check_item((row["item_id"] or "").strip(), study, path, line, "item_id")
        raw = {q: row[q].strip() for q in questions if row[q] is not None and row[q].strip()}
        choices = _check_choices(raw, study, path, line, "answers")
        stamp = _timestamp(row["timestamp"], path, line, "timestamp")
        out.append(Answer(annotator, item_id, choices, (row.get("comment") or ""), stamp, str(path), f"row {line}", start + len(out)))
    if not out:
        raise InputError(path, "holds a header but no answer rows")
    return out, ignored


def read_answers(paths: list[str | Path], study: StudyView) -> AnswerSet:
    """All answer files, checked; the last answer of each (annotator, item) kept, the rest reported."""
    if not paths:
        raise ConfigError("give at least one answer file")
    every: list[Answer] = []
    files = []
    for path in map(Path, paths):
        if path.suffix.lower() == ".csv":
            answers, ignored = read_csv_answers(path, study, start=len(every))
        else:
            answers, ignored = read_json_answers(path, study, start=len(every)), []
        every += answers
        files.append({"file": str(path), "records": len(answers), "annotators": sorted({a.annotator for a in answers}),
                      "ignored_columns": ignored})
    latest: dict[tuple[str, str], Answer] = {}
    for answer in every:
        key = (answer.annotator, answer.item_id)
        if key not in latest or (answer.timestamp, answer.order) > (latest[key].timestamp, latest[key].order):
            latest[key] = answer
    kept_ids = {id(a) for a in latest.values()}
    dropped = []
    for answer in every:
        if id(answer) in kept_ids:
            continue
        winner = latest[(answer.annotator, answer.item_id)]
        dropped.append({
            "annotator": answer.annotator, "item_id": answer.item_id, "file": answer.source, "where": answer.where,
            "timestamp": answer.timestamp.isoformat(), "kept": f"{winner.source} {winner.where}",
            "reason": "the same annotator answered this item again later",
        })
    kept = sorted(latest.values(), key=lambda a: a.order)
    return AnswerSet(kept=kept, dropped=dropped, files=files)
