"""Per-prompt scores of a system (diversity, lexical, typicality, modes, quality-filtered diversity)
and their mean over prompts with a bootstrap interval, computed with :mod:`divtune.metrics`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from divtune import metrics
from divtune.chatbot import chatbot_share
from divtune.evaluation.config import DISTINCT_K_THRESHOLD
from divtune.evaluation.keys import LEXICAL_KEYS, ordered_metric_keys
from divtune.evaluation.systems import System
from divtune.modes import MODES, opening_mode
from divtune.reward.online import cosine_judge, partition_classes
from divtune.statistics import bootstrap_ci


def embed_unique(texts: list[str], spec: str, cache_dir: str | None, batch_size: int) -> dict[str, np.ndarray]:
    """Embed each distinct text once (one batched call for all systems)."""
    from divtune.embedders import load_embedder  # heavy: loads numpy

    unique = list(dict.fromkeys(texts))
    embedder = load_embedder(spec, cache_dir)
    vectors = np.asarray(embedder.embed(unique, batch_size=batch_size, show_progress=True))
    return dict(zip(unique, vectors))


def per_prompt_embedding_metrics(
    groups: list[list[str]], table: dict[str, np.ndarray], mask: list[np.ndarray] | None = None, vendi: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean pairwise cosine distance (and optionally Vendi) per prompt, batched by sample count."""
    diversity = np.full(len(groups), np.nan)
    vendi_values = np.full(len(groups), np.nan) if vendi else None
    for n, idx in metrics.group_by_size([len(g) for g in groups]).items():
        if n < 2:
            continue
        stack = np.stack([np.stack([table[t] for t in groups[i]]) for i in idx])
        sample_mask = None if mask is None else np.stack([mask[i] for i in idx])
        diversity[idx] = metrics.mean_pairwise_cosine_distance(stack, mask=sample_mask)
        if vendi:
            vendi_values[idx] = metrics.vendi_score(stack)
    return diversity, vendi_values


def lexical_metrics(samples: list[str]) -> dict[str, float]:
    out = {f"distinct_{n}": metrics.distinct_n(samples, n) for n in range(1, 5)}
    out["self_bleu"] = metrics.self_bleu(samples)
    out["compression_ratio"] = metrics.compression_ratio(samples)
    return out


def centrality_per_prompt(
    system: System, prompt_keys: list[str], pools: dict[str, list[str]], semantic: dict[str, np.ndarray]
) -> np.ndarray:
    """Mean standardised centrality (metrics.pool_centrality) of each prompt's samples; nan without a pool."""
    values = np.full(len(prompt_keys), np.nan)
    for i, key in enumerate(prompt_keys):
        pool = pools.get(key)
        if not pool:
            continue
        texts = system.texts[key]
        members = {text: j for j, text in enumerate(pool)} if system.is_gold else {}
        origins = system.origins.get(key, texts)
        z = metrics.pool_centrality(
            np.stack([semantic[t] for t in texts]), np.stack([semantic[t] for t in pool]), [members.get(t) for t in origins]
        )
        values[i] = float(np.mean(z)) if not np.isnan(z).all() else np.nan
    return values


def distinct_k_per_prompt(groups: list[list[str]], table: dict[str, np.ndarray], threshold: float) -> np.ndarray:
    """NoveltyBench's distinct-k per prompt: how many classes its k samples fall into under DARLING's
    partition (divtune.reward.online: cosine >= ``threshold`` is "the same", classes are the connected
    components). k samples give 1 (all alike) to k (all distinct); identical texts are always one class."""
    judge = cosine_judge(threshold)
    values = np.full(len(groups), np.nan)
    for i, group in enumerate(groups):
        if group:
            values[i] = float(len(np.unique(partition_classes(judge(np.stack([table[t] for t in group]))))))
    return values


def chatbot_share_per_prompt(groups: list[list[str]]) -> np.ndarray:
    """Share of each prompt's samples that open like a chatbot reply (divtune.chatbot)."""
    return np.array([chatbot_share(group) for group in groups], dtype=np.float64)


