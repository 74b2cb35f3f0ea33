"""Statistics of pairwise human judgments: win / tie / loss rates with Wilson
intervals, the exact two-sided sign test, and Krippendorff's alpha.

Built on maintained libraries: scipy's ``binomtest`` gives both the exact test
and the Wilson score interval (``proportion_ci(method="wilson")``), and the
``krippendorff`` package gives alpha (it handles items rated by different
numbers of annotators, which Fleiss' kappa does not).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Outcome of one judgment, from the first system of a pair's point of view.
OUTCOMES = ("win", "tie", "loss")


def wilson_interval(successes: int, n: int, level: float = 0.95) -> list[float] | None:
    """Wilson score interval of a proportion; ``None`` when there are no trials."""
    if n == 0:
        return None
    from scipy.stats import binomtest  # heavy

    ci = binomtest(successes, n).proportion_ci(confidence_level=level, method="wilson")
    return [float(ci.low), float(ci.high)]


def sign_test_p(wins: int, losses: int) -> float | None:
    """Exact two-sided sign test of wins against losses (ties left out); ``None`` with no decided judgment."""
    if wins + losses == 0:
        return None
    from scipy.stats import binomtest  # heavy

    return float(binomtest(wins, wins + losses, 0.5, alternative="two-sided").pvalue)


def outcome_summary(wins: int, ties: int, losses: int, level: float = 0.95) -> dict[str, Any]:
    """Counts, rates over all judgments (ties included) with Wilson intervals, and the sign test.

    ``win_share`` = wins / (wins + losses) is what the sign test tests against 1/2.
    """
    n = wins + ties + losses
    decided = wins + losses
    row: dict[str, Any] = {"n": n, "wins": wins, "ties": ties, "losses": losses, "decided": decided}
    for name, count in (("win", wins), ("tie", ties), ("loss", losses)):
        row[f"{name}_rate"] = count / n if n else None
        row[f"{name}_rate_ci"] = wilson_interval(count, n, level)
    row["win_share"] = wins / decided if decided else None
    row["win_share_ci"] = wilson_interval(wins, decided, level)
    row["sign_test_p"] = sign_test_p(wins, losses)
    return row


def pairwise_agreement(ratings: dict[str, dict[str, str]]) -> float | None:
    """Share of annotator pairs on the same item who gave the same outcome (raw, not chance-corrected)."""
    agree = total = 0
    for by in ratings.values():
        values = list(by.values())
        for i in range(len(values)):
            for j in range(i + 1, len(values)):
                total += 1
                agree += values[i] == values[j]
    return agree / total if total else None


def krippendorff_alpha(ratings: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Nominal Krippendorff's alpha of ``{item: {annotator: outcome}}``.

    Only items rated by two or more annotators carry information on agreement;
    alpha is ``None`` (with the reason) when there is none, or when every
    rating is the same value (no variation: alpha is 0/0).
    """
    annotators = sorted({a for by in ratings.values() for a in by})
    pairable = {item: by for item, by in ratings.items() if len(by) >= 2}
    out: dict[str, Any] = {"alpha": None, "items_with_2plus": len(pairable), "annotators": len(annotators),
                           "pairwise_agreement": pairwise_agreement(pairable)}
    if not pairable:
        out["note"] = "no item was answered by two or more annotators"
        return out
    values = {v for by in pairable.values() for v in by.values()}
    if len(values) < 2:
        out["note"] = f"every overlapping judgment is {next(iter(values))!r}: agreement is total but alpha is undefined"
        return out
    import krippendorff  # heavy

    code = {o: float(i) for i, o in enumerate(OUTCOMES)}
    items = sorted(pairable)
    table = np.full((len(annotators), len(items)), np.nan)
    for j, item in enumerate(items):
        for annotator, outcome in pairable[item].items():
            table[annotators.index(annotator), j] = code[outcome]
    out["alpha"] = float(krippendorff.alpha(reliability_data=table, level_of_measurement="nominal"))
    return out
