"""Hand-computed checks of the interval functions: bootstraps, seed-unit intervals, interactions (docs/method.md §7)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from divtune import statistics


def test_bootstrap_interval_contains_point_estimate_and_is_seeded():
    rng = np.random.default_rng(3)
    values = rng.normal(0.4, 0.1, size=200)
    low, high = statistics.bootstrap_ci(values, n_boot=500, seed=7)
    assert low < values.mean() < high
    assert high - low < 0.1  # about 4 standard errors (0.1/sqrt(200) = 0.007)
    assert statistics.bootstrap_ci(values, n_boot=500, seed=7) == (low, high)


def test_bootstrap_ignores_nan_prompts():
    values = np.array([0.2, np.nan, 0.4, 0.6, np.nan])
    low, high = statistics.bootstrap_ci(values, n_boot=300, seed=0)
    assert 0.2 <= low <= 0.4 <= high <= 0.6
    assert statistics.bootstrap_ci([np.nan, np.nan]) == pytest.approx((np.nan, np.nan), nan_ok=True)


def test_paired_bootstrap_detects_a_consistent_gain():
    rng = np.random.default_rng(0)
    baseline = rng.uniform(0.0, 1.0, size=100)  # large between-prompt spread
    system = baseline + 0.05 + rng.normal(0, 0.01, size=100)
    result = statistics.paired_bootstrap_diff(system, baseline, n_boot=500, seed=1)
    assert result["low"] > 0.0
    assert result["low"] < result["diff"] < result["high"]
    assert result["diff"] == pytest.approx(0.05, abs=0.01)
    assert result["n"] == 100
    # Same data unpaired: an interval for the baseline alone is far wider than the paired one.
    low, high = statistics.bootstrap_ci(baseline, n_boot=500, seed=1)
    assert (high - low) > 5 * (result["high"] - result["low"])


# ---------------------------------------------------------------- seeds x prompts bootstrap


def test_seed_prompt_bootstrap_mean_and_that_seed_spread_widens_the_interval():
    from divtune.statistics import paired_bootstrap_diff, seed_prompt_bootstrap_diff

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
    from divtune.statistics import seed_prompt_bootstrap_diff

    grid = np.array([[1.0, np.nan, 3.0], [np.nan, np.nan, 5.0]])
    out = seed_prompt_bootstrap_diff(grid, n_boot=200, seed=0)
    assert out["diff"] == pytest.approx(3.0)
    assert out["n"] == 2  # the middle prompt is undefined for every seed
    assert 1.0 <= out["low"] <= out["high"] <= 5.0
    empty = seed_prompt_bootstrap_diff(np.full((2, 3), np.nan))
    assert empty["n"] == 0 and np.isnan(empty["diff"])


# ---------------------------------------------------------------- seed-unit intervals and interactions


def test_seed_t_interval_hand_computed():
    from scipy import stats

    grid = np.array([[1.0, 2.0, 3.0, np.nan], [0.0, 0.0, 0.0, 0.0], [4.0, 5.0, 3.0, 4.0]])
    out = statistics.seed_t_interval(grid)
    # seed means 2, 0, 4 (the nan prompt left out of seed 0); mean 2; sd 2; se 2 / sqrt(3); t(0.975, 2) = 4.3027
    assert out["seed_means"] == [2.0, 0.0, 4.0] and out["diff"] == 2.0 and out["sd"] == pytest.approx(2.0)
    half = 4.302652729749464 * 2.0 / math.sqrt(3)
    assert (out["low"], out["high"]) == pytest.approx((2.0 - half, 2.0 + half), abs=1e-9)
    assert (out["low"], out["high"]) == pytest.approx(stats.t.interval(0.95, 2, loc=2.0, scale=2.0 / math.sqrt(3)))
    assert out["n_seeds"] == 3 and out["df"] == 2
    assert statistics.seed_t_interval(grid, confidence=0.9)["high"] < out["high"]
    one = statistics.seed_t_interval(grid[:1])
    assert one["diff"] == 2.0 and math.isnan(one["low"]) and math.isnan(one["high"])  # one seed: no interval
    assert statistics.seed_t_interval(np.full((2, 3), np.nan))["n_seeds"] == 0


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
    out = statistics.nested_seed_prompt_bootstrap_diff(grid, n_boot=20000, seed=3)
    assert out["p_le_zero"] == pytest.approx(0.34375, abs=0.012)
    assert out["diff"] == pytest.approx(0.15) and out["n_seeds"] == 2
    assert (out["low"], out["high"]) == (pytest.approx(np.quantile(nested, 0.025)), pytest.approx(np.quantile(nested, 0.975)))
    crossed_out = statistics.seed_prompt_bootstrap_diff(grid, n_boot=20000, seed=3)
    assert crossed_out["p_le_zero"] == pytest.approx(0.25, abs=0.012)
    # Seeded, and a constant grid has no spread.
    assert statistics.nested_seed_prompt_bootstrap_diff(grid, n_boot=200, seed=3) == \
        statistics.nested_seed_prompt_bootstrap_diff(grid, n_boot=200, seed=3)
    flat = statistics.nested_seed_prompt_bootstrap_diff(np.full((3, 5), 0.2), n_boot=100)
    assert flat["low"] == pytest.approx(0.2) and flat["high"] == pytest.approx(0.2)


def test_nested_bootstrap_ignores_undefined_cells():
    grid = np.array([[1.0, np.nan, 1.0], [3.0, 3.0, np.nan]])
    out = statistics.nested_seed_prompt_bootstrap_diff(grid, n_boot=500)
    assert out["diff"] == 2.0 and 1.0 <= out["low"] <= out["high"] <= 3.0
    assert math.isnan(statistics.nested_seed_prompt_bootstrap_diff(np.full((2, 2), np.nan))["diff"])


def test_seed_level_difference_names_its_three_intervals():
    rng = np.random.default_rng(0)
    grid = 0.05 + rng.normal(0, 0.02, size=(3, 1)) + rng.normal(0, 0.05, size=(3, 20))
    out = statistics.seed_level_difference(grid, n_boot=300)
    crossed = statistics.seed_prompt_bootstrap_diff(grid, n_boot=300)
    assert {k: out[k] for k in crossed} == crossed  # the crossed bootstrap stays at the top level, as before
    assert out["interval"].startswith("crossed bootstrap")
    assert out["seed_t"] == statistics.seed_t_interval(grid)
    assert out["seed_nested_bootstrap"] == statistics.nested_seed_prompt_bootstrap_diff(grid, n_boot=300)


def test_interaction_is_the_difference_of_differences_paired_by_seed_and_prompt():
    a_b = np.array([[0.8, 0.7], [0.9, 0.6], [0.7, 0.7]])
    b_b = np.array([[0.6, 0.6], [0.6, 0.5], [0.6, 0.6]])
    a_0 = np.array([[0.7, 0.7], [0.8, 0.8], [0.7, 0.6]])
    b_0 = np.array([[0.7, 0.6], [0.8, 0.7], [0.6, 0.6]])
    grid = statistics.interaction_grid(a_b, b_b, a_0, b_0)
    # seed 0: (0.2, 0.1) - (0.0, 0.1) = (0.2, 0.0); seed 1: (0.3, 0.1) - (0.0, 0.1) = (0.3, 0.0); seed 2: (0.1, 0.1) - (0.1, 0.0)
    assert np.allclose(grid, [[0.2, 0.0], [0.3, 0.0], [0.0, 0.1]])
    out = statistics.interaction_difference(a_b, b_b, a_0, b_0, n_boot=200)
    assert out["seed_t"]["seed_means"] == pytest.approx([0.1, 0.15, 0.05])
    assert out["diff"] == pytest.approx(0.1) and out["seed_t"]["diff"] == pytest.approx(0.1)
    from scipy import stats

    assert (out["seed_t"]["low"], out["seed_t"]["high"]) == pytest.approx(
        stats.t.interval(0.95, 2, loc=0.1, scale=0.05 / math.sqrt(3)))
    with pytest.raises(ValueError, match="four"):
        statistics.interaction_grid(a_b, b_b[:2], a_0, b_0)
