"""Vote compression, gap pairs and all-pairs, DivPO selection (docs/method.md §1, §2, §5).

All samplers are seeded through a ``numpy.random.Generator`` the caller makes
(``pool_rng(seed, pool_id)`` gives each pool its own stream, so a pool's pairs do
not depend on which other pools are in the run).
"""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import numpy as np

DEFAULT_COMPRESSION_FACTOR = 100
VOTE_TRANSFORMS = ("exact", "released")


def pool_rng(seed: int, pool_id: str) -> np.random.Generator:
    """A generator that depends only on (seed, pool_id)."""
    digest = int.from_bytes(hashlib.sha256(str(pool_id).encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, digest]))


# ---------------------------------------------------------------------------
# §1 vote compression


def _iterated_log1p(x: np.ndarray, times: int) -> np.ndarray:
    out = np.asarray(x, dtype=np.float64)
    # NaN (not a warning) where the released formula's unshifted log is undefined; the caller reports it.
    with np.errstate(invalid="ignore", divide="ignore"):
        for _ in range(times):
            out = np.log1p(out)
    return out


def compress_votes(
    scores: Sequence[float] | np.ndarray,
    transform: str = "exact",
    compression_factor: int = DEFAULT_COMPRESSION_FACTOR,
    score_min: float | None = None,
    score_max: float | None = None,
) -> np.ndarray:
    """Map raw scores to quality q in [-1, 1] with a C-fold log (T(x) = log(1+x), C times).

    ``score_min``/``score_max`` are the *global* extremes (default: those of ``scores``).
    - ``released``: q = 2 (T(s - s_min + 1) - T(s_min)) / (T(s_max) - T(s_min)) - 1, verbatim
      from the released code (exactly [-1, 1] only when s_min = 1).
    - ``exact``: q = 2 (T(s - s_min + 1) - T(1)) / (T(s_max - s_min + 1) - T(1)) - 1, the
      shifted range mapped exactly onto [-1, 1].
    When every score is equal there is no range: q = 0 for all.
    """
    if transform not in VOTE_TRANSFORMS:
        raise ValueError(f"vote transform must be one of {VOTE_TRANSFORMS}, got {transform!r}")
    if compression_factor < 1:
        raise ValueError(f"compression factor must be >= 1, got {compression_factor}")
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s
    s_min = float(s.min()) if score_min is None else float(score_min)
    s_max = float(s.max()) if score_max is None else float(score_max)
    shifted = _iterated_log1p(s - s_min + 1.0, compression_factor)
    if transform == "exact":
        low, high = _iterated_log1p(np.array([1.0, s_max - s_min + 1.0]), compression_factor)
    else:
        low, high = _iterated_log1p(np.array([s_min, s_max]), compression_factor)
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError(
                f"the released vote transform is undefined for a minimum score of {s_min:g} "
                "(its unshifted log needs scores >= 0); use --vote-transform exact"
            )
    if high == low:
        return np.zeros_like(s)
    return 2.0 * (shifted - low) / (high - low) - 1.0


# ---------------------------------------------------------------------------
# §2 gap pairs


_REJECTION_TRIES = 12


def _valid_partner_starts(sorted_scores: np.ndarray, gap: float) -> np.ndarray:
    """For each position i of an ascending array, the first position j whose score
    is a valid partner above it: s_j >= s_i + gap (gap > 0) or s_j > s_i (gap <= 0)."""
    if gap > 0:
        return np.searchsorted(sorted_scores, sorted_scores + gap, side="left")
    return np.searchsorted(sorted_scores, sorted_scores, side="right")


class _UniformStream:
    """Uniform floats from a seeded generator, drawn in blocks (one numpy call per
    block instead of one per number)."""

    def __init__(self, rng: np.random.Generator, block: int = 256):
        self.rng, self.block = rng, block
        self.buffer: list[float] = []

    def next(self) -> float:
        if not self.buffer:
            self.buffer = self.rng.random(self.block).tolist()[::-1]
        return self.buffer.pop()


