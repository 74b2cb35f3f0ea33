"""The prompts of a generation run: reading them from any supported source, and the text and
token ids the model is fed (truncated, chat-formatted, tokenised alike by both backends)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from divtune.config import ConfigError
from divtune.data.layouts import RowError, detect_layout
from divtune.data.loading import load_prompts
from divtune.data.readers import detect_file_format
from divtune.io import InputError, iter_jsonl, open_text, undecodable_error
from divtune.prepared import is_prepared_file, pairs_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prompt:
    prompt_id: Any
    prompt: str


# --------------------------------------------------------------------------- reading


def read_prompts(
    source: str | Path, max_prompts: int | None = None, layout: str = "auto", columns: dict[str, str] | None = None
) -> list[Prompt]:
    """Prompts from any supported source, in file order, optionally the first ``max_prompts``.

    - a prepared folder: its ``test.jsonl``;
    - a prepared ``test.jsonl``/``train.jsonl`` (pairs): unique prompts by ``pool_id``;
    - a prepared ``responses.jsonl``: its test pools, prompt text from ``test.jsonl`` beside it;
    - a JSONL list with a ``prompt`` field (optional ``prompt_id``, else the line number);
    - a data file as ``prepare`` reads it (CSV/TSV, Parquet, a ``datasets`` folder, or JSONL in
      one of its layouts or with ``columns`` mapped): each distinct prompt once, with the id
      prepare gives its pool (divtune.data.loading.load_prompts);
    - a plain text file: one prompt per line, ``prompt_id`` = line number.
    """
    path = Path(source)
    if path.is_dir() and pairs_file(path, "test").is_file():
        path = pairs_file(path, "test")
    if not path.exists():
        raise FileNotFoundError(f"prompts file not found: {path}")
    kind = _prompt_file_kind(path)
    if columns and kind in ("prepared", "text"):
        what = "a plain text file" if kind == "text" else "a prepared file"
        raise ConfigError(f"--column maps the columns of a data file; {path} is {what}")
    if kind == "data" or (kind == "jsonl" and (columns or layout != "auto" or _is_raw_layout(path))):
        prompts = [Prompt(pool_id, prompt) for pool_id, prompt in load_prompts(path, layout, columns)]
    elif kind in ("jsonl", "prepared"):
        prompts = _read_jsonl_prompts(path)
    else:
        prompts = _read_text_prompts(path)
    if not prompts:
        raise InputError(path, "no prompts found")
    if max_prompts is not None:
        prompts = prompts[:max_prompts]
    return prompts


def _prompt_file_kind(path: Path) -> str:
    """``prepared`` (a stage's JSONL), ``jsonl``, ``data`` (CSV, Parquet, datasets folder) or ``text``."""
    if path.is_dir():
        return "data"  # detect_file_format refuses a folder that is not a datasets folder
    if is_prepared_file(path):
        return "prepared"
    try:
        fmt = detect_file_format(path)
    except InputError:
        return "text"
    return "jsonl" if fmt == "jsonl" else "data"


def _is_raw_layout(path: Path) -> bool:
    """A JSONL file whose first line fits one of prepare's layouts (or has a reddit ``post_title``)."""
    first = next(iter_jsonl(path), None)
    if first is None or not isinstance(first[1], dict):
        return False
    try:
        detect_layout(set(first[1]))
        return True
    except RowError:
        return "post_title" in first[1]


def _read_text_prompts(path: Path) -> list[Prompt]:
    prompts, blank = [], 0
    try:
        with open_text(path) as handle:
            for lineno, line in enumerate(handle, start=1):
                text = line.strip()
                if not text:
                    blank += 1
                    continue
                prompts.append(Prompt(lineno, text))
    except UnicodeDecodeError:
        raise undecodable_error(path) from None
    if blank:
        logger.info("%s: skipped %d blank lines", path, blank)
    return prompts


def _read_jsonl_prompts(path: Path) -> list[Prompt]:
    rows = iter_jsonl(path)
    first = next(rows, None)
    if first is None:
        return []
    lineno, obj = first
    if not isinstance(obj, dict):
        raise InputError(path, f"expected a JSON object, got {type(obj).__name__}", line=lineno)
    rows = _chain([first], rows)
    if "prompt" not in obj and "pool_id" in obj and "split" in obj:
        return _read_responses_prompts(path, rows)
    if "pool_id" in obj and "prompt" in obj:
        return _read_pair_prompts(path, rows)
    return _read_prompt_list(path, rows)


def _chain(head: list, tail: Iterable) -> Iterable:
    yield from head
    yield from tail


def _require_str(path: Path, lineno: int, obj: Any, field: str) -> str:
    if not isinstance(obj, dict):
        raise InputError(path, f"expected a JSON object, got {type(obj).__name__}", line=lineno)
    if field not in obj:
        raise InputError(path, "missing field", line=lineno, field=field)
    value = obj[field]
    if not isinstance(value, str) or not value.strip():
        raise InputError(path, f"must be a non-empty string, got {value!r:.60}", line=lineno, field=field)
    return value


def _read_pair_prompts(path: Path, rows) -> list[Prompt]:
    """Prepared pairs: several lines share a pool; keep one prompt per pool_id."""
    by_pool: dict[Any, str] = {}
    for lineno, obj in rows:
        prompt = _require_str(path, lineno, obj, "prompt")
        pool_id = obj.get("pool_id")
        if pool_id is None:
            raise InputError(path, "missing field", line=lineno, field="pool_id")
        if by_pool.setdefault(pool_id, prompt) != prompt:
            raise InputError(path, f"pool {pool_id!r} has two different prompts", line=lineno, field="prompt")
    return [Prompt(pool_id, prompt) for pool_id, prompt in by_pool.items()]


def _read_responses_prompts(path: Path, rows) -> list[Prompt]:
    """``responses.jsonl`` holds pool ids but no prompt text: join with ``test.jsonl`` beside it."""
    test_pools: list[Any] = []
    seen: set = set()
    for lineno, obj in rows:
        if not isinstance(obj, dict) or "pool_id" not in obj:
            raise InputError(path, "missing field", line=lineno, field="pool_id")
        if obj.get("split") == "test" and obj["pool_id"] not in seen:
            seen.add(obj["pool_id"])
            test_pools.append(obj["pool_id"])
    pairs_path = pairs_file(path.parent, "test")
    if not pairs_path.is_file():
        raise InputError(path, f"has no prompt text and {pairs_path} (where it is looked up) is missing")
    texts = {p.prompt_id: p.prompt for p in _read_pair_prompts(pairs_path, iter_jsonl(pairs_path))}
    missing = [pool for pool in test_pools if pool not in texts]
    if missing:
        # Pools with responses but no pair have no prompt text anywhere: say so, don't drop silently.
        logger.warning("%s: %d test pools have no prompt in %s and are skipped (e.g. %r)",
                       path, len(missing), pairs_path, missing[0])
    return [Prompt(pool, texts[pool]) for pool in test_pools if pool in texts]


def _read_prompt_list(path: Path, rows) -> list[Prompt]:
    prompts: list[Prompt] = []
    seen: dict[Any, int] = {}
    for lineno, obj in rows:
        prompt = _require_str(path, lineno, obj, "prompt")
        prompt_id = obj.get("prompt_id", lineno)
        if prompt_id in seen:
            raise InputError(path, f"duplicate prompt_id {prompt_id!r} (first on line {seen[prompt_id]})",
                             line=lineno, field="prompt_id")
        seen[prompt_id] = lineno
        prompts.append(Prompt(prompt_id, prompt))
    return prompts


# --------------------------------------------------------------------------- what the model is fed


def truncate_prompt(tokenizer, prompt: str, max_tokens: int | None) -> tuple[str, bool]:
    """The prompt cut to its first ``max_tokens`` tokens; also whether it was cut."""
    if max_tokens is None:
        return prompt, False
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return prompt, False
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True), True


