"""What the device decides in a train run: its default sizes and precision, and the GPU options.

The device (``auto`` resolved once torch is imported), ``max_length`` and the CPU batch
when none is set, fp32 / bf16 defaults, the dtype the policy loads in, the bitsandbytes
config of QLoRA, and the checks of ``attn_implementation`` / ``dtype`` / ``quantization``:
when the settings are read (no torch import) and again once the device is known.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Any

from divtune.config import ConfigError
from divtune.models import default_dtype

if TYPE_CHECKING:
    from divtune.train.config import TrainConfig

#: ``attn_implementation`` values divtune accepts (transformers 5.23 knows these for Llama-like models).
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flex_attention", "flash_attention_2", "flash_attention_3")
#: The module each flash-attention kernel imports (transformers can also fetch it through ``kernels``).
FLASH_ATTN_MODULES = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}
FLASH_ATTN_INSTALL = {
    "flash_attention_2": "pip install flash-attn --no-build-isolation",
    "flash_attention_3": "build flash-attn's hopper/ package (FlashAttention-3, H100-class GPUs)",
}
QLORA_INSTALL = "pip install 'divtune[qlora]' (or: pip install bitsandbytes)"


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def gpu_option_problem(cfg: "TrainConfig") -> str | None:
    """Why ``attn_implementation`` / ``dtype`` / ``quantization`` do not fit the rest of ``cfg``, or None.

    Checked when the settings are read, without importing torch: the values, that a
    4/8-bit base is only for LoRA, that CPU runs get no flash attention and no bitsandbytes,
    and that the packages they need are installed. (``device: auto`` on a machine without a
    GPU is refused by :func:`check_gpu_options` once the device is resolved.)
    """
    attn = cfg.attn_implementation
    if attn is not None:
        if attn not in ATTN_IMPLEMENTATIONS:
            return f"attn_implementation: expected one of {', '.join(ATTN_IMPLEMENTATIONS)} (or null), got {attn!r}"
        if attn in FLASH_ATTN_MODULES:
            if cfg.device == "cpu":
                return f"attn_implementation={attn} needs a CUDA GPU; on CPU use sdpa or eager"
            if not (_installed(FLASH_ATTN_MODULES[attn]) or _installed("kernels")):
                return f"attn_implementation={attn} needs the {FLASH_ATTN_MODULES[attn]} module: {FLASH_ATTN_INSTALL[attn]}"
    if cfg.quantization != "none":
        q = cfg.quantization
        if not cfg.lora.enabled:
            return (
                f"quantization={q} (QLoRA) quantises the frozen base under a LoRA adapter; "
                "full fine-tuning (lora.enabled=false) cannot train quantised weights"
            )
        if cfg.device == "cpu":
            return f"quantization={q} (bitsandbytes QLoRA) needs a CUDA GPU; on CPU use quantization=none"
        if not _installed("bitsandbytes"):
            return f"quantization={q} needs bitsandbytes, which is not installed: {QLORA_INSTALL}"
    if cfg.dtype == "float16" and not cfg.lora.enabled and cfg.training.get("fp16") is True:
        return (
            "dtype=float16 with full fine-tuning and training.fp16=true: fp16 mixed precision needs fp32 "
            "master weights to unscale; use dtype=float32 (or auto) with fp16, or leave fp16 off"
        )
    return None


DEEPSPEED_INSTALL = "pip install 'divtune[deepspeed]' (or: pip install deepspeed)"


def check_gpu_options(cfg: "TrainConfig", device: str) -> None:
    """The GPU options once the device is known: flash attention and bitsandbytes need CUDA, and a
    launch with a DeepSpeed accelerate config needs DeepSpeed (one line instead of a traceback from
    inside TrainingArguments)."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() in ("1", "true") and not _installed("deepspeed"):
        raise ConfigError(
            f"this run was launched with a DeepSpeed accelerate config, but deepspeed is not installed: {DEEPSPEED_INSTALL}"
        )
    if device != "cpu":
        return
    if cfg.attn_implementation in FLASH_ATTN_MODULES:
        raise ConfigError(
            f"attn_implementation={cfg.attn_implementation} needs a CUDA GPU and none is available; use sdpa or eager"
        )
    if cfg.quantization != "none":
        raise ConfigError(
            f"quantization={cfg.quantization} (bitsandbytes QLoRA) needs a CUDA GPU and none is available; "
            "use quantization=none"
        )


