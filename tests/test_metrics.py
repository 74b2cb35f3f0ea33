"""Hand-computed checks of the pure metric functions (docs/method.md §7)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from divtune import metrics


def test_identical_samples_have_zero_diversity_and_vendi_one():
    emb = np.tile(np.array([0.6, 0.8, 0.0]), (2, 4, 1))  # 2 prompts x 4 identical samples
    assert metrics.mean_pairwise_cosine_distance(emb) == pytest.approx([0.0, 0.0], abs=1e-12)
    assert metrics.vendi_score(emb) == pytest.approx([1.0, 1.0], abs=1e-9)


def test_identical_float32_rows_never_give_negative_distance():
    rng = np.random.default_rng(0)
    row = rng.normal(size=384).astype(np.float32)
    emb = np.tile(row, (50, 4, 1)) * rng.uniform(0.5, 2.0, size=(50, 4, 1)).astype(np.float32)
    out = metrics.mean_pairwise_cosine_distance(emb)
    assert np.all(out >= 0.0) and np.all(out < 1e-6)


def test_orthogonal_unit_embeddings_have_diversity_one_and_vendi_n():
    emb = np.eye(4)[None]  # 1 prompt, 4 mutually orthogonal unit vectors
    assert metrics.mean_pairwise_cosine_distance(emb) == pytest.approx([1.0])
    assert metrics.vendi_score(emb) == pytest.approx([4.0])


def test_diversity_hand_computed_mixed_angles():
    # e1, e1, e2: pairs (e1,e1)=0, (e1,e2)=1 twice -> mean over 3 unordered pairs = 2/3.
    emb = np.array([[[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]])  # unnormalised on purpose
    assert metrics.mean_pairwise_cosine_distance(emb) == pytest.approx([2.0 / 3.0])
    # K/N has eigenvalues 2/3 and 1/3 (block [[1,1],[1,1]]/3 and [1]/3).
    expected = math.exp(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    assert metrics.vendi_score(emb) == pytest.approx([expected])


def test_masked_diversity_keeps_only_passing_samples_and_nan_below_two():
    emb = np.array([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]] * 2)
    mask = np.array([[True, True, False], [True, False, False]])
    out = metrics.mean_pairwise_cosine_distance(emb, mask=mask)
    assert out[0] == pytest.approx(0.0)  # the two identical ones remain
    assert np.isnan(out[1])


def test_distinct_n_hand_computed():
    samples = ["the cat sat", "The cat ran"]
    # unigrams: the,cat,sat,the,cat,ran -> 4 unique / 6
    assert metrics.distinct_n(samples, 1) == pytest.approx(4 / 6)
    # bigrams: (the cat),(cat sat),(the cat),(cat ran) -> 3 / 4
    assert metrics.distinct_n(samples, 2) == pytest.approx(3 / 4)
    # trigrams: two different -> 2 / 2
    assert metrics.distinct_n(samples, 3) == pytest.approx(1.0)
    # no 4-grams at all -> undefined
    assert math.isnan(metrics.distinct_n(samples, 4))


def test_distinct_n_does_not_join_samples():
    # "a b" + "c d": a cross-sample bigram (b c) must not be counted.
    assert metrics.distinct_n(["a b", "c d"], 2) == pytest.approx(1.0)
    assert metrics.distinct_n(["a b", "a b"], 2) == pytest.approx(0.5)


def test_self_bleu_hand_computed():
    assert metrics.self_bleu(["a b c d"] * 3) == pytest.approx(1.0)
    assert metrics.self_bleu(["a b c d", "e f g h"]) == pytest.approx(0.0)
    # "a b c d" vs "a b c e": precisions 3/4, 2/3, 1/2 and 4-gram 0/1 -> exp smoothing 1/2.
    expected = (0.75 * (2 / 3) * 0.5 * 0.5) ** 0.25
    assert metrics.self_bleu(["a b c d", "a b c e"]) == pytest.approx(expected, rel=1e-6)
    assert math.isnan(metrics.self_bleu(["alone"]))


def test_compression_ratio_is_higher_for_repeated_samples():
    story = "The lighthouse keeper counted the ships that never came back, one candle for each."
    others = [
        "A dragon applied for a loan and the bank manager asked for collateral in gold.",
        "Nobody on the colony ship remembered Earth, only the songs about its oceans.",
        "My grandmother's recipe book had one page written in a language no one spoke.",
    ]
    repeated = metrics.compression_ratio([story] * 4)
    varied = metrics.compression_ratio([story, *others])
    assert repeated > varied > 1.0


def test_bootstrap_interval_contains_point_estimate_and_is_seeded():
    rng = np.random.default_rng(3)
    values = rng.normal(0.4, 0.1, size=200)
    low, high = metrics.bootstrap_ci(values, n_boot=500, seed=7)
    assert low < values.mean() < high
    assert high - low < 0.1  # about 4 standard errors (0.1/sqrt(200) = 0.007)
    assert metrics.bootstrap_ci(values, n_boot=500, seed=7) == (low, high)


def test_bootstrap_ignores_nan_prompts():
    values = np.array([0.2, np.nan, 0.4, 0.6, np.nan])
    low, high = metrics.bootstrap_ci(values, n_boot=300, seed=0)
    assert 0.2 <= low <= 0.4 <= high <= 0.6
    assert metrics.bootstrap_ci([np.nan, np.nan]) == pytest.approx((np.nan, np.nan), nan_ok=True)


def test_paired_bootstrap_detects_a_consistent_gain():
    rng = np.random.default_rng(0)
    baseline = rng.uniform(0.0, 1.0, size=100)  # large between-prompt spread
    system = baseline + 0.05 + rng.normal(0, 0.01, size=100)
    result = metrics.paired_bootstrap_diff(system, baseline, n_boot=500, seed=1)
    assert result["low"] > 0.0
    assert result["low"] < result["diff"] < result["high"]
    assert result["diff"] == pytest.approx(0.05, abs=0.01)
    assert result["n"] == 100
    # Same data unpaired: an interval for the baseline alone is far wider than the paired one.
    low, high = metrics.bootstrap_ci(baseline, n_boot=500, seed=1)
    assert (high - low) > 5 * (result["high"] - result["low"])


def test_group_by_size():
    groups = metrics.group_by_size([4, 3, 4, 2])
    assert {k: v.tolist() for k, v in groups.items()} == {2: [3], 3: [1], 4: [0, 2]}


# ---------------------------------------------------------------- seeds x prompts bootstrap


def test_seed_prompt_bootstrap_mean_and_that_seed_spread_widens_the_interval():
    from divtune.metrics import paired_bootstrap_diff, seed_prompt_bootstrap_diff

    rng = np.random.default_rng(0)
    prompts = rng.normal(0.0, 0.05, size=30)
    # Three seeds whose runs differ a lot: +0.10, 0.00, -0.10 on every prompt.
    grid = np.stack([prompts + shift for shift in (0.10, 0.0, -0.10)])
    out = seed_prompt_bootstrap_diff(grid, n_boot=2000, seed=1)
    assert out["diff"] == pytest.approx(grid.mean())
    assert out["n"] == 30 and out["n_seeds"] == 3
    assert out["low"] < out["diff"] < out["high"]
    prompts_only = paired_bootstrap_diff(grid.mean(axis=0), np.zeros(30), n_boot=2000, seed=1)
    assert (out["high"] - out["low"]) > 2 * (prompts_only["high"] - prompts_only["low"])
    # Identical seeds: the seed draw changes nothing, the interval is the prompts-only one (same scale).
    same = seed_prompt_bootstrap_diff(np.stack([prompts] * 3), n_boot=2000, seed=1)
    assert (same["high"] - same["low"]) == pytest.approx(prompts_only["high"] - prompts_only["low"], rel=0.25)


def test_seed_prompt_bootstrap_ignores_undefined_cells_and_handles_all_nan():
    from divtune.metrics import seed_prompt_bootstrap_diff

    grid = np.array([[1.0, np.nan, 3.0], [np.nan, np.nan, 5.0]])
    out = seed_prompt_bootstrap_diff(grid, n_boot=200, seed=0)
    assert out["diff"] == pytest.approx(3.0)
    assert out["n"] == 2  # the middle prompt is undefined for every seed
    assert 1.0 <= out["low"] <= out["high"] <= 5.0
    empty = seed_prompt_bootstrap_diff(np.full((2, 3), np.nan))
    assert empty["n"] == 0 and np.isnan(empty["diff"])


# ---------------------------------------------------------------- centrality and modes


def test_pool_centrality_hand_example():
    from divtune.metrics import pool_centrality

    pool = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, -0.1], [0.0, 1.0]])
    unit = pool / np.linalg.norm(pool, axis=1, keepdims=True)
    sim = unit @ unit.T
    members = (sim.sum(axis=1) - 1.0) / 3
    samples = np.array([[1.0, 0.0], [0.0, 1.0]])
    z = pool_centrality(samples, pool)
    raw = (samples / np.linalg.norm(samples, axis=1, keepdims=True)) @ unit.T
    expected = (raw.mean(axis=1) - members.mean()) / members.std()
    assert np.allclose(z, expected)
    assert z[0] > 0 > z[1]  # the sample in the crowd is typical, the outlier is not
    # A pool member measured as itself excludes its own similarity: it gets its member z-score.
    z_member = pool_centrality(pool[[3]], pool, sample_in_pool=[3])
    assert z_member[0] == pytest.approx((members[3] - members.mean()) / members.std())
    assert np.isnan(pool_centrality(samples, pool[:2])).all()


def test_mode_metrics_per_prompt():
    from divtune.metrics import mode_metrics
    from divtune.modes import MODES

    out = mode_metrics(["other", "other", "dialogue", "first_person"], "other", MODES)
    assert out["typical_mode_share"] == 0.5
    assert out["mode_entropy"] == pytest.approx(1.5)
    assert out["modes_seen"] == 3
    one = mode_metrics(["dialogue"] * 4, "other", MODES)
    assert one == {"typical_mode_share": 0.0, "mode_entropy": 0.0, "modes_seen": 1.0}


# ---------------------------------------------------------------- seed-unit intervals and interactions


def test_seed_t_interval_hand_computed():
    from scipy import stats

    grid = np.array([[1.0, 2.0, 3.0, np.nan], [0.0, 0.0, 0.0, 0.0], [4.0, 5.0, 3.0, 4.0]])
    out = metrics.seed_t_interval(grid)
    # seed means 2, 0, 4 (the nan prompt left out of seed 0); mean 2; sd 2; se 2 / sqrt(3); t(0.975, 2) = 4.3027
    assert out["seed_means"] == [2.0, 0.0, 4.0] and out["diff"] == 2.0 and out["sd"] == pytest.approx(2.0)
    half = 4.302652729749464 * 2.0 / math.sqrt(3)
    assert (out["low"], out["high"]) == pytest.approx((2.0 - half, 2.0 + half), abs=1e-9)
    assert (out["low"], out["high"]) == pytest.approx(stats.t.interval(0.95, 2, loc=2.0, scale=2.0 / math.sqrt(3)))
    assert out["n_seeds"] == 3 and out["df"] == 2
    assert metrics.seed_t_interval(grid, confidence=0.9)["high"] < out["high"]
    one = metrics.seed_t_interval(grid[:1])
    assert one["diff"] == 2.0 and math.isnan(one["low"]) and math.isnan(one["high"])  # one seed: no interval
    assert metrics.seed_t_interval(np.full((2, 3), np.nan))["n_seeds"] == 0


def _exact_distributions(grid):
    """Every equally likely resample of a tiny grid: nested (prompts drawn per drawn seed) and crossed."""
    import itertools

    s, p = grid.shape
    nested = [np.mean([grid[seed, list(draw)].mean() for seed, draw in zip(seeds, draws)])
              for seeds in itertools.product(range(s), repeat=s)
              for draws in itertools.product(itertools.product(range(p), repeat=p), repeat=s)]
    crossed = [grid[np.ix_(seeds, draw)].mean() for seeds in itertools.product(range(s), repeat=s)
               for draw in itertools.product(range(p), repeat=p)]
    return np.array(nested), np.array(crossed)


def test_nested_bootstrap_matches_the_enumerated_nested_distribution_not_the_crossed_one():
    grid = np.array([[1.0, -0.2], [-0.6, 0.4]])
    nested, crossed = _exact_distributions(grid)
    assert (nested <= 0).mean() == pytest.approx(0.34375) and (crossed <= 0).mean() == pytest.approx(0.25)
    out = metrics.nested_seed_prompt_bootstrap_diff(grid, n_boot=20000, seed=3)
    assert out["p_le_zero"] == pytest.approx(0.34375, abs=0.012)
    assert out["diff"] == pytest.approx(0.15) and out["n_seeds"] == 2
    assert (out["low"], out["high"]) == (pytest.approx(np.quantile(nested, 0.025)), pytest.approx(np.quantile(nested, 0.975)))
    crossed_out = metrics.seed_prompt_bootstrap_diff(grid, n_boot=20000, seed=3)
    assert crossed_out["p_le_zero"] == pytest.approx(0.25, abs=0.012)
    # Seeded, and a constant grid has no spread.
    assert metrics.nested_seed_prompt_bootstrap_diff(grid, n_boot=200, seed=3) == \
        metrics.nested_seed_prompt_bootstrap_diff(grid, n_boot=200, seed=3)
    flat = metrics.nested_seed_prompt_bootstrap_diff(np.full((3, 5), 0.2), n_boot=100)
    assert flat["low"] == pytest.approx(0.2) and flat["high"] == pytest.approx(0.2)


def test_nested_bootstrap_ignores_undefined_cells():
    grid = np.array([[1.0, np.nan, 1.0], [3.0, 3.0, np.nan]])
    out = metrics.nested_seed_prompt_bootstrap_diff(grid, n_boot=500)
    assert out["diff"] == 2.0 and 1.0 <= out["low"] <= out["high"] <= 3.0
    assert math.isnan(metrics.nested_seed_prompt_bootstrap_diff(np.full((2, 2), np.nan))["diff"])


def test_seed_level_difference_names_its_three_intervals():
    rng = np.random.default_rng(0)
    grid = 0.05 + rng.normal(0, 0.02, size=(3, 1)) + rng.normal(0, 0.05, size=(3, 20))
    out = metrics.seed_level_difference(grid, n_boot=300)
    crossed = metrics.seed_prompt_bootstrap_diff(grid, n_boot=300)
    assert {k: out[k] for k in crossed} == crossed  # the crossed bootstrap stays at the top level, as before
    assert out["interval"].startswith("crossed bootstrap")
    assert out["seed_t"] == metrics.seed_t_interval(grid)
    assert out["seed_nested_bootstrap"] == metrics.nested_seed_prompt_bootstrap_diff(grid, n_boot=300)


def test_interaction_is_the_difference_of_differences_paired_by_seed_and_prompt():
    a_b = np.array([[0.8, 0.7], [0.9, 0.6], [0.7, 0.7]])
    b_b = np.array([[0.6, 0.6], [0.6, 0.5], [0.6, 0.6]])
    a_0 = np.array([[0.7, 0.7], [0.8, 0.8], [0.7, 0.6]])
    b_0 = np.array([[0.7, 0.6], [0.8, 0.7], [0.6, 0.6]])
    grid = metrics.interaction_grid(a_b, b_b, a_0, b_0)
    # seed 0: (0.2, 0.1) - (0.0, 0.1) = (0.2, 0.0); seed 1: (0.3, 0.1) - (0.0, 0.1) = (0.3, 0.0); seed 2: (0.1, 0.1) - (0.1, 0.0)
    assert np.allclose(grid, [[0.2, 0.0], [0.3, 0.0], [0.0, 0.1]])
    out = metrics.interaction_difference(a_b, b_b, a_0, b_0, n_boot=200)
    assert out["seed_t"]["seed_means"] == pytest.approx([0.1, 0.15, 0.05])
    assert out["diff"] == pytest.approx(0.1) and out["seed_t"]["diff"] == pytest.approx(0.1)
    from scipy import stats

    assert (out["seed_t"]["low"], out["seed_t"]["high"]) == pytest.approx(
        stats.t.interval(0.95, 2, loc=0.1, scale=0.05 / math.sqrt(3)))
    with pytest.raises(ValueError, match="four"):
        metrics.interaction_grid(a_b, b_b[:2], a_0, b_0)
