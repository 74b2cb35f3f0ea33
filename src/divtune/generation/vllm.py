"""The vLLM backend of ``divtune generate``: what it hands to vLLM, built as plain data, and the run.

Nothing here imports vLLM (or torch) when imported: :func:`build_vllm_request` turns the
prompt token ids that the HF backend also feeds its model
(``divtune.generation.prompts.prompt_token_ids``) and a
:class:`~divtune.generation.config.GenerateConfig` into plain dicts, and :func:`run_vllm`
only constructs ``vllm.LLM(**engine)``, ``SamplingParams(**sampling)`` and
``LoRARequest(**lora)`` from them. So the requests are unit-tested on a machine
without vLLM, and the prompts vLLM sees are token for token those of the HF path:
chat-templated text is never re-tokenised with special tokens added (which gave
Llama-3 prompts two BOS tokens). ``python -m divtune.generation.vllm MODEL`` checks
an environment for this backend (:func:`check_environment`).

- prompts go in as ``{"prompt_token_ids": [...]}``;
- each sample is one request, ``n=1``, seeded with ``sample_seed(seed, prompt_id,
  sample_index)`` as before, with the HF path's decoding settings;
- a LoRA adapter folder is served as a ``LoRARequest`` on its base model (no
  merging, no fp32 copy on the CPU);
- ``max_model_len`` is the longest prompt plus ``max_new_tokens``, rounded up,
  unless set (never the model's own, up to 128k for Llama-3.1, which sizes the
  KV cache for contexts this run never uses).
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from divtune import models
from divtune.config import ConfigError
from divtune.generation.config import GenerateConfig, VLLMSettings
from divtune.generation.plan import sample_seed
from divtune.generation.prompts import Prompt, prompt_token_ids
from divtune.generation.sample_file import append_rows, sample_key, sample_row

logger = logging.getLogger(__name__)

#: ``max_model_len`` is rounded up to a multiple of this.
MODEL_LEN_MULTIPLE = 256
#: The LoRA ranks a vLLM engine can be sized for (``max_lora_rank``; vLLM's ``MaxLoRARanks``).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: ``modules_to_save`` entries vLLM's LoRA loader accepts (classification heads only).
_VLLM_MODULES_TO_SAVE = {"classifier", "score"}


@dataclass(frozen=True)
class ModelPlan:
    """Where vLLM loads from: the base model, the tokenizer and, for an adapter folder, the adapter."""

    base: str
    tokenizer: str
    adapter: str | None = None
    #: The adapter's ``adapter_config.json`` (None without an adapter).
    adapter_config: dict | None = None
    #: The model's context length (``max_position_embeddings`` of its config.json), when known.
    model_max_len: int | None = None


@dataclass
class VLLMRequest:
    """Everything one vLLM run needs, as plain data (JSON-serialisable)."""

    #: Keyword arguments of ``vllm.LLM``.
    engine: dict[str, Any]
    #: Keyword arguments of ``vllm.lora.request.LoRARequest``, or None.
    lora: dict[str, Any] | None
    #: One per sample: ``prompt_index``, ``sample_index``, ``seed``, ``prompt``
    #: (``{"prompt_token_ids": [...]}``) and ``sampling`` (``SamplingParams`` keywords).
    requests: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "lora": self.lora, "requests": self.requests}


def sampling_kwargs(cfg, seed: int) -> dict[str, Any]:
    """``SamplingParams`` keywords with the HF path's decoding settings.

    The HF path samples with ``temperature``, ``top_p``, ``top_k`` (0 = off in
    both) and ``repetition_penalty`` for at most ``max_new_tokens``, and decodes
    greedily at temperature 0, where top-p/top-k do not apply (vLLM's neutral
    values: 1.0 and 0). Special tokens are left out of the text, as the HF path's
    ``decode(skip_special_tokens=True)`` does.
    """
    sampling = cfg.temperature > 0
    return {
        "n": 1,
        "temperature": float(cfg.temperature),
        "top_p": float(cfg.top_p) if sampling else 1.0,
        "top_k": int(cfg.top_k) if sampling else 0,
        "repetition_penalty": float(cfg.repetition_penalty),
        "max_tokens": int(cfg.max_new_tokens),
        "seed": int(seed),
        "skip_special_tokens": True,
    }


def lora_rank_slot(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds an adapter of rank ``rank``."""
    for slot in VLLM_LORA_RANKS:
        if rank <= slot:
            return slot
    raise ConfigError(f"LoRA rank {rank} is above vLLM's largest ({VLLM_LORA_RANKS[-1]}); "
                      "merge the adapter (`divtune export RUN --merge`) or use --backend hf")


def lora_problems(adapter_config: dict) -> list[str]:
    """What in an adapter's ``adapter_config.json`` vLLM's LoRA cannot serve (empty: it can)."""
    problems = []
    if adapter_config.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type {adapter_config.get('peft_type')}")
    if adapter_config.get("use_dora"):
        problems.append("use_dora")
    if adapter_config.get("bias", "none") != "none":
        problems.append(f"bias={adapter_config.get('bias')}")
    if adapter_config.get("lora_bias"):
        problems.append("lora_bias")
    extra = sorted(set(adapter_config.get("modules_to_save") or ()) - _VLLM_MODULES_TO_SAVE)
    if extra:
        problems.append(f"modules_to_save={extra}")
    return problems


