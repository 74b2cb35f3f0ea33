"""Pairwise (Bradley-Terry) reward training, pure parts: the loss, the pairs it learns
from, batches of whole prompts, the early-stopping metric and the output calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from divtune.reward.config import RewardTrainConfig, early_stopping_metric
from divtune.reward.fit import EarlyStopping, moment_matching
from divtune.reward.pairs import (
    all_pairs_within_pools,
    bradley_terry_loss,
    listed_pairs,
    pairs_inside,
    pool_batches,
    validation_pairwise_accuracy,
)

# ---------------------------------------------------------------- the loss


def test_bradley_terry_loss_hand_computed():
    # -log sigmoid(2) = log(1 + e^-2)
    assert bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0])).item() == pytest.approx(
        math.log1p(math.exp(-2)), rel=1e-6)
    # The mean over pairs: margins 2 and 0.
    both = bradley_terry_loss(torch.tensor([2.0, 1.0]), torch.tensor([0.0, 1.0])).item()
    assert both == pytest.approx((math.log1p(math.exp(-2)) + math.log(2)) / 2, rel=1e-6)


def test_bradley_terry_loss_sign_and_ties():
    right = bradley_terry_loss(torch.tensor([1.5]), torch.tensor([-0.5])).item()
    wrong = bradley_terry_loss(torch.tensor([-0.5]), torch.tensor([1.5])).item()
    tie = bradley_terry_loss(torch.tensor([0.7, -3.0]), torch.tensor([0.7, -3.0])).item()
    assert right < tie < wrong
    assert tie == pytest.approx(math.log(2), rel=1e-6)  # equal rewards: a coin
    assert wrong - right == pytest.approx(2.0, rel=1e-6)  # log(1+e^m) - log(1+e^-m) = m


def test_bradley_terry_gradient_raises_chosen_lowers_rejected_and_stays_finite():
    chosen = torch.tensor([0.0, -60.0], requires_grad=True)
    rejected = torch.tensor([0.0, 60.0], requires_grad=True)
    loss = bradley_terry_loss(chosen, rejected)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx((math.log(2) + 120.0) / 2, rel=1e-5)
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()  # descent raises chosen, lowers rejected


def test_bradley_terry_loss_rejects_empty_and_mismatched():
    with pytest.raises(ValueError, match="no pairs"):
        bradley_terry_loss(torch.zeros(0), torch.zeros(0))
    with pytest.raises(ValueError, match="differ in shape"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(3))


# ---------------------------------------------------------------- pairs and batches


def test_all_pairs_within_pools_orders_by_vote_and_skips_ties():
    pools = ["a", "a", "a", "b", "b", "c"]
    votes = [5, 3, 3, 1, 7, 2]
    chosen, rejected = all_pairs_within_pools(pools, votes)
    # a: 5>3 twice, the 3-3 tie says nothing; b: 7>1; c has one response.
    assert sorted(zip(chosen.tolist(), rejected.tolist())) == [(0, 1), (0, 2), (4, 3)]
    chosen, rejected = all_pairs_within_pools(pools, votes, min_gap=3)
    assert list(zip(chosen.tolist(), rejected.tolist())) == [(4, 3)]
    # Pool ids keep their type: 1 and "1" are different prompts.
    assert len(all_pairs_within_pools([1, "1"], [1, 2])[0]) == 0


def test_listed_pairs_map_texts_to_indices_and_count_missing():
    pools, texts = ["a", "a", "b", "b"], ["x", "y", "x", "z"]
    chosen, rejected, missing = listed_pairs(pools, texts, [("a", "y", "x"), ("b", "x", "z"), ("b", "x", "gone"),
                                                           ("q", "x", "y")])
    assert chosen.tolist() == [1, 2] and rejected.tolist() == [0, 3] and missing == 2


def test_pool_batches_keep_pools_whole_and_cover_each_response_once():
    pools = ["a"] * 5 + ["b"] * 3 + ["c"] * 4 + ["d"] * 9 + ["e"] * 2
    batches = pool_batches(pools, max_responses=8, rng=np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(pools)))
    for batch in batches:
        members = {pools[i] for i in batch}
        assert all(pools.count(p) == sum(pools[i] == p for i in batch) for p in members)  # whole pools
        assert len(batch) <= 8 or len(members) == 1  # only a pool larger than the cap is alone over it


def test_pairs_inside_gives_positions_within_the_batch():
    chosen, rejected = np.array([0, 4, 2]), np.array([1, 5, 3])
    c, r = pairs_inside(np.array([5, 4, 9, 0, 1]), chosen, rejected)
    assert sorted(zip(c.tolist(), r.tolist())) == [(1, 0), (3, 4)]  # (4, 5) and (0, 1); (2, 3) is outside


# ---------------------------------------------------------------- early stopping and calibration


def test_validation_pairwise_accuracy_counts_ties_as_half():
    scores = np.array([3.0, 1.0, 1.0, 0.0])
    # (0 over 1) right, (1 vs 2) tie, (3 over 0) wrong, (2 over 3) right
    acc = validation_pairwise_accuracy(scores, np.array([0, 1, 3, 2]), np.array([1, 2, 0, 3]))
    assert acc == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    with pytest.raises(ValueError):
        validation_pairwise_accuracy(scores, np.array([], int), np.array([], int))


def test_early_stopping_on_an_accuracy_keeps_the_highest():
    stopper = EarlyStopping(patience=2, mode="max")
    steps = [stopper.update(e, acc) for e, acc in enumerate([0.55, 0.60, 0.58, 0.61, 0.59, 0.61])]
    # An equal accuracy is no improvement: the run stops 2 epochs after the best one.
    assert steps == [(True, False), (True, False), (False, False), (True, False), (False, False), (False, True)]
    assert stopper.best_epoch == 3 and stopper.best == 0.61
    with pytest.raises(ValueError):
        EarlyStopping(patience=1, mode="up")


def test_early_stopping_metric_follows_the_objective_unless_set():
    cfg = dict(data="d", output="o")
    assert early_stopping_metric(RewardTrainConfig(**cfg)) == "val_l1"
    assert early_stopping_metric(RewardTrainConfig(**cfg, objective="pairwise")) == "val_pairwise_accuracy"
    assert early_stopping_metric(RewardTrainConfig(**cfg, early_stopping="val_pairwise_accuracy")) == (
        "val_pairwise_accuracy")


def test_moment_matching_is_increasing_and_matches_mean_and_spread():
    predicted, target = np.array([10.0, 20.0, 30.0]), np.array([-1.0, 0.0, 1.0])
    scale, shift = moment_matching(predicted, target)
    assert scale == pytest.approx(0.1) and shift == pytest.approx(-2.0)
    # Even when the predictions are anti-correlated with the target the map stays increasing:
    # calibration must never flip a ranking.
    scale, _ = moment_matching(np.array([3.0, 2.0, 1.0]), target)
    assert scale > 0
    assert moment_matching(np.array([5.0, 5.0]), np.array([0.0, 1.0])) == (1.0, pytest.approx(-4.5))
