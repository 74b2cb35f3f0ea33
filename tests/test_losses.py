"""Pure loss functions against values computed by hand (python ``math``, not torch)."""

from __future__ import annotations

import math

import pytest
import torch

from divtune import losses


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def neg_log_sigmoid(x: float) -> float:
    return math.log1p(math.exp(-x))


# DPO / DDPO --------------------------------------------------------------------


def test_dpo_pair_losses_match_hand_values():
    # pair 0: (−10 − −12) − (−20 − −18) = 2 − (−2) = 4 -> beta*4 = 0.4
    # pair 1: (−5 − −5) − (−5 − −5) = 0 -> log 2
    # pair 2: (−30 − −20) − (−10 − −10) = −10 -> beta*(−10) = −1
    per_pair = losses.dpo_pair_losses(t(-10, -5, -30), t(-20, -5, -10), t(-12, -5, -20), t(-18, -5, -10), beta=0.1)
    expected = [neg_log_sigmoid(0.4), math.log(2), neg_log_sigmoid(-1.0)]
    assert per_pair.tolist() == pytest.approx(expected, rel=1e-12)


def test_ddpo_is_weighted_sum_over_pair_count():
    args = (t(-10, -5, -30), t(-20, -5, -10), t(-12, -5, -20), t(-18, -5, -10))
    weights = t(2.0, 0.5, 0.0)
    loss = losses.ddpo_loss(*args, weights=weights, beta=0.1)
    expected = (2.0 * neg_log_sigmoid(0.4) + 0.5 * math.log(2) + 0.0) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    # With the global pair count of a larger batch the same pairs contribute their share only.
    assert losses.ddpo_loss(*args, weights=weights, beta=0.1, num_pairs=6).item() == pytest.approx(expected / 2)


def test_ddpo_with_unit_weights_is_dpo():
    args = (t(-1.0, -7.0), t(-2.5, -3.0), t(-1.5, -6.0), t(-2.0, -2.0))
    assert losses.ddpo_loss(*args, weights=t(1, 1), beta=0.3).item() == pytest.approx(
        losses.dpo_loss(*args, beta=0.3).item(), rel=1e-15
    )
    # and DPO is the mean of the per-pair values by hand: margins 1.0 and 0.0
    expected = (neg_log_sigmoid(0.3) + math.log(2)) / 2
    assert losses.dpo_loss(*args, beta=0.3).item() == pytest.approx(expected, rel=1e-12)


def test_doubling_weights_doubles_ddpo_loss():
    args = (t(-3.0, -4.0, -1.0), t(-2.0, -6.0, -1.5), t(-2.5, -4.5, -1.0), t(-2.5, -5.0, -1.0))
    weights = t(0.3, 1.7, 1.0)
    once = losses.ddpo_loss(*args, weights=weights)
    twice = losses.ddpo_loss(*args, weights=2 * weights)
    assert twice.item() == pytest.approx(2 * once.item(), rel=1e-12)


def test_zero_weight_pair_gets_no_gradient():
    chosen = t(-3.0, -4.0).requires_grad_()
    rejected = t(-2.0, -6.0).requires_grad_()
    loss = losses.ddpo_loss(chosen, rejected, t(-2.5, -4.5), t(-2.5, -5.0), weights=t(1.0, 0.0))
    loss.backward()
    assert chosen.grad[1].item() == 0.0 and rejected.grad[1].item() == 0.0
    assert chosen.grad[0].item() < 0.0 < rejected.grad[0].item()  # pushes chosen up, rejected down


# ORPO / DORPO ------------------------------------------------------------------
# Mean log-probs log(0.5) and log(0.2): odds 1 and 1/4, so log_odds = log 4 and
# log sigmoid(log 4) = log(4/5).

LW, LL = math.log(0.5), math.log(0.2)


def test_orpo_log_odds_hand_value():
    assert losses.orpo_log_odds(t(LW), t(LL)).item() == pytest.approx(math.log(4), rel=1e-6)


def test_log1mexp_is_stable_near_zero_and_far_below():
    x = t(-1e-10, -0.5, -0.7, -50.0)
    expected = [math.log(-math.expm1(v)) for v in (-1e-10, -0.5, -0.7)] + [math.log1p(-math.exp(-50.0))]
    assert losses.log1mexp(x).tolist() == pytest.approx(expected, rel=1e-12)


def test_orpo_loss_hand_value():
    # one pair, chosen NLL summed 6 over 3 tokens -> NLL 2; OR term -0.25*log(0.8)
    loss = losses.orpo_loss(t(LW), t(LL), chosen_nll_sums=t(6.0), chosen_nll_counts=t(3.0), orpo_lambda=0.25)
    assert loss.item() == pytest.approx(2.0 - 0.25 * math.log(0.8), rel=1e-6)


