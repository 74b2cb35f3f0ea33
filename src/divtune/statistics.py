"""Intervals and paired differences over prompts and seeds (docs/method.md §7), pure functions on arrays.

Per-prompt values come in as arrays (one number per prompt, or a ``(seeds, prompts)``
grid of paired differences); ``nan`` marks an undefined value and is ignored.
Percentile bootstraps (over prompts; crossed and nested over seeds and prompts),
the Student-t interval over seeds, and difference-of-differences interactions.
The metrics they summarise are :mod:`divtune.metrics`.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np


def _resample_means(values: np.ndarray, n_boot: int, rng: np.random.Generator, chunk: int = 256) -> np.ndarray:
    """``n_boot`` nan-means of resamples (with replacement) of ``values``, in chunks to bound memory."""
    means = np.empty(n_boot)
    size = len(values)
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        idx = rng.integers(0, size, size=(stop - start, size))
        # An all-nan resample has a nan mean by definition; numpy's warning about it is noise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means[start:stop] = np.nanmean(values[idx], axis=1)
    return means


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the (nan-)mean over prompts.

    ``values`` holds one number per prompt (``nan`` = undefined for that prompt,
    ignored). Returns ``(nan, nan)`` when no value is defined.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0 or np.all(np.isnan(arr)):
        return float("nan"), float("nan")
    means = _resample_means(arr, n_boot, np.random.default_rng(seed))
    tail = (1.0 - confidence) / 2.0
    low, high = np.nanquantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_bootstrap_diff(
    system: Sequence[float], baseline: Sequence[float], n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float]:
    """Mean of ``system - baseline`` over common prompts, with a paired bootstrap interval.

    Both arrays are aligned per prompt (same order); prompts where either value
    is ``nan`` are dropped. Resampling prompts (not the two systems separately)
    keeps the pairing, which removes the prompt-difficulty variance from the
    interval. ``p_le_zero`` is the fraction of resampled differences <= 0.
    """
    a = np.asarray(system, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    diff = a - b
    diff = diff[~np.isnan(diff)]
    if diff.size == 0:
        return {"diff": float("nan"), "low": float("nan"), "high": float("nan"), "p_le_zero": float("nan"), "n": 0}
    means = _resample_means(diff, n_boot, np.random.default_rng(seed))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return {
        "diff": float(diff.mean()),
        "low": float(low),
        "high": float(high),
        "p_le_zero": float(np.mean(means <= 0)),
        "n": int(diff.size),
    }


def seed_prompt_bootstrap_diff(
    differences: np.ndarray, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float]:
    """Mean of per-(seed, prompt) paired differences with a two-way bootstrap interval.

    ``differences[s, p]`` is system minus baseline for seed ``s`` (a training
    run of each) on prompt ``p``; ``nan`` = undefined and ignored. Each resample
    draws the seeds with replacement, then the prompts with replacement, and
    averages the grid they index. Seeds and prompts are crossed (every seed is
    evaluated on every prompt), so both draws apply to the whole grid: the
    interval reflects run-to-run variation as well as prompt-to-prompt variation,
    and with few seeds it is wider than a prompts-only interval, as it should be.
    ``p_le_zero`` is the share of resampled means <= 0.
    """
    grid = np.asarray(differences, dtype=np.float64)
    if grid.ndim != 2:
        raise ValueError(f"expected a (seeds, prompts) array, got shape {grid.shape}")
    n_seeds, n_prompts = grid.shape
    defined = ~np.isnan(grid)
    if not defined.any():
        return {"diff": float("nan"), "low": float("nan"), "high": float("nan"), "p_le_zero": float("nan"),
                "n": 0, "n_seeds": n_seeds}
    values = np.where(defined, grid, 0.0)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for b in range(n_boot):
        seeds = rng.integers(0, n_seeds, n_seeds)
        prompts = rng.integers(0, n_prompts, n_prompts)
        # Counting weights of each seed and prompt in the resample: the grid mean without building the grid.
        seed_w = np.bincount(seeds, minlength=n_seeds).astype(np.float64)
        prompt_w = np.bincount(prompts, minlength=n_prompts).astype(np.float64)
        total = seed_w @ values @ prompt_w
        count = seed_w @ defined.astype(np.float64) @ prompt_w
        means[b] = total / count if count > 0 else np.nan
    tail = (1.0 - confidence) / 2.0
    low, high = np.nanquantile(means, [tail, 1.0 - tail])
    return {
        "diff": float(values.sum() / defined.sum()),
        "low": float(low),
        "high": float(high),
        "p_le_zero": float(np.nanmean(means <= 0)),
        "n": int(defined.any(axis=0).sum()),
        "n_seeds": n_seeds,
    }


def seed_means(differences: np.ndarray) -> np.ndarray:
    """Per seed, the mean over prompts of its paired differences (``nan`` ignored); seeds with none are dropped."""
    grid = np.asarray(differences, dtype=np.float64)
    if grid.ndim != 2:
        raise ValueError(f"expected a (seeds, prompts) array, got shape {grid.shape}")
    defined = ~np.isnan(grid)
    counts = defined.sum(axis=1)
    sums = np.where(defined, grid, 0.0).sum(axis=1)
    return sums[counts > 0] / counts[counts > 0]


def seed_t_interval(differences: np.ndarray, confidence: float = 0.95) -> dict[str, Any]:
    """Student-t interval of the mean paired difference with the **seed** as the unit.

    ``differences[s, p]``: system minus baseline for seed ``s`` (a training run of each,
    paired by seed) on prompt ``p``; ``nan`` = undefined and ignored. Per seed, the mean
    over its prompts; then ``diff`` = the mean of those S seed means, and the interval
    ``diff ± t_{(1+confidence)/2, S-1} * sd / sqrt(S)`` (sd with S - 1 degrees of freedom).
    Prompts are treated as fixed: what varies between replications is the training run.
    With fewer than 2 seeds the interval is undefined (``nan``).
    """
    from scipy import stats  # heavy

    means = seed_means(differences)
    n = int(means.size)
    out: dict[str, Any] = {"diff": float(means.mean()) if n else float("nan"), "low": float("nan"),
                           "high": float("nan"), "n_seeds": n, "df": n - 1, "seed_means": [float(m) for m in means],
                           "sd": float("nan")}
    if n >= 2:
        sd = float(means.std(ddof=1))
        half = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * sd / np.sqrt(n)
        out.update({"low": float(out["diff"] - half), "high": float(out["diff"] + half), "sd": sd})
    return out


def nested_seed_prompt_bootstrap_diff(
    differences: np.ndarray, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """Percentile interval from a **nested** bootstrap: seeds, then prompts *within* each drawn seed.

    Each resample draws S seeds with replacement and, for every drawn seed on its own, its
    prompts with replacement; the statistic is the mean over the drawn seeds of each one's
    mean over its drawn prompts. Unlike :func:`seed_prompt_bootstrap_diff` (crossed: one
    prompt draw shared by all seeds), prompts are resampled independently per seed, as for
    seeds nested in a two-stage sample. ``diff`` is the mean of the seed means (as
    :func:`seed_t_interval`); ``nan`` cells are ignored (a drawn seed with no defined drawn
    prompt is left out of that resample).
    """
    grid = np.asarray(differences, dtype=np.float64)
    if grid.ndim != 2:
        raise ValueError(f"expected a (seeds, prompts) array, got shape {grid.shape}")
    n_seeds, n_prompts = grid.shape
    means_by_seed = seed_means(grid)
    if means_by_seed.size == 0:
        return {"diff": float("nan"), "low": float("nan"), "high": float("nan"), "p_le_zero": float("nan"),
                "n_seeds": n_seeds}
    defined = ~np.isnan(grid)
    values = np.where(defined, grid, 0.0)
    rng = np.random.default_rng(seed)
    stats_ = np.empty(n_boot)
    chunk = 256
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for start in range(0, n_boot, chunk):
            b = min(chunk, n_boot - start)
            seeds = rng.integers(0, n_seeds, size=(b, n_seeds))
            prompts = rng.integers(0, n_prompts, size=(b, n_seeds, n_prompts))
            rows = seeds[:, :, None]
            total = values[rows, prompts].sum(axis=2)
            count = defined[rows, prompts].sum(axis=2)
            per_seed = np.where(count > 0, total / np.maximum(count, 1), np.nan)
            stats_[start:start + b] = np.nanmean(per_seed, axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.nanquantile(stats_, [tail, 1.0 - tail])
    return {
        "diff": float(means_by_seed.mean()),
        "low": float(low),
        "high": float(high),
        "p_le_zero": float(np.nanmean(stats_ <= 0)),
        "n_seeds": n_seeds,
    }


#: How each interval of a seed-paired difference is named in paired_differences.json.
CROSSED_INTERVAL = "crossed bootstrap: seeds, then prompts (one prompt draw shared by the drawn seeds)"


def seed_level_difference(
    differences: np.ndarray, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """A seed-paired difference with all three intervals: the crossed two-way bootstrap at the top
    level (``diff, low, high, p_le_zero, n, n_seeds``, as before, ``interval`` naming it), and the
    seed-unit intervals beside it: ``seed_t`` (:func:`seed_t_interval`) and ``seed_nested_bootstrap``
    (:func:`nested_seed_prompt_bootstrap_diff`)."""
    out: dict[str, Any] = dict(seed_prompt_bootstrap_diff(differences, n_boot=n_boot, seed=seed, confidence=confidence))
    out["interval"] = CROSSED_INTERVAL
    out["seed_t"] = seed_t_interval(differences, confidence=confidence)
    out["seed_nested_bootstrap"] = nested_seed_prompt_bootstrap_diff(
        differences, n_boot=n_boot, seed=seed, confidence=confidence)
    return out


def interaction_grid(system: np.ndarray, baseline: np.ndarray, system_control: np.ndarray,
                     baseline_control: np.ndarray) -> np.ndarray:
    """(system − baseline) − (system_control − baseline_control), cell by cell: each argument is a
    (seeds, prompts) array of per-prompt values, seeds paired by index, prompts by column; e.g. the
    b × method interaction (DDPO − DPO at b > 0) − (DDPO − DPO at b = 0)."""
    arrays = [np.asarray(a, dtype=np.float64) for a in (system, baseline, system_control, baseline_control)]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 2:
        raise ValueError(f"interaction needs four (seeds, prompts) arrays of one shape, got {[a.shape for a in arrays]}")
    return (arrays[0] - arrays[1]) - (arrays[2] - arrays[3])


def interaction_difference(
    system: np.ndarray, baseline: np.ndarray, system_control: np.ndarray, baseline_control: np.ndarray,
    n_boot: int = 1000, seed: int = 0, confidence: float = 0.95,
) -> dict[str, Any]:
    """The interaction (:func:`interaction_grid`) with the crossed, seed-t and nested intervals
    (:func:`seed_level_difference`)."""
    grid = interaction_grid(system, baseline, system_control, baseline_control)
    return seed_level_difference(grid, n_boot=n_boot, seed=seed, confidence=confidence)
