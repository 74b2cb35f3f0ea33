"""Diversity, lexical and typicality metrics (docs/method.md §7), pure functions on arrays and strings.

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

Intervals over prompts and seeds (bootstrap, t) are :mod:`divtune.statistics`.
"""

from __future__ import annotations

import gzip
from typing import Sequence

import numpy as np
from sacrebleu.metrics import BLEU

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
