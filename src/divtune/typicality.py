"""``divtune typicality``: real stories, with a typicality bias of known strength injected into their scores.

The known-answer benchmark (docs/typicality.md). Preference data is thought to
carry a *typicality bias*: raters favour the familiar, so DPO sharpens toward
the dominant mode. Here the bias is put in on purpose, with a known strength
``b``, into the scores of real human stories, so the right answer is known:

    score_i = q_i + b * t_i

- ``q_i``: the story's compressed vote (docs/method.md §1, the same transform and
  global range ``prepare`` uses);
- ``t_i``: its typicality term, either
  - ``semantic``: its centrality in its prompt's pool, minus its semantic
    deviation (docs/method.md §3, MiniLM by default) standardised per pool (mean 0,
    std 1; 0 for a pool whose deviations are all equal), or
  - ``mode``: 1 when its opening is in the data's most common surface mode
    (:mod:`divtune.modes`), else 0, or
  - ``lexical``: its centrality in its pool by TF-IDF word vectors instead of an
    embedder (:func:`tfidf_vectors`), standardised per pool the same way: a bias
    that no sentence embedder defines.

``b = 0`` is the control. The output is an ordinary ``pools``-layout JSONL that
``divtune prepare`` reads unchanged (``OUTPUT/pools.jsonl``), with the
ingredients kept beside each score (``votes``, ``quality``, ``typicality``,
``modes``) so anyone can recompute it.

How the bias survives ``prepare``: its vote compression is strictly
increasing, so it keeps the order of the scores within a pool, and pairs
depend only on that order and on the gap rule. The gap is then in score units
(``q`` lies in [-1, 1]); the benchmark sets ``prepare.gap`` to the builder's
``gap``, and the builder reports, for exactly the pairs ``prepare`` will draw
(same seed, same per-pool generator, same gap), how often the chosen story has
fewer votes than the rejected one: how often the bias flipped the preference.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from divtune.config import StageConfig
from divtune.data import Pool, load_pools
from divtune.deviation import mean_cosine_distance
from divtune.io import write_json, write_jsonl
from divtune.modes import MODES, mode_counts, most_common_mode, opening_mode
from divtune.outputs import claim_output_dir, stamped
from divtune.pairs import compress_votes, gap_pairs, pool_rng, pool_skip_reason
from divtune.prepare import clean_pools, resolve_input
from divtune.resources import cache_root

log = logging.getLogger(__name__)

POOLS_FILE = "pools.jsonl"
SUMMARY_FILE = "summary.json"


class TypicalityConfig(StageConfig):
    """Settings of ``divtune typicality`` (the CLI flags have the same names)."""

    inputs: list[str] = Field(min_length=1, description="input files, or shipped:wp_scored")
    output: str = Field(description="output folder (pools.jsonl, summary.json, config.yaml)")
    term: Literal["semantic", "mode", "lexical"] = "semantic"
    strength: float = Field(0.0, ge=0.0, description="b: score = quality + b * typicality")
    embedder: str = Field("minilm", description="semantic term: the embedder of the deviation")
    opening_words: int | None = Field(
        None, ge=1, description="cut every story to its first N words (the text the model trains on)"
    )
    min_words: int = Field(100, ge=0, description="stories shorter than this (before the cut) are dropped")
    max_responses_per_prompt: int | None = Field(12, ge=2, description="the top-voted K stories per prompt")
    format: Literal["auto", "reddit", "pools", "flat"] = "auto"
    columns: dict[str, str] = Field(default_factory=dict)
    skip_invalid: bool = False
    vote_transform: Literal["exact", "released"] = "exact"
    compression_factor: int = Field(100, ge=1)
    #: The seed and gap ``prepare`` will use: the flip report predicts its pairs.
    seed: int = 0
    gap: float = 0.1
    cache_dir: str | None = None
    embed_batch_size: int = Field(64, ge=1)
    show_progress: bool = True


# ---------------------------------------------------------------- pure parts

_WORD = re.compile(r"\S+")


def cut_to_words(text: str, n: int) -> str:
    """The first ``n`` whitespace-separated words of ``text``, its own spacing and line breaks kept."""
    end = None
    for count, match in enumerate(_WORD.finditer(text), start=1):
        end = match.end()
        if count == n:
            break
    return text if end is None else text[:end]


def standardise(values: np.ndarray) -> np.ndarray:
    """(x - mean) / std within one pool; all zeros when the values are (numerically) equal."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    spread = values.std()
    if spread <= 1e-12 * max(1.0, float(np.abs(values).max())):
        return np.zeros_like(values)
    return (values - values.mean()) / spread


