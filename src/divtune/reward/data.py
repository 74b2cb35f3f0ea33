"""What the reward model learns from: the scored responses of a prepared folder, the
validation split carved from them by prompt, and each side's within-prompt pairs.

The prepared folder is read through :mod:`divtune.prepared` (its file names, its pair reader).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from divtune.config import ConfigError
from divtune.io import InputError, iter_jsonl
from divtune.prepared import TRAIN_FILE, pairs_file, read_pairs, responses_file
from divtune.reward.config import RewardTrainConfig, early_stopping_metric
from divtune.reward.pairs import all_pairs_within_pools, listed_pairs

logger = logging.getLogger(__name__)

#: The vote fields of each side of a prepared pair.
_SIDE_NUMBERS = ("quality_chosen", "score_chosen", "quality_rejected", "score_rejected")


@dataclass(frozen=True)
class ScoredResponse:
    pool_id: Any
    prompt: str
    text: str
    quality: float
    score: float


def checked_field(path: Path, lineno: int, obj: dict, name: str, kind: type | tuple) -> Any:
    """``obj[name]``, which must be present and of ``kind`` (a bool is never a number)."""
    if name not in obj:
        raise InputError(path, "missing field", line=lineno, field=name)
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(path, f"expected {getattr(kind, '__name__', kind)}, got {value!r:.60}", line=lineno, field=name)
    return value


def read_scored_responses(data_dir: str | Path, split: str) -> list[ScoredResponse]:
    """Every response of ``split`` with its ``quality`` target and raw ``score``.

    From ``responses.jsonl`` when present (all kept responses, prompt text
    looked up in ``<split>.jsonl``), else from the chosen and rejected sides of
    ``<split>.jsonl`` (each distinct response once).
    """
    pairs_path = pairs_file(data_dir, split)
    if not pairs_path.is_file():
        raise FileNotFoundError(f"prepared pairs not found: {pairs_path}")
    responses_path = responses_file(data_dir)
    if responses_path.is_file():
        return _responses_from_responses_file(responses_path, pairs_path, split)
    return _responses_from_pairs(pairs_path)


def _number(path, lineno, obj, name) -> float:
    return float(checked_field(path, lineno, obj, name, (int, float)))


def _responses_from_pairs(path: Path) -> list[ScoredResponse]:
    rows: dict[tuple, ScoredResponse] = {}
    for pair in read_pairs(path, pool_ids=True, numbers=_SIDE_NUMBERS, allow_empty=True):
        for side, text in (("chosen", pair.chosen), ("rejected", pair.rejected)):
            row = ScoredResponse(pair.pool_id, pair.prompt, text, pair.numbers[f"quality_{side}"],
                                 pair.numbers[f"score_{side}"])
            rows.setdefault((json.dumps(pair.pool_id), text), row)
    return list(rows.values())


def _responses_from_responses_file(path: Path, pairs_path: Path, split: str) -> list[ScoredResponse]:
    prompts = {json.dumps(p.pool_id): p.prompt for p in read_pairs(pairs_path, pool_ids=True, allow_empty=True)}
    rows, no_prompt = [], 0
    for lineno, obj in iter_jsonl(path):
        if checked_field(path, lineno, obj, "split", str) != split:
            continue
        pool = checked_field(path, lineno, obj, "pool_id", (str, int))
        prompt = prompts.get(json.dumps(pool))
        if prompt is None:
            no_prompt += 1
            continue
        rows.append(ScoredResponse(pool, prompt, checked_field(path, lineno, obj, "text", str),
                                   _number(path, lineno, obj, "quality"), _number(path, lineno, obj, "score")))
    if no_prompt:
        # Such pools formed no pair, so their prompt text is nowhere in the prepared folder.
        logger.warning("%s: %d %s responses skipped: their pool has no prompt text in %s",
                       path, no_prompt, split, pairs_path)
    return rows


def split_by_pool(pool_ids: list, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, val) that keep each pool whole on one side."""
    keys = [json.dumps(p) for p in pool_ids]
    pools = sorted(set(keys))
    if len(pools) < 2:
        raise ConfigError(f"need at least 2 training prompts to carve a validation split, got {len(pools)}")
    rng = np.random.default_rng(seed)
    n_val = min(len(pools) - 1, max(1, round(val_fraction * len(pools))))
    val_pools = set(rng.permutation(pools)[:n_val].tolist())
    val = np.array([k in val_pools for k in keys])
    return ~val, val