def _exact_pick(
    remaining: list[int], scores: np.ndarray, gap: float, stream: _UniformStream
) -> tuple[int, int] | None:
    """Draw uniformly among all valid pairs of ``remaining`` by counting them: with the
    responses sorted by score, the partners above position i are exactly the suffix
    from ``searchsorted(s_i + gap)``; counts, their cumulative sum and one uniform
    number locate the pair in O(m log m), without listing the O(m^2) pairs."""
    ids = np.asarray(remaining)
    order = np.argsort(scores[ids], kind="stable")
    ids, sorted_scores = ids[order], scores[ids[order]]
    starts = _valid_partner_starts(sorted_scores, gap)
    counts = sorted_scores.size - starts
    cumulative = np.cumsum(counts)
    total = int(cumulative[-1])
    if total == 0:
        return None
    draw = min(int(stream.next() * total), total - 1)
    low_pos = int(np.searchsorted(cumulative, draw, side="right"))
    high_pos = int(starts[low_pos]) + draw - int(cumulative[low_pos] - counts[low_pos])
    return int(ids[high_pos]), int(ids[low_pos])


def gap_pairs(scores: Sequence[float] | np.ndarray, gap: float, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Disjoint (chosen, rejected) index pairs, docs/method.md §2.

    Each step draws uniformly among all pairs of unused responses with
    |s_a - s_b| >= gap (else among all pairs with different scores; else stop).
    The reference lists all those pairs at every step (O(n^3) per pool). Here a
    step first tries rejection sampling: draw a uniform random pair of unused
    responses and accept it if valid -- accepted draws are exactly uniform over the
    valid pairs. After a few rejections (valid pairs are rare) it switches to
    ``_exact_pick``, which counts the valid pairs on the sorted scores instead.
    Both are driven by the same seeded stream, so the result is deterministic.
    """
    s = np.asarray(scores, dtype=np.float64)
    values = s.tolist()
    remaining = list(range(s.size))
    stream = _UniformStream(rng)
    pairs: list[tuple[int, int]] = []
    threshold = gap if gap > 0 else 0.0
    use_gap = gap > 0
    while len(remaining) >= 2:
        picked = None
        m = len(remaining)
        for _ in range(_REJECTION_TRIES):
            a = int(stream.next() * m)
            b = int(stream.next() * (m - 1))
            b += b >= a  # a uniform pair of distinct positions
            diff = abs(values[remaining[a]] - values[remaining[b]])
            if diff > 0 and (not use_gap or diff >= threshold):
                picked = (a, b)
                break
        if picked is None:
            pair = _exact_pick(remaining, s, threshold if use_gap else 0.0, stream)
            if pair is None:
                if use_gap:
                    use_gap = False  # no pair reaches the gap any more, and none ever will
                    continue
                break
            high, low = pair
            remaining.remove(high)
            remaining.remove(low)
        else:
            a, b = picked
            high, low = (remaining[a], remaining[b]) if values[remaining[a]] > values[remaining[b]] else (
                remaining[b], remaining[a]
            )
            # O(1) removal: move the last entries into the two freed slots.
            for pos in sorted(picked, reverse=True):
                remaining[pos] = remaining[-1]
                remaining.pop()
        pairs.append((high, low))
    return pairs


def all_pairs(
    scores: Sequence[float] | np.ndarray, gap: float, max_pairs: int | None, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """Every (chosen, rejected) pair with different scores and a gap >= ``gap``
    (all different-score pairs if none reaches the gap), at most ``max_pairs``
    drawn uniformly without replacement. Responses may appear in several pairs."""
    s = np.asarray(scores, dtype=np.float64)
    first, second = np.triu_indices(s.size, k=1)
    diff = np.abs(s[first] - s[second])
    valid = diff >= gap if gap > 0 else diff > 0
    if gap > 0 and not valid.any():
        valid = diff > 0
    first, second = first[valid], second[valid]
    if max_pairs is not None and first.size > max_pairs:
        picked = np.sort(rng.choice(first.size, size=max_pairs, replace=False))
        first, second = first[picked], second[picked]
    higher_first = s[first] > s[second]
    chosen = np.where(higher_first, first, second)
    rejected = np.where(higher_first, second, first)
    return [(int(c), int(r)) for c, r in zip(chosen, rejected)]


def reference_gap_pairs(scores: Sequence[float], gap: float, rng: np.random.Generator) -> list[tuple[int, int]]:
    """A straightforward transcription of the released sampler: list every valid pair
    of unused responses after each pick (O(n^2) per pick, O(n^3) per pool).

    Kept only as the baseline of ``benchmarks/bench_prepare.py`` and as an oracle in tests."""
    scores = list(scores)
    unused = list(range(len(scores)))
    pairs = []
    while True:
        candidates = [
            (a, b)
            for x, a in enumerate(unused)
            for b in unused[x + 1 :]
            if scores[a] != scores[b] and abs(scores[a] - scores[b]) >= gap
        ]
        if not candidates:
            candidates = [(a, b) for x, a in enumerate(unused) for b in unused[x + 1 :] if scores[a] != scores[b]]
        if not candidates:
            return pairs
        a, b = candidates[int(rng.integers(len(candidates)))]
        pairs.append((a, b) if scores[a] > scores[b] else (b, a))
        unused.remove(a)
        unused.remove(b)


def pool_skip_reason(scores: Sequence[float]) -> str | None:
    """Why a pool cannot give any pair, or None if it can."""
    if len(scores) < 2:
        return "fewer than 2 responses"
    if len(set(float(x) for x in scores)) < 2:
        return "fewer than 2 distinct scores"
    return None


# ---------------------------------------------------------------------------
# §5 DivPO


def divpo_set_size(n: int, rho: float, min_pairs: int) -> int:
    """k = int(min(max(p, N rho / 100), N / 2))."""
    return int(min(max(min_pairs, n * rho / 100.0), n / 2.0))


def divpo_sets(scores: Sequence[float] | np.ndarray, rho: float, num_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """(high, low): indices of the top-k and bottom-k responses by score. The sort is
    stable, so among equal scores the earlier response ranks higher."""
    s = np.asarray(scores, dtype=np.float64)
    k = divpo_set_size(s.size, rho, num_pairs)
    by_score_desc = np.argsort(-s, kind="stable")
    return by_score_desc[:k], by_score_desc[::-1][:k]


def divpo_pairs(
    scores: Sequence[float] | np.ndarray,
    deviation_of: Callable[[np.ndarray], np.ndarray],
    rho: float,
    num_pairs: int,
    rng: np.random.Generator,
) -> list[tuple[int, int]]:
    """DivPO selection: high set = top-k by score, low set = bottom-k; chosen = the
    min(p, k) most deviating of the high set, rejected = the min(p, k) least deviating
    of the low set, deviation computed within each set (``deviation_of(indices)``);
    paired at random. Pairs whose scores tie (possible with many equal scores) are
    dropped, since a preference needs chosen > rejected."""
    s = np.asarray(scores, dtype=np.float64)
    high, low = divpo_sets(s, rho, num_pairs)
    k = high.size
    if k < 1:
        return []
    m = min(num_pairs, k)
    high_dev, low_dev = np.asarray(deviation_of(high)), np.asarray(deviation_of(low))
    chosen = high[np.argsort(-high_dev, kind="stable")[:m]]
    rejected = low[np.argsort(low_dev, kind="stable")[:m]]
    rejected = rejected[rng.permutation(m)]
    return [(int(c), int(r)) for c, r in zip(chosen, rejected) if s[c] > s[r]]


def set_deviation(embeddings: dict[str, np.ndarray]) -> np.ndarray:
    """Deviation within one set for DivPO ranking: the docs/method.md §3 combination of min-max
    normalised mean cosine distances over all embedders (with one embedder this
    ranks exactly like the raw mean cosine distance)."""
    from divtune.deviation import combine_geometric, mean_cosine_distance, minmax_to_unit  # heavy: loads numpy

    raw = [mean_cosine_distance(e) for e in embeddings.values()]
    if len(raw) == 1:
        return raw[0]
    return combine_geometric([minmax_to_unit(d) for d in raw])