def semantic_typicality(embeddings: np.ndarray) -> np.ndarray:
    """Centrality of each response in its pool: minus its deviation (docs/method.md §3), standardised."""
    return standardise(-mean_cosine_distance(embeddings))


_WORD_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def word_tokens(text: str) -> list[str]:
    """Lower-cased words (letters and digits, inner apostrophes kept, curly ones made straight)."""
    return [token.replace("’", "'") for token in _WORD_TOKEN.findall(text.lower())]


def tfidf_vectors(pools: list[list[str]]) -> list[np.ndarray]:
    """Per pool, its texts' TF-IDF rows (n, V), V = the words of that pool.

    tf = the word's count in the text; idf = ln((1 + N) / (1 + df)) + 1, with df the number
    of texts, over ALL pools (N texts), that hold the word (the smoothed idf of common
    TF-IDF implementations), so a word common everywhere weighs little in every pool.
    Rows are not normalised here (cosine does it); a text without a word is a zero row,
    which counts as orthogonal to every other text.
    """
    counted = [[Counter(word_tokens(text)) for text in pool] for pool in pools]
    document_frequency: Counter = Counter()
    for pool in counted:
        for counts in pool:
            document_frequency.update(counts.keys())
    n_texts = sum(len(pool) for pool in counted)
    matrices = []
    for pool in counted:
        vocabulary = sorted({word for counts in pool for word in counts})
        column = {word: j for j, word in enumerate(vocabulary)}
        idf = np.array([np.log((1 + n_texts) / (1 + document_frequency[w])) + 1.0 for w in vocabulary])
        matrix = np.zeros((len(pool), len(vocabulary)))
        for i, counts in enumerate(pool):
            for word, count in counts.items():
                matrix[i, column[word]] = count
        matrices.append(matrix * idf[None, :] if vocabulary else matrix)
    return matrices


def mode_typicality(modes: list[str], typical: str) -> np.ndarray:
    """1 for a response in the typical mode, else 0."""
    return np.array([1.0 if mode == typical else 0.0 for mode in modes])


def biased_scores(quality: np.ndarray, typicality: np.ndarray, strength: float) -> np.ndarray:
    """The injected bias: quality + strength * typicality."""
    return np.asarray(quality, dtype=np.float64) + strength * np.asarray(typicality, dtype=np.float64)


