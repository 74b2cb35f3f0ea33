"""Online rewards of the GRPO family (docs/method.md §6): quality and a diversity term, pure numpy.

Everything here works on the G samples of ONE prompt (a *group*), or on a
batch of groups laid out as ``(num_groups, G, ...)``. Nothing here knows
about processes or trainers: ``divtune.train.online`` gathers whole groups
before calling these functions.

- DQO: DPP leave-one-out log-det gain
  ``div_i = logdet(L + I_G) - logdet(L_{-i} + I_{G-1})``, ``L = Phi Phi^T``
  with unit rows; ``reward_i = r_i + alpha * div_i``.
- DARLING: partition the group into "same meaning" classes (union-find over a
  pairwise judge, by default cosine >= threshold);
  ``div_i = max(floor, (G - |class(y_i)|) / (G - 1))``; ``reward_i = r_i * div_i``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from divtune.methods import METHODS, DiversityReward, names

#: A pairwise "same meaning" judge: (G, d) unit embeddings -> (G, G) bool matrix.
SameJudge = Callable[[np.ndarray], np.ndarray]


def _as_groups(emb: np.ndarray) -> tuple[np.ndarray, bool]:
    """Return ``(num_groups, G, d)`` float64 and whether the input was a single group."""
    arr = np.asarray(emb, dtype=np.float64)
    if arr.ndim == 2:
        return arr[None], True
    if arr.ndim == 3:
        return arr, False
    raise ValueError(f"embeddings must be (G, d) or (num_groups, G, d), got shape {arr.shape}")


def unit_rows(emb: np.ndarray) -> np.ndarray:
    """L2-normalise the last axis in float64; an all-zero row stays zero (it spans no volume)."""
    arr = np.asarray(emb, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("embeddings contain NaN or inf")
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    return np.divide(arr, norms, out=np.zeros_like(arr), where=norms > 0)


def dpp_loo_gain(emb: np.ndarray) -> np.ndarray:
    """DPP leave-one-out log-det gain of each sample (docs/method.md §6, DQO).

    ``emb``: (G, d) or (num_groups, G, d); rows are normalised here, so any
    scale is accepted. Returns (G,) or (num_groups, G) float64.

    ``L + I`` has every eigenvalue in [1, 1 + G] for unit rows, so both
    log-determinants are finite and well conditioned even when all G samples
    are identical; slogdet in float64 avoids under/overflow of the plain
    determinant. Bounds: 0 <= div_i <= log 2, with log 2 exactly when y_i is
    orthogonal to every other sample, and log((m + 1) / m) for each of m
    identical copies that are orthogonal to the rest.
    """
    groups, single = _as_groups(emb)
    phi = unit_rows(groups)
    num_groups, group_size, _ = phi.shape
    kernel = phi @ np.swapaxes(phi, 1, 2) + np.eye(group_size)  # L + I_G, (B, G, G)
    sign_full, logdet_full = np.linalg.slogdet(kernel)

    # Minors with row and column i removed, all i at once: (B, G, G-1, G-1).
    keep = np.array([[j for j in range(group_size) if j != i] for i in range(group_size)], dtype=np.intp)
    keep = keep.reshape(group_size, group_size - 1)
    minors = kernel[:, keep[:, :, None], keep[:, None, :]]
    sign_minor, logdet_minor = np.linalg.slogdet(minors)

    # Positive definite by construction; a non-positive sign would mean broken input, not a valid gain.
    if np.any(sign_full <= 0) or np.any(sign_minor <= 0):
        raise ArithmeticError("L + I is not positive definite; embeddings are malformed")
    gain = logdet_full[:, None] - logdet_minor
    # Round-off can push the gain of an exact duplicate a hair below 0; the true value is >= 0.
    gain = np.maximum(gain, 0.0)
    return gain[0] if single else gain


def dqo_rewards(quality: np.ndarray, emb: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """DQO reward ``r_i + alpha * div_i`` per sample; shapes (G,)/(G, d) or batched (B, G)/(B, G, d)."""
    quality = np.asarray(quality, dtype=np.float64)
    gain = dpp_loo_gain(emb)
    if quality.shape != gain.shape:
        raise ValueError(f"quality shape {quality.shape} does not match embeddings' groups {gain.shape}")
    return quality + alpha * gain


def cosine_judge(threshold: float) -> SameJudge:
    """The default DARLING judge: two samples are "the same" when cosine similarity >= threshold."""

    def judge(emb: np.ndarray) -> np.ndarray:
        phi = unit_rows(emb)
        return phi @ phi.T >= threshold

    return judge


def partition_classes(same: np.ndarray) -> np.ndarray:
    """Union-find over a pairwise judge: (G, G) bool -> (G,) class label per sample.

    Classes are the connected components of the "same" relation (its
    transitive closure), so a chain a~b, b~c puts a and c together even when
    the judge says a !~ c. Labels are the smallest member index of each class.
    """
    same = np.asarray(same, dtype=bool)
    if same.ndim != 2 or same.shape[0] != same.shape[1]:
        raise ValueError(f"judge matrix must be square (G, G), got shape {same.shape}")
    parent = list(range(same.shape[0]))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving keeps trees flat
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(same | same.T, k=1))):
        root_i, root_j = find(int(i)), find(int(j))
        if root_i != root_j:
            # The smaller index becomes root so labels are the smallest member.
            parent[max(root_i, root_j)] = min(root_i, root_j)
    return np.array([find(i) for i in range(same.shape[0])], dtype=np.int64)


def partition_novelty(labels: np.ndarray, floor: float = 0.1) -> np.ndarray:
    """DARLING novelty ``max(floor, (G - |class(y_i)|) / (G - 1))`` from class labels (G,).

    A group of one sample has nothing to be novel against: its novelty is 1.
    """
    labels = np.asarray(labels)
    group_size = labels.shape[0]
    if group_size == 1:
        return np.ones(1)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    class_size = counts[inverse].astype(np.float64)
    return np.maximum((group_size - class_size) / (group_size - 1), floor)


def darling_diversity(
    emb: np.ndarray, threshold: float = 0.9, floor: float = 0.1, judge: SameJudge | None = None
) -> np.ndarray:
    """DARLING novelty per sample; (G, d) -> (G,), or batched (B, G, d) -> (B, G)."""
    groups, single = _as_groups(emb)
    judge = judge or cosine_judge(threshold)
    novelty = np.stack([partition_novelty(partition_classes(judge(group)), floor) for group in groups])
    return novelty[0] if single else novelty


def darling_rewards(
    quality: np.ndarray,
    emb: np.ndarray,
    threshold: float = 0.9,
    floor: float = 0.1,
    judge: SameJudge | None = None,
) -> np.ndarray:
    """DARLING reward ``r_i * div_i``; shapes (G,)/(G, d) or batched (B, G)/(B, G, d)."""
    quality = np.asarray(quality, dtype=np.float64)
    novelty = darling_diversity(emb, threshold, floor, judge)
    if quality.shape != novelty.shape:
        raise ValueError(f"quality shape {quality.shape} does not match embeddings' groups {novelty.shape}")
    return quality * novelty


def group_rewards(
    method: str,
    quality: np.ndarray,
    emb: np.ndarray | None,
    num_generations: int,
    *,
    alpha: float = 1.0,
    threshold: float = 0.9,
    floor: float = 0.1,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Diversity-weighted reward over a flat batch laid out group after group.

    ``quality``: (N,), ``emb``: (N, d) with N = num_groups * G and the G samples
    of one prompt contiguous (TRL's layout after gathering). Returns the
    reward (N,) and the diversity term (N,) (None for a method without one, plain GRPO).
    ``method``'s diversity term comes from :data:`divtune.methods.METHODS`.
    """
    quality = np.asarray(quality, dtype=np.float64)
    if quality.ndim != 1 or quality.shape[0] % num_generations != 0:
        raise ValueError(
            f"{quality.shape[0]} rewards cannot be split into whole groups of {num_generations}; "
            "a group must be scored whole"
        )
    diversity_reward = _diversity_reward(method)
    if diversity_reward is None:
        return quality, None
    if emb is None:
        raise ValueError(f"method {method!r} needs embeddings of the completions")
    emb = np.asarray(emb)
    if emb.shape[0] != quality.shape[0]:
        raise ValueError(f"{emb.shape[0]} embeddings for {quality.shape[0]} rewards")
    num_groups = quality.shape[0] // num_generations
    q_groups = quality.reshape(num_groups, num_generations)
    e_groups = emb.reshape(num_groups, num_generations, -1)
    if diversity_reward == "dpp":
        diversity = dpp_loo_gain(e_groups)
        reward = q_groups + alpha * diversity
    elif diversity_reward == "partition":
        diversity = darling_diversity(e_groups, threshold, floor)
        reward = q_groups * diversity
    else:
        raise ValueError(f"method {method!r}: no online reward for the diversity term {diversity_reward!r}")
    return reward.reshape(-1), diversity.reshape(-1)


def _diversity_reward(method: str) -> DiversityReward:
    """The diversity term (``dpp``, ``partition`` or None) of an online method; a ValueError otherwise."""
    row = METHODS.get(method)
    if row is None or not row.online:
        online = names(online=True)
        raise ValueError(f"unknown online method {method!r}; expected {', '.join(online[:-1])} or {online[-1]}")
    return row.diversity_reward
