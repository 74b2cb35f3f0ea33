"""The TRL config and trainer of an offline method: DeviationDPOConfig/Trainer for the DPO
family, DeviationORPOConfig/Trainer for ORPO/DORPO, SFTConfig/SFTTrainer for SFT, with
divtune's weight column, reference-log-prob and frozen-prefix caches, probes and callbacks.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from typing import TYPE_CHECKING, Any

from divtune.config import ConfigError
from divtune.methods import METHODS, Family
from divtune.train import prefix_cache, ref_cache
from divtune.train.config import trl_config_kwargs
from divtune.train.lora import lora_config
from divtune.train.probes import probe_arguments

if TYPE_CHECKING:
    from divtune.train.config import TrainConfig

logger = logging.getLogger(__name__)


def build_training_args(cfg: "TrainConfig", device: str, n_pairs: int, probes=None):
    """TRL's config of ``cfg.method`` (DeviationDPOConfig / DeviationORPOConfig / SFTConfig).

    Built before the model loads (:func:`run_train`): TrainingArguments set up the
    distributed state and, under DeepSpeed, the ZeRO-3 config the load must see.
    """
    kwargs = trl_config_kwargs(cfg, device)
    if probes:
        kwargs.update(probe_arguments(cfg, kwargs, n_pairs))
    if cfg.wandb:
        kwargs["report_to"] = _with_wandb(kwargs.get("report_to"))
    try:
        if METHODS[cfg.method].family is Family.DPO:
            from divtune.train.trainer_configs import DeviationDPOConfig  # heavy: loads trl

            # prefix_cache_layer needs the model's layer count: build_trainer sets it.
            return DeviationDPOConfig(**kwargs, **dpo_weight_settings(cfg))
        if METHODS[cfg.method].family is Family.ORPO:
            from divtune.train.trainer_configs import DeviationORPOConfig  # heavy: loads trl

            return DeviationORPOConfig(
                **kwargs, weight_column=WEIGHT_COLUMN if METHODS[cfg.method].weighted else None,
                dorpo_mode=cfg.dorpo_mode, nll_tokens=cfg.orpo_nll_tokens,
            )
        from trl import SFTConfig  # heavy

        return SFTConfig(**kwargs)
    except TypeError as err:
        # A training key that the chosen method's TRL config does not have.
        raise ConfigError(f"training settings do not fit method {cfg.method}: {err}") from None


def build_trainer(
    cfg: "TrainConfig", device: str, model, tokenizer, dataset, callbacks: list[Any], probes=None, args=None
):
    """The TRL trainer of ``cfg.method`` with divtune's loss, metrics file and callbacks.

    ``args``: the TRL config from :func:`build_training_args` (built here when not given).
    """
    from peft import PeftModel  # heavy

    from divtune.train.callbacks import EvaluateAtEndCallback, MetricsJsonlCallback  # heavy: loads transformers

    if args is None:
        args = build_training_args(cfg, device, len(dataset), probes)
    if probes:
        callbacks = [*callbacks, EvaluateAtEndCallback()]
    peft_config = lora_config(cfg, model) if cfg.lora.enabled and not isinstance(model, PeftModel) else None
    common = dict(
        model=model,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[MetricsJsonlCallback(cfg.output), *callbacks],
    )
    if probes:
        common["eval_dataset"] = probes
    if METHODS[cfg.method].family is Family.DPO:
        from divtune.train.trainers import DeviationDPOTrainer  # heavy: loads torch

        prefix = prefix_cache_settings(cfg, model)
        args.prefix_cache_layer, args.prefix_cache_dir = prefix.layer, prefix.cache_dir
        if args.ref_cache_dir is not None:
            args.ref_cache_model_id = reference_identity(cfg, model)
        trainer = DeviationDPOTrainer(args=args, **common)
        if prefix.off is not None:
            trainer.prefix_cache_record = prefix_cache.new_record(None, prefix.off)
        return trainer
    if METHODS[cfg.method].family is Family.ORPO:
        from divtune.train.trainers import DeviationORPOTrainer  # heavy: loads torch

        return DeviationORPOTrainer(args=args, **common)
    from trl import SFTTrainer  # heavy

    return SFTTrainer(args=args, **common)


#: The column of the prepared pairs that holds each pair's weight (train/data.py writes it).
WEIGHT_COLUMN = "weight"


def dpo_weight_settings(cfg: "TrainConfig") -> dict[str, Any]:
    """The weight column (DDPO only) and the reference-log-prob cache folder of a DPO-family run."""
    cache_dir = None
    if cfg.precompute_ref and cfg.ref_cache:
        cache_dir = cfg.ref_cache_dir or str(ref_cache.default_cache_dir())
    return {"weight_column": WEIGHT_COLUMN if METHODS[cfg.method].weighted else None, "ref_cache_dir": cache_dir}


def reference_identity(cfg: "TrainConfig", model) -> str | None:
    """The reference model of a DPO-family run, for the reference cache key: the files it was loaded from
    (``init``, else ``model``: ref_cache.model_identity) and its dtype. None when the files cannot be told
    (the trainer then hashes the parameters).

    Hashing weight files takes a while for a large local model, so the main process does it and broadcasts
    the result (the process group exists: the trainer config has set up accelerate's state).
    """
    from accelerate import PartialState  # heavy
    from accelerate.utils import broadcast_object_list  # heavy

    identity: list[str | None] = [None]
    if PartialState().is_main_process:
        files = ref_cache.model_identity(cfg.init or cfg.model)
        if files is not None:
            dtype = str(next(model.parameters()).dtype)
            identity = [json.dumps({"model": files, "dtype": dtype}, sort_keys=True)]
    return broadcast_object_list(identity, from_process=0)[0]


def prefix_cache_settings(cfg: "TrainConfig", model):
    """Whether the config asks for the frozen-prefix cache (train/prefix_cache.py), from which layer, where.

    The model itself is checked when the trainer is built; a refusal is recorded
    in PREFIX_CACHE_FILE with its reason and the run trains the normal way.
    """
    off = None
    if cfg.prefix_cache is None:
        off = "prefix_cache not set (auto: off for a run on its own; experiments turn it on for shared pairs)"
    elif not cfg.prefix_cache:
        off = "prefix_cache=false"
    elif not cfg.lora.enabled:
        off = "full fine-tuning (every layer trains)"
    elif cfg.lora.last_layers is None:
        off = "lora.last_layers is not set (every layer is adapted)"
    elif not cfg.precompute_ref:
        off = "precompute_ref=false (the cache is filled with the reference pass)"
    if off is not None:
        logger.info("frozen-prefix cache not used: %s", off)
        return prefix_cache.PrefixCacheSettings(off=off)
    layer = int(model.config.num_hidden_layers) - cfg.lora.last_layers
    cache_dir = cfg.prefix_cache_dir or str(prefix_cache.default_cache_dir())
    return prefix_cache.PrefixCacheSettings(layer=layer, cache_dir=cache_dir)


def _with_wandb(report_to: Any) -> list[str]:
    targets = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if importlib.util.find_spec("wandb") is None:
        logger.warning("wandb=true but wandb is not installed; logging to %s only", targets)
        return targets
    return [*targets, "wandb"] if "wandb" not in targets else targets
