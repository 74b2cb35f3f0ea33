"""Quality: reward-model scores of the samples, and the threshold effective diversity keeps samples above."""

from __future__ import annotations

import numpy as np

from divtune.evaluation.config import EvaluateConfig
from divtune.evaluation.systems import System
from divtune.io import InputError


def score_quality(systems: list[System], reward_dir: str) -> None:
    """Fill missing qualities with the reward model, in one batched call over all systems."""
    from divtune.reward.model import RewardModel  # heavy: loads numpy

    todo: list[tuple[System, str, int]] = [
        (s, k, i) for s in systems for k, qs in s.quality.items() for i, q in enumerate(qs) if q is None
    ]
    if not todo:
        return
    model = RewardModel.load(reward_dir)
    scores = np.asarray(
        model.score([s.prompts[k] for s, k, _ in todo], [s.texts[k][i] for s, k, i in todo], show_progress=True)
    )
    for (system, key, i), score in zip(todo, scores):
        system.quality[key][i] = float(score)


def resolve_threshold(cfg: EvaluateConfig, systems: list[System]) -> float | None:
    """``quality_threshold`` as given, else the median quality of the gold rows (of every scored system when
    no gold row is scored); None when nothing has quality."""
    if cfg.quality_threshold is not None:
        return cfg.quality_threshold
    # Default anchor: the median human (gold) response, i.e. "as good as a typical human story";
    # without gold, the median over all evaluated samples.
    gold = [s for s in systems if s.is_gold and s.has_quality()]
    pool = gold or [s for s in systems if s.has_quality()]
    scores = [q for s in pool for qs in s.quality.values() for q in qs]
    return float(np.median(scores)) if scores else None


def require_prompt_texts(systems: list) -> None:
    """Quality scoring reads (prompt, response): every scored prompt needs its text."""
    for system in systems:
        missing = [key for key in system.texts if system.prompts.get(key) is None]
        if missing:
            raise InputError(
                system.source,
                f"{len(missing)} prompts have no prompt text (e.g. prompt_id {missing[0]!r}) and the reward "
                "model scores (prompt, response): add a 'prompt' field, or match them to a --gold file",
                field="prompt",
            )
