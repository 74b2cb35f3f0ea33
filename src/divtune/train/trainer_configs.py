"""The public trainer configs: TRL's ``DPOConfig`` / ``ORPOConfig`` plus the
settings of deviation weighting (docs/method.md §3-4).

Every setting of :class:`divtune.DeviationDPOTrainer` and
:class:`divtune.DeviationORPOTrainer` is a field here, so the classes work with
TRL's ``TrlParser`` / ``HfArgumentParser`` and YAML like TRL's own configs.

CPU-sane defaults: TRL's configs default to bf16 and gradient checkpointing,
which make a step on a CPU many times slower (docs/train.md). When no
accelerator is available and ``bf16`` / ``gradient_checkpointing`` are left
unset, these configs use fp32 and no checkpointing; on a GPU they keep TRL's
defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from trl import DPOConfig

from divtune.train.trl_orpo import import_orpo

ORPOConfig = import_orpo().ORPOConfig

DORPO_MODES = ("outside", "released")
NLL_TOKENS = ("full", "completion")

_WEIGHT_COLUMN_HELP = (
    "Dataset column with each pair's weight (float, finite, >= 0), e.g. from divtune.add_deviation_weights. "
    "None: every pair weighs 1, which is exactly TRL's loss (plain DPO / ORPO)."
)
_CHECKPOINTING_HELP = (
    "Gradient checkpointing. None (default): TRL's default (on) when an accelerator is available, off on a CPU, "
    "where it makes every step slower and saves memory a CPU rarely lacks."
)


def _accelerator_available() -> bool:
    import torch  # heavy

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


def _cpu_sane_defaults(config) -> None:
    """fp32 and no gradient checkpointing on a CPU, where the user left them unset.

    The setting is resolved onto transformers' new name, ``activation_checkpointing``;
    the deprecated ``gradient_checkpointing`` then mirrors it without a FutureWarning.
    """
    on_cpu = config.use_cpu or not _accelerator_available()
    if config.activation_checkpointing is None:
        asked = config.gradient_checkpointing
        config.activation_checkpointing = (not on_cpu) if asked is None else bool(asked)
        config.gradient_checkpointing = None
    if on_cpu and config.bf16 is None and not config.fp16:
        config.bf16 = False
    if on_cpu:
        # Pinned memory only speeds up copies to an accelerator; without one torch just warns.
        config.dataloader_pin_memory = False


def _check_weight_column(config) -> None:
    column = config.weight_column
    if column is not None and (not isinstance(column, str) or not column.strip()):
        raise ValueError(f"{type(config).__name__}.weight_column: expected a column name or None, got {column!r}")


def _check_choice(config, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise ValueError(f"{type(config).__name__}.{name}: expected one of {', '.join(choices)}, got {value!r}")


@dataclass
class DeviationDPOConfig(DPOConfig):
    """``trl.DPOConfig`` for :class:`divtune.DeviationDPOTrainer` (DDPO: docs/method.md §4).

    Every TRL field keeps its meaning. Only the sigmoid loss with reverse KL is
    implemented (TRL's defaults); the trainer refuses other ``loss_type`` values.
    """

    weight_column: Optional[str] = field(default="weight", metadata={"help": _WEIGHT_COLUMN_HELP})
    ref_cache_dir: Optional[str] = field(
        default=None,
        metadata={
            "help": "With precompute_ref_log_probs: a folder where the reference log-probs are kept, keyed by the "
            "reference weights, the tokenised pairs and the lengths, so a later run with the same reference "
            "(another method, another seed) reads them instead of recomputing. None: no cache."
        },
    )
    ref_cache_model_id: Optional[str] = field(
        default=None,
        metadata={
            "help": "With ref_cache_dir: a string that identifies the reference model by its files (path or Hub id "
            "with a hash of the weight files, the init adapter's files, the dtype), e.g. from "
            "divtune.train.ref_cache.model_identity; it goes into the cache key with the model config and dtype. "
            "None: the key hashes the reference parameters on the main process, which is not ZeRO-3 safe "
            "(sharded parameters are empty there, so two models could share a key)."
        },
    )
    prefix_cache_layer: Optional[int] = field(
        default=None,
        metadata={
            "help": "With precompute_ref_log_probs and LoRA on the last layers only: the first adapted layer. The "
            "hidden states entering it never change, so they are computed once per pair and each step runs only "
            "the adapted layers (same losses to float32 rounding). None: off."
        },
    )
    prefix_cache_dir: Optional[str] = field(
        default=None,
        metadata={"help": "Where the frozen-prefix hidden states are kept (None: divtune's cache folder)."},
    )
    gradient_checkpointing: Optional[bool] = field(default=None, metadata={"help": _CHECKPOINTING_HELP})

    def __post_init__(self):
        _check_weight_column(self)
        if self.prefix_cache_layer is not None and (
            isinstance(self.prefix_cache_layer, bool) or not isinstance(self.prefix_cache_layer, int)
            or self.prefix_cache_layer < 0
        ):
            raise ValueError(
                f"DeviationDPOConfig.prefix_cache_layer: expected a layer index >= 0 or None, got {self.prefix_cache_layer!r}"
            )
        _cpu_sane_defaults(self)
        super().__post_init__()


@dataclass
class DeviationORPOConfig(ORPOConfig):
    """TRL's experimental ``ORPOConfig`` for :class:`divtune.DeviationORPOTrainer` (DORPO: docs/method.md §4).

    ``beta`` is the paper's lambda (the weight of the odds-ratio term), as in TRL.
    """

    weight_column: Optional[str] = field(default="weight", metadata={"help": _WEIGHT_COLUMN_HELP})
    dorpo_mode: str = field(
        default="outside",
        metadata={
            "help": "How the weight enters the loss. 'outside': w x the whole ORPO loss of the pair (default). "
            "'released': the odds-ratio term uses log sigmoid(w x log-odds) and the NLL term is scaled by the "
            "batch-mean weight, as in the paper's released code.",
            "choices": list(DORPO_MODES),
        },
    )
    nll_tokens: str = field(
        default="full",
        metadata={
            "help": "Tokens the NLL term covers: 'full' (prompt + chosen, as TRL and the released code) or "
            "'completion' (the chosen response only).",
            "choices": list(NLL_TOKENS),
        },
    )
    gradient_checkpointing: Optional[bool] = field(default=None, metadata={"help": _CHECKPOINTING_HELP})
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Kept False: the weight column must reach the collator (TRL's ORPO collator needs it too)."},
    )

    def __post_init__(self):
        _check_weight_column(self)
        _check_choice(self, "dorpo_mode", DORPO_MODES)
        _check_choice(self, "nll_tokens", NLL_TOKENS)
        _cpu_sane_defaults(self)
        super().__post_init__()


def checked_weight(value, column: str, row: int, where: str) -> float:
    """``value`` as a float, or a one-line error naming the dataset, row and column."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} row {row}, column {column!r}: expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where} row {row}, column {column!r}: a weight must be finite and >= 0, got {value!r}")
    return value