@dataclass(frozen=True)
class TrainingSet:
    """Rows one side of the validation split trains or validates on, with their pairs
    (index arrays into ``rows``; the higher vote is chosen)."""

    rows: list[ScoredResponse]
    chosen: np.ndarray
    rejected: np.ndarray

    @property
    def quality(self) -> np.ndarray:
        return np.array([r.quality for r in self.rows], dtype=np.float32)


def build_training_sets(cfg: RewardTrainConfig, rows: list[ScoredResponse]) -> tuple[TrainingSet, TrainingSet]:
    """Carve the validation prompts out of ``rows`` and form each side's pairs.

    Training pairs follow ``train_pairs``; validation pairs are always every
    within-prompt pair with different votes: on a handful of validation prompts the
    gap pairs alone (about N/2 per prompt) would make the stopping metric too noisy.
    """
    train_mask, val_mask = split_by_pool([r.pool_id for r in rows], cfg.val_fraction, cfg.seed)
    train_rows = [r for r, m in zip(rows, train_mask) if m]
    val_rows = [r for r, m in zip(rows, val_mask) if m]
    if cfg.train_pairs == "gap":
        chosen, rejected = _gap_pairs(cfg, train_rows)
    else:
        chosen, rejected = all_pairs_within_pools([r.pool_id for r in train_rows], [r.score for r in train_rows])
    val_chosen, val_rejected = all_pairs_within_pools([r.pool_id for r in val_rows], [r.score for r in val_rows])
    if cfg.objective == "pairwise" and len(chosen) == 0:
        raise ConfigError(f"{cfg.data}: no training pair with different votes for the pairwise objective")
    if early_stopping_metric(cfg) == "val_pairwise_accuracy" and len(val_chosen) == 0:
        raise ConfigError(f"{cfg.data}: the validation prompts have no pair with different votes to stop on; "
                          "raise val_fraction or use early_stopping=val_l1")
    return TrainingSet(train_rows, chosen, rejected), TrainingSet(val_rows, val_chosen, val_rejected)


def _gap_pairs(cfg: RewardTrainConfig, train_rows: list[ScoredResponse]) -> tuple[np.ndarray, np.ndarray]:
    """The prepared gap pairs (of the train split) whose prompts and responses are in ``train_rows``."""
    listed = [(p.pool_id, p.chosen, p.rejected)
              for p in read_pairs(pairs_file(cfg.data, "train"), pool_ids=True, allow_empty=True)]
    chosen, rejected, missing = listed_pairs([r.pool_id for r in train_rows], [r.text for r in train_rows], listed)
    # The validation prompts' gap pairs are the other part of `missing`: not trained on.
    logger.info("reward model: %d gap pairs of %s on the training prompts (%d on validation "
                "prompts or naming a response not kept)", len(chosen), TRAIN_FILE, missing)
    return chosen, rejected


def load_training_sets(cfg: RewardTrainConfig) -> tuple[TrainingSet, TrainingSet]:
    """The train split's responses (capped by ``max_train_responses``, seeded), split into train and validation."""
    rows = read_scored_responses(cfg.data, "train")
    if cfg.max_train_responses is not None and len(rows) > cfg.max_train_responses:
        keep = np.random.default_rng(cfg.seed).permutation(len(rows))[: cfg.max_train_responses]
        rows = [rows[i] for i in sorted(keep)]
    return build_training_sets(cfg, rows)
