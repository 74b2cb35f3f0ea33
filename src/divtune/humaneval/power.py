"""How many judgments a study needs: power of the exact two-sided sign test.

``python -m divtune.humaneval.power`` prints the tables of docs/humaneval.md.

The model: each decided judgment (ties left out) prefers the system with
probability ``p_win`` (0.6 for a 60/40 split), independently. With ``k``
annotators per item, judgments of one item are correlated; the usual design
effect ``1 + (k - 1) * icc`` (Kish) turns ``items * k`` judgments into fewer
effective independent ones. ``icc`` is the intra-item correlation of the
judgments: 0 when annotators disagree at random, 1 when they always agree.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom


def sign_test_power(n_decided: int, p_win: float = 0.6, alpha: float = 0.05) -> float:
    """Exact power of the two-sided sign test on ``n_decided`` judgments when the true win share is ``p_win``.

    The rejection region is every win count whose two-sided p-value (as scipy's
    ``binomtest`` computes it for p = 1/2: ``min(1, 2 * P(X <= min(k, n - k)))``)
    is at most ``alpha``; the power is the probability of that region under ``p_win``.
    """
    if n_decided <= 0:
        return 0.0
    k = np.arange(n_decided + 1)
    p_values = np.minimum(1.0, 2.0 * binom.cdf(np.minimum(k, n_decided - k), n_decided, 0.5))
    reject = p_values <= alpha
    return float(binom.pmf(k[reject], n_decided, p_win).sum())


def effective_decided(items: int, annotators_per_item: int, tie_rate: float = 0.0, icc: float = 0.0) -> int:
    """Independent decided judgments a study is worth (rounded down)."""
    judgments = items * annotators_per_item * (1.0 - tie_rate)
    return int(math.floor(judgments / (1.0 + (annotators_per_item - 1) * icc) + 1e-9))


def study_power(items: int, annotators_per_item: int, p_win: float = 0.6, tie_rate: float = 0.0,
                icc: float = 0.0, alpha: float = 0.05) -> float:
    return sign_test_power(effective_decided(items, annotators_per_item, tie_rate, icc), p_win, alpha)


def decided_needed(target: float = 0.8, p_win: float = 0.6, alpha: float = 0.05, limit: int = 2000) -> int:
    """Smallest n such that every n' >= n (up to ``limit``) reaches ``target`` power.

    The exact test's power saw-tooths in n (the discrete rejection region), so the
    first n that reaches the target can be followed by ones that do not.
    """
    ok = np.array([sign_test_power(n, p_win, alpha) >= target for n in range(limit + 1)])
    failing = np.flatnonzero(~ok)
    if failing.size and failing[-1] == limit:
        raise ValueError(f"power {target} not reached by n = {limit}")
    return int(failing[-1] + 1) if failing.size else 0


def markdown_tables(p_win: float = 0.6, alpha: float = 0.05, tie_rate: float = 0.15) -> str:
    """The power tables of docs/humaneval.md."""
    lines = [f"Decided judgments (ties excluded), true split {p_win:.0%}/{1 - p_win:.0%}, two-sided alpha = {alpha}:", ""]
    ns = [25, 50, 100, 150, 200, 250, 300, 400, 500]
    lines += ["| decided judgments | " + " | ".join(map(str, ns)) + " |", "|---|" + "---|" * len(ns)]
    lines += ["| power | " + " | ".join(f"{sign_test_power(n, p_win, alpha):.2f}" for n in ns) + " |", ""]
    lines += [f"Decided judgments needed (power stays at or above the target from there on): "
              f"80%: {decided_needed(0.8, p_win, alpha)}, 90%: {decided_needed(0.9, p_win, alpha)}.", ""]
    ks = [1, 3, 5]
    iccs = [0.0, 0.3]
    lines += [f"Items × annotators per item, {tie_rate:.0%} ties, icc = intra-item correlation:", ""]
    head = [f"{k} annotator{'s' if k > 1 else ''}, icc {icc}" for icc in iccs for k in ks if not (k == 1 and icc > 0)]
    lines += ["| items | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for items in (25, 50, 100, 150, 200, 300):
        cells = [f"{study_power(items, k, p_win, tie_rate, icc, alpha):.2f}" for icc in iccs for k in ks if not (k == 1 and icc > 0)]
        lines.append(f"| {items} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_tables())
