"""Pairwise (Bradley-Terry) training of the reward model: which within-prompt
pairs it learns from, the loss, and the validation metric it stops on.

All pure: index arithmetic on numpy arrays and one torch expression, so each
piece is unit-tested on hand-computed values.

Why pairs at all: the held-out metric is "does the chosen response score above
the rejected one of the same prompt". Votes differ a lot between prompts (a
popular post lifts every story under it), so regressing the absolute vote, as
the L1 objective does, spends the model on the prompt's popularity, which a
pair comparison cancels out.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np


def bradley_terry_loss(chosen, rejected):
    """Mean of ``-log sigmoid(r(chosen) - r(rejected))`` over pairs (torch tensors).

    Equal rewards cost ``log 2``; a pair ranked right costs less, one ranked
    wrong more. ``logsigmoid`` keeps large margins finite in float32.
    """
    import torch.nn.functional as F  # heavy

    if chosen.shape != rejected.shape:
        raise ValueError(f"chosen {tuple(chosen.shape)} and rejected {tuple(rejected.shape)} differ in shape")
    if chosen.numel() == 0:
        raise ValueError("no pairs: the Bradley-Terry loss of an empty batch is undefined")
    return -F.logsigmoid(chosen - rejected).mean()


def pool_keys(pool_ids: Sequence[Any]) -> list[str]:
    """One hashable, type-faithful key per pool id (``1`` and ``"1"`` stay distinct)."""
    return [json.dumps(p) for p in pool_ids]


def all_pairs_within_pools(pool_ids: Sequence[Any], votes: Sequence[float], min_gap: float = 0.0
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays ``(chosen, rejected)`` of every within-pool pair whose votes differ
    by more than 0 and at least ``min_gap``; the higher vote is chosen.

    Pairs with equal votes are left out: they say nothing about which text is better.
    """
    votes = np.asarray(votes, dtype=float)
    keys = pool_keys(pool_ids)
    if len(keys) != len(votes):
        raise ValueError(f"{len(keys)} pool ids but {len(votes)} votes")
    chosen, rejected = [], []
    for members in _members_by_pool(keys).values():
        a, b = np.triu_indices(len(members), k=1)
        i, j = members[a], members[b]
        gap = votes[i] - votes[j]
        keep = (np.abs(gap) > 0) & (np.abs(gap) >= min_gap)
        i, j, gap = i[keep], j[keep], gap[keep]
        chosen.append(np.where(gap > 0, i, j))
        rejected.append(np.where(gap > 0, j, i))
    if not chosen:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    return np.concatenate(chosen).astype(int), np.concatenate(rejected).astype(int)


def listed_pairs(pool_ids: Sequence[Any], texts: Sequence[str],
                 pairs: Sequence[tuple[Any, str, str]]) -> tuple[np.ndarray, np.ndarray, int]:
    """Index arrays of given ``(pool_id, chosen_text, rejected_text)`` pairs (e.g. the gap
    pairs of ``train.jsonl``) into the response list, and how many pairs name a
    response that is not in it (those are left out and counted, not lost silently)."""
    where = {(key, text): i for i, (key, text) in enumerate(zip(pool_keys(pool_ids), texts))}
    chosen, rejected, missing = [], [], 0
    for pool, chosen_text, rejected_text in pairs:
        key = json.dumps(pool)
        c, r = where.get((key, chosen_text)), where.get((key, rejected_text))
        if c is None or r is None:
            missing += 1
            continue
        chosen.append(c)
        rejected.append(r)
    return np.array(chosen, dtype=int), np.array(rejected, dtype=int), missing


def pool_batches(pool_ids: Sequence[Any], max_responses: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of whole pools, each holding at most ``max_responses`` responses
    (a larger pool forms a batch alone), so every within-pool pair can be formed inside
    one batch and each response is encoded once per epoch."""
    groups = list(_members_by_pool(pool_keys(pool_ids)).values())
    batches, current = [], []
    for g in rng.permutation(len(groups)):
        members = groups[g]
        if current and sum(len(m) for m in current) + len(members) > max_responses:
            batches.append(np.concatenate(current))
            current = []
        current.append(members)
    if current:
        batches.append(np.concatenate(current))
    return batches


def pairs_inside(batch: np.ndarray, chosen: np.ndarray, rejected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs whose two sides are both in ``batch``, as positions within ``batch``."""
    position = {int(index): k for k, index in enumerate(batch)}
    keep = [(position[c], position[r]) for c, r in zip(chosen.tolist(), rejected.tolist())
            if c in position and r in position]
    if not keep:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    c, r = zip(*keep)
    return np.array(c, dtype=int), np.array(r, dtype=int)


def pairwise_accuracy(chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    """Per pair: 1 if chosen scores above rejected, 0.5 on a tie, else 0."""
    chosen, rejected = np.asarray(chosen, float), np.asarray(rejected, float)
    return (chosen > rejected) + 0.5 * (chosen == rejected)


def validation_pairwise_accuracy(scores: np.ndarray, chosen: np.ndarray, rejected: np.ndarray) -> float:
    """Share of the index pairs ``(chosen, rejected)`` whose chosen side scores higher
    (ties count ½): the early-stopping metric of the pairwise objective."""
    if len(chosen) == 0:
        raise ValueError("no validation pairs: pairwise accuracy is undefined")
    scores = np.asarray(scores, dtype=float)
    return float(np.mean(pairwise_accuracy(scores[chosen], scores[rejected])))


def _members_by_pool(keys: list[str]) -> dict[str, np.ndarray]:
    """Pool key -> indices of its responses, pools in first-seen order."""
    members: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    return {k: np.array(v, dtype=int) for k, v in members.items()}
