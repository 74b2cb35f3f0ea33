"""The human ``gold`` row from a raw data file (``divtune evaluate --gold FILE``).

Any file ``divtune prepare`` reads (JSONL, CSV, Parquet or a ``datasets``
folder, in the reddit, pools or flat layout, its columns mapped with
``--column NAME=SOURCE`` as for prepare) can hold the human responses.
Every prompt of the file is eligible: there is no split. Its responses go
through prepare's cleaning (moderator stickies and bot comments in the reddit
layout, removed/empty texts, duplicates within a prompt, and optionally a
minimum length), each drop counted.

Matching: a generation prompt matches a gold prompt by id (the generation's
``prompt_id`` against the file's id column: ``post_id``, ``id`` or
``prompt_id``), or else by exact prompt text. Prompts matched to the same gold
prompt get one key in every system (the generation ``prompt_id`` that matched
by id, else the file's id, else the first generation key), so a system that
names its prompts by id and one that gives only their text are compared on
the same prompts. How many matched, and how, goes into ``summary.json``.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from divtune.data import clean_responses, load_pools
# load_pools names a pool by a hash of its prompt when the file has no id column.
from divtune.data.loading import _fallback_id
from divtune.evaluation.keys import GOLD
from divtune.evaluation.systems import System, draw_gold_texts
from divtune.io import InputError
from divtune.prepared import RESPONSES_FILE

logger = logging.getLogger(__name__)


def read_gold_file(
    path: str | Path,
    systems: list,
    num_per_prompt: int,
    seed: int,
    skipped: Counter,
    layout: str = "auto",
    min_words: int = 0,
    columns: dict[str, str] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The gold row from a raw data file, matched to the systems' prompts (which are re-keyed in place).

    Returns ``(gold System, matching report)``.
    """
    path = Path(path)
    if path.is_dir() and not any((path / m).is_file() for m in ("dataset_info.json", "state.json", "dataset_dict.json")):
        raise InputError(path, f"--gold takes a folder written by `divtune prepare` (with {RESPONSES_FILE}), "
                               "a `datasets` folder or a data file (JSONL, CSV, Parquet); this folder is none of them")
    pools, load_report = load_pools([path], layout=layout, columns=columns)
    dropped: Counter = Counter()
    texts_of: dict[str, list[str]] = {}
    for pool in pools:
        keep = clean_responses(pool.texts, pool.layout, min_words, dropped)
        texts_of[pool.pool_id] = [pool.texts[i].strip() for i in keep]
    for reason, n in dropped.items():
        skipped[f"gold: responses dropped by cleaning ({reason})"] += n

    by_id = {pool.pool_id: pool for pool in pools}
    by_text = {pool.prompt: pool for pool in pools}
    file_ids = {pool.pool_id for pool in pools if not pool.pool_id.startswith(_fallback_id(pool.prompt))}
    matches = match_prompts(systems, by_id, by_text)
    report = matching_report(path, load_report, pools, matches, systems)
    canonical = canonical_keys(matches, file_ids)
    logger.info("gold %s: %d generation prompts matched by id, %d by prompt text, %d unmatched",
                path, report["matched_by_id"], report["matched_by_text"], report["unmatched"])
    original_of = {key: value for system in systems for key, value in system.original_ids.items()}
    _rekey(systems, matches, canonical, skipped)

    gold = System(name=GOLD, source=str(path), is_gold=True)
    prompts_of_pool = {pool.pool_id: pool.prompt for pool in pools}
    for pool_id, key in sorted(canonical.items(), key=lambda item: item[1]):
        texts = draw_gold_texts(key, texts_of[pool_id], num_per_prompt, seed, skipped)
        if texts is None:
            continue
        gold.texts[key] = texts
        gold.quality[key] = [None] * num_per_prompt
        gold.prompts[key] = prompts_of_pool[pool_id]
        gold.original_ids[key] = original_of.get(key, key)
    unused = [pool for pool in pools if pool.pool_id not in canonical]
    skipped["gold: prompts of the file without generations"] += len(unused)
    skipped["gold: responses of prompts without generations"] += sum(len(texts_of[p.pool_id]) for p in unused)
    if not gold.texts:
        raise InputError(
            path,
            f"no gold row: {report['matched_by_id']} generation prompts matched by id and "
            f"{report['matched_by_text']} by prompt text, none with at least {num_per_prompt} usable human responses",
        )
    return gold, report