def test_orpo_nll_is_a_token_mean_over_the_batch():
    # NLL sums 6 (3 tokens) and 1 (1 token): token mean 7/4, not (2 + 1)/2.
    loss = losses.orpo_loss(t(LW, LW), t(LL, LL), t(6.0, 1.0), t(3.0, 1.0), orpo_lambda=0.0)
    assert loss.item() == pytest.approx(7 / 4)


def test_dorpo_outside_hand_value():
    # pair 0: w=2, NLL 6/3 tokens, log_odds log 4; pair 1: w=0.5, NLL 1/1 token, log_odds log 4
    loss = losses.dorpo_loss(
        t(LW, LW), t(LL, LL), t(6.0, 1.0), t(3.0, 1.0), weights=t(2.0, 0.5), orpo_lambda=0.25, mode="outside"
    )
    nll = (2.0 * 6.0 + 0.5 * 1.0) / 4
    odds = -(2.0 + 0.5) * math.log(0.8) / 2
    assert loss.item() == pytest.approx(nll + 0.25 * odds, rel=1e-6)


def test_dorpo_released_hand_value():
    # OR term: log sigmoid(w * log 4): w=2 -> log(16/17); w=0.5 -> log(2/3). NLL times mean weight 1.25.
    loss = losses.dorpo_loss(
        t(LW, LW), t(LL, LL), t(6.0, 1.0), t(3.0, 1.0), weights=t(2.0, 0.5), orpo_lambda=0.25, mode="released"
    )
    nll = 1.25 * 7.0 / 4
    odds = -(math.log(16 / 17) + math.log(2 / 3)) / 2
    assert loss.item() == pytest.approx(nll + 0.25 * odds, rel=1e-6)


@pytest.mark.parametrize("mode", ["outside", "released"])
def test_dorpo_with_unit_weights_is_orpo(mode):
    args = (t(-0.9, -2.0, -0.3), t(-1.1, -1.5, -0.4), t(5.0, 9.0, 2.0), t(4.0, 5.0, 2.0))
    dorpo = losses.dorpo_loss(*args, weights=t(1, 1, 1), orpo_lambda=0.25, mode=mode)
    assert dorpo.item() == pytest.approx(losses.orpo_loss(*args, orpo_lambda=0.25).item(), rel=1e-12)


def test_doubling_weights_doubles_dorpo_outside():
    args = (t(-0.9, -2.0), t(-1.1, -1.5), t(5.0, 9.0), t(4.0, 5.0))
    once = losses.dorpo_loss(*args, weights=t(0.4, 1.6), mode="outside")
    twice = losses.dorpo_loss(*args, weights=t(0.8, 3.2), mode="outside")
    assert twice.item() == pytest.approx(2 * once.item(), rel=1e-12)


def test_zero_weight_pair_gets_no_gradient_in_dorpo_outside():
    chosen = t(-0.9, -2.0).requires_grad_()
    rejected = t(-1.1, -1.5).requires_grad_()
    nll = t(5.0, 9.0).requires_grad_()
    losses.dorpo_loss(chosen, rejected, nll, t(4.0, 5.0), weights=t(1.0, 0.0)).backward()
    assert chosen.grad[1] == 0 and rejected.grad[1] == 0 and nll.grad[1] == 0
    assert nll.grad[0] > 0


def test_split_batch_contributions_sum_to_the_whole():
    """Two halves, each normalised by the global counts, add up to the whole batch's loss."""
    torch.manual_seed(0)
    chosen, rejected = -torch.rand(6, dtype=torch.float64) - 0.1, -torch.rand(6, dtype=torch.float64) - 0.1
    nll, counts = torch.rand(6, dtype=torch.float64) * 10, torch.tensor([3.0, 1, 4, 1, 5, 9], dtype=torch.float64)
    weights = torch.rand(6, dtype=torch.float64) * 2
    for mode in ("outside", "released"):
        whole = losses.dorpo_loss(chosen, rejected, nll, counts, weights, mode=mode)
        glob = dict(num_pairs=6, num_nll_tokens=counts.sum(), mean_weight=weights.mean())
        parts = sum(
            losses.dorpo_loss(chosen[s], rejected[s], nll[s], counts[s], weights[s], mode=mode, **glob)
            for s in (slice(0, 2), slice(2, 6))
        )
        assert parts.item() == pytest.approx(whole.item(), rel=1e-12)


def test_bad_mode_and_bad_normaliser_are_rejected():
    with pytest.raises(ValueError, match="DORPO mode"):
        losses.dorpo_loss(t(LW), t(LL), t(1.0), t(1.0), t(1.0), mode="inside")
    with pytest.raises(ValueError, match="positive"):
        losses.dpo_loss(t(-1.0), t(-1.0), t(-1.0), t(-1.0), num_pairs=0)
