"""Deviation weights for a dataset in TRL's preference format (docs/method.md §3).

:func:`add_deviation_weights` is the library form of what ``divtune prepare``
writes into ``train.jsonl``: a *pool* is the rows that share a prompt, its
responses are the distinct chosen and rejected texts of those rows, and each
row's weight is the weight of its chosen response within its pool.

    dataset = add_deviation_weights(dataset, embedders=["minilm", "stylometric"])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from divtune.deviation import deviation_weights
from divtune.embedders import DEFAULT_EMBEDDERS, check_embedder_spec, load_embedder
from divtune.resources import cache_root

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


def default_embed_cache_dir() -> Path:
    """The on-disk embedding cache that ``divtune prepare`` and ``evaluate`` use too."""
    return cache_root() / "embeddings"


def embed_texts(
    texts: Sequence[str],
    embedders: Mapping[str, str],
    cache_dir: str | Path | None,
    batch_size: int,
    show_progress: bool,
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """One batched call per embedder over ``texts``: {name: (n, d) unit rows} and what each call did."""
    matrices: dict[str, np.ndarray] = {}
    info: dict[str, dict[str, Any]] = {}
    for name, spec in embedders.items():
        embedder = load_embedder(spec, cache_dir=cache_dir)
        matrices[name] = embedder.embed(list(texts), batch_size=batch_size, show_progress=show_progress)
        info[name] = {"spec": spec, "id": embedder.name, "texts": len(texts), "computed": embedder.last_computed}
    return matrices, info


def named_embedders(embedders: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    """``["minilm", "stylometric"]`` or ``{"semantic": "minilm", ...}`` -> {name: spec}."""
    if isinstance(embedders, str):
        raise TypeError(f"embedders: expected a list of embedder names or a mapping, got the string {embedders!r}")
    named = dict(embedders) if isinstance(embedders, Mapping) else {str(spec): spec for spec in embedders}
    if not named:
        raise ValueError("embedders: at least one embedder is needed for deviation weights")
    for name, spec in named.items():
        check_embedder_spec(spec, name)
    return named


def response_text(value: Any, column: str, row: int) -> str:
    """The text of a ``chosen``/``rejected`` cell: plain text, or the contents of a conversational message list."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, Mapping) and "content" in m for m in value):
        parts = [m["content"] for m in value]
        if all(isinstance(part, str) for part in parts):
            return "\n".join(parts)
    raise ValueError(
        f"row {row}, column {column!r}: expected text or a list of messages with text 'content', got {value!r:.80}"
    )


def prompt_key(value: Any, row: int) -> str:
    """A hashable key of a ``prompt`` cell (text, or a conversational message list)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    raise ValueError(f"row {row}, column 'prompt': expected text or a list of messages, got {value!r:.80}")


def pool_rows(prompts: Sequence[Any]) -> dict[str, list[int]]:
    """Rows of each pool (rows sharing a prompt), pools in order of first appearance."""
    pools: dict[str, list[int]] = {}
    for row, prompt in enumerate(prompts):
        pools.setdefault(prompt_key(prompt, row), []).append(row)
    return pools


def weights_for_rows(
    chosen: Sequence[str],
    rejected: Sequence[str],
    pools: Mapping[str, list[int]],
    vectors: Mapping[str, Mapping[str, np.ndarray]],
    floor: float,
) -> np.ndarray:
    """Each row's weight: its chosen text's weight among the distinct texts of its pool.

    ``vectors``: {embedder name: {text: embedding}}. A pool whose rows hold a
    single distinct text is refused (its chosen and rejected are the same).
    """
    weights = np.empty(len(chosen), dtype=np.float64)
    for rows in pools.values():
        members = list(dict.fromkeys(text for row in rows for text in (chosen[row], rejected[row])))
        if len(members) < 2:
            raise ValueError(
                f"row {rows[0]}: every response of this prompt's pool ({len(rows)} rows) is the same text, "
                "so it has no deviation and no preference; drop those rows"
            )
        embeddings = {name: np.stack([table[text] for text in members]) for name, table in vectors.items()}
        _, member_weights = deviation_weights(embeddings, floor=floor)
        position = {text: i for i, text in enumerate(members)}
        for row in rows:
            weights[row] = member_weights[position[chosen[row]]]
    return weights


def add_deviation_weights(
    dataset,
    embedders: Sequence[str] | Mapping[str, str] = tuple(DEFAULT_EMBEDDERS.values()),
    *,
    weight_floor: float = 0.0,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    weight_column: str = "weight",
    show_progress: bool = False,
):
    """``dataset`` (TRL preference format) with a float column of deviation weights.

    Args:
        dataset: a ``datasets.Dataset`` with ``prompt``, ``chosen`` and ``rejected``, as
            plain text or conversational message lists (``[{"role": ..., "content": ...}]``).
        embedders: embedder specs, combined by geometric mean (docs/method.md §3):
            ``minilm`` (shipped), ``stylometric`` (built in), ``mpnet`` where installed, a
            sentence-transformers folder or a Hub id. A mapping {name: spec} works too.
        weight_floor: lift every weight to at least this, keeping the pool mean at 1 (0: as published).
        batch_size: texts per embedding batch.
        cache_dir: the on-disk embedding cache (default: the one ``divtune prepare`` uses).
        weight_column: the name of the new column (``DeviationDPOConfig.weight_column``).
        show_progress: progress bars while embedding.

    Each pool (rows with the same prompt) gets weights with mean 1 over its
    distinct responses, the same numbers ``divtune prepare`` writes for the same pools.
    """
    names = getattr(dataset, "column_names", None)
    if names is None:
        raise TypeError(f"dataset: expected a datasets.Dataset, got {type(dataset).__name__}")
    missing = [column for column in PREFERENCE_COLUMNS if column not in names]
    if missing:
        raise ValueError(
            f"dataset has no column {', '.join(repr(c) for c in missing)}; a preference dataset needs "
            f"prompt, chosen and rejected (its columns: {', '.join(names)})"
        )
    if weight_column in names:
        raise ValueError(f"dataset already has a column {weight_column!r}; pass another weight_column or remove it")
    if not 0.0 <= weight_floor < 1.0:
        raise ValueError(f"weight_floor: expected a number in [0, 1), got {weight_floor!r}")
    specs = named_embedders(embedders)
    chosen = [response_text(value, "chosen", row) for row, value in enumerate(dataset["chosen"])]
    rejected = [response_text(value, "rejected", row) for row, value in enumerate(dataset["rejected"])]
    pools = pool_rows(dataset["prompt"])
    texts = list(dict.fromkeys([*chosen, *rejected]))
    cache = cache_dir if cache_dir is not None else default_embed_cache_dir()
    matrices, _ = embed_texts(texts, specs, cache, batch_size, show_progress)
    vectors = {name: dict(zip(texts, matrix)) for name, matrix in matrices.items()}
    weights = weights_for_rows(chosen, rejected, pools, vectors, weight_floor)
    return dataset.add_column(weight_column, weights.tolist())
