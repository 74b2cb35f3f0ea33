"""The three input layouts and per-row validation.

- reddit: ``post_title``, ``post_text`` (optional), ``comment_texts``, ``comment_scores``
  (the euclaise/WritingPrompts_preferences columns);
- pools: ``prompt``, ``responses`` (list), ``scores`` (list);
- flat: ``prompt``, ``response``, ``score``, one row per response.
An optional column names the pool: ``post_id`` (reddit), ``id`` or ``prompt_id``
(pools), ``prompt_id`` (flat); otherwise the id is a hash of the prompt text.

Every problem raises :class:`RowError`, which the loader turns into an
:class:`~divtune.io.InputError` (file, line, field) or, with ``skip_invalid``, a
counted drop.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

LAYOUTS = ("reddit", "pools", "flat")
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "reddit": ("post_title", "comment_texts", "comment_scores"),
    "pools": ("prompt", "responses", "scores"),
    "flat": ("prompt", "response", "score"),
}
# Columns that name a pool; in the flat layout a row is a response, so only prompt_id.
ID_COLUMNS = {"reddit": ("post_id",), "pools": ("id", "prompt_id"), "flat": ("prompt_id",)}

# "[WP] ", "[WP][EU] ", "[ WP ] " ... at the start of a Reddit title.
_TITLE_TAG_RE = re.compile(r"^\s*(?:\[\s*[A-Za-z]{1,6}\s*\]\s*)+")


class RowError(ValueError):
    """A bad value in one row; ``reason`` is the short key counted under --skip-invalid."""

    def __init__(self, field: str, message: str, reason: str):
        super().__init__(message)
        self.field = field
        self.reason = reason


@dataclass
class RowPool:
    """What one valid row contributes: a prompt and its (text, score) responses."""

    prompt: str
    responses: list[tuple[str, float]]
    pool_id: str | None = None


def detect_layout(columns: set[str]) -> str:
    for layout in ("reddit", "pools", "flat"):
        if set(REQUIRED_COLUMNS[layout]) <= columns:
            return layout
    raise RowError(
        "<columns>",
        "cannot tell the layout from the columns "
        f"{sorted(columns)}; expected one of "
        + "; ".join(f"{name}: {', '.join(cols)}" for name, cols in REQUIRED_COLUMNS.items())
        + " (rename columns with --column NAME=SOURCE or choose --format)",
        "unknown_layout",
    )


def reddit_prompt(title: str, text: str) -> str:
    """Title without its leading [WP]-style tag(s), a newline, then the post text.
    With an empty post text the prompt is the bare title (no trailing newline)."""
    title = _TITLE_TAG_RE.sub("", title).strip()
    text = (text or "").strip()
    return f"{title}\n{text}" if text else title


def _require(row: Mapping[str, Any], column: str) -> Any:
    if column not in row:
        raise RowError(column, "missing column", "missing_column")
    return row[column]


def _text(value: Any, field: str, allow_none: bool = False) -> str:
    if value is None and allow_none:
        return ""
    if not isinstance(value, str):
        raise RowError(field, f"expected text, got {type(value).__name__} {value!r:.60}", "non_text")
    return value


def _score(value: Any, field: str) -> float:
    """A finite number; numeric strings (CSV cells) are accepted, booleans are not."""
    if isinstance(value, bool) or value is None:
        raise RowError(field, f"score {value!r} is not a number", "non_numeric_score")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise RowError(field, f"score {value!r:.40} is not a number", "non_numeric_score") from None
    if not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy scalars from Parquet/datasets
        except (TypeError, ValueError):
            raise RowError(field, f"score {value!r:.40} is not a number", "non_numeric_score") from None
    if not math.isfinite(float(value)):
        raise RowError(field, f"score {value!r} is NaN or infinite", "nan_score")
    return float(value)


def _list(value: Any, field: str) -> list:
    if isinstance(value, tuple) or (hasattr(value, "tolist") and not isinstance(value, str)):
        value = list(value.tolist() if hasattr(value, "tolist") else value)
    if not isinstance(value, list):
        raise RowError(field, f"expected a list, got {type(value).__name__}", "not_a_list")
    return value


def _paired_lists(row: Mapping[str, Any], text_col: str, score_col: str) -> list[tuple[str, float]]:
    texts = _list(_require(row, text_col), text_col)
    scores = _list(_require(row, score_col), score_col)
    if len(texts) != len(scores):
        raise RowError(
            score_col, f"{len(scores)} scores for {len(texts)} texts in {text_col!r}", "length_mismatch"
        )
    return [
        (_text(t, f"{text_col}[{i}]"), _score(s, f"{score_col}[{i}]")) for i, (t, s) in enumerate(zip(texts, scores))
    ]


def _pool_id(row: Mapping[str, Any], layout: str) -> str | None:
    for column in ID_COLUMNS[layout]:
        value = row.get(column)
        if value is not None and value != "":
            return str(value)
    return None


def prompt_of_row(row: Mapping[str, Any], layout: str) -> tuple[str, str | None]:
    """The prompt of one row and its id column's value, as :func:`parse_row` reads them, without the
    responses; ``layout`` may also be ``prompts`` (a ``prompt`` column, optional ``prompt_id`` or ``id``)."""
    if layout == "reddit":
        title = _text(_require(row, "post_title"), "post_title")
        return reddit_prompt(title, _text(row.get("post_text"), "post_text", allow_none=True)), _pool_id(row, layout)
    prompt = _text(_require(row, "prompt"), "prompt")
    return prompt, _pool_id(row, "pools" if layout == "prompts" else layout)


def parse_row(row: Mapping[str, Any], layout: str) -> RowPool:
    """Validate one row (already renamed to canonical columns) of the given layout."""
    if layout == "reddit":
        title = _text(_require(row, "post_title"), "post_title")
        text = _text(row.get("post_text"), "post_text", allow_none=True)
        responses = _paired_lists(row, "comment_texts", "comment_scores")
        return RowPool(reddit_prompt(title, text), responses, _pool_id(row, layout))
    if layout == "pools":
        prompt = _text(_require(row, "prompt"), "prompt")
        return RowPool(prompt, _paired_lists(row, "responses", "scores"), _pool_id(row, layout))
    if layout == "flat":
        prompt = _text(_require(row, "prompt"), "prompt")
        response = _text(_require(row, "response"), "response")
        return RowPool(prompt, [(response, _score(_require(row, "score"), "score"))], _pool_id(row, layout))
    raise ValueError(f"unknown layout {layout!r}; choose from {LAYOUTS}")
