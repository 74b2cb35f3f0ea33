"""The policy of a train run: the model to train (base, ``init`` adapter or model; dtype,
attention kernel, QLoRA base) and its tokenizer.

``divtune.models`` is called through the module, so tests can stand in for its loaders.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from divtune import models
from divtune.methods import METHODS, Family
from divtune.train.devices import quantization_config, weights_dtype

if TYPE_CHECKING:
    from divtune.train.config import TrainConfig

logger = logging.getLogger(__name__)


def policy_tokenizer(cfg: "TrainConfig"):
    """The tokenizer of the policy (``init``'s when there is one), padding on the left."""
    return models.load_tokenizer(cfg.init or cfg.model, trust_remote_code=cfg.trust_remote_code, padding_side="left")


def sharded_loading() -> bool:
    """Whether ``from_pretrained`` now loads partitioned weights (DeepSpeed ZeRO-3) or, on all ranks but
    the first, meta weights (FSDP's ``fsdp_cpu_ram_efficient_loading``): then the model must stay where
    it was loaded. Both are switched on by TrainingArguments under ``accelerate launch``."""
    from transformers.integrations import is_deepspeed_zero3_enabled  # heavy

    try:
        from transformers.distributed.fsdp import is_fsdp_enabled  # heavy
    except ImportError:  # older transformers
        from transformers.modeling_utils import is_fsdp_enabled  # heavy
    return bool(is_deepspeed_zero3_enabled() or is_fsdp_enabled())


def load_policy(cfg: "TrainConfig", device: str, args=None):
    """The model to train and the base spec its adapter belongs to.

    ``init`` adapter: its own base, adapter trainable (DPO then keeps a frozen
    copy as the reference); ``init`` full model: that model is the base.
    Weights load in ``dtype`` (fp32 master weights for full fine-tuning by default),
    with ``attn_implementation``, and quantised by bitsandbytes for QLoRA (then
    prepared with PEFT's ``prepare_model_for_kbit_training``). ``args``, the TRL
    config, should exist already (see :func:`run_train`); its gradient-checkpointing
    setting reaches the k-bit preparation.
    """
    source = models.resolve_model_source(cfg.init) if cfg.init else None
    from_adapter = source is not None and models.is_adapter_dir(source)
    quantization = quantization_config(cfg, device)
    prepare = None
    # TRL's ORPOTrainer prepares a k-bit base itself when it puts the adapter on.
    if quantization is not None and (from_adapter or METHODS[cfg.method].family is not Family.ORPO):
        prepare = functools.partial(prepare_kbit_base, args=args)
    options = dict(
        dtype=weights_dtype(cfg, device),
        device=f"cuda:{_local_cuda_index()}" if quantization is not None else "cpu",
        trust_remote_code=cfg.trust_remote_code,
        attn_implementation=cfg.attn_implementation,
        quantization_config=quantization,
        place=not sharded_loading(),
        prepare_base=prepare,
    )
    logger.info("loading the policy in %s%s%s", options["dtype"],
                f", attention {cfg.attn_implementation}" if cfg.attn_implementation else "",
                f", {cfg.quantization} base" if quantization is not None else "")
    if from_adapter:
        return models.load_causal_lm(source, adapter_trainable=True, **options), models.adapter_base_spec(source)
    if source is not None:
        return models.load_causal_lm(source, **options), cfg.init
    return models.load_causal_lm(cfg.model, **options), cfg.model


def _local_cuda_index() -> int:
    """This process's GPU: its local rank under a launcher, else 0."""
    from accelerate import PartialState  # heavy

    return PartialState().local_process_index


def prepare_kbit_base(model, args=None):
    """PEFT's preparation of a quantised base for training an adapter on it: frozen base, norms and
    embeddings in fp32, input gradients on (and gradient checkpointing when ``args`` ask for it)."""
    from peft import prepare_model_for_kbit_training  # heavy

    checkpointing = bool(getattr(args, "activation_checkpointing", False) or getattr(args, "gradient_checkpointing", False))
    kwargs = getattr(args, "activation_checkpointing_kwargs", None) or getattr(args, "gradient_checkpointing_kwargs", None)
    return prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=checkpointing, gradient_checkpointing_kwargs=kwargs or {"use_reentrant": False}
    )
