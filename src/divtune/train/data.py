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

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divtune.io import InputError, iter_jsonl

TRAIN_FILE_NAMES = ("train.jsonl", "train.jsonl.gz")


@dataclass
class PairRow:
    line: int
    prompt: str
    chosen: str
    rejected: str | None
    weight: float
    pool_id: Any = None


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
    from divtune.outputs import run_kind

    found = run_kind(folder)
    if found is None:
        if (folder / "summary.json").is_file():  # prepare's last file, but no done marker
            raise InputError(folder, "holds an unfinished prepare run (no done marker); run `divtune prepare` again")
        return  # a folder of hand-made pairs
    kind, finished = found
    if kind not in (None, "prepare"):
        raise InputError(folder, f"holds a {kind} run, not prepared data (give the folder `divtune prepare` wrote)")
    if not finished:
        raise InputError(folder, "holds an unfinished prepare run (no done marker); run `divtune prepare` again")


def read_pairs(path: str | Path, method: str) -> list[PairRow]:
    """All rows of a pairs file, checked; raises InputError on the first bad row or an empty file."""
    path = Path(path)
    needs_rejected = method != "sft"
    needs_weight = method in ("ddpo", "dorpo")
    rows: list[PairRow] = []
    for line, obj in iter_jsonl(path):
        if not isinstance(obj, dict):
            raise InputError(path, "each line must be a JSON object", line=line)
        prompt = _text(obj, "prompt", path, line)
        chosen = _text(obj, "chosen", path, line)
        rejected = _text(obj, "rejected", path, line) if needs_rejected else None
        weight = _weight(obj, path, line, method) if needs_weight else 1.0
        rows.append(PairRow(line, prompt, chosen, rejected, weight, obj.get("pool_id")))
    if not rows:
        raise InputError(path, "no preference pairs: the file is empty")
    return rows


def check_pairs_kind(data: str | Path, method: str) -> None:
    """``divpo`` must train on DivPO pairs; refuse a folder that ``prepare`` says holds other pairs."""
    config_path = Path(data) / "config.yaml"
    if method != "divpo" or not config_path.is_file():
        return
    import yaml

    prepared = yaml.safe_load(config_path.read_text()) or {}
    kind = prepared.get("pairs") if isinstance(prepared, dict) else None
    if isinstance(kind, str) and kind != "divpo":
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

    if method == "sft":
        return [{"prompt": user(r.prompt), "completion": assistant(r.chosen)} for r in rows]
    return [
        {"prompt": user(r.prompt), "chosen": assistant(r.chosen), "rejected": assistant(r.rejected), "weight": r.weight}
        for r in rows
    ]


def _token_counts(tokenizer, texts: list[str]) -> list[int]:
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [len(ids) for ids in encoded]


def _text(obj: dict, name: str, path: Path, line: int) -> str:
    if name not in obj:
        raise InputError(path, "missing field", line=line, field=name)
    value = obj[name]
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