def lora_request(plan: ModelPlan) -> dict[str, Any] | None:
    """``LoRARequest`` keywords for the plan's adapter (id 1: one adapter per run), or None."""
    if plan.adapter is None:
        return None
    problems = lora_problems(plan.adapter_config or {})
    if problems:
        raise ConfigError(
            f"{plan.adapter}: vLLM cannot serve this adapter as LoRA ({', '.join(problems)}); "
            "merge it first (`divtune export RUN --output DIR --merge`, then --model DIR) or use --backend hf"
        )
    path = Path(plan.adapter).resolve()
    return {"lora_name": path.name, "lora_int_id": 1, "lora_path": str(path)}


def model_len(prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, settings: VLLMSettings,
              model_max_len: int | None = None) -> int:
    """The engine's ``max_model_len``: set, or the longest prompt plus ``max_new_tokens`` rounded up.

    Rounded up to a multiple of 256 but never past the model's own context;
    a run whose prompts and new tokens do not fit is refused here, in one line,
    rather than by vLLM part-way through.
    """
    longest = max((len(ids) for ids in prompt_ids), default=0)
    needed = longest + max_new_tokens
    if model_max_len is not None and needed > model_max_len:
        raise ConfigError(
            f"the longest prompt ({longest} tokens) plus max_new_tokens ({max_new_tokens}) is {needed} tokens, "
            f"more than the model's context ({model_max_len}); lower max_prompt_tokens or max_new_tokens"
        )
    if settings.max_model_len is not None:
        if settings.max_model_len < needed:
            raise ConfigError(
                f"vllm.max_model_len={settings.max_model_len} is less than the longest prompt ({longest} tokens) "
                f"plus max_new_tokens ({max_new_tokens}) = {needed}; raise it, or unset it to size it from the prompts"
            )
        if model_max_len is not None and settings.max_model_len > model_max_len:
            raise ConfigError(
                f"vllm.max_model_len={settings.max_model_len} is more than the model's context ({model_max_len})"
            )
        return settings.max_model_len
    rounded = math.ceil(needed / MODEL_LEN_MULTIPLE) * MODEL_LEN_MULTIPLE
    if model_max_len is not None:
        rounded = min(rounded, model_max_len)
    return rounded


def engine_kwargs(cfg, plan: ModelPlan, max_model_len: int) -> dict[str, Any]:
    """``vllm.LLM`` keywords: model and tokenizer, dtype, seed, context, parallelism, memory, LoRA slots."""
    settings: VLLMSettings = cfg.vllm
    engine: dict[str, Any] = {
        "model": plan.base,
        "tokenizer": plan.tokenizer,
        "dtype": cfg.dtype,  # "auto": the checkpoint's dtype (fp32 checkpoints in 16-bit), vLLM's rule
        "seed": int(cfg.seed),
        "trust_remote_code": bool(cfg.trust_remote_code),
        "max_model_len": int(max_model_len),
        "tensor_parallel_size": settings.tensor_parallel_size,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
    }
    if plan.adapter is not None:
        rank = int((plan.adapter_config or {}).get("r", 8))
        engine.update(enable_lora=True, max_loras=1, max_lora_rank=lora_rank_slot(rank))
    return engine


def build_vllm_request(
    cfg,
    plan: ModelPlan,
    prompt_ids: Sequence[Sequence[int]],
    items: Sequence[tuple[int, int, int]],
) -> VLLMRequest:
    """The vLLM run of ``items`` = (prompt index, sample_index, seed) over ``prompt_ids``.

    ``prompt_ids`` holds the token ids of every prompt of the run (as the HF path
    feeds them: ``divtune.generation.prompts.prompt_token_ids``); ``max_model_len`` is sized
    from all of them, so a resumed run builds the same engine.
    """
    lora = lora_request(plan)
    engine = engine_kwargs(cfg, plan, model_len(prompt_ids, cfg.max_new_tokens, cfg.vllm, plan.model_max_len))
    requests = [
        {
            "prompt_index": p,
            "sample_index": s,
            "seed": seed,
            "prompt": {"prompt_token_ids": [int(t) for t in prompt_ids[p]]},
            "sampling": sampling_kwargs(cfg, seed),
        }
        for p, s, seed in items
    ]
    return VLLMRequest(engine=engine, lora=lora, requests=requests)


