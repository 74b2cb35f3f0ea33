"""Vote compression (both options), gap pairs, all pairs and DivPO selection (docs/method.md §1, §2, §5)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from divtune.pairs import (
    all_pairs,
    compress_votes,
    divpo_pairs,
    divpo_set_size,
    gap_pairs,
    pool_rng,
    pool_skip_reason,
    reference_gap_pairs,
)


# --- §1 vote compression -------------------------------------------------------------

def test_exact_compression_hand_values_one_log():
    # C = 1, s_min = 1: q = 2 (log(1+s) - log 2) / (log 8 - log 2) - 1
    assert compress_votes([1, 3, 7], "exact", compression_factor=1) == pytest.approx([-1.0, 0.0, 1.0])
    # s_min = 2: T(s - 1) = log(s); T(1) = log 2; T(7) = log 8
    assert compress_votes([2, 4, 8], "exact", compression_factor=1) == pytest.approx([-1.0, 0.0, 1.0])


def test_released_compression_hand_values_one_log():
    # s_min = 2: T(s - s_min + 1) = log(s), T'(s_min) = log 3, T'(s_max) = log 9
    q = compress_votes([2, 4, 8], "released", compression_factor=1)
    expected = [2 * (math.log(s) - math.log(3)) / (math.log(9) - math.log(3)) - 1 for s in (2, 4, 8)]
    assert q == pytest.approx(expected)
    assert q[0] < -1  # the released formula leaves [-1, 1] when s_min != 1


def test_compression_two_logs_and_global_range():
    t = lambda x: math.log1p(math.log1p(x))  # noqa: E731
    q = compress_votes([5], "exact", compression_factor=2, score_min=1, score_max=9)
    assert q[0] == pytest.approx(2 * (t(5) - t(1)) / (t(9) - t(1)) - 1)
    released = compress_votes([1, 5, 9], "released", compression_factor=2)
    exact = compress_votes([1, 5, 9], "exact", compression_factor=2)
    assert released == pytest.approx(exact)  # identical when s_min = 1


def test_compression_default_factor_bounds_and_ties():
    q = compress_votes([1, 10, 26000, 3])
    assert q.min() == -1 and q.max() == pytest.approx(1.0)
    assert list(np.argsort(q)) == [0, 3, 1, 2]
    assert compress_votes([4, 4]).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="released"):
        compress_votes([-5, 3], "released", compression_factor=3)
    assert compress_votes([-5, 3], "exact")[0] == -1.0


# --- §2 gap pairs --------------------------------------------------------------------

def test_gap_pairs_distribution_matches_spec():
    # scores 1, 2, 10, 11, gap 5: first pick uniform over 4 gap pairs, the rest is forced,
    # so each of the two matchings has probability 1/2.
    scores = [1, 2, 10, 11]
    outcomes = Counter(tuple(sorted(gap_pairs(scores, 5, np.random.default_rng(s)))) for s in range(2000))
    assert set(outcomes) == {((2, 0), (3, 1)), ((2, 1), (3, 0))}
    assert 0.45 < outcomes[((2, 0), (3, 1))] / 2000 < 0.55


def test_gap_pairs_fall_back_to_different_scores_then_stop():
    # no pair reaches the gap: all different-score pairs; ties never pair
    pairs = gap_pairs([3, 3, 4, 3], 5, np.random.default_rng(0))
    assert len(pairs) == 1 and pairs[0][0] == 2
    assert gap_pairs([7, 7, 7], 5, np.random.default_rng(0)) == []


def test_gap_pairs_deterministic_per_seed_and_pool():
    scores = np.random.default_rng(3).integers(0, 50, 60)
    a = gap_pairs(scores, 5, pool_rng(1, "pool-a"))
    assert a == gap_pairs(scores, 5, pool_rng(1, "pool-a"))
    assert a != gap_pairs(scores, 5, pool_rng(2, "pool-a"))


def test_gap_pairs_first_pick_uniform_like_reference():
    # The first draw of both samplers is uniform over the same valid set.
    scores = [0, 1, 6, 7, 12]
    valid = {(b, a) for a in range(5) for b in range(5) if scores[b] - scores[a] >= 5}
    fast = Counter(gap_pairs(scores, 5, np.random.default_rng(s))[0] for s in range(3000))
    ref = Counter(reference_gap_pairs(scores, 5, np.random.default_rng(s))[0] for s in range(3000))
    assert set(fast) == set(ref) == valid
    for pair in valid:
        assert abs(fast[pair] / 3000 - 1 / len(valid)) < 0.04


@settings(max_examples=200, deadline=None)
@given(
    scores=st.lists(st.integers(-20, 40), min_size=0, max_size=60),
    gap=st.sampled_from([0, 1, 5, 30]),
    seed=st.integers(0, 2**32 - 1),
)
def test_gap_pairs_properties(scores, gap, seed):
    pairs = gap_pairs(scores, gap, np.random.default_rng(seed))
    used = [i for pair in pairs for i in pair]
    assert len(used) == len(set(used))  # no response twice
    assert all(scores[c] > scores[r] for c, r in pairs)
    assert len(pairs) <= len(scores) // 2
    # maximal: the unused responses cannot form another pair (all scores tie)
    unused = set(range(len(scores))) - set(used)
    assert len({scores[i] for i in unused}) <= 1
    assert (len(pairs) == 0) == (pool_skip_reason(scores) is not None)


def test_pool_skip_reason():
    assert pool_skip_reason([3]) == "fewer than 2 responses"
    assert pool_skip_reason([1, 1, 1]) == "fewer than 2 distinct scores"
    assert pool_skip_reason([1, 2]) is None


def test_all_pairs_cap_and_gap():
    scores = [1, 2, 10, 11, 11]
    pairs = all_pairs(scores, 5, None, np.random.default_rng(0))
    assert sorted(pairs) == [(2, 0), (2, 1), (3, 0), (3, 1), (4, 0), (4, 1)]
    capped = all_pairs(scores, 5, 4, np.random.default_rng(0))
    assert len(capped) == 4 and set(capped) <= set(pairs)
    assert sorted(all_pairs([1, 2, 2], 5, None, np.random.default_rng(0))) == [(1, 0), (2, 0)]


# --- §5 DivPO ------------------------------------------------------------------------

def test_divpo_set_size_hand_values():
    assert divpo_set_size(100, 25, 2) == 25
    assert divpo_set_size(4, 25, 2) == 2  # max(2, 1) = 2, min(2, 2)
    assert divpo_set_size(3, 25, 2) == 1  # int(min(2, 1.5))
    assert divpo_set_size(16, 25, 2) == 4


def _unit(degrees):
    return np.array([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in degrees])


def test_divpo_selection_hand_computed():
    # 16 responses, rho 25 -> k = 4; p = 2.
    scores = np.array([100, 90, 80, 70] + [50] * 8 + [4, 3, 2, 1], dtype=float)
    angles = {0: 0, 1: 10, 2: 20, 3: 90, 12: 0, 13: 10, 14: 20, 15: 90}
    emb = _unit([angles.get(i, 45) for i in range(16)])
    # within {0, 10, 20, 90} degrees the mean cosine distances are
    # 90: 0.828, 0: 0.358, 10: 0.285, 20: 0.245 -> most deviating: 90 then 0; least: 20 then 10
    pairs = divpo_pairs(scores, lambda idx: _mcd(emb[idx]), 25, 2, np.random.default_rng(0))
    assert {c for c, _ in pairs} == {3, 0}
    assert {r for _, r in pairs} == {14, 13}


def _mcd(e):
    from divtune.deviation import mean_cosine_distance

    return mean_cosine_distance(e)


def test_divpo_drops_tied_pairs():
    scores = [5, 5, 5, 5]
    emb = _unit([0, 30, 60, 90])
    assert divpo_pairs(scores, lambda idx: _mcd(emb[idx]), 25, 2, np.random.default_rng(0)) == []
