"""Power of the exact sign test (the numbers of docs/humaneval.md)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from divtune.humaneval.power import decided_needed, effective_decided, sign_test_power, study_power


@pytest.mark.parametrize("n", [1, 5, 17, 60, 143])
def test_power_is_the_probability_of_binomtests_rejection_region(n):
    region = [k for k in range(n + 1) if binomtest(k, n, 0.5).pvalue <= 0.05]
    assert sign_test_power(n, 0.6) == pytest.approx(sum(binom.pmf(k, n, 0.6) for k in region), abs=1e-12)
    # Under the null the exact test never rejects more often than alpha.
    assert sign_test_power(n, 0.5) <= 0.05 + 1e-12


def test_power_matches_simulation():
    rng = np.random.default_rng(0)
    n, sims = 120, 4000
    wins = rng.binomial(n, 0.6, size=sims)
    rejected = np.mean([binomtest(int(w), n).pvalue <= 0.05 for w in wins])
    exact = sign_test_power(n, 0.6)
    assert abs(rejected - exact) < 4 * np.sqrt(exact * (1 - exact) / sims)


def test_study_power_and_design_effect():
    # One annotator per item: the decided judgments are the items less the ties.
    assert effective_decided(100, 1, tie_rate=0.2) == 80
    assert study_power(100, 1, tie_rate=0.2) == sign_test_power(80)
    # Annotators who always agree (icc 1) add nothing; independent ones add everything.
    assert effective_decided(100, 5, icc=1.0) == 100
    assert effective_decided(100, 5, icc=0.0) == 500
    assert study_power(100, 3, icc=0.3) < study_power(100, 3, icc=0.0)


def test_decided_needed_is_where_power_stays_above_target():
    n = decided_needed(0.8)
    assert sign_test_power(n) >= 0.8 and all(sign_test_power(m) >= 0.8 for m in range(n, n + 60))
    assert sign_test_power(n - 1) < 0.8


def test_docs_show_the_computed_tables():
    from pathlib import Path

    from divtune.humaneval.power import markdown_tables

    docs = (Path(__file__).resolve().parents[1] / "docs" / "humaneval.md").read_text()
    assert markdown_tables() in docs, "docs/humaneval.md is stale: paste `python -m divtune.humaneval.power`"