def order_flips(votes: np.ndarray, scores: np.ndarray) -> tuple[int, int]:
    """(pairs whose order the scores reverse, pairs with different votes) over all pairs of one pool."""
    votes, scores = np.asarray(votes, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    upper = np.triu_indices(votes.size, k=1)
    vote_sign = np.sign(votes[:, None] - votes[None, :])[upper]
    score_sign = np.sign(scores[:, None] - scores[None, :])[upper]
    ordered = vote_sign != 0
    return int(np.sum(ordered & (score_sign == -vote_sign))), int(np.sum(ordered))


def pair_flips(pairs: list[tuple[int, int]], votes: np.ndarray, typicality: np.ndarray) -> Counter:
    """Of (chosen, rejected) pairs: how many chose the story with fewer, equal or more votes,
    and how many chose the more typical one."""
    counts: Counter = Counter()
    for chosen, rejected in pairs:
        difference = votes[chosen] - votes[rejected]
        counts["fewer_votes" if difference < 0 else "equal_votes" if difference == 0 else "more_votes"] += 1
        counts["chosen_more_typical"] += int(typicality[chosen] > typicality[rejected])
    return counts


# ---------------------------------------------------------------- the stage


def _cut_openings(pools, words: int | None, dropped: Counter):
    """Cut stories to their openings; an opening equal to an earlier one of its pool is dropped (counted)."""
    if words is None:
        return pools
    cut = []
    for pool in pools:
        seen, texts, scores = set(), [], []
        for text, score in zip(pool.texts, pool.scores):
            opening = cut_to_words(text, words)
            if opening in seen:
                dropped["duplicate_opening_in_prompt"] += 1
                continue
            seen.add(opening)
            texts.append(opening)
            scores.append(score)
        cut.append(Pool(pool.pool_id, pool.prompt, pool.layout, texts, scores))
    return cut


def _typicality_terms(pools, cfg: TypicalityConfig, modes: list[list[str]], typical: str) -> list[np.ndarray]:
    if cfg.term == "mode":
        return [mode_typicality(pool_modes, typical) for pool_modes in modes]
    if cfg.term == "lexical":
        # The same centrality as the semantic term, in TF-IDF space instead of an embedder's.
        return [semantic_typicality(matrix) for matrix in tfidf_vectors([pool.texts for pool in pools])]
    from divtune.embedders import load_embedder  # heavy: loads numpy

    texts = sorted({t for pool in pools for t in pool.texts})
    row = {t: i for i, t in enumerate(texts)}
    cache_dir = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None
    if cache_dir is None:
        cache_dir = cache_root() / "embeddings"
    embedder = load_embedder(cfg.embedder, cache_dir=cache_dir)
    matrix = embedder.embed(texts, batch_size=cfg.embed_batch_size, show_progress=cfg.show_progress)
    return [semantic_typicality(matrix[[row[t] for t in pool.texts]]) for pool in pools]


def run_typicality(cfg: TypicalityConfig, overwrite: bool = False) -> dict:
    """Build the biased dataset; returns the summary (also written to ``OUTPUT/summary.json``).

    The output folder follows divtune.outputs' rule; nothing is written before the inputs are read.
    """
    input_paths = [resolve_input(spec) for spec in cfg.inputs]
    output = Path(cfg.output)
    settings = {k: v for k, v in cfg.to_dict().items() if k not in ("output", "show_progress", "cache_dir")}
    claim = claim_output_dir(output, "typicality", stamped(settings, input_paths), overwrite)
    if claim.state == "reuse":
        return json.loads((output / SUMMARY_FILE).read_text(encoding="utf-8"))
    pools, report, dropped = _stories(input_paths, cfg)

    votes_all = np.concatenate([np.asarray(pool.scores, dtype=np.float64) for pool in pools])
    quality_all = compress_votes(votes_all, cfg.vote_transform, cfg.compression_factor)
    offsets = np.cumsum([0] + [len(pool.texts) for pool in pools])
    modes = [[opening_mode(text) for text in pool.texts] for pool in pools]
    typical = most_common_mode([text for pool in pools for text in pool.texts])
    terms = _typicality_terms(pools, cfg, modes, typical)

    rows, flips, predicted = [], [0, 0], Counter()
    for pool, pool_modes, term, start, stop in zip(pools, modes, terms, offsets[:-1], offsets[1:]):
        votes = votes_all[start:stop]
        quality = quality_all[start:stop]
        scores = biased_scores(quality, term, cfg.strength)
        reversed_pairs, ordered_pairs = order_flips(votes, scores)
        flips[0] += reversed_pairs
        flips[1] += ordered_pairs
        if pool_skip_reason(scores.tolist()) is None:
            predicted += pair_flips(gap_pairs(scores, cfg.gap, pool_rng(cfg.seed, pool.pool_id)), votes, term)
        rows.append(_pool_row(pool, scores, votes, quality, term, pool_modes))
    claim.begin()
    write_jsonl(output / POOLS_FILE, rows)
    cfg.save(output / "config.yaml")

    all_texts = [text for pool in pools for text in pool.texts]
    counts = mode_counts(all_texts)
    summary = {
        "inputs": [str(p) for p in input_paths],
        "term": cfg.term,
        "strength": cfg.strength,
        "prompts": len(pools),
        "responses": len(all_texts),
        "rows": {"read": report.rows_read, "invalid": dict(report.rows_invalid)},
        "responses_read": report.responses_read,
        "responses_dropped": dict(dropped),
        "modes": {"counts": counts, "shares": {m: counts[m] / len(all_texts) for m in MODES}, "typical": typical},
        "typicality": {
            "mean": float(np.mean(np.concatenate(terms))),
            "std": float(np.std(np.concatenate(terms))),
            "spearman_with_votes_within_pools": _mean_within_pool_spearman(votes_all, np.concatenate(terms), offsets),
        },
        "order_flips": {
            "reversed": flips[0],
            "pairs_with_different_votes": flips[1],
            "share": flips[0] / flips[1] if flips[1] else None,
        },
        "predicted_prepare_pairs": _predicted_pairs_summary(predicted, cfg),
    }
    write_json(output / SUMMARY_FILE, summary)
    claim.finish()
    return summary


def _stories(input_paths: list[Path], cfg: TypicalityConfig):
    """The cleaned pools (stories cut to their openings), the reader's report and the drops, by reason."""
    pools, report = load_pools(input_paths, cfg.format, cfg.columns, cfg.skip_invalid)
    dropped: Counter = Counter()
    pools = clean_pools(pools, cfg.min_words, cfg.max_responses_per_prompt, dropped)
    pools = _cut_openings(pools, cfg.opening_words, dropped)
    pools = [pool for pool in pools if pool.texts]
    if not pools:
        raise ValueError(f"no story left in {cfg.inputs} after cleaning (min_words={cfg.min_words})")
    return pools, report, dropped


def _pool_row(pool: Pool, scores, votes, quality, term, modes: list[str]) -> dict:
    """One line of ``pools.jsonl``: the biased scores, with the ingredients to recompute them."""
    return {
        "id": pool.pool_id,
        "prompt": pool.prompt,
        "responses": pool.texts,
        "scores": scores.tolist(),
        "votes": votes.tolist(),
        "quality": quality.tolist(),
        "typicality": term.tolist(),
        "modes": modes,
    }


def _predicted_pairs_summary(predicted: Counter, cfg: TypicalityConfig) -> dict:
    """How the pairs ``prepare`` will draw (same seed and gap) side with the votes and with typicality."""
    n_pairs = sum(predicted[key] for key in ("more_votes", "equal_votes", "fewer_votes"))
    return {
        "seed": cfg.seed,
        "gap": cfg.gap,
        "pairs": n_pairs,
        **{key: predicted.get(key, 0) for key in ("more_votes", "equal_votes", "fewer_votes")},
        "flip_share": predicted.get("fewer_votes", 0) / n_pairs if n_pairs else None,
        "chosen_more_typical_share": predicted.get("chosen_more_typical", 0) / n_pairs if n_pairs else None,
    }


def _mean_within_pool_spearman(votes: np.ndarray, terms: np.ndarray, offsets: np.ndarray) -> float | None:
    """Mean over pools of Spearman(votes, typicality): is the typical story already the upvoted one?"""
    from scipy.stats import spearmanr  # heavy

    values = []
    for start, stop in zip(offsets[:-1], offsets[1:]):
        v, t = votes[start:stop], terms[start:stop]
        if stop - start >= 3 and np.ptp(v) > 0 and np.ptp(t) > 0:
            values.append(float(spearmanr(v, t).statistic))
    return float(np.mean(values)) if values else None
