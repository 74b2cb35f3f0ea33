"""Pure DQO (DPP) and DARLING (partition) diversity terms, docs/method.md §6."""

from __future__ import annotations

import math

import numpy as np
import pytest

from divtune.reward.online import (
    cosine_judge,
    darling_diversity,
    darling_rewards,
    dpp_loo_gain,
    dqo_rewards,
    group_rewards,
    partition_classes,
    partition_novelty,
)


def brute_force_gain(emb: np.ndarray) -> np.ndarray:
    """det ratio det(L + I) / det(L_{-i} + I) straight from the definition, with np.linalg.det."""
    phi = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    kernel = phi @ phi.T + np.eye(len(phi))
    gains = []
    for i in range(len(phi)):
        rest = [j for j in range(len(phi)) if j != i]
        gains.append(math.log(np.linalg.det(kernel) / np.linalg.det(kernel[np.ix_(rest, rest)])))
    return np.array(gains)


# ---------------------------------------------------------------- DPP (DQO)


def test_orthogonal_embeddings_give_the_maximal_gain_log2():
    # For unit phi_i orthogonal to all others, L + I = diag(2): each gain is log 2,
    # and log 2 is the upper bound (Schur complement 1 + 1 - (>= 0) <= 2).
    emb = np.eye(4, 6) * 3.0  # scale must not matter
    np.testing.assert_allclose(dpp_loo_gain(emb), np.full(4, math.log(2)), rtol=0, atol=1e-12)


def test_no_group_exceeds_the_orthogonal_gain():
    rng = np.random.default_rng(0)
    gains = dpp_loo_gain(rng.normal(size=(50, 4, 8)))
    assert gains.max() <= math.log(2) + 1e-12
    assert gains.min() >= 0.0


def test_one_orthogonal_sample_beats_its_duplicated_neighbours():
    # y0 == y1 (a duplicate pair), y2 orthogonal to both.
    # Hand computation: L + I = [[2,1,0],[1,2,0],[0,0,2]], det = 6.
    # Remove y0: det [[2,0],[0,2]] = 4 -> gain log(6/4) = log 1.5.
    # Remove y2: det [[2,1],[1,2]] = 3 -> gain log(6/3) = log 2.
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(dpp_loo_gain(emb), [math.log(1.5), math.log(1.5), math.log(2)], atol=1e-12)


@pytest.mark.parametrize("group_size", [2, 4, 8, 64])
def test_identical_samples_are_finite_and_gain_log_of_g_plus_1_over_g(group_size):
    # G identical unit vectors: det(I + 11^T) = 1 + G, minor = G -> gain log((G+1)/G),
    # which is the smallest gain a sample can have in a group of G and tends to 0.
    emb = np.tile([[0.6, 0.8, 0.0]], (group_size, 1))
    gains = dpp_loo_gain(emb)
    assert np.all(np.isfinite(gains))
    np.testing.assert_allclose(gains, math.log((group_size + 1) / group_size), atol=1e-12)


def test_near_identical_samples_are_stable_and_near_the_duplicate_value():
    rng = np.random.default_rng(1)
    base = rng.normal(size=16)
    emb = base + 1e-9 * rng.normal(size=(8, 16))
    gains = dpp_loo_gain(emb)
    assert np.all(np.isfinite(gains))
    np.testing.assert_allclose(gains, math.log(9 / 8), atol=1e-6)


def test_duplicate_gain_shrinks_towards_zero_with_more_copies():
    gains = [dpp_loo_gain(np.ones((m, 3)))[0] for m in (2, 4, 16, 256)]
    assert all(a > b for a, b in zip(gains, gains[1:]))
    assert gains[-1] < 0.004


@pytest.mark.parametrize("seed", range(5))
def test_gain_agrees_with_brute_force_determinant_ratio(seed):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(5, 7))
    np.testing.assert_allclose(dpp_loo_gain(emb), brute_force_gain(emb), rtol=1e-10, atol=1e-12)


def test_batched_gain_equals_per_group_gain():
    rng = np.random.default_rng(2)
    batch = rng.normal(size=(3, 4, 5))
    np.testing.assert_allclose(dpp_loo_gain(batch), np.stack([dpp_loo_gain(g) for g in batch]), atol=1e-12)


