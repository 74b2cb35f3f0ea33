"""The data of online training: one prompt per pool of the prepared pairs, as TRL's prompt dataset."""

from __future__ import annotations

from pathlib import Path

from divtune.io import InputError, iter_jsonl


def load_online_prompts(train_path: str | Path) -> tuple[list[dict[str, str]], dict[str, int]]:
    """One prompt per pool from a prepared ``train.jsonl`` (pairs share their pool's prompt).

    Returns ``(rows, counts)`` with rows ``{"pool_id", "prompt"}`` in file
    order and counts of rows read / prompts kept / rows that repeat a pool.
    """
    train_path = Path(train_path)
    if not train_path.is_file():
        raise InputError(train_path, "prepared training pairs not found (run `divtune prepare` first)")
    prompts: dict[str, str] = {}
    rows_read = 0
    for lineno, obj in iter_jsonl(train_path):
        rows_read += 1
        if not isinstance(obj, dict):
            raise InputError(train_path, "expected a JSON object", line=lineno)
        for field in ("pool_id", "prompt"):
            if field not in obj:
                raise InputError(train_path, "missing field", line=lineno, field=field)
        prompt = obj["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(train_path, "prompt must be a non-empty string", line=lineno, field="prompt")
        pool_id = str(obj["pool_id"])
        if pool_id in prompts and prompts[pool_id] != prompt:
            raise InputError(train_path, f"pool {pool_id!r} has two different prompts", line=lineno, field="prompt")
        prompts.setdefault(pool_id, prompt)
    if not prompts:
        raise InputError(train_path, "no prompts to train on")
    counts = {"rows_read": rows_read, "prompts": len(prompts), "rows_repeating_a_pool": rows_read - len(prompts)}
    return [{"pool_id": k, "prompt": v} for k, v in prompts.items()], counts


def build_prompt_dataset(rows: list[dict[str, str]], tokenizer, max_prompt_tokens: int | None):
    """TRL dataset: ``prompt`` (chat messages when the tokenizer has a chat template) + ``prompt_text``.

    Prompts longer than ``max_prompt_tokens`` are cut (counted in the returned number).
    """
    from datasets import Dataset  # heavy

    conversational = bool(getattr(tokenizer, "chat_template", None))
    records, truncated = [], 0
    for row in rows:
        text = row["prompt"]
        if max_prompt_tokens is not None:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) > max_prompt_tokens:
                text = tokenizer.decode(ids[:max_prompt_tokens])
                truncated += 1
        prompt = [{"role": "user", "content": text}] if conversational else text
        records.append({"prompt": prompt, "prompt_text": text, "pool_id": row["pool_id"]})
    return Dataset.from_list(records), truncated