def context_length(model_dir: str | Path) -> int | None:
    """``max_position_embeddings`` of a local model folder's config.json (None when unknown)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    for source in (config, config.get("text_config") or {}):
        value = source.get("max_position_embeddings")
        if isinstance(value, int) and value > 0:
            return value
    return None


def plan_model(spec: str) -> ModelPlan:
    """Resolve a model spec for vLLM (files only: no model is loaded).

    A model folder, hub id, ``.gguf`` file or alias is served as it resolves (GGUF
    files are converted once, as for the HF backend); an adapter folder is served
    on its base model as LoRA. The tokenizer is the one the HF backend loads.
    """
    source = models.resolve_model_source(spec)
    if not models.is_adapter_dir(source):
        return ModelPlan(base=source, tokenizer=source, model_max_len=context_length(source))
    base = models.adapter_base_source(source)
    tokenizer = source if (Path(source) / "tokenizer_config.json").is_file() else base
    adapter_config = json.loads((Path(source) / "adapter_config.json").read_text())
    return ModelPlan(base=base, tokenizer=tokenizer, adapter=source, adapter_config=adapter_config,
                     model_max_len=context_length(base))


def run_vllm(cfg: GenerateConfig, prompts: list[Prompt], done: set, output: Path) -> None:
    """Sample every sample not in ``done`` into ``output``: vLLM objects made from the builder's plain dicts."""
    try:
        from vllm import LLM, SamplingParams  # heavy
        from vllm.lora.request import LoRARequest  # heavy
    except ImportError:
        raise ConfigError(
            "--backend vllm needs vLLM (GPU), which is not installed here; vLLM pins a transformers other than "
            "divtune's, so it gets its own environment: see 'vLLM environment' in docs/generate.md, "
            "or use --backend hf"
        ) from None
    plan = plan_model(cfg.model)
    # The tokenizer and prompt ids of the HF path, so both backends see the same tokens.
    tokenizer = models.load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code, padding_side="left")
    prompt_ids = prompt_token_ids(tokenizer, prompts, cfg)
    items = [(p, s, sample_seed(cfg.seed, prompts[p].prompt_id, s))
             for p in range(len(prompts)) for s in range(cfg.num_samples)
             if sample_key(prompts[p].prompt_id, s) not in done]
    request = build_vllm_request(cfg, plan, prompt_ids, items)
    logger.info("vllm engine: %s", {k: v for k, v in request.engine.items() if k != "trust_remote_code"})
    llm = LLM(**request.engine)
    lora = LoRARequest(**request.lora) if request.lora else None
    # vllm schedules its own batches; chunks only bound how much is lost on interruption.
    chunk = cfg.vllm.chunk_size
    progress = tqdm(total=len(items), desc="generate (vllm)", unit="sample", disable=not cfg.show_progress)
    for start in range(0, len(request.requests), chunk):
        part = request.requests[start : start + chunk]
        results = llm.generate(
            [r["prompt"] for r in part], [SamplingParams(**r["sampling"]) for r in part],
            use_tqdm=False, lora_request=lora,
        )
        rows = [
            sample_row(cfg, prompts[r["prompt_index"]], r["sample_index"], result.outputs[0].text.strip(),
                       r["seed"], len(result.outputs[0].token_ids))
            for r, result in zip(part, results)
        ]
        append_rows(output, rows)
        progress.update(len(rows))
    progress.close()


def check_environment(spec: str, trust_remote_code: bool = False) -> str:
    """Check an environment for ``--backend vllm`` without a GPU; returns a one-line summary.

    Builds the request of a one-prompt run of ``spec`` and makes vLLM's own
    objects from it: ``SamplingParams`` (sampling and greedy), the ``LoRARequest``
    of an adapter, and the engine's model config (``EngineArgs(**engine)
    .create_model_config()``, which reads the model's config and checks
    ``max_model_len`` and ``dtype`` against it). Raises what vLLM raises.
    """
    from vllm import SamplingParams  # heavy
    from vllm.engine.arg_utils import EngineArgs  # heavy
    from vllm.lora.request import LoRARequest  # heavy

    cfg = GenerateConfig(model=spec, prompts="-", output="-", trust_remote_code=trust_remote_code)
    plan = plan_model(spec)
    tokenizer = models.load_tokenizer(spec, trust_remote_code=trust_remote_code, padding_side="left")
    ids = prompt_token_ids(tokenizer, [Prompt(1, "Write a story about a dragon.")], cfg)
    request = build_vllm_request(cfg, plan, ids, [(0, 0, 1)])
    SamplingParams(**request.requests[0]["sampling"])
    SamplingParams(**sampling_kwargs(cfg.model_copy(update={"temperature": 0.0}), 1))
    if request.lora:
        LoRARequest(**request.lora)
    model_config = EngineArgs(**request.engine).create_model_config()
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("vllm", "transformers", "torch"))
    return (f"ok: {versions}; {spec}: {len(ids[0])}-token prompt, max_model_len {model_config.max_model_len}"
            + (f", LoRA rank slot {request.engine['max_lora_rank']}" if request.lora else ""))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m divtune.generation.vllm MODEL``: :func:`check_environment` (see docs/generate.md)."""
    parser = argparse.ArgumentParser(prog="python -m divtune.generation.vllm",
                                     description="Check an environment for `divtune generate --backend vllm`.")
    parser.add_argument("model", help="the --model of the runs to come (folder, adapter folder, .gguf, hub id)")
    parser.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args(argv)
    try:
        print(check_environment(args.model, args.trust_remote_code))
    except ImportError as err:
        print(f"error: vLLM is not importable here ({err}); see 'vLLM environment' in docs/generate.md",
              file=sys.stderr)
        return 1
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
