"""Seeded train/test split by prompt: a prompt's responses never cross the split."""

from __future__ import annotations


def split_by_prompt(pool_ids: list[str], test_fraction: float, seed: int) -> set[str]:
    """The ids that go to test: round(test_fraction * n) of them (at least one when the
    fraction is positive and there are 2+ prompts, never all of them), chosen by a
    seeded shuffle of the sorted ids so input order does not matter."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test fraction must be in [0, 1), got {test_fraction}")
    ids = sorted(set(pool_ids))
    n = len(ids)
    n_test = int(round(test_fraction * n))
    if test_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    import numpy as np  # heavy: kept off the CLI's start-up path (divtune.data is imported by it)

    order = np.random.default_rng(seed).permutation(n)
    return {ids[i] for i in order[:n_test]}


def seeded_subset(pool_ids: list[str], keep: int, seed: int) -> set[str]:
    """The first ``keep`` ids after a seeded shuffle of the sorted ids (--max-prompts)."""
    ids = sorted(set(pool_ids))
    import numpy as np  # heavy: kept off the CLI's start-up path

    # A different stream from the split's, so --max-prompts does not bias the split.
    order = np.random.default_rng([seed, 1]).permutation(len(ids))
    return {ids[i] for i in order[:keep]}
