"""``divtune evaluate``: diversity and quality metrics of generation files (docs/method.md §7).

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

import hashlib
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator
from tqdm.auto import tqdm

from divtune import metrics
from divtune.config import ConfigError, StageConfig
from divtune.gold_file import fill_prompts_from_gold, read_gold_file, require_prompt_texts
from divtune.prepared import is_prepared_dir
from divtune.io import InputError, iter_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)

GOLD = "gold"
#: The gold row's human texts cut to as many tokens as the samples (``gold_matched``).
GOLD_MATCHED = "gold-matched"
LEXICAL_KEYS = ["distinct_1", "distinct_2", "distinct_3", "distinct_4", "self_bleu", "compression_ratio"]
#: Per-prompt metrics, in the order they appear in metrics.json.
METRIC_KEYS = [
    "semantic_diversity",
    "style_diversity",
    "vendi_semantic",
    *LEXICAL_KEYS,
    "quality",
    "effective_semantic_diversity",
]
#: Per-prompt metrics computed only when asked for (``centrality``, ``modes``); evaluation
#: folders without them stay valid.
OPTIONAL_METRIC_KEYS = ["centrality", "typical_mode_share", "mode_entropy", "modes_seen"]
#: Per-prompt metrics every evaluation computes since the second known-answer round (distinct-k:
#: NoveltyBench's number of meaning classes among the samples; chatbot_share: divtune.chatbot).
#: Evaluation folders written before them lack them and stay readable.
NEWER_METRIC_KEYS = ["distinct_k", "chatbot_share"]
#: The metrics an extra semantic space (``extra_semantic: {NAME: SPEC}``) adds, as ``KEY_NAME``
#: (centrality only with ``centrality``), e.g. ``semantic_diversity_minilm``.
EXTRA_SEMANTIC_BASES = ("semantic_diversity", "vendi_semantic", "centrality")
#: DARLING's default judge (docs/online.md): two samples are one class when their cosine is at least this.
DISTINCT_K_THRESHOLD = 0.9
REQUIRED_EMBEDDERS = ("semantic", "style")
MODES_FILE = "modes.json"
#: A generations line needs ``text`` and ``prompt_id`` or ``prompt``; ``sample_index`` and ``model`` are optional.
_PROMPT_KEY_FIELDS = ("prompt_id", "prompt")


def extra_metric_base(key: str) -> str | None:
    """``semantic_diversity_minilm`` -> ``semantic_diversity``: the metric an extra-space key measures, else None."""
    for base in EXTRA_SEMANTIC_BASES:
        if key.startswith(base + "_") and not key.endswith("_ci"):
            return base
    return None


def ordered_metric_keys(present) -> list[str]:
    """The per-prompt metric keys among ``present`` in table order: the core ones (always), then the
    optional, the newer and the extra-space ones that are there."""
    present = set(present)
    extra = sorted(k for k in present if extra_metric_base(k) is not None)
    return [*METRIC_KEYS, *(k for k in [*OPTIONAL_METRIC_KEYS, *NEWER_METRIC_KEYS] if k in present), *extra]


def _default_embedders() -> dict[str, str]:
    from divtune.embedders import DEFAULT_EMBEDDERS

    return dict(DEFAULT_EMBEDDERS)


class EvaluateConfig(StageConfig):
    LATE_SETTINGS: ClassVar[tuple[str, ...]] = ("gold_columns",)

    generations: list[str] = Field(default_factory=list, description="generations JSONL files, one system each")
    output: str
    gold: str | None = Field(
        None, description="prepared folder (its test responses), or a raw data file in a layout prepare reads (every prompt)"
    )
    #: Raw gold file only: its layout (as ``prepare --format``) and the fewest words a human response needs.
    gold_format: Literal["auto", "reddit", "pools", "flat"] = "auto"
    #: Raw gold file only: its column names, as ``prepare --column NAME=SOURCE``.
    gold_columns: dict[str, str] = Field(default_factory=dict)
    gold_min_words: int = Field(0, ge=0)
    reward: str | None = Field(None, description="reward-model folder (divtune reward train) for quality")
    embedders: dict[str, str] = Field(default_factory=_default_embedders)
    embed_cache_dir: str | None = None
    embed_batch_size: int = 32
    num_gold: int | None = Field(None, ge=2, description="human responses per gold prompt; default: the samples' N")
    quality_threshold: float | None = Field(
        None, description="effective diversity keeps samples with quality >= this; default: median gold quality"
    )
    seed: int = 0
    bootstrap: int = Field(1000, ge=10)
    centrality: bool = Field(
        False, description="mean standardised centrality of the samples among their prompt's human responses (needs gold)"
    )
    modes: bool = Field(False, description="surface modes of the openings: typical-mode share, mode entropy, modes seen")
    typical_mode: str | None = Field(None, description="the typical mode; default: the most common one of the gold data")
    gold_matched: str | None = Field(
        None,
        description="a tokenizer (model spec, e.g. smollm2): add gold-matched, the gold texts cut to the samples' token count",
    )
    gold_split: Literal["test", "train"] = Field(
        "test", description="which split of the gold folder gives the human rows (train: for tuning without the test prompts)"
    )
    distinct_k_threshold: float = Field(
        DISTINCT_K_THRESHOLD, ge=-1.0, le=1.0,
        description="distinct_k: two samples are one class when their semantic cosine is at least this (DARLING's judge)",
    )
    extra_semantic: dict[str, str] = Field(
        default_factory=dict,
        description="more semantic spaces, NAME: SPEC: adds semantic_diversity_NAME, vendi_semantic_NAME (and centrality_NAME)",
    )

    @field_validator("extra_semantic")
    @classmethod
    def _extra_names(cls, value: dict[str, str]) -> dict[str, str]:
        import re

        for name in value:
            if not re.fullmatch(r"[a-z0-9]+(?:_[a-z0-9]+)*", name) or name == "ci" or name.endswith("_ci"):
                raise ValueError(f"extra_semantic name {name!r}: use lower-case letters, digits and '_' (it ends metric keys)")
        return value

    @field_validator("embedders")
    @classmethod
    def _needs_semantic_and_style(cls, value: dict[str, str]) -> dict[str, str]:
        missing = [name for name in REQUIRED_EMBEDDERS if name not in value]
        extra = [name for name in value if name not in REQUIRED_EMBEDDERS]
        if missing or extra:
            raise ValueError(f"evaluate needs exactly the embedders {list(REQUIRED_EMBEDDERS)}; missing {missing}, unknown {extra}")
        return value


@dataclass
class System:
    """All samples of one system, grouped by prompt (prompt ids as strings, samples in index order)."""

    name: str
    source: str
    prompts: dict[str, str] = field(default_factory=dict)
    texts: dict[str, list[str]] = field(default_factory=dict)
    quality: dict[str, list[float | None]] = field(default_factory=dict)
    original_ids: dict[str, Any] = field(default_factory=dict)
    is_gold: bool = False
    #: ``prompt_id``, or ``prompt`` for files from other tools that give only the prompt text.
    keyed_by: str = "prompt_id"
    #: Gold rows: per prompt, the human response each text is (or was cut from), for centrality's self-exclusion.
    origins: dict[str, list[str]] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return sum(len(t) for t in self.texts.values())

    def has_quality(self) -> bool:
        return bool(self.quality) and all(q is not None for qs in self.quality.values() for q in qs)


# ---------------------------------------------------------------- reading


def read_generations(path: str | Path) -> System:
    """Read one generations file; the system name is its ``model`` field, else the file stem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "generations file not found")
    rows: dict[str, dict[int, tuple[str, float | None]]] = {}
    system = System(name="", source=str(path))
    model_name: str | None = None
    # The first line decides how the file names prompts and whether it numbers samples;
    # every line must then do the same (a mix would be ambiguous).
    has_index: bool | None = None
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj, dict):
            raise InputError(path, f"expected a JSON object, got {type(obj).__name__}", line=lineno)
        if not rows and not any(key in obj for key in _PROMPT_KEY_FIELDS):
            raise InputError(path, "missing required field (prompt_id or prompt)", line=lineno, field="prompt_id")
        if not rows:
            system.keyed_by = "prompt_id" if "prompt_id" in obj else "prompt"
            has_index = "sample_index" in obj
        if system.keyed_by not in obj:
            raise InputError(path, f"missing required field (earlier lines have {system.keyed_by!r})",
                             line=lineno, field=system.keyed_by)
        if "text" not in obj:
            raise InputError(path, "missing required field", line=lineno, field="text")
        if not isinstance(obj["text"], str):
            raise InputError(path, f"must be a string, got {type(obj['text']).__name__}", line=lineno, field="text")
        if "prompt" in obj and not isinstance(obj["prompt"], str):
            raise InputError(path, "must be a string", line=lineno, field="prompt")
        if ("sample_index" in obj) != has_index:
            raise InputError(path, "present on some lines and absent on others", line=lineno, field="sample_index")
        prompt_key = str(obj["prompt_id"]) if system.keyed_by == "prompt_id" else obj["prompt"]
        if not has_index:
            obj["sample_index"] = len(rows.get(prompt_key, {}))  # samples numbered in file order
        if not isinstance(obj["sample_index"], int) or isinstance(obj["sample_index"], bool):
            raise InputError(path, "must be an integer", line=lineno, field="sample_index")
        model = obj.get("model")
        if model is not None:
            if model_name is None:
                model_name = str(model)
            elif str(model) != model_name:
                raise InputError(
                    path, f"{model!r} differs from {model_name!r} earlier in the file (one system per file)",
                    line=lineno, field="model",
                )
        quality = obj.get("quality")
        if quality is not None and (not isinstance(quality, (int, float)) or isinstance(quality, bool)):
            raise InputError(path, f"must be a number, got {quality!r}", line=lineno, field="quality")
        samples = rows.setdefault(prompt_key, {})
        if obj["sample_index"] in samples:
            raise InputError(
                path, f"sample {obj['sample_index']} of prompt {prompt_key!r} appears twice", line=lineno,
                field="sample_index",
            )
        samples[obj["sample_index"]] = (obj["text"], None if quality is None else float(quality))
        if "prompt" in obj:
            system.prompts.setdefault(prompt_key, obj["prompt"])
        system.original_ids.setdefault(prompt_key, obj.get("prompt_id", prompt_key))
    if not rows:
        raise InputError(path, "no generations in file")
    for prompt_key, samples in rows.items():
        ordered = [samples[i] for i in sorted(samples)]
        system.texts[prompt_key] = [text for text, _ in ordered]
        system.quality[prompt_key] = [q for _, q in ordered]
    system.name = model_name or path.name.split(".")[0]
    return system