def match_prompts(systems: list, by_id: dict, by_text: dict) -> dict[tuple[int, str], tuple[str, str]]:
    """(system position, prompt key) -> (gold pool id, "id" | "text") for every prompt that matches."""
    matches = {}
    for position, system in enumerate(systems):
        keyed_by_id = getattr(system, "keyed_by", "prompt_id") == "prompt_id"
        for key in system.texts:
            if keyed_by_id and key in by_id:
                matches[(position, key)] = (by_id[key].pool_id, "id")
                continue
            prompt = system.prompts.get(key)
            if prompt is not None and prompt in by_text:
                matches[(position, key)] = (by_text[prompt].pool_id, "text")
    return matches


def canonical_keys(matches: dict, file_ids: set[str]) -> dict[str, str]:
    """One key per matched gold prompt: a generation id that matched it by id, else its own id when the
    file has an id column, else the first generation key matched to it by text."""
    canonical: dict[str, str] = {}
    for (_, key), (pool_id, how) in sorted(matches.items(), key=lambda item: item[1][1] != "id"):
        if pool_id not in canonical:
            if how == "id":
                canonical[pool_id] = key
            elif pool_id in file_ids:
                canonical[pool_id] = pool_id
            else:
                canonical[pool_id] = key
    return canonical


def _rekey(systems: list, matches: dict, canonical: dict[str, str], skipped: Counter) -> None:
    """Give every matched prompt its gold prompt's key in each system (tables rebuilt in order)."""
    original_of = {key: value for system in systems for key, value in system.original_ids.items()}
    for position, system in enumerate(systems):
        renamed: dict[str, str] = {}
        for key in list(system.texts):
            match = matches.get((position, key))
            target = canonical[match[0]] if match else key
            if target in set(renamed.values()):
                skipped[f"{system.name}: prompts matching the same gold prompt as another of its prompts"] += 1
                continue
            renamed[key] = target
        for attribute in ("texts", "quality", "prompts", "original_ids"):
            table = getattr(system, attribute)
            setattr(system, attribute, {renamed[k]: v for k, v in table.items() if k in renamed})
        for old, new in renamed.items():
            if old != new:
                system.original_ids[new] = original_of.get(new, new)


def matching_report(path: Path, load_report, pools: list, matches: dict, systems: list) -> dict[str, Any]:
    by_how = Counter(how for _, how in matches.values())
    prompt_of = {pool.pool_id: pool.prompt for pool in pools}
    other_text = sum(
        1 for (p, key), (pool_id, how) in matches.items()
        if how == "id" and systems[p].prompts.get(key) not in (None, prompt_of[pool_id])
    )
    generation_prompts = sum(len(s.texts) for s in systems)
    return {
        "file": str(path),
        "layout": load_report.files.get(str(path)),
        "gold_prompts": len(pools),
        "generation_prompts": generation_prompts,
        "matched_by_id": by_how["id"],
        "matched_by_text": by_how["text"],
        # Same id, different prompt text: worth a look (ids of another numbering?).
        "matched_by_id_with_other_prompt_text": other_text,
        "unmatched": generation_prompts - len(matches),
        "per_file": [
            {
                "file": s.source,
                "prompts": len(s.texts),
                "matched_by_id": sum(1 for (p, _), (_, how) in matches.items() if p == i and how == "id"),
                "matched_by_text": sum(1 for (p, _), (_, how) in matches.items() if p == i and how == "text"),
            }
            for i, s in enumerate(systems)
        ],
    }


def fill_prompts_from_gold(systems: list, gold) -> None:
    """Prompt texts for generation files that give only ``prompt_id`` (needed by the reward model)."""
    for system in systems:
        for key in system.texts:
            if key not in system.prompts and key in gold.prompts:
                system.prompts[key] = gold.prompts[key]
