"""docs/method.md §3 formulas against hand-computed values, plus property tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from divtune.deviation import (
    combine_geometric,
    deviation_weights,
    mean_cosine_distance,
    minmax_to_unit,
    pair_weights,
)


def test_mean_cosine_distance_three_vector_toy():
    # e0 = x, e1 = y, e2 = (x + y)/sqrt2: cos(0,1) = 0, cos(0,2) = cos(1,2) = 1/sqrt2
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # unnormalised on purpose
    c = 1 / math.sqrt(2)
    expected = [((1 - 0) + (1 - c)) / 2, ((1 - 0) + (1 - c)) / 2, ((1 - c) + (1 - c)) / 2]
    assert mean_cosine_distance(emb) == pytest.approx(expected)


def test_mean_cosine_distance_small_pools():
    assert mean_cosine_distance(np.array([[1.0, 0.0]])).tolist() == [0.0]
    # two opposite vectors: distance 2 each
    assert mean_cosine_distance(np.array([[1.0, 0.0], [-3.0, 0.0]])) == pytest.approx([2.0, 2.0])


def test_minmax_hand_values_and_edge_cases():
    assert minmax_to_unit(np.array([0.2, 0.4, 0.3])) == pytest.approx([-1.0, 1.0, 0.0])
    assert minmax_to_unit(np.array([0.7, 0.2])).tolist() == [0.0, 0.0]  # n = 2
    assert minmax_to_unit(np.array([0.5, 0.5, 0.5])).tolist() == [0.0, 0.0, 0.0]  # all equal
    # n = 2 from real embeddings: distances equal up to float noise -> 0
    two = mean_cosine_distance(np.array([[0.3, 0.9, 0.1], [0.8, 0.1, 0.5]]))
    assert minmax_to_unit(two).tolist() == [0.0, 0.0]


def test_geometric_mean_of_two_embedders():
    semantic = np.array([-1.0, 1.0, 0.0])  # -> 0, 1, 0.5 on [0, 1]
    style = np.array([1.0, 0.0, 0.5])  # -> 1, 0.5, 0.75
    expected = [math.sqrt(0 * 1), math.sqrt(1 * 0.5), math.sqrt(0.5 * 0.75)]
    assert combine_geometric([semantic, style]) == pytest.approx(expected)
    assert combine_geometric([semantic]) == pytest.approx([0.0, 1.0, 0.5])


def test_pair_weights_hand_values():
    g = np.array([0.0, 0.5, 1.0, 0.5])  # sum 2, n 4 -> w = 2 g
    w = pair_weights(g)
    assert w == pytest.approx([0.0, 1.0, 2.0, 1.0])
    assert w.mean() == 1.0
    assert pair_weights(np.array([0.3, 0.3, 0.3])).tolist() == [1.0, 1.0, 1.0]
    assert pair_weights(np.zeros(3)).tolist() == [1.0, 1.0, 1.0]
    floored = pair_weights(g, floor=0.1)  # 0.1 + 0.9 w
    assert floored == pytest.approx([0.1, 1.0, 1.9, 1.0])
    with pytest.raises(ValueError):
        pair_weights(g, floor=1.0)


def test_deviation_weights_pool_of_two_is_uniform():
    raw, w = deviation_weights({"a": np.array([[1.0, 0.0], [0.0, 1.0]]), "b": np.array([[1.0, 2.0], [2.0, 1.0]])})
    assert w.tolist() == [1.0, 1.0]
    assert raw["a"] == pytest.approx([1.0, 1.0])


@settings(max_examples=200, deadline=None)
@given(
    g=arrays(np.float64, st.integers(1, 40), elements=st.floats(0.0, 1.0)),
    floor=st.sampled_from([0.0, 0.1, 0.5]),
)
def test_weights_nonnegative_floor_and_mean_one(g, floor):
    w = pair_weights(g, floor=floor)
    assert (w >= floor - 1e-12).all()
    assert w.mean() == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(
    emb=arrays(np.float64, st.tuples(st.integers(3, 20), st.just(4)), elements=st.floats(-1, 1)),
    emb2=arrays(np.float64, st.tuples(st.just(20), st.just(3)), elements=st.floats(-1, 1)),
)
def test_pipeline_weights_mean_one(emb, emb2):
    raw, w = deviation_weights({"semantic": emb, "style": emb2[: emb.shape[0]]})
    assert (w >= 0).all()
    assert w.mean() == pytest.approx(1.0, abs=1e-12)
    assert (raw["semantic"] >= -1e-9).all() and (raw["semantic"] <= 2 + 1e-9).all()