def _pick_gold_indices(pool_id: str, available: int, n: int, seed: int) -> list[int]:
    """Seeded choice of n of a pool's responses; seeded per pool so it does not depend on file order."""
    pool_seed = int.from_bytes(hashlib.sha256(pool_id.encode()).digest()[:8], "little")
    rng = np.random.default_rng([seed, pool_seed])
    return sorted(rng.choice(available, size=n, replace=False).tolist())


def read_gold(
    prepared_dir: str | Path,
    wanted_prompts: set[str] | None,
    num_per_prompt: int,
    seed: int,
    skipped: Counter,
    known_prompts: dict[str, str] | None = None,
    split: str = "test",
) -> System:
    """Human test responses of a prepared folder, ``num_per_prompt`` per prompt (chosen with ``seed``).

    A test pool's prompt text comes from ``test.jsonl``; pools that formed no
    pair are absent there, so their prompt is taken from the response line's
    own ``prompt`` field or from the generations (``known_prompts``), and the
    pool is skipped (and counted) only when none has it.
    """
    prepared_dir = Path(prepared_dir)
    responses_path = prepared_dir / "responses.jsonl"
    test_path = prepared_dir / f"{split}.jsonl"
    for path in (responses_path, test_path):
        if not path.is_file():
            raise InputError(path, "not found (the --gold folder must be written by `divtune prepare`)")
    prompts: dict[str, str] = {}
    original_ids: dict[str, Any] = {}
    for lineno, obj in iter_jsonl(test_path):
        for key in ("pool_id", "prompt"):
            if not isinstance(obj, dict) or key not in obj:
                raise InputError(test_path, "missing required field", line=lineno, field=key)
        prompts.setdefault(str(obj["pool_id"]), obj["prompt"])
        original_ids.setdefault(str(obj["pool_id"]), obj["pool_id"])
    pools: dict[str, list[tuple[int, str]]] = {}
    for lineno, obj in iter_jsonl(responses_path):
        for key in ("pool_id", "split", "text"):
            if not isinstance(obj, dict) or key not in obj:
                raise InputError(responses_path, "missing required field", line=lineno, field=key)
        if obj["split"] != split:
            skipped[f"gold: {obj['split']}-split responses (not evaluated)"] += 1
            continue
        pool_key = str(obj["pool_id"])
        if wanted_prompts is not None and pool_key not in wanted_prompts:
            skipped["gold: test responses of prompts without generations"] += 1
            continue
        if not isinstance(obj["text"], str):
            raise InputError(responses_path, "must be a string", line=lineno, field="text")
        if pool_key not in prompts:
            prompt = obj.get("prompt") or (known_prompts or {}).get(pool_key)
            if prompt is None:
                skipped["gold: test responses whose prompt text is unknown"] += 1
                continue
            prompts[pool_key] = prompt
            original_ids[pool_key] = obj["pool_id"]
        pools.setdefault(pool_key, []).append((int(obj.get("index", lineno)), obj["text"]))
    gold = System(name=GOLD, source=str(prepared_dir), is_gold=True)
    for pool_key in sorted(pools):
        responses = sorted(pools[pool_key])
        if len(responses) < num_per_prompt:
            skipped[f"gold: test prompts with fewer than {num_per_prompt} human responses"] += 1
            skipped[f"gold: responses of test prompts with fewer than {num_per_prompt} human responses"] += len(responses)
            continue
        chosen = _pick_gold_indices(pool_key, len(responses), num_per_prompt, seed)
        if len(responses) > num_per_prompt:
            skipped[f"gold: test responses not drawn (only {num_per_prompt} per prompt)"] += len(responses) - num_per_prompt
        gold.texts[pool_key] = [responses[i][1] for i in chosen]
        gold.quality[pool_key] = [None] * num_per_prompt
        gold.prompts[pool_key] = prompts[pool_key]
        gold.original_ids[pool_key] = original_ids[pool_key]
    if not gold.texts:
        raise InputError(prepared_dir, f"no test prompt with at least {num_per_prompt} human responses for the gold row")
    return gold