def format_prompts(tokenizer, prompts, cfg) -> list[str]:
    """Every prompt truncated (counted in the log) and formatted as the model sees it."""
    formatted = []
    n_cut = 0
    for p in prompts:
        text, cut = truncate_prompt(tokenizer, p.prompt, cfg.max_prompt_tokens)
        n_cut += cut
        formatted.append(format_prompt(tokenizer, text, cfg.use_chat_template))
    if n_cut:
        logger.info("%d of %d prompts are longer than max_prompt_tokens=%d and keep their start",
                    n_cut, len(prompts), cfg.max_prompt_tokens)
    return formatted


def encode_prompts(tokenizer, formatted: list[str], use_chat_template: bool = True) -> list[list[int]]:
    """Token ids of formatted prompts, exactly as both backends feed them to the model.

    A chat template writes its own special tokens (Llama-3's starts with
    ``{{ bos_token }}``), so none are added again; a plain prompt gets the
    tokenizer's own (its BOS, if it adds one).
    """
    add_special = not (use_chat_template and getattr(tokenizer, "chat_template", None))
    return [list(ids) for ids in tokenizer(formatted, add_special_tokens=add_special)["input_ids"]]


def prompt_token_ids(tokenizer, prompts, cfg) -> list[list[int]]:
    """Every prompt truncated, formatted and tokenised: the ids the model is fed (HF and vllm backends)."""
    return encode_prompts(tokenizer, format_prompts(tokenizer, prompts, cfg), cfg.use_chat_template)


def format_prompt(tokenizer, prompt: str, use_chat_template: bool = True) -> str:
    """The prompt as the model sees it: a user turn of the chat template when there is one."""
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
    return prompt
