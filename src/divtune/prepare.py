"""``divtune prepare``: raw prompt/response/score data -> weighted preference pairs.

Steps (docs/method.md §1-3, §5): read and validate inputs, drop non-stories and duplicates
(counted), split by prompt, compress votes to quality, build pairs per pool
(gap matching, all pairs, or DivPO), embed the responses that take part in
pairs (one batched, cached call per embedder across all pools), and weight each
pair by its chosen response's deviation.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from divtune.config import StageConfig
from divtune.data import Pool, clean_responses, load_pools, seeded_subset, split_by_prompt
from divtune.deviation import deviation_weights, mean_cosine_distance
from divtune.embedders import DEFAULT_EMBEDDERS, check_embedder_spec
from divtune.io import InputError, write_json, write_jsonl
from divtune.outputs import claim_output_dir, stamped
from divtune.prepared import SPLITS, SUMMARY_FILE, pairs_file, responses_file
from divtune.resources import shipped_dataset
from divtune.prepare_summary import prepare_summary
from divtune.stage_yield import prepare_problem, prepare_warning
from divtune.weighting import default_embed_cache_dir, embed_texts
from divtune.pairs import (
    all_pairs,
    compress_votes,
    divpo_pairs,
    divpo_sets,
    gap_pairs,
    pool_rng,
    pool_skip_reason,
    set_deviation,
)

log = logging.getLogger(__name__)

SHIPPED_PREFIX = "shipped:"
DEFAULT_MAX_PAIRS = {"gap": None, "all": 100, "divpo": 2}


class PrepareConfig(StageConfig):
    """Settings of ``divtune prepare`` (the CLI flags have the same names)."""

    inputs: list[str] = Field(min_length=1, description="input files/folders, or shipped:wp_scored / shipped:wp_fresh")
    output: str = Field(description="output folder")
    format: Literal["auto", "reddit", "pools", "flat"] = "auto"
    columns: dict[str, str] = Field(default_factory=dict, description="divtune column -> column in the file")
    min_words: int = Field(100, ge=0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = 0
    vote_transform: Literal["exact", "released"] = "exact"
    compression_factor: int = Field(100, ge=1)
    gap: float = 5.0
    pairs: Literal["gap", "all", "divpo"] = "gap"
    max_pairs_per_prompt: int | None = Field(None, ge=1, description="default: none (gap), 100 (all), 2 (divpo)")
    rho: float = Field(25.0, gt=0.0, le=100.0)
    embedders: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_EMBEDDERS))
    weight_floor: float = Field(0.0, ge=0.0, lt=1.0)
    conversational: bool = False
    skip_invalid: bool = False
    max_prompts: int | None = Field(None, ge=1)
    max_responses_per_prompt: int | None = Field(None, ge=2)
    cache_dir: str | None = None
    embed_batch_size: int = Field(64, ge=1)
    show_progress: bool = True

    @field_validator("embedders")
    @classmethod
    def _some_embedder(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("at least one embedder is needed for deviation weights")
        return value

    def pair_cap(self) -> int | None:
        return self.max_pairs_per_prompt if self.max_pairs_per_prompt is not None else DEFAULT_MAX_PAIRS[self.pairs]

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_embed_cache_dir()


def resolve_input(spec: str) -> Path:
    if spec.startswith(SHIPPED_PREFIX):
        return shipped_dataset(spec[len(SHIPPED_PREFIX) :])
    return Path(spec).expanduser()


@dataclass
class PoolWork:
    """One kept pool on its way to pairs."""

    pool: Pool
    split: str
    quality: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pairs: list[tuple[int, int]] = field(default_factory=list)
    members: list[int] = field(default_factory=list)  # responses whose deviation is computed
    deviation: dict[str, np.ndarray] = field(default_factory=dict)  # name -> per-member raw deviation
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per member
    divpo_sets: tuple[np.ndarray, np.ndarray] | None = None


def clean_pools(pools: list[Pool], min_words: int, cap: int | None, dropped: Counter) -> list[Pool]:
    """Pools of usable, stripped stories (the top-scored ``cap`` of each); drops counted in ``dropped``."""
    kept_pools = []
    for pool in pools:
        keep = clean_responses(pool.texts, pool.layout, min_words, dropped)
        texts = [pool.texts[i].strip() for i in keep]
        scores = [pool.scores[i] for i in keep]
        if cap is not None and len(texts) > cap:
            # the paper's max_cutoff: keep the top-scored K (stable among ties)
            top = sorted(np.argsort(-np.asarray(scores), kind="stable")[:cap])
            dropped["over_max_responses_per_prompt"] += len(texts) - cap
            texts, scores = [texts[i] for i in top], [scores[i] for i in top]
        if texts:
            kept_pools.append(Pool(pool.pool_id, pool.prompt, pool.layout, texts, scores))
    return kept_pools


def _gap_pairs(work: PoolWork, cfg: PrepareConfig) -> None:
    pairs = gap_pairs(np.asarray(work.pool.scores), cfg.gap, pool_rng(cfg.seed, work.pool.pool_id))
    cap = cfg.pair_cap()
    work.pairs = pairs[:cap] if cap is not None else pairs
    work.members = sorted({i for pair in work.pairs for i in pair})


def _all_pairs(work: PoolWork, cfg: PrepareConfig) -> None:
    work.pairs = all_pairs(np.asarray(work.pool.scores), cfg.gap, cfg.pair_cap(), pool_rng(cfg.seed, work.pool.pool_id))
    work.members = sorted({i for pair in work.pairs for i in pair})


def _divpo_sets(work: PoolWork, cfg: PrepareConfig) -> None:
    """DivPO's high and low sets: its pairs are drawn from them once the members are embedded (_weigh)."""
    work.divpo_sets = divpo_sets(work.pool.scores, cfg.rho, cfg.pair_cap())
    work.members = sorted({int(i) for group in work.divpo_sets for i in group})


