"""Diversity, lexical and bootstrap metrics (docs/method.md §7), pure functions on arrays and strings.

Embedding metrics work on a whole stack of prompts at once: ``emb`` has shape
``(P, N, d)`` (P prompts, N samples each) and every pairwise similarity is one
batched matrix product, so there is no Python loop over samples or pairs.
Prompts with different sample counts are grouped by N by the caller
(:func:`group_by_size`).

Conventions (documented in ``docs/evaluate.md``):

- cosine distance is ``1 - cos``; rows need not be L2-normalised;
- a per-prompt value that is undefined (fewer than 2 samples, no n-grams) is
  ``nan``; averages over prompts ignore ``nan`` (``np.nanmean``);
- higher is *more diverse* for diversity, Vendi and distinct-n; lower is more
  diverse for self-BLEU and the compression ratio.
"""

from __future__ import annotations

import gzip
import warnings
from typing import Any, Sequence

import numpy as np

# Eigenvalues below this (relative to 1) are numerical noise of a PSD kernel.
_EIG_EPS = 1e-12


def cosine_similarity_stack(emb: np.ndarray) -> np.ndarray:
    """``(P, N, d)`` -> ``(P, N, N)`` cosine similarities, one batched matmul.

    The Gram matrix is divided by the outer product of the row norms (its own
    diagonal) instead of normalising every row first: that touches P*N*N
    numbers rather than P*N*d. All-zero rows get similarity 0 to everything.
    """
    emb = np.asarray(emb, dtype=np.float64)
    gram = emb @ emb.transpose(0, 2, 1)
    norms = np.sqrt(np.clip(np.einsum("pii->pi", gram), 0.0, None))
    norms = np.where(norms > 0, norms, 1.0)
    return gram / (norms[:, :, None] * norms[:, None, :])


def _pair_mask(mask: np.ndarray) -> np.ndarray:
    """``(P, N)`` sample mask -> ``(P, N, N)`` mask of distinct pairs (i != j) of kept samples."""
    n = mask.shape[-1]
    off_diagonal = ~np.eye(n, dtype=bool)
    return mask[:, :, None] & mask[:, None, :] & off_diagonal


