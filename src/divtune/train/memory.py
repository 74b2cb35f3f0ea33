"""Peak-memory estimate of a CPU training run, checked before the model loads.

A new user's first ``divtune train`` must not be killed by the kernel minutes
later. Before any weights load, the model's shape is read from its config (the
model is built on the ``meta`` device: no memory), and the peak resident
memory of the run is estimated as

    peak = process
         + P x 4                              weights (fp32 on CPU)
         + P x 4                              reference copy (full fine-tuning of DPO-family /
                                              online methods without precompute_ref; LoRA disables
                                              the adapter instead)
         + T x (4 + 4 + 8)  LoRA / T x 12     trainable weights, gradients and Adam's two moments
         + B x S x L x 4 x A x (V + n x (h + i))   activations

with P parameters, T trainable parameters, B ``per_device_train_batch_size``,
S sequences per example (2 for chosen + rejected, 1 for SFT and online
samples), L ``max_length``, V the vocabulary, n layers, h the hidden and i the
MLP size. ``A`` (floats kept per unit, covering logits, their log-softmax and
gradients, and each layer's saved tensors) and ``process`` (Python, torch,
transformers, TRL, tokenizer and data) were measured on the shipped
SmolLM2-135M with real DDPO steps by ``benchmarks/bench_train_memory.py``
(see docs/train.md). Padding makes real batches at most ``L`` long, so the
estimate is an upper bound for the sizes measured there.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

from divtune.config import ConfigError
from divtune.methods import METHODS, Family
from divtune.models import adapter_base_spec, is_adapter_dir, resolve_model_source

GIB = 1024**3

#: Floats kept per token per activation unit (V + n(h + i)). benchmarks/bench_train_memory.py
#: fitted 7.6 on SmolLM2 (3.3 MiB per token, batches of 256 to 4,096 tokens); rounded up to
#: 8.5 so longer sequences, whose attention grows with L^2, stay under the estimate.
ACTIVATION_FLOATS_PER_UNIT = 8.5
#: Python, torch, transformers, TRL, datasets, tokenizer and data, before model and batch.
#: The same fit leaves under 0.5 GiB beside the model's own bytes; 0.75 GiB keeps a margin.
PROCESS_BYTES = int(0.75 * GIB)


@dataclass(frozen=True)
class ModelShape:
    parameters: int
    vocab: int
    layers: int
    hidden: int
    intermediate: int
    #: (module name, in_features, out_features) of every nn.Linear except the output layer.
    linears: tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    reference: int
    trainable_state: int
    activations: int
    process: int

    @property
    def total(self) -> int:
        return self.weights + self.reference + self.trainable_state + self.activations + self.process

    def describe(self) -> str:
        parts = [
            f"weights {_gib(self.weights)}",
            f"reference copy {_gib(self.reference)}" if self.reference else None,
            f"trainable weights, gradients and Adam state {_gib(self.trainable_state)}",
            f"activations {_gib(self.activations)}",
            f"process {_gib(self.process)}",
        ]
        return f"{_gib(self.total)} (" + ", ".join(p for p in parts if p) + ")"


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


@functools.lru_cache(maxsize=4)  # the memory check and the duration estimate of one run share it
def model_shape(source: str, trust_remote_code: bool = False) -> ModelShape:
    """Parameter count and layer sizes of a causal LM, built on the meta device (no weights loaded)."""
    import torch  # heavy
    from accelerate import init_empty_weights  # heavy
    from transformers import AutoConfig, AutoModelForCausalLM  # heavy

    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    model.tie_weights()  # on the meta device the output layer is not tied yet: count shared weights once
    output = model.get_output_embeddings()
    linears = tuple(
        (name, module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not output
    )
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return ModelShape(
        parameters=sum(p.numel() for p in model.parameters()),
        vocab=int(text.vocab_size),
        layers=int(text.num_hidden_layers),
        hidden=int(text.hidden_size),
        intermediate=int(getattr(text, "intermediate_size", 4 * text.hidden_size)),
        linears=linears,
    )


def lora_parameters(shape: ModelShape, r: int, target_modules: str | list[str]) -> int:
    """Trainable LoRA parameters: r x (in + out) per targeted linear layer (PEFT's name matching)."""
    if target_modules == "all-linear":
        targets = shape.linears
    else:
        names = [target_modules] if isinstance(target_modules, str) else list(target_modules)
        targets = tuple(t for t in shape.linears if any(t[0] == n or t[0].endswith(f".{n}") for n in names))
    return sum(r * (fan_in + fan_out) for _, fan_in, fan_out in targets)


def estimate_peak(
    shape: ModelShape,
    *,
    batch: int,
    max_length: int,
    sequences_per_example: int,
    lora_r: int | None,
    lora_targets: str | list[str] = "all-linear",
    reference_copy: bool = False,
) -> MemoryEstimate:
    """Peak resident memory of one CPU training step (fp32), by the formula of this module's docstring."""
    weights = shape.parameters * 4
    if lora_r is not None:
        trainable = lora_parameters(shape, lora_r, lora_targets)
        state = trainable * (4 + 4 + 8)
    else:
        trainable = shape.parameters
        state = trainable * (4 + 8)
    units = shape.vocab + shape.layers * (shape.hidden + shape.intermediate)
    tokens = batch * sequences_per_example * max_length
    activations = int(tokens * 4 * ACTIVATION_FLOATS_PER_UNIT * units)
    return MemoryEstimate(
        weights=weights,
        reference=weights if reference_copy else 0,
        trainable_state=state,
        activations=activations,
        process=PROCESS_BYTES,
    )


def available_memory() -> int:
    """Memory this process can still use: the kernel's MemAvailable, or the cgroup limit if lower."""
    import psutil  # heavy

    available = psutil.virtual_memory().available
    limit = _cgroup_limit()
    if limit is not None:
        used = _cgroup_usage() or 0
        available = min(available, max(limit - used, 0))
    return int(available)


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_limit() -> int | None:
    return _read_int("/sys/fs/cgroup/memory.max") or _read_int("/sys/fs/cgroup/memory/memory.limit_in_bytes")


def _cgroup_usage() -> int | None:
    return _read_int("/sys/fs/cgroup/memory.current") or _read_int("/sys/fs/cgroup/memory/memory.usage_in_bytes")


def local_processes() -> int:
    """Training processes on this machine (torchrun / accelerate set LOCAL_WORLD_SIZE); each holds a copy."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)


def fitting_settings(
    shape: ModelShape, budget: int, *, batch: int, max_length: int, **kwargs: Any
) -> dict[str, int] | None:
    """The largest batch (then max_length, halved down to 64) whose estimate fits ``budget``, or None."""
    length = max_length
    while length >= 64:
        for b in range(batch, 0, -1):
            if estimate_peak(shape, batch=b, max_length=length, **kwargs).total <= budget:
                return {"per_device_train_batch_size": b, "max_length": length}
        length //= 2
    return None


def estimate_options(cfg: Any) -> dict[str, Any]:
    """The estimate_peak keywords that a TrainConfig fixes (all but batch and max_length)."""

    method = METHODS[cfg.method]
    online = method.online
    lora = cfg.lora.enabled
    if online:
        reference_copy = not lora and cfg.online.kl_beta > 0
    else:
        reference_copy = not lora and method.family is Family.DPO and not cfg.precompute_ref
    return {
        "sequences_per_example": 1 if online or method.family is Family.SFT else 2,
        "lora_r": cfg.lora.r if lora else None,
        "lora_targets": cfg.lora.target_modules,
        "reference_copy": reference_copy,
    }


def check_training_memory(cfg: Any, batch: int, log) -> MemoryEstimate:
    """Refuse a CPU run whose estimated peak exceeds the available memory, suggesting sizes that fit.

    ``cfg`` has ``max_length`` resolved; ``batch`` is the resolved
    per_device_train_batch_size. Loads no weights.
    """
    source = resolve_model_source(cfg.init or cfg.model)
    if is_adapter_dir(source):
        source = resolve_model_source(adapter_base_spec(source))
    shape = model_shape(source, trust_remote_code=cfg.trust_remote_code)
    options = estimate_options(cfg)
    estimate = estimate_peak(shape, batch=batch, max_length=int(cfg.max_length), **options)
    processes = local_processes()
    available = available_memory()
    per_process = f" per process, x {processes} processes" if processes > 1 else ""
    log.info("estimated peak memory: %s%s; %s available", estimate.describe(), per_process, _gib(available))
    if estimate.total * processes <= available:
        return estimate
    sizes = f"{shape.parameters / 1e6:.0f}M parameters, batch {batch}, max_length {cfg.max_length}"
    fit = fitting_settings(shape, available // processes, batch=batch, max_length=int(cfg.max_length), **options)
    if fit is None:
        advice = "even batch 1 at max_length 64 does not fit: use a smaller model or a machine with more memory"
    else:
        advice = (
            f"--set per_device_train_batch_size={fit['per_device_train_batch_size']} "
            f"--set max_length={fit['max_length']} fits"
        )
        if fit["per_device_train_batch_size"] < batch:
            advice += " (raise gradient_accumulation_steps to keep the global batch)"
    raise ConfigError(
        f"train: the estimated peak memory, {estimate.describe()}{per_process}, exceeds the "
        f"{_gib(available)} available ({sizes}); {advice}; --no-memory-check tries anyway"
    )