def mode_values_per_prompt(groups: list[list[str]], typical: str) -> dict[str, np.ndarray]:
    """Typical-mode share, mode entropy (bits) and modes seen, per prompt (divtune.modes)."""
    rows = [metrics.mode_metrics([opening_mode(t) for t in group], typical, MODES) for group in groups]
    return {key: np.array([row[key] for row in rows]) for key in ("typical_mode_share", "mode_entropy", "modes_seen")}


def system_per_prompt(
    system: System,
    semantic: dict[str, np.ndarray],
    style: dict[str, np.ndarray],
    threshold: float | None,
    show_progress: bool = True,
    pools: dict[str, list[str]] | None = None,
    typical_mode: str | None = None,
    extra_semantic: dict[str, dict[str, np.ndarray]] | None = None,
    distinct_k_threshold: float = DISTINCT_K_THRESHOLD,
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Per-prompt values of every metric for one system (prompts in sorted order).

    ``pools`` (prompt → its human responses) adds ``centrality``; ``typical_mode`` adds the mode metrics;
    ``extra_semantic`` (name → text → vector) adds the semantic metrics in each further space.
    """
    prompt_keys = sorted(system.texts)
    groups = [system.texts[k] for k in prompt_keys]
    values: dict[str, np.ndarray] = {}
    if pools is not None:
        values["centrality"] = centrality_per_prompt(system, prompt_keys, pools, semantic)
    if typical_mode is not None:
        values.update(mode_values_per_prompt(groups, typical_mode))
    values["semantic_diversity"], values["vendi_semantic"] = per_prompt_embedding_metrics(groups, semantic, vendi=True)
    values["style_diversity"], _ = per_prompt_embedding_metrics(groups, style)
    values["distinct_k"] = distinct_k_per_prompt(groups, semantic, distinct_k_threshold)
    values["chatbot_share"] = chatbot_share_per_prompt(groups)
    for name, table in (extra_semantic or {}).items():
        values[f"semantic_diversity_{name}"], values[f"vendi_semantic_{name}"] = per_prompt_embedding_metrics(
            groups, table, vendi=True)
        if pools is not None:
            values[f"centrality_{name}"] = centrality_per_prompt(system, prompt_keys, pools, table)
    # String metrics are per prompt (self-BLEU dominates the evaluation time on long stories).
    lexical = [lexical_metrics(g) for g in tqdm(groups, desc=f"text metrics {system.name}", unit="prompt", disable=not show_progress)]
    for key in LEXICAL_KEYS:
        values[key] = np.array([row[key] for row in lexical])
    if system.has_quality() and threshold is not None:
        qualities = [np.array(system.quality[k], dtype=np.float64) for k in prompt_keys]
        values["quality"] = np.array([q.mean() for q in qualities])
        passing = [q >= threshold for q in qualities]
        effective, _ = per_prompt_embedding_metrics(groups, semantic, mask=passing)
        # Rule: a prompt with fewer than 2 passing samples has no usable diversity -> 0,
        # so a system cannot look diverse by producing mostly low-quality samples.
        values["effective_semantic_diversity"] = np.nan_to_num(effective, nan=0.0)
    else:
        values["quality"] = np.full(len(groups), np.nan)
        values["effective_semantic_diversity"] = np.full(len(groups), np.nan)
    return prompt_keys, values


def json_number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def aggregate(values: dict[str, np.ndarray], has_quality: bool, n_boot: int, seed: int) -> dict[str, Any]:
    """Mean over prompts (ignoring undefined ones) and a bootstrap interval for every metric."""
    row: dict[str, Any] = {}
    for key in ordered_metric_keys(values):
        per_prompt = values[key]
        if key in ("quality", "effective_semantic_diversity") and not has_quality:
            row[key], row[f"{key}_ci"] = None, None
            continue
        mean = float(np.nanmean(per_prompt)) if np.any(~np.isnan(per_prompt)) else float("nan")
        low, high = bootstrap_ci(per_prompt, n_boot=n_boot, seed=seed)
        row[key] = json_number(mean)
        row[f"{key}_ci"] = [json_number(low), json_number(high)]
    return row
