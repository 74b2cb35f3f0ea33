"""``run_evaluate``: the evaluation, step by step, and the folder it writes (docs/method.md §7).

Reads one or more generations JSONL files (and optionally the human test
responses of a prepared folder, the ``gold`` row), embeds every distinct text
once per embedder, computes per-prompt metrics with the vectorised functions
of :mod:`divtune.metrics`, and writes

- ``DIR/metrics.json``: ``{system: {metric: mean over prompts, metric_ci: [low, high], n_prompts, n_samples}}``;
- ``DIR/per_prompt.jsonl``: one line per system x prompt with the per-prompt values;
- ``DIR/summary.json``: what was read, skipped (with reasons) and the quality threshold used;
- ``DIR/config.yaml``: the resolved config.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from divtune import models
from divtune.config import ConfigError
from divtune.evaluation.config import EvaluateConfig
from divtune.evaluation.gold import length_matched_gold, read_gold, read_pool_texts, resolve_typical_mode
from divtune.evaluation.gold_file import fill_prompts_from_gold, read_gold_file
from divtune.evaluation.keys import MODES_FILE, ordered_metric_keys
from divtune.evaluation.quality import require_prompt_texts, resolve_threshold, score_quality
from divtune.evaluation.scores import aggregate, embed_unique, json_number, system_per_prompt
from divtune.evaluation.systems import System, drop_prompts_under_two_samples, read_generations, unique_system_names
from divtune.io import write_json, write_jsonl
from divtune.modes import mode_counts
from divtune.outputs import claim_output_dir, stamped
from divtune.prepared import is_prepared_dir

log = logging.getLogger(__name__)


def run_evaluate(cfg: EvaluateConfig, overwrite: bool = False) -> dict[str, Any]:
    """Evaluate every generations file (and the gold row); returns the metrics.json content.

    The output folder follows divtune.outputs' rule; nothing is written before every input was read.
    """
    if not cfg.generations and not cfg.gold:
        raise ConfigError("nothing to evaluate: give --generations files and/or --gold")
    output = Path(cfg.output)
    claim = _claim_output(cfg, overwrite)
    if claim.state == "reuse":
        log.info("%s already holds a finished evaluate run with these settings and inputs; reusing it", output)
        return json.loads((output / "metrics.json").read_text(encoding="utf-8"))
    skipped: Counter = Counter()
    systems, gold_matching = read_systems(cfg, skipped)
    if cfg.reward:
        require_prompt_texts(systems)
        score_quality(systems, cfg.reward)
    threshold = resolve_threshold(cfg, systems)
    if cfg.centrality and not cfg.gold:
        raise ConfigError("centrality: give --gold (a prepared folder whose test responses are the pools)")
    pools = read_pool_texts(cfg.gold, split=cfg.gold_split) if cfg.centrality else None
    typical_mode = resolve_typical_mode(cfg) if cfg.modes else None
    semantic, style, extra_semantic = embed_systems(cfg, systems, pools)
    results, per_prompt_rows = score_systems(
        cfg, systems, semantic, style, extra_semantic, threshold, pools, typical_mode)

    claim.begin()
    write_json(output / "metrics.json", results)
    if typical_mode is not None:
        write_json(output / MODES_FILE, {
            "typical_mode": typical_mode,
            "counts": {s.name: mode_counts(t for texts in s.texts.values() for t in texts) for s in systems},
        })
    write_jsonl(output / "per_prompt.jsonl", per_prompt_rows)
    cfg.save(output / "config.yaml")
    write_json(output / "summary.json", run_summary(cfg, systems, threshold, skipped, gold_matching))
    claim.finish({"systems": list(results)})
    return results


def read_systems(cfg: EvaluateConfig, skipped: Counter) -> tuple[list[System], dict[str, Any] | None]:
    """Every generations file, then the gold rows; unique names, and only prompts with 2 samples or more.

    Returns the systems and, for a raw gold file, how its prompts were matched (else None).
    """
    systems = [read_generations(path) for path in cfg.generations]
    gold_matching = None
    if cfg.gold:
        gold_rows, gold_matching = read_gold_rows(cfg, systems, skipped)
        systems.extend(gold_rows)
    elif cfg.gold_matched:
        raise ConfigError("gold_matched needs --gold (the human texts to cut)")
    unique_system_names(systems)
    drop_prompts_under_two_samples(systems, skipped)
    return systems, gold_matching


def read_gold_rows(
    cfg: EvaluateConfig, systems: list[System], skipped: Counter
) -> tuple[list[System], dict[str, Any] | None]:
    """The ``gold`` row (and ``gold-matched``) from a prepared folder or a raw data file.

    A raw file re-keys the systems' prompts to its own and fills their missing prompt texts.
    """
    sample_counts = Counter(len(t) for s in systems for t in s.texts.values())
    num_gold = cfg.num_gold or (sample_counts.most_common(1)[0][0] if sample_counts else 4)
    gold_matching = None
    if is_prepared_dir(cfg.gold):
        if cfg.gold_columns or cfg.gold_format != "auto":
            raise ConfigError(f"--column and --format describe a raw --gold data file; {cfg.gold} is a prepared folder")
        wanted = {k for s in systems for k in s.texts} if systems else None
        known_prompts = {k: v for s in systems for k, v in s.prompts.items()}
        gold = read_gold(cfg.gold, wanted, num_gold, cfg.seed, skipped, known_prompts, split=cfg.gold_split)
    else:
        gold, gold_matching = read_gold_file(
            cfg.gold, systems, num_gold, cfg.seed, skipped, cfg.gold_format, cfg.gold_min_words, cfg.gold_columns
        )
        fill_prompts_from_gold(systems, gold)
    if not cfg.gold_matched:
        return [gold], gold_matching
    return [gold, length_matched_gold(gold, systems, models.load_tokenizer(cfg.gold_matched))], gold_matching


def embed_systems(
    cfg: EvaluateConfig, systems: list[System], pools: dict[str, list[str]] | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """Every text (samples and pools) in the semantic, the style and each extra semantic space,
    each distinct text embedded once per embedder; a space that repeats the semantic one reuses it."""
    all_texts = [t for s in systems for texts in s.texts.values() for t in texts]
    all_texts += [t for texts in (pools or {}).values() for t in texts]
    semantic = embed_unique(all_texts, cfg.embedders["semantic"], cfg.embed_cache_dir, cfg.embed_batch_size)
    if cfg.embedders["style"] == cfg.embedders["semantic"]:
        style = semantic
    else:
        style = embed_unique(all_texts, cfg.embedders["style"], cfg.embed_cache_dir, cfg.embed_batch_size)
    extra_semantic = {
        name: semantic if spec == cfg.embedders["semantic"] else embed_unique(
            all_texts, spec, cfg.embed_cache_dir, cfg.embed_batch_size)
        for name, spec in cfg.extra_semantic.items()
    }
    return semantic, style, extra_semantic


def score_systems(
    cfg: EvaluateConfig,
    systems: list[System],
    semantic: dict[str, np.ndarray],
    style: dict[str, np.ndarray],
    extra_semantic: dict[str, dict[str, np.ndarray]],
    threshold: float | None,
    pools: dict[str, list[str]] | None,
    typical_mode: str | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The metrics.json content (a row per system) and the per_prompt.jsonl lines."""
    results: dict[str, Any] = {}
    per_prompt_rows: list[dict[str, Any]] = []
    for system in systems:
        log.info("metrics for %s (%d prompts)", system.name, len(system.texts))
        prompt_keys, values = system_per_prompt(
            system, semantic, style, threshold, pools=pools, typical_mode=typical_mode,
            extra_semantic=extra_semantic, distinct_k_threshold=cfg.distinct_k_threshold,
        )
        has_quality = system.has_quality() and threshold is not None
        row = aggregate(values, has_quality, cfg.bootstrap, cfg.seed)
        row["n_prompts"] = len(prompt_keys)
        row["n_samples"] = system.n_samples
        results[system.name] = row
        for i, key in enumerate(prompt_keys):
            line = {"system": system.name, "prompt_id": system.original_ids[key], "n_samples": len(system.texts[key])}
            line.update({m: json_number(values[m][i]) for m in ordered_metric_keys(values)})
            per_prompt_rows.append(line)
    return results, per_prompt_rows


