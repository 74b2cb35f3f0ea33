"""Scoring with the reward model, and the test figures of any scorer.

The figures are measured on a prepared folder's test split: pairwise accuracy on its gap
pairs (with a bootstrap interval over prompts) and Spearman with the votes; beside the
model's own, the "longer is better" baseline's and, optionally, the figures on openings.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import yaml

from divtune.io import InputError, atomic_write_text, iter_jsonl, write_jsonl
from divtune.outputs import claim_output_file, sidecar_path, stamped
from divtune.prepared import pairs_file, read_pairs
from divtune.reward.config import RewardTrainConfig
from divtune.reward.data import TrainingSet, checked_field, read_scored_responses
from divtune.reward.model import RewardModel
from divtune.reward.pairs import pairwise_accuracy, validation_pairwise_accuracy

logger = logging.getLogger(__name__)


def bootstrap_pair_accuracy(correct: np.ndarray, pool_ids: list, n_boot: int = 2000, seed: int = 0,
                            level: float = 0.95) -> tuple[float, list[float]]:
    """Pairwise accuracy and its percentile bootstrap interval, resampling prompts (pools)."""
    correct = np.asarray(correct, float)
    keys = [json.dumps(p) for p in pool_ids]
    _, pool_index = np.unique(keys, return_inverse=True)
    sums = np.bincount(pool_index, weights=correct)
    counts = np.bincount(pool_index).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    resampled = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(resampled, [alpha, 1 - alpha])
    return float(correct.mean()), [float(low), float(high)]


def mean_l1(pred, target) -> float:
    """Mean absolute difference of predictions and targets."""
    return float(np.mean(np.abs(np.asarray(pred) - np.asarray(target))))


def opening(text: str, words: int) -> str:
    """The first ``words`` words of ``text`` (whitespace-normalised)."""
    return " ".join(text.split()[:words])


def response_word_count(prompts: list[str], responses: list[str]) -> np.ndarray:
    """The "longer is better" baseline scorer: the response's number of words."""
    return np.array([len(r.split()) for r in responses], dtype=float)


def evaluate_scorer(score_fn, data_dir: str | Path, bootstrap_samples: int = 2000, seed: int = 0) -> dict:
    """Test-split figures of any scorer ``score_fn(prompts, responses) -> scores``: pairwise
    accuracy on the test gap pairs (+ bootstrap CI over prompts) and Spearman with votes."""
    from scipy.stats import spearmanr  # heavy

    test_pairs = pairs_file(data_dir, "test")
    pairs = read_pairs(test_pairs, pool_ids=True, allow_empty=True)
    if not pairs:
        raise InputError(test_pairs, "no test pairs to evaluate on")
    responses = read_scored_responses(data_dir, "test")
    # Each distinct (prompt, response) is scored once: pairs reuse the response scores.
    items = {(p.prompt, text): None for p in pairs for text in (p.chosen, p.rejected)}
    items.update({(r.prompt, r.text): None for r in responses})
    keys = list(items)
    values = np.asarray(score_fn([k[0] for k in keys], [k[1] for k in keys]), dtype=float)
    score_of = dict(zip(keys, values.tolist()))
    chosen = np.array([score_of[(p.prompt, p.chosen)] for p in pairs])
    rejected = np.array([score_of[(p.prompt, p.rejected)] for p in pairs])
    accuracy, interval = bootstrap_pair_accuracy(pairwise_accuracy(chosen, rejected), [p.pool_id for p in pairs],
                                                 bootstrap_samples, seed)
    predicted = np.array([score_of[(r.prompt, r.text)] for r in responses])
    # A constant scorer (e.g. word counts of equally long texts) has no rank correlation.
    rho, p_value = spearmanr(predicted, [r.score for r in responses]) if np.ptp(predicted) > 0 else (np.nan, np.nan)
    return {
        "pairwise_accuracy": accuracy,
        "pairwise_accuracy_ci": interval,
        "n_test_pairs": len(pairs),
        "n_test_prompts": len({json.dumps(p.pool_id) for p in pairs}),
        # A constant scorer has no rank correlation: null, not NaN (invalid JSON).
        "spearman": float(rho) if np.isfinite(rho) else None,
        "spearman_pvalue": float(p_value) if np.isfinite(p_value) else None,
        "n_test_responses": len(responses),
        "test_l1": mean_l1(predicted, [r.quality for r in responses]),
    }


