"""The human ``gold`` rows from a folder written by ``divtune prepare`` (``divtune evaluate --gold DIR``).

The gold row (a seeded draw of each test prompt's human responses), every response of a
pool (centrality's pools, the typical mode), and the gold row cut to the samples' length
(``gold-matched``). A raw data file as gold is :mod:`divtune.evaluation.gold_file`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from divtune.config import ConfigError
from divtune.evaluation.config import EvaluateConfig
from divtune.evaluation.keys import GOLD, GOLD_MATCHED
from divtune.evaluation.systems import System, draw_gold_texts
from divtune.io import InputError, iter_jsonl
from divtune.modes import MODES, most_common_mode
from divtune.prepared import pairs_file, responses_file


def read_gold(
    prepared_dir: str | Path,
    wanted_prompts: set[str] | None,
    num_per_prompt: int,
    seed: int,
    skipped: Counter,
    known_prompts: dict[str, str] | None = None,
    split: str = "test",
) -> System:
    """Human test responses of a prepared folder, ``num_per_prompt`` per prompt (chosen with ``seed``).

    A test pool's prompt text comes from ``test.jsonl``; pools that formed no
    pair are absent there, so their prompt is taken from the response line's
    own ``prompt`` field or from the generations (``known_prompts``), and the
    pool is skipped (and counted) only when none has it.
    """
    prepared_dir = Path(prepared_dir)
    responses_path = responses_file(prepared_dir)
    test_path = pairs_file(prepared_dir, split)
    for path in (responses_path, test_path):
        if not path.is_file():
            raise InputError(path, "not found (the --gold folder must be written by `divtune prepare`)")
    prompts: dict[str, str] = {}
    original_ids: dict[str, Any] = {}
    for lineno, obj in iter_jsonl(test_path):
        for key in ("pool_id", "prompt"):
            if not isinstance(obj, dict) or key not in obj:
                raise InputError(test_path, "missing required field", line=lineno, field=key)
        prompts.setdefault(str(obj["pool_id"]), obj["prompt"])
        original_ids.setdefault(str(obj["pool_id"]), obj["pool_id"])
    pools: dict[str, list[tuple[int, str]]] = {}
    for lineno, obj in iter_jsonl(responses_path):
        for key in ("pool_id", "split", "text"):
            if not isinstance(obj, dict) or key not in obj:
                raise InputError(responses_path, "missing required field", line=lineno, field=key)
        if obj["split"] != split:
            skipped[f"gold: {obj['split']}-split responses (not evaluated)"] += 1
            continue
        pool_key = str(obj["pool_id"])
        if wanted_prompts is not None and pool_key not in wanted_prompts:
            skipped["gold: test responses of prompts without generations"] += 1
            continue
        if not isinstance(obj["text"], str):
            raise InputError(responses_path, "must be a string", line=lineno, field="text")
        if pool_key not in prompts:
            prompt = obj.get("prompt") or (known_prompts or {}).get(pool_key)
            if prompt is None:
                skipped["gold: test responses whose prompt text is unknown"] += 1
                continue
            prompts[pool_key] = prompt
            original_ids[pool_key] = obj["pool_id"]
        pools.setdefault(pool_key, []).append((int(obj.get("index", lineno)), obj["text"]))
    gold = System(name=GOLD, source=str(prepared_dir), is_gold=True)
    for pool_key in sorted(pools):
        texts = draw_gold_texts(pool_key, [text for _, text in sorted(pools[pool_key])], num_per_prompt, seed,
                                skipped, scope="test ")
        if texts is None:
            continue
        gold.texts[pool_key] = texts
        gold.quality[pool_key] = [None] * num_per_prompt
        gold.prompts[pool_key] = prompts[pool_key]
        gold.original_ids[pool_key] = original_ids[pool_key]
    if not gold.texts:
        raise InputError(prepared_dir, f"no test prompt with at least {num_per_prompt} human responses for the gold row")
    return gold


def read_pool_texts(prepared_dir: str | Path, split: str | None = "test") -> dict[str, list[str]]:
    """Every human response of each pool of a prepared folder (of one split, or all), in file order."""
    path = responses_file(prepared_dir)
    if not path.is_file():
        raise InputError(path, "not found (centrality and modes read the human responses of a `divtune prepare` folder)")
    pools: dict[str, list[str]] = {}
    for lineno, obj in iter_jsonl(path):
        for key in ("pool_id", "split", "text"):
            if not isinstance(obj, dict) or key not in obj:
                raise InputError(path, "missing required field", line=lineno, field=key)
        if split is None or obj["split"] == split:
            pools.setdefault(str(obj["pool_id"]), []).append(obj["text"])
    return pools


def resolve_typical_mode(cfg: EvaluateConfig) -> str:
    """``typical_mode`` as given, else the most common mode of all human responses of the gold folder."""
    if cfg.typical_mode is not None:
        if cfg.typical_mode not in MODES:
            raise ConfigError(f"typical_mode {cfg.typical_mode!r} is not one of {list(MODES)}")
        return cfg.typical_mode
    if not cfg.gold:
        raise ConfigError("modes: give --gold (its human responses define the typical mode) or typical_mode")
    return most_common_mode(t for texts in read_pool_texts(cfg.gold, split=None).values() for t in texts)


def length_matched_gold(gold: System, systems: list[System], tokenizer) -> System:
    """The gold row with each human text cut to the samples' length in tokens, prompt by prompt.

    The length of a prompt is the median token count (``tokenizer``, no special
    tokens) of every system's samples for that prompt, so human stories and
    model openings are compared at the same length. Texts shorter than that stay whole.
    """
    matched = System(name=GOLD_MATCHED, source=gold.source, is_gold=True)
    for key, texts in gold.texts.items():
        samples = [t for s in systems if not s.is_gold for t in s.texts.get(key, [])]
        if not samples:
            continue
        target = int(np.median([len(ids) for ids in tokenizer(samples, add_special_tokens=False)["input_ids"]]))
        cut = [tokenizer.decode(ids[:target], skip_special_tokens=True).strip()
               for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        matched.texts[key] = cut
        matched.origins[key] = list(texts)
        matched.quality[key] = [None] * len(cut)
        matched.prompts[key] = gold.prompts[key]
        matched.original_ids[key] = gold.original_ids[key]
    return matched
