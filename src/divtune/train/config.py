"""``TrainConfig``: the typed settings of ``divtune train`` and how they become
the keyword arguments of TRL's ``DPOConfig`` / ``ORPOConfig`` / ``SFTConfig``.

Precedence, lowest first: TrainingArguments defaults < TRL config defaults <
divtune's device defaults (fp32 and no gradient checkpointing on CPU, bf16 on
capable GPUs) < the paper's per-method defaults (lr, epochs, schedule) <
``training:`` in YAML / ``--set``.

``--set`` routing rule: a top-level key that is not a ``TrainConfig`` field but
is a field of Hugging Face ``TrainingArguments`` (or of TRL's DPO/ORPO/SFT
configs) is moved into ``training``. So ``--set max_steps=5`` and
``--set training.max_steps=5`` mean the same; a key that is neither is an error.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, Literal, Optional

from pydantic import Field, field_validator, model_validator

from divtune.config import ConfigError, StageConfig, did_you_mean
from divtune.methods import METHOD_NAMES, METHODS, Family, MethodName, names
from divtune.train.devices import device_defaults, gpu_option_problem, precision_defaults
from divtune.train.lora import LoraSettings
from divtune.train.online_config import OnlineConfig
from divtune.train.training_args import checked_training_values
from divtune.train.trl_field_table import _config_class, config_field_names

#: The probe settings: how many train and held-out pairs, and every how many steps.
PROBE_PAIR_SETTINGS = ("probe_pairs", "probe_heldout_pairs")
PROBE_SETTINGS = (*PROBE_PAIR_SETTINGS, "probe_steps")

#: divtune's own defaults for every method (overridable): log every step so
#: metrics.jsonl has one line per optimizer step, keep two checkpoints for --resume.
COMMON_DEFAULTS: dict[str, Any] = {
    "logging_steps": 1,
    "save_strategy": "steps",
    "save_steps": 100,
    "save_total_limit": 2,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 4,
    "report_to": ["tensorboard"],
    "dataloader_num_workers": 0,
}


class TrainConfig(StageConfig):
    #: GPU options added after runs were recorded: at their defaults a run loads its model as before.
    LATE_SETTINGS: ClassVar[tuple[str, ...]] = ("attn_implementation", "dtype", "quantization")

    method: MethodName = "ddpo"
    #: Prepared data: a folder with ``train.jsonl`` (``divtune prepare``) or a JSONL file.
    data: str = ""
    #: Base model: hub id, local folder, ``.gguf`` file or the ``smollm2`` alias.
    model: str = "smollm2"
    output: str = ""
    #: Start from an SFT adapter folder or a full model folder (DPO/ORPO family).
    init: str | None = None
    #: Compute the reference log-probs once before training and drop the reference.
    precompute_ref: bool = False
    #: With ``precompute_ref``: keep those log-probs in an on-disk cache keyed by the
    #: reference weights, the tokenised pairs and max_length, so every run with the
    #: same reference (other methods, other seeds) reads them instead (train/ref_cache.py).
    ref_cache: bool = True
    #: Where that cache lives (default: the divtune cache's ``ref_logps`` folder).
    ref_cache_dir: str | None = None
    #: With ``lora.last_layers`` and ``precompute_ref`` (DPO family): the frozen embedding and
    #: layers below the adapted ones give the same hidden states at every step, so compute
    #: them once per pair row (with the reference pass), keep them on disk like the reference
    #: log-probs, and run only the adapted layers at each step (train/prefix_cache.py).
    #: ``None`` (auto): off for a run on its own, since filling the cache costs more than a
    #: run shorter than a few epochs saves; ``divtune experiment`` turns it on for pairs that
    #: several DPO-family runs share (measured break-even: benchmarks/bench_train_speed.py).
    prefix_cache: Optional[bool] = None
    #: Where that cache lives (default: the divtune cache's ``prefix_hidden`` folder).
    prefix_cache_dir: str | None = None
    #: Probes (DPO family): implicit-reward accuracy, margin and log-prob change on a
    #: fixed set of this many *train* pairs (the same pairs for every method and seed)...
    probe_pairs: int = Field(0, ge=0)
    #: ...and on up to this many held-out pairs (``test.jsonl`` of the prepared folder),
    probe_heldout_pairs: int = Field(0, ge=0)
    #: evaluated at the start, every ``probe_steps`` steps (default: 8 times a run) and at the end.
    probe_steps: int | None = Field(None, ge=1)
    beta: float = 0.1
    orpo_lambda: float = 0.25
    dorpo_mode: Literal["outside", "released"] = "outside"
    #: Which tokens the ORPO NLL term covers: prompt + chosen (TRL and the
    #: released code) or the chosen completion only.
    orpo_nll_tokens: Literal["full", "completion"] = "full"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    #: Longest prompt + completion in tokens. Completions are cut to fit (counted);
    #: pairs whose prompt alone leaves no room for one completion token are dropped (counted).
    #: ``None``: the device's default (``DEFAULT_MAX_LENGTH``), written resolved into config.yaml.
    max_length: int | None = Field(None, ge=2)
    resume: bool = False
    #: Also checkpoint whenever this many minutes passed since the last checkpoint (0: only every
    #: ``save_steps``). ``None``: 10 on CPU, off on a GPU (train/save_by_time.py).
    save_minutes: Optional[float] = Field(None, ge=0)
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: Attention kernel of the policy (transformers' ``attn_implementation``): ``eager``,
    #: ``sdpa``, ``flex_attention``, ``flash_attention_2`` or ``flash_attention_3``
    #: (the flash kernels need a CUDA GPU and the flash-attn package). None: transformers' default.
    attn_implementation: Optional[str] = None
    #: Dtype the policy's weights are loaded in. ``auto``: bf16 on GPUs that support it
    #: (fp32 elsewhere) for a LoRA base, fp32 master weights for full fine-tuning.
    #: ``bfloat16`` with full fine-tuning trains the bf16 weights themselves
    #: (about half the memory; mixed precision is then off unless ``training.bf16`` says otherwise).
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    #: QLoRA: load the frozen base quantised by bitsandbytes (``4bit``: NF4 with double
    #: quantisation, ``8bit``: LLM.int8), LoRA only, CUDA only (``pip install 'divtune[qlora]'``).
    quantization: Literal["none", "4bit", "8bit"] = "none"
    #: Reward model folder for the online methods (grpo, dqo, darling).
    reward: str | None = None
    online: OnlineConfig = Field(default_factory=OnlineConfig)
    #: Also log to Weights & Biases (only if ``wandb`` is installed).
    wandb: bool = False
    trust_remote_code: bool = False
    #: Hugging Face ``TrainingArguments`` / TRL config fields, passed through as they are.
    training: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def setting_names(cls) -> frozenset[str]:
        # A misspelt pass-through key (max_step) is as likely as a misspelt divtune one.
        return frozenset(cls.model_fields) | passthrough_field_names()

    @model_validator(mode="before")
    @classmethod
    def _route_training_arguments(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        own = set(cls.model_fields)
        stray = [key for key in data if key not in own]
        if stray:
            known = passthrough_field_names()
            data = dict(data)
            training = dict(data.get("training") or {})
            for key in stray:
                if key in known:
                    training[key] = data.pop(key)
            data["training"] = training
        if isinstance(data.get("training"), dict):
            # Types of pass-through values are checked now, not when TRL's config is built after the model loaded.
            data = {**data, "training": checked_training_values(data["training"])}
        return data

    @model_validator(mode="after")
    def _settings_fit_the_method(self) -> "TrainConfig":
        # Refused when the settings are read, not after the model has loaded.
        probes = [name for name in PROBE_PAIR_SETTINGS if getattr(self, name)]
        if probes and METHODS[self.method].family is not Family.DPO:
            raise ValueError(
                f"{', '.join(probes)}: probes are implemented for {', '.join(names(family=Family.DPO))}, not {self.method}"
            )
        problem = gpu_option_problem(self)
        if problem:
            raise ValueError(problem)
        misfits = sorted(set(self.training) - method_field_names(self.method))
        if misfits:
            raise ValueError(
                f"training.{', training.'.join(misfits)}: not a field of {method_config_name(self.method)}, "
                f"which trains method {self.method}"
            )
        return self

    @field_validator("training")
    @classmethod
    def _check_training_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - passthrough_field_names())
        if unknown:
            hints = "".join(did_you_mean(name, passthrough_field_names()) for name in unknown[:1])
            raise ValueError(f"not TrainingArguments/TRL config fields: {', '.join(unknown)}{hints}")
        reserved = sorted(set(value) & RESERVED_TRAINING_KEYS)
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)} are set by divtune; use the top-level settings "
                "(output, seed, max_length, beta, orpo_lambda, precompute_ref) instead"
            )
        return value


#: TrainingArguments/TRL names divtune derives from its own top-level fields.
RESERVED_TRAINING_KEYS = frozenset(
    {"output_dir", "seed", "max_length", "beta", "precompute_ref_log_probs", "loss_type", "completion_only_loss"}
)


@functools.lru_cache(maxsize=1)
def passthrough_field_names() -> frozenset[str]:
    """Field names of TrainingArguments and TRL's DPO/ORPO/SFT/GRPO configs.

    A key that fits none of the chosen method's config is reported when the
    settings are read (e.g. ``temperature`` is a GRPO field, not a DPO one).
    """
    return frozenset().union(*(method_field_names(method) for method in METHOD_NAMES))


def method_config_name(method: str) -> str:
    """The name of the TRL config class that trains ``method`` (the online methods train through GRPO)."""
    return METHODS[method].trl_config_name


def method_config_class(method: str):
    """The TRL config class that trains ``method`` (imports TRL)."""
    return _config_class(method_config_name(method))


@functools.lru_cache(maxsize=None)
def method_field_names(method: str) -> frozenset[str]:
    """The ``training`` keys ``method`` accepts: its TRL config's fields (TrainingArguments' included),
    from the shipped table (divtune.train.trl_field_table): no TRL import."""
    return config_field_names(method_config_name(method))


def resolved_training(cfg: TrainConfig, device: str) -> dict[str, Any]:
    """The TrainingArguments overrides of this run: divtune defaults, then the user's."""
    if METHODS[cfg.method].online:
        raise ConfigError(f"unknown offline method {cfg.method!r}; expected one of {', '.join(names(online=False))}")
    merged: dict[str, Any] = {}
    merged.update(COMMON_DEFAULTS)
    merged.update(device_defaults(device))
    merged.update(precision_defaults(cfg, device))
    merged.update(METHODS[cfg.method].paper_defaults)
    merged.update(cfg.training)
    return merged


def trl_config_kwargs(cfg: TrainConfig, device: str) -> dict[str, Any]:
    """Everything the TRL config of ``cfg.method`` is built from."""
    kwargs = resolved_training(cfg, device)
    if "activation_checkpointing" not in kwargs:
        # transformers 5 renamed gradient_checkpointing; the new name avoids its FutureWarning on every run.
        kwargs["activation_checkpointing"] = bool(kwargs.pop("gradient_checkpointing", False))
    kwargs["output_dir"] = cfg.output
    kwargs["seed"] = cfg.seed
    kwargs["max_length"] = cfg.max_length
    family = METHODS[cfg.method].family
    if family is Family.DPO:
        kwargs["beta"] = cfg.beta
        kwargs["precompute_ref_log_probs"] = cfg.precompute_ref
    elif family is Family.ORPO:
        # TRL's ORPOConfig calls the paper's lambda ``beta``.
        kwargs["beta"] = cfg.orpo_lambda
    elif family is Family.SFT:
        kwargs["completion_only_loss"] = True
    return kwargs