#: How each ``pairs`` setting picks a pool's pairs, or the responses its pairs are drawn from.
PAIRING = {"gap": _gap_pairs, "all": _all_pairs, "divpo": _divpo_sets}


def _embed_members(works: list[PoolWork], cfg: PrepareConfig) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """One embed call per embedder over the member texts of every pool."""
    texts = sorted({w.pool.texts[i] for w in works for i in w.members})
    index = {t: n for n, t in enumerate(texts)}
    log.info("embedding %d texts with %s", len(texts), ", ".join(f"{k}={v}" for k, v in cfg.embedders.items()))
    matrices, info = embed_texts(texts, cfg.embedders, cfg.resolved_cache_dir(), cfg.embed_batch_size, cfg.show_progress)
    per_pool = {}
    for w in works:
        rows = [index[w.pool.texts[i]] for i in w.members]
        per_pool[w.pool.pool_id] = {name: m[rows] for name, m in matrices.items()} if rows else {}
    return per_pool, info


def _weigh(work: PoolWork, embeddings: dict[str, np.ndarray], cfg: PrepareConfig) -> None:
    position = {idx: n for n, idx in enumerate(work.members)}
    if work.divpo_sets is not None:
        high, low = work.divpo_sets
        raw = {name: np.zeros(len(work.members)) for name in embeddings}
        for group in (high, low):
            rows = [position[int(i)] for i in group]
            for name, emb in embeddings.items():
                raw[name][rows] = mean_cosine_distance(emb[rows])
        work.deviation = raw

        def deviation_of(indices: np.ndarray) -> np.ndarray:
            rows = [position[int(i)] for i in indices]
            return set_deviation({name: emb[rows] for name, emb in embeddings.items()})

        rng = pool_rng(cfg.seed, work.pool.pool_id)
        work.pairs = divpo_pairs(work.pool.scores, deviation_of, cfg.rho, cfg.pair_cap(), rng)
        work.weights = np.ones(len(work.members))  # DivPO trains with plain DPO
        return
    work.deviation, work.weights = deviation_weights(embeddings, floor=cfg.weight_floor)


