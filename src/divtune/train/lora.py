"""LoRA in a train run: the ``lora:`` settings and the PEFT ``LoraConfig`` they become.

``last_layers`` puts the adapter on the last N transformer layers only, which needs
the model to count its layers and explicit module names (PEFT's rule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from divtune.config import ConfigError, StageConfig

if TYPE_CHECKING:
    from divtune.train.config import TrainConfig


class LoraSettings(StageConfig):
    enabled: bool = True
    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    #: ``all-linear`` (PEFT's shortcut) or a list of module names, e.g. ``[q_proj, v_proj]``.
    target_modules: str | list[str] = "all-linear"
    #: Adapt only the last N transformer layers (None: all). Backpropagation then
    #: stops below them: on SmolLM2-135M (30 layers) a LoRA step over the last 8
    #: was 2x faster on the 2-core CPU than over all 30 (benchmarks/bench_train.py).
    last_layers: int | None = Field(None, ge=1)


def lora_config(cfg: "TrainConfig", model=None):
    """PEFT's LoraConfig of ``cfg.lora``; ``model`` is needed to resolve ``last_layers``."""
    from peft import LoraConfig  # heavy

    target_modules, layers = cfg.lora.target_modules, None
    if cfg.lora.last_layers is not None:
        if model is None:
            raise ValueError("lora.last_layers needs the model to count its layers")
        target_modules, layers = last_layer_targets(model, cfg.lora.target_modules, cfg.lora.last_layers)
    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=target_modules,
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )


def last_layer_targets(model, target_modules: str | list[str], last: int) -> tuple[list[str], list[int]]:
    """Module names and layer indices that put LoRA on the last ``last`` transformer layers.

    PEFT takes ``layers_to_transform`` only with explicit module names, so
    ``all-linear`` becomes the names of the linear layers inside the blocks.
    """
    import torch  # heavy

    n_layers = getattr(model.config, "num_hidden_layers", None)
    if not n_layers:
        raise ConfigError("lora.last_layers: the model config has no num_hidden_layers")
    if last > n_layers:
        raise ConfigError(f"lora.last_layers={last} but the model has {n_layers} layers")
    if target_modules == "all-linear":
        target_modules = sorted({
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}."
        })
    elif isinstance(target_modules, str):
        target_modules = [target_modules]
    return list(target_modules), list(range(n_layers - last, n_layers))
