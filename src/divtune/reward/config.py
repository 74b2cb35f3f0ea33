"""Settings of ``divtune reward train`` and the validation figure they stop training on."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from divtune.config import StageConfig


class RewardTrainConfig(StageConfig):
    """Settings of ``divtune reward train``."""

    data: str
    output: str
    backbone: str = "minilm"
    backbone_kind: Literal["auto", "encoder", "sequence_classification"] = "auto"
    freeze_backbone: bool = True
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    max_length: int = Field(256, ge=8)
    #: l1: regress the compressed vote (the paper); pairwise: Bradley-Terry on within-prompt pairs.
    objective: Literal["l1", "pairwise"] = "l1"
    #: Pairwise objective: every within-prompt pair with different votes (all), or only the
    #: gap pairs of train.jsonl (gap).
    train_pairs: Literal["all", "gap"] = "all"
    #: auto: val_l1 for the l1 objective, val_pairwise_accuracy for pairwise.
    early_stopping: Literal["auto", "val_l1", "val_pairwise_accuracy"] = "auto"
    head_hidden: int = Field(256, ge=0)
    learning_rate: float = 1e-3
    backbone_learning_rate: float = 2e-5
    batch_size: int = Field(32, ge=1)
    max_epochs: int = Field(30, ge=1)
    patience: int = Field(3, ge=1)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    max_train_responses: int | None = Field(None, ge=2)
    #: Also evaluate on every test response cut to its first N words: with N at most
    #: prepare's min_words (100) chosen and rejected are equally long, so length cannot
    #: help, and the texts are as long as the samples an evaluation scores. null: skip.
    eval_opening_words: int | None = Field(100, ge=1)
    seed: int = 0
    bootstrap_samples: int = Field(2000, ge=1)
    device: str | None = None
    trust_remote_code: bool = False
    show_progress: bool = True


def early_stopping_metric(cfg: RewardTrainConfig) -> str:
    """The validation figure training stops on: the one that matches the objective unless set."""
    if cfg.early_stopping != "auto":
        return cfg.early_stopping
    return "val_pairwise_accuracy" if cfg.objective == "pairwise" else "val_l1"