def weights_dtype(cfg: "TrainConfig", device: str):
    """The torch dtype the policy loads in (the compute dtype of a quantised base).

    ``auto``: full fine-tuning keeps fp32 master weights; a LoRA base (quantised or not)
    is bf16 on GPUs that support it and fp32 elsewhere.
    """
    import torch  # heavy

    if cfg.dtype != "auto":
        return getattr(torch, cfg.dtype)
    if not cfg.lora.enabled:
        return torch.float32
    return default_dtype(device)


def precision_defaults(cfg: "TrainConfig", device: str) -> dict[str, Any]:
    """Mixed-precision defaults that follow ``dtype`` on a GPU (over :func:`device_defaults`).

    Full fine-tuning of 16-bit weights trains them as they are (mixed precision off: bf16
    autocast adds nothing to bf16 weights, and fp16's gradient scaler refuses fp16 weights).
    A LoRA base in float16 gets fp16 mixed precision, one in bfloat16 bf16 (the adapter
    itself stays fp32). ``training.bf16`` / ``training.fp16`` still override these.
    """
    if device == "cpu" or cfg.dtype in ("auto", "float32"):
        return {}
    if not cfg.lora.enabled:
        return {"bf16": False, "fp16": False}
    return {"bf16": cfg.dtype == "bfloat16", "fp16": cfg.dtype == "float16"}


def quantization_config(cfg: "TrainConfig", device: str):
    """transformers' BitsAndBytesConfig for ``cfg.quantization`` (None for ``none``)."""
    if cfg.quantization == "none":
        return None
    try:
        # heavy
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError(f"quantization={cfg.quantization} needs bitsandbytes, which is not installed: {QLORA_INSTALL}") from None
    from transformers import BitsAndBytesConfig  # heavy

    if cfg.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    dtype = weights_dtype(cfg, device)
    extra = {}
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true"):
        # FSDP flattens the packed 4-bit weights with the other parameters: they must share a dtype.
        extra["bnb_4bit_quant_storage"] = dtype
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype,
        **extra,
    )


#: ``max_length`` when none is set. On CPU it is the quickstart's size, so the
#: defaults fit a 16 GB machine (measured peak in docs/train.md); 1024 with a
#: batch of 4 needed over 24 GB there.
DEFAULT_MAX_LENGTH = {"cpu": 128, "cuda": 1024}
#: Per-device batch on CPU when none is set: the quickstart's.
CPU_BATCH_SIZE = 2


def device_defaults(device: str) -> dict[str, Any]:
    """fp32, no gradient checkpointing and the quickstart's batch on CPU (TRL defaults bf16 +
    checkpointing, ~10x slower there); bf16 and checkpointing on capable GPUs."""
    import torch  # heavy

    if device == "cpu":
        return {
            "use_cpu": True, "bf16": False, "fp16": False, "gradient_checkpointing": False,
            "per_device_train_batch_size": CPU_BATCH_SIZE,
        }
    bf16 = default_dtype(device) == torch.bfloat16
    return {"bf16": bf16, "fp16": False, "gradient_checkpointing": True}


def resolve_device(cfg: "TrainConfig") -> str:
    import torch  # heavy

    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda was asked for but no CUDA device is available")
    return cfg.device


def with_device_sizes(cfg: "TrainConfig", device: str) -> "TrainConfig":
    """``cfg`` with ``max_length`` resolved to the device default when it was left unset."""
    if cfg.max_length is not None:
        return cfg
    return cfg.model_copy(update={"max_length": DEFAULT_MAX_LENGTH["cpu" if device == "cpu" else "cuda"]})


def settle_device(cfg: "TrainConfig") -> tuple["TrainConfig", str]:
    """The device of a run, checked against the GPU options, and ``cfg`` with its sizes resolved for it."""
    device = resolve_device(cfg)
    check_gpu_options(cfg, device)
    return with_device_sizes(cfg, device), device