def test_nan_embeddings_are_rejected():
    emb = np.ones((3, 2))
    emb[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dpp_loo_gain(emb)


def test_dqo_reward_adds_alpha_times_gain():
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    quality = np.array([0.5, -0.25, 1.0])
    expected = quality + 2.0 * np.array([math.log(1.5), math.log(1.5), math.log(2)])
    np.testing.assert_allclose(dqo_rewards(quality, emb, alpha=2.0), expected, atol=1e-12)


# ---------------------------------------------------------------- DARLING


def test_union_find_merges_chains_transitively():
    # 0~1, 1~2 (a chain), 3 alone, 4~5.
    same = np.eye(6, dtype=bool)
    for i, j in [(0, 1), (1, 2), (4, 5)]:
        same[i, j] = same[j, i] = True
    assert partition_classes(same).tolist() == [0, 0, 0, 3, 4, 4]


def test_union_find_accepts_a_one_sided_judge():
    same = np.zeros((3, 3), dtype=bool)
    same[2, 0] = True  # judge only said it in one direction
    assert partition_classes(same).tolist() == [0, 1, 0]


def test_novelty_of_hand_made_classes():
    # G = 5; classes {0,1,2}, {3}, {4}: (5-3)/4 = 0.5, (5-1)/4 = 1.
    novelty = partition_novelty(np.array([0, 0, 0, 3, 4]), floor=0.0)
    np.testing.assert_allclose(novelty, [0.5, 0.5, 0.5, 1.0, 1.0])


def test_floor_holds_when_all_samples_are_the_same():
    # One class of G: raw novelty (G - G)/(G - 1) = 0 -> floor.
    np.testing.assert_allclose(partition_novelty(np.zeros(4, dtype=int), floor=0.1), [0.1] * 4)
    np.testing.assert_allclose(partition_novelty(np.zeros(4, dtype=int), floor=0.3), [0.3] * 4)


def test_floor_does_not_touch_values_above_it():
    # classes {0,1,2} of G=4 -> raw (4-3)/3 = 1/3; singleton -> 1.
    np.testing.assert_allclose(partition_novelty(np.array([0, 0, 0, 3]), floor=0.2), [1 / 3] * 3 + [1.0])
    np.testing.assert_allclose(partition_novelty(np.array([0, 0, 0, 3]), floor=0.4), [0.4, 0.4, 0.4, 1.0])


def test_cosine_judge_uses_threshold_inclusively():
    # cos(a, b) = 0.8 exactly; cos(a, c) = 0.
    emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    assert partition_classes(cosine_judge(0.8)(emb)).tolist() == [0, 0, 2]
    assert partition_classes(cosine_judge(0.81)(emb)).tolist() == [0, 1, 2]


def test_darling_rewards_on_a_hand_made_group():
    # y0, y1 the same (cos 1), y2 close to y0 (cos 0.95) -> one class of 3; y3 orthogonal.
    emb = np.array([[1.0, 0.0], [2.0, 0.0], [0.95, math.sqrt(1 - 0.95**2)], [0.0, 1.0]])
    quality = np.array([1.0, 2.0, 3.0, 4.0])
    # class {0,1,2}: (4-3)/3 = 1/3; class {3}: 1.
    np.testing.assert_allclose(darling_diversity(emb, threshold=0.9, floor=0.1), [1 / 3] * 3 + [1.0])
    np.testing.assert_allclose(darling_rewards(quality, emb, threshold=0.9), [1 / 3, 2 / 3, 1.0, 4.0])
    # A stricter judge splits y2 off: {0,1} -> (4-2)/3 = 2/3.
    np.testing.assert_allclose(darling_diversity(emb, threshold=0.99, floor=0.1), [2 / 3, 2 / 3, 1.0, 1.0])


# ---------------------------------------------------------------- flat batch layout


def test_group_rewards_scores_each_contiguous_group_separately():
    # Two groups of G=2: group 0 duplicates, group 1 orthogonal.
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    quality = np.array([1.0, 1.0, 1.0, 1.0])
    reward, div = group_rewards("dqo", quality, emb, 2, alpha=1.0)
    np.testing.assert_allclose(div, [math.log(1.5)] * 2 + [math.log(2)] * 2, atol=1e-12)
    np.testing.assert_allclose(reward, 1.0 + div)
    reward, div = group_rewards("darling", quality, emb, 2, threshold=0.9, floor=0.1)
    np.testing.assert_allclose(div, [0.1, 0.1, 1.0, 1.0])
    reward, div = group_rewards("grpo", quality, None, 2)
    assert div is None and reward.tolist() == quality.tolist()


def test_group_rewards_refuses_partial_groups():
    with pytest.raises(ValueError, match="whole groups"):
        group_rewards("dqo", np.ones(5), np.ones((5, 2)), 2)
