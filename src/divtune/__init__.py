"""divtune: post-train language models for creative text that is good and diverse.

The public API, imported on first use so that ``import divtune`` stays cheap
(no torch, transformers or TRL until a name that needs them is touched):

- trainers, TRL-style: :class:`DeviationDPOConfig` / :class:`DeviationDPOTrainer`
  (DDPO) and :class:`DeviationORPOConfig` / :class:`DeviationORPOTrainer` (DORPO);
- weights: :func:`add_deviation_weights` (a TRL preference dataset) and
  :func:`deviation_weights` (one pool's embeddings);
- metrics on texts: :func:`semantic_diversity`, :func:`style_diversity`,
  :func:`vendi_score`, :func:`distinct_n`, :func:`self_bleu`,
  :func:`compression_ratio` and :func:`diversity_report`;
- :func:`load_embedder`.

The formulas are in docs/method.md; library use in docs/library.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "DeviationDPOConfig": "divtune.train.trainer_configs",
    "DeviationORPOConfig": "divtune.train.trainer_configs",
    "DeviationDPOTrainer": "divtune.train.trainers",
    "DeviationORPOTrainer": "divtune.train.trainers",
    "add_deviation_weights": "divtune.weighting",
    "deviation_weights": "divtune.deviation",
    "semantic_diversity": "divtune.diversity",
    "style_diversity": "divtune.diversity",
    "vendi_score": "divtune.diversity",
    "distinct_n": "divtune.diversity",
    "self_bleu": "divtune.diversity",
    "compression_ratio": "divtune.diversity",
    "diversity_report": "divtune.diversity",
    "load_embedder": "divtune.embedders",
}

__all__ = ["__version__", *sorted(_LAZY)]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from divtune.deviation import deviation_weights
    from divtune.diversity import (
        compression_ratio, distinct_n, diversity_report, self_bleu, semantic_diversity, style_diversity, vendi_score,
    )
    from divtune.embedders import load_embedder
    from divtune.train.trainer_configs import DeviationDPOConfig, DeviationORPOConfig
    from divtune.train.trainers import DeviationDPOTrainer, DeviationORPOTrainer
    from divtune.weighting import add_deviation_weights


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'divtune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
