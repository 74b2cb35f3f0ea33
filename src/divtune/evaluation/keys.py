"""The names an evaluation folder uses: the human rows, the metric keys (metrics.json,
per_prompt.jsonl) and the modes file."""

from __future__ import annotations

#: The human row: a seeded draw of each prompt's human responses.
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
#: With ``modes``: the typical mode and every system's mode counts.
MODES_FILE = "modes.json"


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