def run_summary(
    cfg: EvaluateConfig, systems: list[System], threshold: float | None, skipped: Counter,
    gold_matching: dict[str, Any] | None,
) -> dict[str, Any]:
    """summary.json: what was read, what was skipped and why, and the quality threshold used."""
    return {
        "systems": {s.name: {"source": s.source, "n_prompts": len(s.texts), "n_samples": s.n_samples} for s in systems},
        "quality_threshold": threshold,
        "quality_source": "reward model" if cfg.reward else "quality field of the generation lines",
        # Why a system's quality is null: samples that had no score.
        "samples_without_quality": {
            s.name: sum(q is None for qs in s.quality.values() for q in qs) for s in systems if not s.has_quality()
        },
        "skipped": dict(skipped),
        **({"gold_matching": gold_matching} if gold_matching else {}),
        "embedders": cfg.embedders,
        "bootstrap": cfg.bootstrap,
        "seed": cfg.seed,
    }


def _claim_output(cfg: EvaluateConfig, overwrite: bool):
    """The output rule (settings + input stamps); an unknown embedder fails later, before any write."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in ("output", "embed_cache_dir")}
    return claim_output_dir(cfg.output, "evaluate", stamped(settings, [*cfg.generations, cfg.gold, cfg.reward]), overwrite)
