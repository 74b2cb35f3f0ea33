"""``EvaluateConfig``: the settings of ``divtune evaluate`` and their checks."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from divtune.config import StageConfig

#: DARLING's default judge (docs/online.md): two samples are one class when their cosine is at least this.
DISTINCT_K_THRESHOLD = 0.9
REQUIRED_EMBEDDERS = ("semantic", "style")


def _default_embedders() -> dict[str, str]:
    from divtune.embedders import DEFAULT_EMBEDDERS  # heavy: loads numpy

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
