"""Settings of the online (GRPO-family) methods: grpo, dqo, darling.

Lives in its own module so ``TrainConfig`` (offline methods) can embed it
without importing TRL's GRPO machinery.
"""

from __future__ import annotations

from divtune.config import StageConfig


class OnlineConfig(StageConfig):
    #: Samples per prompt (TRL ``num_generations``); a group is always scored whole.
    num_generations: int = 4
    #: DQO: weight of the DPP log-det gain added to the quality reward (docs/method.md §6).
    alpha: float = 1.0
    #: DARLING: cosine similarity at or above which two samples are "the same".
    darling_threshold: float = 0.9
    #: DARLING: floor of the novelty multiplier (docs/method.md §6).
    darling_floor: float = 0.1
    #: Embedder spec for the diversity terms (see divtune.embedders).
    embedder: str = "minilm"
    #: KL coefficient against the reference policy (TRL ``beta``).
    kl_beta: float = 0.04
    #: Tokens generated per sample during training.
    max_completion_length: int = 64
    #: Use vLLM for generation when it is installed (GPU only).
    use_vllm: bool = False
