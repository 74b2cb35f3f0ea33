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


def test_group_by_size():
    groups = metrics.group_by_size([4, 3, 4, 2])
    assert {k: v.tolist() for k, v in groups.items()} == {2: [3], 3: [1], 4: [0, 2]}


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
