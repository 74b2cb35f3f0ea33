"""Per-pair preference losses with per-pair weights (docs/method.md §4), pure torch.

Every function takes per-pair tensors (shape ``(B,)``) and returns the loss of
the batch as a *sum of per-pair contributions divided by a normaliser*. The
normalisers (``num_pairs``, ``num_nll_tokens``, ``mean_weight``) default to the
local batch, but a trainer passes the counts of the whole optimizer step
(every gradient-accumulation micro-batch on every process). Each micro-batch
then contributes exactly its share of one global sum, so the result does not
depend on how a global batch is split over devices and accumulation steps.

- DPO:   -log sigmoid(beta * ((L_w - Lref_w) - (L_l - Lref_l))), L = summed log-probs.
- DDPO:  w * DPO (w = 1 everywhere is DPO exactly).
- ORPO:  NLL(y_w) - lambda * log sigmoid(log_odds), l = mean log-probs,
         log_odds = (l_w - l_l) - (log(1 - exp(l_w)) - log(1 - exp(l_l))).
- DORPO ``outside`` (default): w * ORPO per pair.
  DORPO ``released``: OR term uses log sigmoid(w * log_odds) and the NLL term
  is multiplied by the batch-mean weight (the authors' released code).

The NLL term is normalised by the number of NLL tokens of the batch (a token
mean over the batch, as in TRL's ORPO and the released code), not per pair:
that is what makes weight-1 DORPO identical to TRL's ORPO on any batch.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

DorpoMode = Literal["outside", "released"]

_LOG_HALF = -math.log(2.0)


def dpo_logits(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
) -> torch.Tensor:
    """(L_w - Lref_w) - (L_l - Lref_l) per pair: the implicit reward margin / beta."""
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def dpo_pair_losses(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """Unweighted per-pair DPO (sigmoid) losses, shape ``(B,)``."""
    margin = dpo_logits(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return -F.logsigmoid(beta * margin)


def ddpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    weights: torch.Tensor,
    beta: float = 0.1,
    num_pairs: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """sum_i w_i * DPO_i / num_pairs (num_pairs: pairs in the global batch; default this batch)."""
    pair_losses = dpo_pair_losses(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    return (weights.to(pair_losses.dtype) * pair_losses).sum() / _count(num_pairs, pair_losses.numel())


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    num_pairs: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Plain DPO: DDPO with every weight 1 (used by ``dpo`` and ``divpo``)."""
    ones = torch.ones_like(policy_chosen_logps)
    return ddpo_loss(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, ones, beta, num_pairs
    )


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -log 2 (Maechler 2012)."""
    return torch.where(x < _LOG_HALF, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_log_odds(chosen_mean_logps: torch.Tensor, rejected_mean_logps: torch.Tensor) -> torch.Tensor:
    """log odds(y_w) - log odds(y_l) from mean per-token log-probs, per pair."""
    # bf16/fp16 log-probs are upcast: log1mexp near 0 needs the precision.
    dtype = torch.promote_types(chosen_mean_logps.dtype, torch.float32)
    chosen = chosen_mean_logps.to(dtype)
    rejected = rejected_mean_logps.to(dtype)
    return (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected))


def dorpo_loss(
    chosen_mean_logps: torch.Tensor,
    rejected_mean_logps: torch.Tensor,
    chosen_nll_sums: torch.Tensor,
    chosen_nll_counts: torch.Tensor,
    weights: torch.Tensor,
    orpo_lambda: float = 0.25,
    mode: DorpoMode = "outside",
    num_pairs: float | torch.Tensor | None = None,
    num_nll_tokens: float | torch.Tensor | None = None,
    mean_weight: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted ORPO of a batch.

    ``chosen_nll_sums``: summed token NLL of each chosen sequence;
    ``chosen_nll_counts``: its number of NLL tokens. ``num_pairs`` /
    ``num_nll_tokens`` / ``mean_weight`` describe the global batch (defaults:
    this batch). ``mean_weight`` is only used by ``released``.
    """
    log_odds = orpo_log_odds(chosen_mean_logps, rejected_mean_logps)
    weights = weights.to(log_odds.dtype)
    pairs = _count(num_pairs, log_odds.numel())
    tokens = _count(num_nll_tokens, chosen_nll_counts.sum())
    nll_sums = chosen_nll_sums.to(log_odds.dtype)
    if mode == "outside":
        nll_term = (weights * nll_sums).sum() / tokens
        odds_term = -(weights * F.logsigmoid(log_odds)).sum() / pairs
    elif mode == "released":
        batch_mean_weight = weights.mean() if mean_weight is None else mean_weight
        nll_term = batch_mean_weight * nll_sums.sum() / tokens
        odds_term = -F.logsigmoid(weights * log_odds).sum() / pairs
    else:
        raise ValueError(f"unknown DORPO mode {mode!r}; expected 'outside' or 'released'")
    return nll_term + orpo_lambda * odds_term


def orpo_loss(
    chosen_mean_logps: torch.Tensor,
    rejected_mean_logps: torch.Tensor,
    chosen_nll_sums: torch.Tensor,
    chosen_nll_counts: torch.Tensor,
    orpo_lambda: float = 0.25,
    num_pairs: float | torch.Tensor | None = None,
    num_nll_tokens: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Plain ORPO: DORPO with every weight 1 (both modes coincide there)."""
    ones = torch.ones_like(chosen_mean_logps)
    return dorpo_loss(
        chosen_mean_logps,
        rejected_mean_logps,
        chosen_nll_sums,
        chosen_nll_counts,
        ones,
        orpo_lambda,
        "outside",
        num_pairs,
        num_nll_tokens,
    )


def _count(given: float | torch.Tensor | None, local: float | torch.Tensor) -> float | torch.Tensor:
    value = local if given is None else given
    if isinstance(value, torch.Tensor):
        # No positivity check here: it would force a device sync every step.
        return value if value.is_floating_point() else value.to(torch.float32)
    if value <= 0:
        raise ValueError("a loss normaliser (pair or token count) must be positive")
    return value
