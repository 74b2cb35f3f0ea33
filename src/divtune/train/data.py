"""Reading prepared preference pairs for training, checking them, and turning
them into the rows TRL's trainers take.

Rules (every row read is used or counted in ``data_report.json``):
- ``prompt``, ``chosen`` (and ``rejected`` except for SFT) must be strings;
  ``ddpo``/``dorpo`` also need a finite, non-negative number in ``weight``.
  A row that breaks this is an error naming the file, line and field.
- A pair whose prompt alone takes ``max_length`` tokens or more leaves no room
  for a completion token: it is dropped and counted (``dropped_long_prompt``).
- A pair whose prompt + completion is longer than ``max_length`` keeps its
  start; the cut is counted (``truncated``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from divtune.io import InputError
from divtune.methods import METHODS, Pairs
from divtune.prepared import PairRow


@dataclass
class DataReport:
    path: str
    rows_read: int = 0
    pairs_used: int = 0
    truncated: int = 0
    dropped_long_prompt: list[dict[str, Any]] = field(default_factory=list)
    dropped_by_trainer: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rows_read": self.rows_read,
            "pairs_used": self.pairs_used,
            "truncated": self.truncated,
            "dropped_long_prompt": len(self.dropped_long_prompt),
            "dropped_long_prompt_rows": self.dropped_long_prompt,
            "dropped_by_trainer": self.dropped_by_trainer,
            "rule": (
                "pairs whose prompt alone fills max_length are dropped; longer prompt+completion keeps its start"
            ),
        }


def check_pairs_kind(data: str | Path, method: str) -> None:
    """``divpo`` must train on DivPO pairs; refuse a folder that ``prepare`` says holds other pairs."""
    config_path = Path(data) / "config.yaml"
    if METHODS[method].pairs is not Pairs.DIVPO or not config_path.is_file():
        return
    prepared = yaml.safe_load(config_path.read_text()) or {}
    kind = prepared.get("pairs") if isinstance(prepared, dict) else None
    if isinstance(kind, str) and kind != Pairs.DIVPO:
        raise InputError(
            config_path, f"method divpo needs DivPO pairs but this data holds {kind!r} pairs "
            "(run `divtune prepare --pairs divpo`)", field="pairs"
        )


def fit_to_max_length(rows: list[PairRow], tokenizer, max_length: int, report: DataReport) -> list[PairRow]:
    """Drop (and count) pairs whose prompt fills ``max_length``; count pairs that will be cut."""
    prompts = [prompt_text(tokenizer, row.prompt) for row in rows]
    prompt_lengths = _token_counts(tokenizer, prompts)
    has_bos = tokenizer.bos_token_id is not None
    longest_completion = _token_counts(
        tokenizer, [max(row.chosen, row.rejected or "", key=len) for row in rows]
    )
    kept: list[PairRow] = []
    for row, prompt_len, completion_len in zip(rows, prompt_lengths, longest_completion):
        prompt_len += int(has_bos)
        if prompt_len >= max_length:
            report.dropped_long_prompt.append({"line": row.line, "pool_id": row.pool_id, "prompt_tokens": prompt_len})
            continue
        # +2: end-of-turn / EOS tokens the template or trainer appends.
        if prompt_len + completion_len + 2 > max_length:
            report.truncated += 1
        kept.append(row)
    if not kept:
        raise InputError(
            report.path,
            f"every prompt is at least max_length={max_length} tokens long; raise max_length",
            field="prompt",
        )
    report.pairs_used = len(kept)
    return kept


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_text(tokenizer, prompt: str) -> str:
    """The prompt as the model sees it: a user turn of the chat template when there is one."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt


def to_trl_rows(rows: list[PairRow], method: str, chat: bool) -> list[dict[str, Any]]:
    """Rows in TRL's formats: conversational (prompt as a user message) when the tokenizer has a chat template."""

    def user(text: str):
        return [{"role": "user", "content": text}] if chat else text

    def assistant(text: str):
        return [{"role": "assistant", "content": text}] if chat else text

    if METHODS[method].pairs is Pairs.CHOSEN:
        return [{"prompt": user(r.prompt), "completion": assistant(r.chosen)} for r in rows]
    return [
        {"prompt": user(r.prompt), "chosen": assistant(r.chosen), "rejected": assistant(r.rejected), "weight": r.weight}
        for r in rows
    ]


def _token_counts(tokenizer, texts: list[str]) -> list[int]:
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [len(ids) for ids in encoded]