def _as_messages(role: str, text: str) -> list[dict[str, str]]:
    return [{"role": role, "content": text}]


def _pair_rows(work: PoolWork, cfg: PrepareConfig) -> list[dict]:
    position = {idx: n for n, idx in enumerate(work.members)}
    pool = work.pool
    rows = []
    for chosen, rejected in work.pairs:
        prompt, chosen_text, rejected_text = pool.prompt, pool.texts[chosen], pool.texts[rejected]
        if cfg.conversational:
            prompt = _as_messages("user", prompt)
            chosen_text = _as_messages("assistant", chosen_text)
            rejected_text = _as_messages("assistant", rejected_text)
        rows.append(
            {
                "pool_id": pool.pool_id,
                "prompt": prompt,
                "chosen": chosen_text,
                "rejected": rejected_text,
                "score_chosen": pool.scores[chosen],
                "score_rejected": pool.scores[rejected],
                "quality_chosen": float(work.quality[chosen]),
                "quality_rejected": float(work.quality[rejected]),
                "weight": float(work.weights[position[chosen]]),
            }
        )
    return rows


def _response_rows(work: PoolWork, embedder_names: list[str]) -> list[dict]:
    position = {idx: n for n, idx in enumerate(work.members)}
    in_pairs = {i for pair in work.pairs for i in pair}
    rows = []
    for i, (text, score) in enumerate(zip(work.pool.texts, work.pool.scores)):
        pos = position.get(i)
        rows.append(
            {
                "pool_id": work.pool.pool_id,
                "split": work.split,
                "index": i,
                "text": text,
                "score": score,
                "quality": float(work.quality[i]),
                "in_pairs": i in in_pairs,
                "deviation": {
                    name: (float(work.deviation[name][pos]) if pos is not None and work.deviation else None)
                    for name in embedder_names
                },
                "weight": float(work.weights[pos]) if pos is not None and i in in_pairs else None,
            }
        )
    return rows


#: Settings that do not change what prepare writes (left out of the reuse check).
UNRECORDED_SETTINGS = ("output", "show_progress", "cache_dir")


def run_prepare(cfg: PrepareConfig, overwrite: bool = False) -> dict:
    """Run the stage; returns the summary (also written to ``output/summary.json``).

    The output folder follows divtune.outputs' rule: a finished run with the same
    settings and inputs is reused, another one is refused unless ``overwrite``.
    Nothing is written before every input has been read and checked.
    """
    out = Path(cfg.output)
    input_paths = [resolve_input(spec) for spec in cfg.inputs]
    for name, spec in cfg.embedders.items():
        check_embedder_spec(spec, name)
    settings = {k: v for k, v in cfg.to_dict().items() if k not in UNRECORDED_SETTINGS}
    claim = claim_output_dir(out, "prepare", stamped(settings, input_paths), overwrite)
    if claim.state == "reuse":
        log.info("%s already holds a finished prepare run with these settings and inputs; reusing it", out)
        return json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    pools, report = load_pools(input_paths, cfg.format, cfg.columns, cfg.skip_invalid)
    prompts_read = len(pools)
    dropped: Counter = Counter()
    kept, prompts_dropped = _keep_pools(pools, cfg, dropped)
    del pools  # the kept pools hold stripped copies; never keep the texts twice

    test_ids = split_by_prompt([p.pool_id for p in kept], cfg.test_fraction, cfg.seed)
    works = [PoolWork(p, "test" if p.pool_id in test_ids else "train") for p in kept]
    score_min, score_max = _compress_votes(works, cfg)
    without_pairs = _choose_pairs(works, cfg)
    embed_info = _embed_and_weigh(works, cfg, without_pairs)

    names = list(cfg.embedders)
    pair_rows = {split: [] for split in SPLITS}
    response_rows = []
    for w in works:
        pair_rows[w.split].extend(_pair_rows(w, cfg))
        response_rows.extend(_response_rows(w, names))
    summary = prepare_summary(
        cfg, input_paths, report, prompts_read, works, dropped, prompts_dropped, without_pairs,
        pair_rows, response_rows, embed_info, score_min, score_max,
    )
    _check_yield(summary, cfg)
    claim.begin()
    for split in SPLITS:
        write_jsonl(pairs_file(out, split), pair_rows[split])
    write_jsonl(responses_file(out), response_rows)
    cfg.save(out / "config.yaml")
    write_json(out / SUMMARY_FILE, summary)
    claim.finish({"pairs": summary["pairs"]})
    return summary


