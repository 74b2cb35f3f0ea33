"""Diversity metrics as plain functions on one prompt's samples (docs/method.md §7).

Each embedding metric takes a list of texts (embedded with the named
embedder, through the on-disk cache) or an ``(N, d)`` array of embeddings.
The lexical ones take texts. :func:`diversity_report` computes every metric
for several systems over many prompts, with bootstrap intervals, the same way
``divtune evaluate`` does.

    semantic_diversity(["a story", "another story", "a poem"])
    diversity_report({"mine": {"prompt 1": [...], ...}}, human={"prompt 1": [...], ...})
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from divtune import metrics
from divtune.metrics import compression_ratio, distinct_n, self_bleu

__all__ = [
    "compression_ratio",
    "distinct_n",
    "diversity_report",
    "self_bleu",
    "semantic_diversity",
    "style_diversity",
    "vendi_score",
]

HUMAN = "human"
HUMAN_MATCHED = "human-matched"


def _embeddings(samples: Sequence[str] | np.ndarray, embedder: str, cache_dir: str | Path | None) -> np.ndarray:
    """``samples`` as an ``(N, d)`` array: embedded when they are texts, checked when they are vectors."""
    if isinstance(samples, np.ndarray):
        if samples.ndim != 2:
            raise ValueError(f"samples: expected texts or an (N, d) array of embeddings, got shape {samples.shape}")
        return samples
    texts = list(samples)
    bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if bad:
        raise TypeError(f"samples[{bad[0]}]: expected text, got {type(texts[bad[0]]).__name__}")
    if len(texts) < 2:
        raise ValueError(f"samples: diversity needs at least 2 samples, got {len(texts)}")
    from divtune.weighting import default_embed_cache_dir  # heavy: loads numpy

    model = _loaded_embedder(embedder, str(cache_dir if cache_dir is not None else default_embed_cache_dir()))
    return model.embed(texts, show_progress=False)


@functools.lru_cache(maxsize=8)
def _loaded_embedder(spec: str, cache_dir: str):
    """One embedder per (spec, cache): a loop over prompts loads the model once, not once per call."""
    from divtune.embedders import load_embedder  # heavy: loads numpy

    return load_embedder(spec, cache_dir=cache_dir)


def semantic_diversity(
    samples: Sequence[str] | np.ndarray, embedder: str = "minilm", cache_dir: str | Path | None = None
) -> float:
    """Mean pairwise cosine distance of the samples' sentence embeddings (higher: more diverse)."""
    emb = _embeddings(samples, embedder, cache_dir)
    return float(metrics.mean_pairwise_cosine_distance(emb[None])[0])


def style_diversity(
    samples: Sequence[str] | np.ndarray, embedder: str = "stylometric", cache_dir: str | Path | None = None
) -> float:
    """Mean pairwise cosine distance of the samples' style embeddings (default: divtune's stylometric one)."""
    return semantic_diversity(samples, embedder=embedder, cache_dir=cache_dir)


def vendi_score(
    samples: Sequence[str] | np.ndarray, embedder: str = "minilm", cache_dir: str | Path | None = None
) -> float:
    """Vendi score of the samples (1: all alike, N: mutually orthogonal)."""
    emb = _embeddings(samples, embedder, cache_dir)
    return float(metrics.vendi_score(emb[None])[0])


def cut_to_words(texts: Sequence[str], words: int) -> list[str]:
    """Each text cut to its first ``words`` whitespace-separated words (shorter texts stay whole)."""
    return [" ".join(text.split()[:words]) for text in texts]


def length_matched_human(
    human: Mapping[str, Sequence[str]], systems: Mapping[str, Mapping[str, Sequence[str]]]
) -> dict[str, list[str]]:
    """Per prompt, the human texts cut to the median word count of every system's samples for it.

    Whole human stories embed as the average of far more text than model
    samples do, which makes them look *less* diverse; cut to the same length,
    they compare like with like.
    """
    matched = {}
    for prompt, texts in human.items():
        lengths = [len(s.split()) for samples in systems.values() for s in samples.get(prompt, [])]
        if lengths:
            matched[prompt] = cut_to_words(texts, max(1, int(np.median(lengths))))
    return matched


def _system(name: str, groups: Mapping[str, Sequence[str]], is_gold: bool):
    from divtune.evaluation.systems import System  # heavy: loads numpy

    system = System(name=name, source="python", is_gold=is_gold)
    for prompt, texts in groups.items():
        texts = list(texts)
        bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
        if bad:
            raise TypeError(f"{name}[{prompt!r}][{bad[0]}]: expected text, got {type(texts[bad[0]]).__name__}")
        system.texts[str(prompt)] = texts
        system.prompts[str(prompt)] = str(prompt)
    return system


def diversity_report(
    systems: Mapping[str, Mapping[str, Sequence[str]]],
    human: Mapping[str, Sequence[str]] | None = None,
    *,
    semantic_embedder: str = "minilm",
    style_embedder: str = "stylometric",
    match_human_length: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
) -> dict[str, dict[str, Any]]:
    """Every diversity metric of each system, averaged over prompts, with 95% bootstrap intervals.

    Args:
        systems: {system name: {prompt: [samples]}}.
        human: {prompt: [human texts]}, reported as the row ``human`` (and, with
            ``match_human_length``, ``human-matched``: cut to the samples' length in words).
    Returns:
        {system: {metric: mean over prompts, f"{metric}_ci": [low, high], "n_prompts", "n_samples"}} with the
        metrics of ``divtune evaluate`` (semantic and style diversity, Vendi, distinct-1..4, self-BLEU,
        compression ratio); quality is not computed here.
    """
    from divtune.evaluation.scores import aggregate, embed_unique, system_per_prompt  # heavy: loads numpy

    if not systems:
        raise ValueError("systems: give at least one system, as {name: {prompt: [samples]}}")
    rows = [_system(name, groups, is_gold=False) for name, groups in systems.items()]
    if human is not None:
        if HUMAN in systems or HUMAN_MATCHED in systems:
            raise ValueError(f"systems: the names {HUMAN!r} and {HUMAN_MATCHED!r} are kept for the human rows")
        rows.append(_system(HUMAN, human, is_gold=True))
        if match_human_length:
            rows.append(_system(HUMAN_MATCHED, length_matched_human(human, systems), is_gold=True))
    texts = [text for row in rows for group in row.texts.values() for text in group]
    cache = cache_dir
    if cache is None:
        from divtune.weighting import default_embed_cache_dir  # heavy: loads numpy

        cache = default_embed_cache_dir()
    semantic = embed_unique(texts, semantic_embedder, str(cache), batch_size)
    style = embed_unique(texts, style_embedder, str(cache), batch_size)
    report = {}
    for row in rows:
        _, values = system_per_prompt(row, semantic, style, threshold=None, show_progress=False)
        summary = aggregate(values, has_quality=False, n_boot=n_boot, seed=seed)
        for key in ("quality", "effective_semantic_diversity"):
            summary.pop(key, None)
            summary.pop(f"{key}_ci", None)
        summary["n_prompts"] = len(row.texts)
        summary["n_samples"] = row.n_samples
        report[row.name] = summary
    return report
