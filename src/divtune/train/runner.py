"""``run_train``: prepared pairs + a base model -> a tuned adapter (or model) in OUTPUT.

OUTPUT holds the adapter/model and tokenizer, ``config.yaml`` (resolved),
``metrics.jsonl``, TensorBoard logs in ``runs/``, ``data_report.json``,
``divtune_base.json`` (the base model spec, so the adapter reloads anywhere),
``checkpoint-*`` folders for ``--resume``, and a done marker written last.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from divtune.config import ConfigError
from divtune.deprecations import quiet_checkpointing_rename
from divtune import prepared
from divtune.io import write_json
from divtune.methods import METHODS
from divtune.train.config import (
    TrainConfig,
    check_gpu_options,
    resolve_device,
    resolved_training,
    trl_config_kwargs,
    with_device_sizes,
)

logger = logging.getLogger(__name__)

DATA_REPORT_FILE = "data_report.json"
#: Whether the reference log-probs came from the on-disk cache, and its key.
REF_CACHE_FILE = "ref_logps.json"
#: Whether the frozen-prefix hidden-state cache was used (or why not), its keys and hits.
PREFIX_CACHE_FILE = "prefix_cache.json"
REF_ADAPTER = "ref"


@quiet_checkpointing_rename()  # PEFT/TRL read transformers' deprecated name (divtune/deprecations.py)
def run_train(
    cfg: TrainConfig, callbacks: list[Any] | None = None, *, overwrite: bool = False, memory_check: bool = True
) -> Path:
    """Train ``cfg.method`` and return the output folder. ``callbacks``: extra TrainerCallbacks.

    The output folder follows divtune.outputs' rule (``overwrite`` replaces a run
    with other settings). On CPU, ``memory_check`` refuses a run whose estimated
    peak memory exceeds what is available (divtune.train.memory).
    """
    if METHODS[cfg.method].online:
        from divtune.train.online import run_online_train

        return run_online_train(cfg, overwrite=overwrite, memory_check=memory_check)
    if not cfg.data:
        raise ConfigError("train: `data` (prepared folder or pairs JSONL) is required")
    if not cfg.output:
        raise ConfigError("train: `output` folder is required")
    device = resolve_device(cfg)
    check_gpu_options(cfg, device)
    cfg = with_device_sizes(cfg, device)
    output = Path(cfg.output)

    from divtune.train import data as pairs_data

    path = prepared.train_file(cfg.data)
    claim, resume_from = claim_train_output(cfg, overwrite)
    if claim.state == "reuse":
        logger.info("%s already holds a finished train run with these settings; reusing it", output)
        return output
    from divtune.train import run_notices

    lost = run_notices.restart_warning(output, run_notices.unfinished_step(output), run_notices.checkpoint_step(resume_from))
    if lost:
        logger.warning(lost)
    pairs_data.check_pairs_kind(cfg.data, cfg.method)
    rows = prepared.read_pairs(path, cfg.method)
    tokenizer = _load_tokenizer(cfg)
    report = pairs_data.DataReport(path=str(path), rows_read=len(rows))
    rows = pairs_data.fit_to_max_length(rows, tokenizer, cfg.max_length, report)
    if report.dropped_long_prompt:
        logger.warning(
            "dropped %d pairs whose prompt alone fills max_length=%d (see %s)",
            len(report.dropped_long_prompt), cfg.max_length, DATA_REPORT_FILE,
        )
    if report.truncated:
        logger.info("%d pairs are longer than max_length=%d and keep their start", report.truncated, cfg.max_length)

    from datasets import Dataset

    chat = pairs_data.has_chat_template(tokenizer)
    dataset = Dataset.from_list(pairs_data.to_trl_rows(rows, cfg.method, chat))
    probes = probe_datasets(cfg, rows, tokenizer, chat)
    if memory_check and device == "cpu":
        from divtune.train.memory import check_training_memory

        check_training_memory(cfg, int(resolved_training(cfg, device)["per_device_train_batch_size"]), logger)
    for notice in run_notices.length_warnings(cfg, device, len(dataset)):
        logger.warning(notice)
    # TRL's config (TrainingArguments) first: creating it sets up the distributed state and, under
    # `accelerate launch` with DeepSpeed, the DeepSpeed config, so that the model load below runs
    # under ZeRO-3's partitioned init or FSDP's low-memory loading instead of as a whole copy per rank.
    args = build_training_args(cfg, device, len(dataset), probes)
    model, base_spec = load_policy(cfg, device, args)
    callbacks = [*(callbacks or []), *run_notices.save_by_time(cfg, device)]
    trainer = build_trainer(cfg, device, model, tokenizer, dataset, callbacks, probes, args=args)
    report.dropped_by_trainer = len(dataset) - len(trainer.train_dataset)
    if report.dropped_by_trainer:
        logger.warning("TRL dropped %d more pairs while tokenising (see %s)", report.dropped_by_trainer, DATA_REPORT_FILE)

    is_main = trainer.is_world_process_zero()
    if is_main:
        claim.begin()
        resolved = cfg.model_copy(update={"training": resolved_training(cfg, device)})
        resolved.save(output / "config.yaml")
        write_json(output / DATA_REPORT_FILE, report.to_dict())
        if getattr(trainer, "ref_cache_record", None):
            write_json(output / REF_CACHE_FILE, trainer.ref_cache_record)
        if getattr(trainer, "prefix_cache_record", None):
            write_json(output / PREFIX_CACHE_FILE, trainer.prefix_cache_record)
        from divtune.train.callbacks import truncate_metrics

        # Resumed: forget lines after the checkpoint (they are redone); started over: all of them.
        truncate_metrics(output, int(Path(resume_from).name.split("-")[-1]) if resume_from is not None else -1)

    trainer.train(resume_from_checkpoint=resume_from)
    save_final(trainer, tokenizer, output, base_spec)
    if is_main and getattr(trainer, "prefix_cache_record", None):
        write_json(output / PREFIX_CACHE_FILE, trainer.prefix_cache_record)  # now with the passes it served
    trainer.accelerator.wait_for_everyone()
    if is_main:
        claim.finish({"method": cfg.method, "global_step": trainer.state.global_step})
    return output


#: Settings that do not change what a training run produces (left out of the reuse check).
#: Settings that change how fast a run goes, not what it computes (the frozen-prefix cache
#: gives the same losses to float32 rounding, tests/test_prefix_cache.py): left out of the
#: settings a finished run is recognised by, so switching them, or upgrading divtune to a
#: version that has them, neither refuses nor redoes a finished run.
SPEED_ONLY_SETTINGS = ("prefix_cache", "prefix_cache_dir", "save_minutes")
UNRECORDED_SETTINGS = ("output", "resume", *SPEED_ONLY_SETTINGS)
def claim_train_output(cfg: TrainConfig, overwrite: bool):
    """The output claim of a train run and the checkpoint to resume from (None: start fresh).

    Same settings and inputs, finished: reused. Unfinished: continued from its
    newest complete checkpoint with ``--resume`` (refused without it, so a
    half-trained run is never silently restarted). Other settings: refused
    unless ``overwrite``.
    """
    from divtune.outputs import claim_output_dir, stamped

    settings = {k: v for k, v in cfg.to_dict().items() if k not in UNRECORDED_SETTINGS}
    inputs = [cfg.data, cfg.init, cfg.model if Path(cfg.model).exists() else None]
    claim = claim_output_dir(cfg.output, "train", stamped(settings, inputs), overwrite)
    if claim.state != "continue":
        return claim, None
    output = Path(cfg.output)
    checkpoints = sorted(output.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    complete = [c for c in checkpoints if (c / "trainer_state.json").is_file()]
    if not cfg.resume:
        if checkpoints:
            raise ConfigError(
                f"{output}: holds checkpoints of an unfinished train run; pass --resume to continue it, "
                "or --overwrite to start over"
            )
        return claim, None
    if not complete:
        logger.info("--resume: no checkpoint in %s yet, starting from scratch", output)
        return claim, None
    return claim, str(complete[-1])


def _load_tokenizer(cfg: TrainConfig):
    from divtune.models import load_tokenizer

    return load_tokenizer(cfg.init or cfg.model, trust_remote_code=cfg.trust_remote_code, padding_side="left")


def sharded_loading() -> bool:
    """Whether ``from_pretrained`` now loads partitioned weights (DeepSpeed ZeRO-3) or, on all ranks but
    the first, meta weights (FSDP's ``fsdp_cpu_ram_efficient_loading``): then the model must stay where
    it was loaded. Both are switched on by TrainingArguments under ``accelerate launch``."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    try:
        from transformers.distributed.fsdp import is_fsdp_enabled
    except ImportError:  # older transformers
        from transformers.modeling_utils import is_fsdp_enabled
    return bool(is_deepspeed_zero3_enabled() or is_fsdp_enabled())


def load_policy(cfg: TrainConfig, device: str, args=None):
    """The model to train and the base spec its adapter belongs to.

    ``init`` adapter: its own base, adapter trainable (DPO then keeps a frozen
    copy as the reference); ``init`` full model: that model is the base.
    Weights load in ``dtype`` (fp32 master weights for full fine-tuning by default),
    with ``attn_implementation``, and quantised by bitsandbytes for QLoRA (then
    prepared with PEFT's ``prepare_model_for_kbit_training``). ``args``, the TRL
    config, should exist already (see :func:`run_train`); its gradient-checkpointing
    setting reaches the k-bit preparation.
    """
    from divtune.models import adapter_base_spec, is_adapter_dir, load_causal_lm, resolve_model_source
    from divtune.train.config import quantization_config, weights_dtype

    source = resolve_model_source(cfg.init) if cfg.init else None
    from_adapter = source is not None and is_adapter_dir(source)
    quantization = quantization_config(cfg, device)
    prepare = None
    # TRL's ORPOTrainer prepares a k-bit base itself when it puts the adapter on.
    if quantization is not None and (from_adapter or METHODS[cfg.method].family != "orpo"):
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
        return load_causal_lm(source, adapter_trainable=True, **options), adapter_base_spec(source)
    if source is not None:
        return load_causal_lm(source, **options), cfg.init
    return load_causal_lm(cfg.model, **options), cfg.model


def _local_cuda_index() -> int:
    """This process's GPU: its local rank under a launcher, else 0."""
    from accelerate import PartialState

    return PartialState().local_process_index


def prepare_kbit_base(model, args=None):
    """PEFT's preparation of a quantised base for training an adapter on it: frozen base, norms and
    embeddings in fp32, input gradients on (and gradient checkpointing when ``args`` ask for it)."""
    from peft import prepare_model_for_kbit_training

    checkpointing = bool(getattr(args, "activation_checkpointing", False) or getattr(args, "gradient_checkpointing", False))
    kwargs = getattr(args, "activation_checkpointing_kwargs", None) or getattr(args, "gradient_checkpointing_kwargs", None)
    return prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=checkpointing, gradient_checkpointing_kwargs=kwargs or {"use_reentrant": False}
    )