def evaluate_reward_model(model: RewardModel, data_dir: str | Path, batch_size: int = 64,
                          bootstrap_samples: int = 2000, seed: int = 0) -> dict:
    """Test-split figures of a reward model (see :func:`evaluate_scorer`)."""
    return evaluate_scorer(lambda prompts, responses: model.score(prompts, responses, batch_size), data_dir,
                           bootstrap_samples, seed)


def score_generations(reward_dir: str | Path, generations_path: str | Path, output_path: str | Path,
                      batch_size: int = 64, model: RewardModel | None = None, overwrite: bool = False) -> Path:
    """Copy a generations file, adding a ``quality`` field (the reward) to every line.

    The output file follows divtune.outputs' rule: its settings are kept in
    ``OUTPUT.config.yaml``; the same settings and inputs reuse it.
    """
    generations_path, output_path = Path(generations_path), Path(output_path)
    rows = []
    for lineno, obj in iter_jsonl(generations_path):
        if not isinstance(obj, dict):
            raise InputError(generations_path, "expected a JSON object", line=lineno)
        for name in ("prompt", "text"):
            checked_field(generations_path, lineno, obj, name, str)
        rows.append(obj)
    settings = stamped({"stage": "reward score", "reward": str(reward_dir), "generations": str(generations_path)},
                       [reward_dir, generations_path])
    state = claim_output_file(output_path, settings, settings.keys(), overwrite)
    if state == "continue":
        logger.info("%s already holds these scores; reusing it", output_path)
        return output_path
    model = model or RewardModel.load(reward_dir)
    scores = model.score([r["prompt"] for r in rows], [r["text"] for r in rows], batch_size, show_progress=True)
    for row, value in zip(rows, scores):
        row["quality"] = float(value)
    # The settings go first: a scores file never exists without them.
    atomic_write_text(sidecar_path(output_path), yaml.safe_dump(settings, sort_keys=False))
    return write_jsonl(output_path, rows)


def reward_test_metrics(model: RewardModel, cfg: RewardTrainConfig, val: TrainingSet) -> dict:
    """Test-split figures of a trained model: its own, the length baseline's and, optionally, on openings.

    Separate from training so that a saved model can be evaluated again on the same
    data (e.g. when its training finished but the evaluation was interrupted).
    """
    metrics = evaluate_reward_model(model, cfg.data, cfg.batch_size, cfg.bootstrap_samples, cfg.seed)
    ranking_keys = ("pairwise_accuracy", "pairwise_accuracy_ci", "spearman")
    length = evaluate_scorer(response_word_count, cfg.data, cfg.bootstrap_samples, cfg.seed)
    # Does the model beat "longer is better"? (Word counts are not on the vote scale: no L1.)
    metrics["length_baseline"] = {k: length[k] for k in ranking_keys}
    if len(val.chosen):  # the same figure on the validation pairs, where variants are compared
        val_lengths = response_word_count([], [r.text for r in val.rows])
        metrics["length_baseline"]["val_pairwise_accuracy"] = validation_pairwise_accuracy(
            val_lengths, val.chosen, val.rejected)
    if cfg.eval_opening_words is not None:
        n = cfg.eval_opening_words
        openings = evaluate_scorer(
            lambda prompts, responses: model.score(prompts, [opening(r, n) for r in responses], cfg.batch_size),
            cfg.data, cfg.bootstrap_samples, cfg.seed)
        metrics["openings"] = {"words": n, **{k: openings[k] for k in ranking_keys}}
    return metrics
