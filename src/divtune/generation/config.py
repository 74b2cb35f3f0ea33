"""The settings of ``divtune generate`` (:class:`GenerateConfig`, with the ``vllm.*`` engine settings)
and which of them define the samples a resumed run must agree on."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from divtune.config import StageConfig
from divtune.generation.strategies.prompts import IterativeSettings, VerbalizedSettings

#: Config fields that change which samples are produced: a resumed run must
#: agree with the config already written beside the output on all of them.
SAMPLE_DEFINING_FIELDS = (
    "model",
    "name",
    "prompts",
    "num_samples",
    "max_prompts",
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "seed",
    "use_chat_template",
    "max_prompt_tokens",
    "backend",
    "share_prompt_cache",
    "strategy",
    "prompts_format",
    "prompts_columns",
)
#: Settings of one strategy only: a resumed run must agree on those of its own strategy.
STRATEGY_FIELDS = {"iterative": "iterative", "verbalized": "verbalized"}


class VLLMSettings(StageConfig):
    """``vllm.*`` settings of ``divtune generate`` (``--backend vllm`` only)."""

    #: Context length the engine is sized for; ``None``: the longest prompt plus
    #: ``max_new_tokens``, rounded up to a multiple of 256 (at most the model's own).
    max_model_len: int | None = Field(None, ge=1)
    #: GPUs one model is split across (vLLM tensor parallelism).
    tensor_parallel_size: int = Field(1, ge=1)
    #: Share of each GPU's memory vLLM may take (weights, activations, KV cache).
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    #: Requests handed to vLLM at a time; each chunk is appended and fsync'ed when done,
    #: so an interrupted run loses at most one chunk.
    chunk_size: int = Field(256, ge=1)


class GenerateConfig(StageConfig):
    """Settings of ``divtune generate``; decoding defaults are the paper's (docs/method.md §7)."""

    LATE_SETTINGS: ClassVar[tuple[str, ...]] = ("prompts_format", "prompts_columns")

    model: str
    prompts: str
    output: str
    #: A data file of prompts is read as ``prepare`` reads it: its layout (``--format``) and
    #: column names (``--column NAME=SOURCE``).
    prompts_format: Literal["auto", "reddit", "pools", "flat"] = "auto"
    prompts_columns: dict[str, str] = Field(default_factory=dict)
    name: str | None = None
    num_samples: int = Field(4, ge=1)
    max_prompts: int | None = Field(None, ge=1)
    max_new_tokens: int = Field(256, ge=1)
    #: Prompts longer than this many tokens keep their start (a few Reddit posts
    #: carry a whole story as their text: thousands of tokens that would dominate
    #: the padded batch's prefill). ``null`` keeps every prompt whole.
    max_prompt_tokens: int | None = Field(512, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(50, ge=0)
    repetition_penalty: float = Field(1.1, gt=0.0)
    batch_size: int = Field(16, ge=1)
    seed: int = 0
    backend: Literal["hf", "vllm"] = "hf"
    use_chat_template: bool = True
    #: HF backend: run each distinct prompt of a batch through the model once and
    #: share its KV cache among that prompt's samples, instead of once per sample.
    #: Same outputs under greedy decoding; with 16 samples of a 50-token prompt
    #: and 32 new tokens it was 1.4x faster on a 2-core CPU (benchmarks/bench_generate.py).
    share_prompt_cache: bool = True
    #: ``independent``: every sample on its own (the default); ``iterative``: sample k
    #: sees samples 1..k-1 of its prompt; ``verbalized``: one call asks for several
    #: responses with probabilities (divtune.generation.strategies; docs/generate.md).
    strategy: Literal["independent", "iterative", "verbalized"] = "independent"
    iterative: IterativeSettings = Field(default_factory=IterativeSettings)
    verbalized: VerbalizedSettings = Field(default_factory=VerbalizedSettings)
    #: ``--backend vllm`` engine settings (context length, GPUs, memory; docs/generate.md).
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)
    device: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    show_progress: bool = True