def _keep_pools(pools: list[Pool], cfg: PrepareConfig, dropped: Counter) -> tuple[list[Pool], Counter]:
    """The cleaned pools (at most ``max_prompts`` of them, seeded) and the prompts dropped, by reason."""
    kept = clean_pools(pools, cfg.min_words, cfg.max_responses_per_prompt, dropped)
    prompts_dropped = Counter({"no_response_left": len(pools) - len(kept)})
    if cfg.max_prompts is not None and len(kept) > cfg.max_prompts:
        chosen_ids = seeded_subset([p.pool_id for p in kept], cfg.max_prompts, cfg.seed)
        for pool in kept:
            if pool.pool_id not in chosen_ids:
                dropped["over_max_prompts"] += len(pool.texts)
        prompts_dropped["over_max_prompts"] = len(kept) - cfg.max_prompts
        kept = [p for p in kept if p.pool_id in chosen_ids]
    return kept, prompts_dropped


def _compress_votes(works: list[PoolWork], cfg: PrepareConfig) -> tuple[float, float]:
    """Each pool's compressed votes (``quality``) on the global score range, which is returned."""
    all_scores = np.concatenate([np.asarray(w.pool.scores) for w in works]) if works else np.zeros(0)
    score_min = float(all_scores.min()) if all_scores.size else 0.0
    score_max = float(all_scores.max()) if all_scores.size else 0.0
    # One vectorised compression over all scores (the C-fold log is costly per small pool).
    all_quality = compress_votes(all_scores, cfg.vote_transform, cfg.compression_factor, score_min, score_max)
    offsets = np.cumsum([0] + [len(w.pool.texts) for w in works])
    for w, start, stop in zip(works, offsets[:-1], offsets[1:]):
        w.quality = all_quality[start:stop]
    return score_min, score_max


def _choose_pairs(works: list[PoolWork], cfg: PrepareConfig) -> dict[str, Counter]:
    """Each pool's pairs (or DivPO sets); returns, per split, why pools give no pair."""
    without_pairs: dict[str, Counter] = {split: Counter() for split in SPLITS}
    for w in works:
        reason = pool_skip_reason(w.pool.scores)
        if reason is not None:
            without_pairs[w.split][reason] += 1
            continue
        PAIRING[cfg.pairs](w, cfg)
    return without_pairs


def _embed_and_weigh(works: list[PoolWork], cfg: PrepareConfig, without_pairs: dict[str, Counter]) -> dict:
    """Embed every pool's members once, then weigh (and for DivPO, pair) them; returns the embedders' info."""
    embeddings, embed_info = _embed_members([w for w in works if w.members], cfg)
    for w in works:
        if w.members:
            _weigh(w, embeddings[w.pool.pool_id], cfg)
            if not w.pairs:
                without_pairs[w.split]["no DivPO pair with chosen score > rejected score"] += 1
    return embed_info


def _check_yield(summary: dict, cfg: PrepareConfig) -> None:
    """Refuse a run that gives nothing to train on; warn about a thin one."""
    problem = prepare_problem(summary)
    if problem:
        raise InputError(", ".join(cfg.inputs), problem)
    warning = prepare_warning(summary)
    if warning:
        log.warning(warning)