def lora_config(cfg: TrainConfig, model=None):
    """PEFT's LoraConfig of ``cfg.lora``; ``model`` is needed to resolve ``last_layers``."""
    from peft import LoraConfig

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
    import torch

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


#: Names of the probe sets in metrics.jsonl: ``eval_train_probe_rewards/accuracies`` etc.
PROBE_SETS = ("train_probe", "heldout")


def probe_datasets(cfg: TrainConfig, rows, tokenizer, chat: bool) -> dict[str, Any] | None:
    """The fixed train-pair probe and the held-out pairs as TRL datasets, or None without probes.

    The train probe is drawn with a fixed seed (0), not the run's seed, so every
    method and seed on the same data is probed on the same pairs.
    """
    if not (cfg.probe_pairs or cfg.probe_heldout_pairs):
        return None
    import numpy as np
    from datasets import Dataset

    from divtune.train import data as pairs_data

    sets = {}
    if cfg.probe_pairs:
        picked = np.sort(np.random.default_rng(0).choice(len(rows), size=min(cfg.probe_pairs, len(rows)), replace=False))
        sets["train_probe"] = [rows[i] for i in picked]
    if cfg.probe_heldout_pairs:
        held_path = prepared.pairs_file(cfg.data, "test")
        if not held_path.is_file():
            raise ConfigError(f"probe_heldout_pairs needs held-out pairs: {held_path} not found")
        held = prepared.read_pairs(held_path, cfg.method)
        held = pairs_data.fit_to_max_length(held, tokenizer, cfg.max_length, pairs_data.DataReport(path=str(held_path)))
        picked = np.sort(np.random.default_rng(0).choice(len(held), size=min(cfg.probe_heldout_pairs, len(held)), replace=False))
        sets["heldout"] = [held[i] for i in picked]
    return {name: Dataset.from_list(pairs_data.to_trl_rows(subset, cfg.method, chat)) for name, subset in sets.items()}


