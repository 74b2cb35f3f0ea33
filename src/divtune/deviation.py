"""Deviation and pair weights (docs/method.md §3), pure numpy.

For one pool's responses R that take part in pairs (n = |R|):
    d_i  = 1/(n-1) * sum_{j != i} (1 - cos(e_i, e_j))        mean_cosine_distance
    d~_i = 2 (d_i - min d) / (max d - min d) - 1, 0 if flat     minmax_to_unit
    g_i  = prod_k ((d~_{k,i} + 1) / 2) ^ (1/K)                  combine_geometric
    w_i  = n g_i / sum_j g_j   (1 everywhere if all g equal)    pair_weights
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Relative tolerance under which max d and min d count as equal: with n = 2 the two
# distances are mathematically identical but may differ in the last float bits.
_FLAT_RTOL = 1e-9


def _is_flat(values: np.ndarray) -> bool:
    if values.size == 0:
        return True
    spread = float(values.max() - values.min())
    return spread <= _FLAT_RTOL * max(1.0, float(np.abs(values).max()))


def mean_cosine_distance(embeddings: np.ndarray) -> np.ndarray:
    """Mean cosine distance of each row to every other row, (n,). Rows are normalised
    here, so raw vectors are fine; an all-zero row counts as orthogonal to all. n < 2 -> zeros."""
    emb = np.asarray(embeddings, dtype=np.float64)
    n = emb.shape[0]
    if n < 2:
        return np.zeros(n)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = emb / np.where(norms > 0, norms, 1.0)
    # sum_j cos(i, j) = e_i . (sum_j e_j): O(n d) instead of the O(n^2 d) similarity matrix.
    self_sim = np.einsum("ij,ij->i", unit, unit)
    sum_other_sim = unit @ unit.sum(axis=0) - self_sim
    return 1.0 - sum_other_sim / (n - 1)


def minmax_to_unit(values: np.ndarray) -> np.ndarray:
    """Min-max map to [-1, 1]; all zeros when every value is equal (always so for n <= 2)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size <= 2 or _is_flat(values):
        return np.zeros(values.shape)
    low, high = values.min(), values.max()
    return 2.0 * (values - low) / (high - low) - 1.0


def combine_geometric(normalised: Sequence[np.ndarray]) -> np.ndarray:
    """Geometric mean over embedders of (d~ + 1) / 2, each in [0, 1]."""
    if len(normalised) == 0:
        raise ValueError("combine_geometric needs at least one embedder's deviations")
    stacked = np.stack([np.asarray(d, dtype=np.float64) for d in normalised])
    unit = np.clip((stacked + 1.0) / 2.0, 0.0, 1.0)
    return np.prod(unit ** (1.0 / stacked.shape[0]), axis=0)


def pair_weights(g: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """Weights w_i = n g_i / sum g (mean exactly 1), 1 everywhere when all g are equal.

    With ``floor`` in [0, 1): w' = floor + (1 - floor) w, which keeps the mean at 1
    and lifts every weight to at least ``floor`` (so no pair is ignored entirely)."""
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"weight floor must be in [0, 1), got {floor}")
    g = np.asarray(g, dtype=np.float64)
    n = g.size
    total = float(g.sum())
    if n == 0:
        return np.zeros(0)
    if _is_flat(g) or total <= 0.0:
        return np.ones(n)
    weights = n * g / total
    # Remove float drift so the pool mean is 1 to the last bit the arithmetic allows.
    weights *= n / weights.sum()
    return floor + (1.0 - floor) * weights


def deviation_weights(
    embeddings: dict[str, np.ndarray], floor: float = 0.0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One pool: raw mean cosine distance per embedder name and the combined weights."""
    raw = {name: mean_cosine_distance(emb) for name, emb in embeddings.items()}
    g = combine_geometric([minmax_to_unit(d) for d in raw.values()])
    return raw, pair_weights(g, floor)