def read_pool_texts(prepared_dir: str | Path, split: str | None = "test") -> dict[str, list[str]]:
    """Every human response of each pool of a prepared folder (of one split, or all), in file order."""
    path = Path(prepared_dir) / "responses.jsonl"
    if not path.is_file():
        raise InputError(path, "not found (centrality and modes read the human responses of a `divtune prepare` folder)")
    pools: dict[str, list[str]] = {}
    for lineno, obj in iter_jsonl(path):
        for key in ("pool_id", "split", "text"):
            if not isinstance(obj, dict) or key not in obj:
                raise InputError(path, "missing required field", line=lineno, field=key)
        if split is None or obj["split"] == split:
            pools.setdefault(str(obj["pool_id"]), []).append(obj["text"])
    return pools


def resolve_typical_mode(cfg: EvaluateConfig) -> str:
    """``typical_mode`` as given, else the most common mode of all human responses of the gold folder."""
    from divtune.modes import MODES, most_common_mode

    if cfg.typical_mode is not None:
        if cfg.typical_mode not in MODES:
            raise ConfigError(f"typical_mode {cfg.typical_mode!r} is not one of {list(MODES)}")
        return cfg.typical_mode
    if not cfg.gold:
        raise ConfigError("modes: give --gold (its human responses define the typical mode) or typical_mode")
    return most_common_mode(t for texts in read_pool_texts(cfg.gold, split=None).values() for t in texts)