def mean_pairwise_cosine_distance(emb: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per prompt, mean of ``1 - cos(e_i, e_j)`` over pairs i != j.

    ``emb``: ``(P, N, d)``. ``mask`` (optional, ``(P, N)`` bool) keeps only some
    samples per prompt (effective diversity); prompts with fewer than 2 kept
    samples get ``nan``. Returns ``(P,)``.
    """
    emb = np.asarray(emb)
    if emb.ndim != 3:
        raise ValueError(f"expected embeddings of shape (P, N, d), got {emb.shape}")
    sim = cosine_similarity_stack(emb)
    if mask is None:
        mask = np.ones(emb.shape[:2], dtype=bool)
    pairs = _pair_mask(np.asarray(mask, dtype=bool))
    n_pairs = pairs.sum(axis=(1, 2))
    # Round-off can push cos a hair past 1 for identical texts; a distance is never negative.
    distance = np.clip(1.0 - sim, 0.0, 2.0)
    total = np.where(pairs, distance, 0.0).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pairs > 0, total / np.maximum(n_pairs, 1), np.nan)


def vendi_score(emb: np.ndarray) -> np.ndarray:
    """Per prompt Vendi score ``exp(-sum λ log λ)``, λ = eigenvalues of ``K / N``.

    K is the cosine-similarity kernel of the N samples (K_ii = 1, so the
    eigenvalues of K/N sum to 1). Tiny negative eigenvalues from round-off are
    clipped to 0 and ``0 log 0 = 0``. Ranges from 1 (all samples identical) to N
    (mutually orthogonal). ``emb``: ``(P, N, d)`` -> ``(P,)``.
    """
    emb = np.asarray(emb)
    if emb.ndim != 3:
        raise ValueError(f"expected embeddings of shape (P, N, d), got {emb.shape}")
    n = emb.shape[1]
    if n == 0:
        return np.full(emb.shape[0], np.nan)
    kernel = cosine_similarity_stack(emb) / n
    eigenvalues = np.clip(np.linalg.eigvalsh(kernel), 0.0, None)
    safe = np.where(eigenvalues > _EIG_EPS, eigenvalues, 1.0)  # log(1) = 0 implements 0 log 0 = 0
    entropy = -(eigenvalues * np.log(safe)).sum(axis=-1)
    return np.exp(entropy)


def group_by_size(sizes: Sequence[int]) -> dict[int, np.ndarray]:
    """Indices of items grouped by their size, so each group stacks into one ``(P, N, d)`` array."""
    sizes_arr = np.asarray(sizes)
    return {int(n): np.flatnonzero(sizes_arr == n) for n in np.unique(sizes_arr)}


# ---------------------------------------------------------------- lexical metrics


def tokenize(text: str) -> list[str]:
    """Lower-case, whitespace split: the tokenisation used by distinct-n."""
    return text.lower().split()


def distinct_n(samples: Sequence[str], n: int) -> float:
    """Unique n-grams / total n-grams over one prompt's samples.

    n-grams are taken within each sample (never across two samples) on
    :func:`tokenize` tokens, and uniqueness is counted over the union of the
    samples, so repeating a story lowers the value. ``nan`` when the samples
    have no n-gram at all (every sample shorter than n tokens).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in samples:
        tokens = tokenize(text)
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else float("nan")


_BLEU = None


def _bleu():
    # One BLEU object reused: building it per sentence dominates the cost otherwise.
    global _BLEU
    if _BLEU is None:
        from sacrebleu.metrics import BLEU

        _BLEU = BLEU(effective_order=True)  # sacrebleu's sentence-BLEU defaults (13a, exp smoothing)
    return _BLEU


def self_bleu(samples: Sequence[str]) -> float:
    """Mean over samples of sentence-BLEU(sample, references = the other samples), on a 0..1 scale.

    sacrebleu defaults for sentence BLEU (13a tokeniser, ``exp`` smoothing,
    effective order). Higher means the samples repeat each other (less diverse);
    ``nan`` with fewer than 2 samples.
    """
    if len(samples) < 2:
        return float("nan")
    bleu = _bleu()
    scores = [
        bleu.sentence_score(hyp, [ref for j, ref in enumerate(samples) if j != i]).score
        for i, hyp in enumerate(samples)
    ]
    return float(np.mean(scores)) / 100.0


def compression_ratio(samples: Sequence[str]) -> float:
    """Original bytes / gzip-compressed bytes of the samples joined by newlines.

    Repetition across samples compresses well, so a *higher* ratio means *less*
    diverse text. ``mtime=0`` keeps the gzip header (and so the value) deterministic.
    """
    raw = "\n".join(samples).encode("utf-8")
    if not raw:
        return float("nan")
    return len(raw) / len(gzip.compress(raw, compresslevel=9, mtime=0))


# ---------------------------------------------------------------- bootstrap


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
    from scipy import stats

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


# ---------------------------------------------------------------- typicality of samples


def pool_centrality(samples: np.ndarray, pool: np.ndarray, sample_in_pool: Sequence[int | None] | None = None) -> np.ndarray:
    """Standardised centrality of each sample among one prompt's human responses.

    A text's raw centrality is its mean cosine similarity to the pool's
    responses (its own entry excluded when it is one of them). The samples'
    raw centralities are standardised with the mean and std of the pool
    members' own centralities, so 0 means "as central as the average human
    story of this prompt" and +1 "one pool-std more typical": the same scale as
    the typicality term of :mod:`divtune.typicality`. ``samples``: ``(n, d)``,
    ``pool``: ``(m, d)``; ``sample_in_pool[i]`` is the pool index of sample i when
    it is itself a pool response (the gold row), else None. ``nan`` for every
    sample when the pool has fewer than 3 responses or no spread.
    """
    samples = np.asarray(samples, dtype=np.float64)
    pool = np.asarray(pool, dtype=np.float64)
    m = pool.shape[0]
    if m < 3:
        return np.full(samples.shape[0], np.nan)

    def unit(x: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norms > 0, norms, 1.0)

    pool_u, samples_u = unit(pool), unit(samples)
    pool_sim = pool_u @ pool_u.T
    members = (pool_sim.sum(axis=1) - np.diag(pool_sim)) / (m - 1)
    spread = members.std()
    if spread <= 1e-12:
        return np.full(samples.shape[0], np.nan)
    sims = samples_u @ pool_u.T
    raw = sims.mean(axis=1)
    for i, member in enumerate(sample_in_pool or [None] * len(raw)):
        if member is not None:
            raw[i] = (sims[i].sum() - sims[i, member]) / (m - 1)
    return (raw - members.mean()) / spread


def mode_metrics(modes: Sequence[str], typical: str, all_modes: Sequence[str]) -> dict[str, float]:
    """One prompt's samples: share in the typical mode, mode entropy (bits) and number of modes seen."""
    if not modes:
        return {"typical_mode_share": float("nan"), "mode_entropy": float("nan"), "modes_seen": float("nan")}
    counts = np.array([sum(m == mode for m in modes) for mode in all_modes], dtype=np.float64)
    shares = counts[counts > 0] / counts.sum()
    return {
        "typical_mode_share": float(sum(m == typical for m in modes) / len(modes)),
        "mode_entropy": float(-(shares * np.log2(shares)).sum()) + 0.0,
        "modes_seen": float((counts > 0).sum()),
    }
