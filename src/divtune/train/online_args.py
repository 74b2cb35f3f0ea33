"""The GRPOConfig of an online run: divtune's defaults, the device's, ``training`` and ``online``."""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

from divtune.train.config import COMMON_DEFAULTS
from divtune.train.devices import device_defaults, precision_defaults
from divtune.train.online_config import OnlineConfig

#: divtune's online defaults (over TrainConfig's common ones): one prompt's group per
#: device micro-batch, 4 prompts per optimizer step, and a LoRA-sized learning rate
#: (TRL's GRPO default 1e-6 barely moves an adapter).
ONLINE_DEFAULTS: dict[str, Any] = {"gradient_accumulation_steps": 4, "learning_rate": 1e-5, "num_train_epochs": 1}
#: GRPOConfig fields that OnlineConfig owns; setting them under ``training`` is an error.
ONLINE_OWNED_KEYS = frozenset({"num_generations", "beta", "max_completion_length", "use_vllm"})


def grpo_config_kwargs(cfg: Any, device: str) -> dict[str, Any]:
    """Keyword arguments of TRL's GRPOConfig for ``cfg``.

    Precedence, lowest first: TrainConfig's common defaults < device defaults
    (fp32 and no checkpointing on CPU; TRL's GRPOConfig would default to bf16
    and checkpointing) < ONLINE_DEFAULTS < ``cfg.training`` < OnlineConfig.
    """
    online: OnlineConfig = cfg.online
    training = dict(getattr(cfg, "training", None) or {})
    clash = sorted(ONLINE_OWNED_KEYS & training.keys())
    if clash:
        raise ValueError(f"set {clash} under `online` (num_generations, kl_beta, ...), not under `training`")
    kwargs: dict[str, Any] = {**COMMON_DEFAULTS, **device_defaults(device), **ONLINE_DEFAULTS}
    if hasattr(cfg, "dtype"):
        kwargs.update(precision_defaults(cfg, device))
    kwargs["per_device_train_batch_size"] = online.num_generations
    kwargs.update(training)
    # transformers 5 renamed gradient_checkpointing; passing the new name avoids TRL's
    # default of True for the old one silently winning.
    kwargs["activation_checkpointing"] = bool(kwargs.pop("gradient_checkpointing", False))
    use_vllm = bool(online.use_vllm and device.startswith("cuda") and _vllm_installed())
    if online.use_vllm and not use_vllm:
        warnings.warn("use_vllm requested but vLLM is not installed or no GPU is used; generating with transformers")
    if use_vllm:
        kwargs.setdefault("vllm_mode", "colocate")
        kwargs.setdefault("vllm_max_model_length", getattr(cfg, "max_length", None))
    kwargs.update(
        output_dir=str(cfg.output),
        seed=int(getattr(cfg, "seed", 0) or 0),
        num_generations=online.num_generations,
        beta=online.kl_beta,
        max_completion_length=online.max_completion_length,
        use_vllm=use_vllm,
    )
    return kwargs


def build_grpo_config(cfg: Any, device: str):
    from trl import GRPOConfig  # heavy

    return GRPOConfig(**grpo_config_kwargs(cfg, device))


def _vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None