def length_matched_gold(gold: System, systems: list[System], tokenizer) -> System:
    """The gold row with each human text cut to the samples' length in tokens, prompt by prompt.

    The length of a prompt is the median token count (``tokenizer``, no special
    tokens) of every system's samples for that prompt, so human stories and
    model openings are compared at the same length. Texts shorter than that stay whole.
    """
    matched = System(name=GOLD_MATCHED, source=gold.source, is_gold=True)
    for key, texts in gold.texts.items():
        samples = [t for s in systems if not s.is_gold for t in s.texts.get(key, [])]
        if not samples:
            continue
        target = int(np.median([len(ids) for ids in tokenizer(samples, add_special_tokens=False)["input_ids"]]))
        cut = [tokenizer.decode(ids[:target], skip_special_tokens=True).strip()
               for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        matched.texts[key] = cut
        matched.origins[key] = list(texts)
        matched.quality[key] = [None] * len(cut)
        matched.prompts[key] = gold.prompts[key]
        matched.original_ids[key] = gold.original_ids[key]
    return matched


def _unique_system_names(systems: list[System]) -> None:
    """Generation files naming the same model (or ``gold``) get ``name (file stem)`` so none overwrites another."""
    generated = [s for s in systems if not s.is_gold]
    counts = Counter(s.name for s in generated)
    for system in generated:
        if counts[system.name] > 1 or system.name in (GOLD, GOLD_MATCHED):
            system.name = f"{system.name} ({Path(system.source).name.split('.')[0]})"
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise ConfigError(f"system names collide even after adding file stems: {names}; rename the files")


# ---------------------------------------------------------------- computing


def embed_unique(texts: list[str], spec: str, cache_dir: str | None, batch_size: int) -> dict[str, np.ndarray]:
    """Embed each distinct text once (one batched call for all systems)."""
    from divtune.embedders import load_embedder

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
    from divtune.reward.online import cosine_judge, partition_classes

    judge = cosine_judge(threshold)
    values = np.full(len(groups), np.nan)
    for i, group in enumerate(groups):
        if group:
            values[i] = float(len(np.unique(partition_classes(judge(np.stack([table[t] for t in group]))))))
    return values


def chatbot_share_per_prompt(groups: list[list[str]]) -> np.ndarray:
    """Share of each prompt's samples that open like a chatbot reply (divtune.chatbot)."""
    from divtune.chatbot import chatbot_share

    return np.array([chatbot_share(group) for group in groups], dtype=np.float64)


def mode_values_per_prompt(groups: list[list[str]], typical: str) -> dict[str, np.ndarray]:
    """Typical-mode share, mode entropy (bits) and modes seen, per prompt (divtune.modes)."""
    from divtune.modes import MODES, opening_mode

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


def _json_number(value: float) -> float | None:
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
        low, high = metrics.bootstrap_ci(per_prompt, n_boot=n_boot, seed=seed)
        row[key] = _json_number(mean)
        row[f"{key}_ci"] = [_json_number(low), _json_number(high)]
    return row


def _score_quality(systems: list[System], reward_dir: str) -> None:
    """Fill missing qualities with the reward model, in one batched call over all systems."""
    from divtune.reward.model import RewardModel

    todo: list[tuple[System, str, int]] = [
        (s, k, i) for s in systems for k, qs in s.quality.items() for i, q in enumerate(qs) if q is None
    ]
    if not todo:
        return
    model = RewardModel.load(reward_dir)
    scores = np.asarray(
        model.score([s.prompts[k] for s, k, _ in todo], [s.texts[k][i] for s, k, i in todo], show_progress=True)
    )
    for (system, key, i), score in zip(todo, scores):
        system.quality[key][i] = float(score)


def _resolve_threshold(cfg: EvaluateConfig, systems: list[System]) -> float | None:
    if cfg.quality_threshold is not None:
        return cfg.quality_threshold
    # Default anchor: the median human (gold) response, i.e. "as good as a typical human story";
    # without gold, the median over all evaluated samples.
    gold = [s for s in systems if s.is_gold and s.has_quality()]
    pool = gold or [s for s in systems if s.has_quality()]
    scores = [q for s in pool for qs in s.quality.values() for q in qs]
    return float(np.median(scores)) if scores else None


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

    systems = [read_generations(path) for path in cfg.generations]
    gold_matching = None
    if cfg.gold:
        sample_counts = Counter(len(t) for s in systems for t in s.texts.values())
        num_gold = cfg.num_gold or (sample_counts.most_common(1)[0][0] if sample_counts else 4)
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
        matched = None
        if cfg.gold_matched:
            from divtune.models import load_tokenizer

            matched = length_matched_gold(gold, systems, load_tokenizer(cfg.gold_matched))
        systems.append(gold)
        if matched is not None:
            systems.append(matched)
    elif cfg.gold_matched:
        raise ConfigError("gold_matched needs --gold (the human texts to cut)")
    _unique_system_names(systems)

    for system in systems:
        for key in [k for k, t in system.texts.items() if len(t) < 2]:
            skipped[f"{system.name}: prompts with fewer than 2 samples"] += 1
            for table in (system.texts, system.quality, system.prompts):
                table.pop(key, None)
        if not system.texts:
            raise InputError(system.source, "no prompt with at least 2 samples: diversity is undefined")

    if cfg.reward:
        require_prompt_texts(systems)
        _score_quality(systems, cfg.reward)
    threshold = _resolve_threshold(cfg, systems)
    if cfg.centrality and not cfg.gold:
        raise ConfigError("centrality: give --gold (a prepared folder whose test responses are the pools)")
    pools = read_pool_texts(cfg.gold, split=cfg.gold_split) if cfg.centrality else None
    typical_mode = resolve_typical_mode(cfg) if cfg.modes else None

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
            line.update({m: _json_number(values[m][i]) for m in ordered_metric_keys(values)})
            per_prompt_rows.append(line)

    claim.begin()
    write_json(output / "metrics.json", results)
    if typical_mode is not None:
        from divtune.modes import mode_counts

        write_json(output / MODES_FILE, {
            "typical_mode": typical_mode,
            "counts": {s.name: mode_counts(t for texts in s.texts.values() for t in texts) for s in systems},
        })
    write_jsonl(output / "per_prompt.jsonl", per_prompt_rows)
    cfg.save(output / "config.yaml")
    summary = {
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
    write_json(output / "summary.json", summary)
    claim.finish({"systems": list(results)})
    return results


def _claim_output(cfg: EvaluateConfig, overwrite: bool):
    """The output rule (settings + input stamps); an unknown embedder fails later, before any write."""
    from divtune.outputs import claim_output_dir, stamped

    settings = {k: v for k, v in cfg.to_dict().items() if k not in ("output", "embed_cache_dir")}
    return claim_output_dir(cfg.output, "evaluate", stamped(settings, [*cfg.generations, cfg.gold, cfg.reward]), overwrite)