def probe_arguments(cfg: TrainConfig, training: dict[str, Any], n_pairs: int) -> dict[str, Any]:
    """TrainingArguments that evaluate the probes at the start, every ``probe_steps`` and (callback) at the end."""
    import math

    batch = int(training.get("per_device_train_batch_size", 4))
    total = int(training.get("max_steps") or -1)
    if total <= 0:
        per_epoch = math.ceil(n_pairs / (batch * int(training.get("gradient_accumulation_steps", 1))))
        total = math.ceil(per_epoch * float(training.get("num_train_epochs", 3)))
    steps = cfg.probe_steps or max(1, total // 8)
    return {"eval_strategy": "steps", "eval_steps": steps, "eval_on_start": True, "per_device_eval_batch_size": batch}


def build_training_args(cfg: TrainConfig, device: str, n_pairs: int, probes=None):
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
        if METHODS[cfg.method].family == "dpo":
            from divtune.train.trainer_configs import DeviationDPOConfig

            # prefix_cache_layer needs the model's layer count: build_trainer sets it.
            return DeviationDPOConfig(**kwargs, **dpo_weight_settings(cfg))
        if METHODS[cfg.method].family == "orpo":
            from divtune.train.trainer_configs import DeviationORPOConfig

            return DeviationORPOConfig(
                **kwargs, weight_column=WEIGHT_COLUMN if METHODS[cfg.method].weighted else None,
                dorpo_mode=cfg.dorpo_mode, nll_tokens=cfg.orpo_nll_tokens,
            )
        from trl import SFTConfig

        return SFTConfig(**kwargs)
    except TypeError as err:
        # A training key that the chosen method's TRL config does not have.
        raise ConfigError(f"training settings do not fit method {cfg.method}: {err}") from None


def build_trainer(
    cfg: TrainConfig, device: str, model, tokenizer, dataset, callbacks: list[Any], probes=None, args=None
):
    """The TRL trainer of ``cfg.method`` with divtune's loss, metrics file and callbacks.

    ``args``: the TRL config from :func:`build_training_args` (built here when not given).
    """
    from peft import PeftModel

    from divtune.train.callbacks import EvaluateAtEndCallback, MetricsJsonlCallback

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
    if METHODS[cfg.method].family == "dpo":
        from divtune.train.trainers import DeviationDPOTrainer

        prefix = prefix_cache_settings(cfg, model)
        args.prefix_cache_layer, args.prefix_cache_dir = prefix.layer, prefix.cache_dir
        if args.ref_cache_dir is not None:
            args.ref_cache_model_id = reference_identity(cfg, model)
        trainer = DeviationDPOTrainer(args=args, **common)
        if prefix.off is not None:
            from divtune.train.prefix_cache import new_record

            trainer.prefix_cache_record = new_record(None, prefix.off)
        return trainer
    if METHODS[cfg.method].family == "orpo":
        from divtune.train.trainers import DeviationORPOTrainer

        return DeviationORPOTrainer(args=args, **common)
    from trl import SFTTrainer

    return SFTTrainer(args=args, **common)


#: The column of the prepared pairs that holds each pair's weight (train/data.py writes it).
WEIGHT_COLUMN = "weight"


def dpo_weight_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The weight column (DDPO only) and the reference-log-prob cache folder of a DPO-family run."""
    cache_dir = None
    if cfg.precompute_ref and cfg.ref_cache:
        from divtune.train.ref_cache import default_cache_dir

        cache_dir = cfg.ref_cache_dir or str(default_cache_dir())
    return {"weight_column": WEIGHT_COLUMN if METHODS[cfg.method].weighted else None, "ref_cache_dir": cache_dir}


def reference_identity(cfg: TrainConfig, model) -> str | None:
    """The reference model of a DPO-family run, for the reference cache key: the files it was loaded from
    (``init``, else ``model``: ref_cache.model_identity) and its dtype. None when the files cannot be told
    (the trainer then hashes the parameters).

    Hashing weight files takes a while for a large local model, so the main process does it and broadcasts
    the result (the process group exists: the trainer config has set up accelerate's state).
    """
    import json

    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    from divtune.train.ref_cache import model_identity

    identity: list[str | None] = [None]
    if PartialState().is_main_process:
        files = model_identity(cfg.init or cfg.model)
        if files is not None:
            dtype = str(next(model.parameters()).dtype)
            identity = [json.dumps({"model": files, "dtype": dtype}, sort_keys=True)]
    return broadcast_object_list(identity, from_process=0)[0]


def prefix_cache_settings(cfg: TrainConfig, model):
    """Whether the config asks for the frozen-prefix cache (train/prefix_cache.py), from which layer, where.

    The model itself is checked when the trainer is built; a refusal is recorded
    in PREFIX_CACHE_FILE with its reason and the run trains the normal way.
    """
    from divtune.train.prefix_cache import PrefixCacheSettings, default_cache_dir

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
        return PrefixCacheSettings(off=off)
    layer = int(model.config.num_hidden_layers) - cfg.lora.last_layers
    return PrefixCacheSettings(layer=layer, cache_dir=cfg.prefix_cache_dir or str(default_cache_dir()))


def _with_wandb(report_to: Any) -> list[str]:
    import importlib.util

    targets = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if importlib.util.find_spec("wandb") is None:
        logger.warning("wandb=true but wandb is not installed; logging to %s only", targets)
        return targets
    return [*targets, "wandb"] if "wandb" not in targets else targets


def save_final(trainer, tokenizer, output: Path, base_spec: str) -> None:
    """Save the trained adapter/model (without TRL's frozen reference copy) where adapters reload anywhere."""
    from peft import PeftModel

    from divtune.models import make_adapter_portable, write_base_spec

    model = trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(model, PeftModel) and REF_ADAPTER in model.peft_config:
        model.delete_adapter(REF_ADAPTER)
    trainer.save_model(str(output))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(output)
        write_base_spec(output, base_spec)
        make_adapter_portable(output, base_spec)
