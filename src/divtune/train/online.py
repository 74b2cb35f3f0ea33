"""Online diversity training (docs/method.md §6): GRPO, DQO and DARLING on TRL's GRPOTrainer.

``run_online_train(cfg)`` is what ``divtune train --method {grpo,dqo,darling}``
calls (through ``divtune.train.run_train``). ``cfg`` is the ``TrainConfig``;
this module reads only: method, data, model, output, reward, seed, device,
lora, max_length, dtype, attn_implementation, quantization, online
(``OnlineConfig``) and training (extra GRPOConfig keys).

Group integrity. TRL calls reward functions on each process's own slice of
the generation batch, and one prompt's G samples may straddle two processes.
The quality reward is per sample, so it stays a normal TRL reward function.
The diversity term needs the whole group, so ``DiversityGRPOTrainer``
overrides ``_calculate_rewards``: after TRL has gathered the quality column
over all processes, each process embeds only its own completions, the
embeddings are gathered the same way (same order), and every process scores
the complete groups (:func:`score_gathered_groups`). TRL then slices the
advantages back to each process as usual.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from divtune.deprecations import quiet_checkpointing_rename
from divtune.io import InputError, iter_jsonl
from divtune.reward.online import group_rewards
from divtune.methods import METHODS, names
from divtune.train.online_config import OnlineConfig

#: ``(prompts, completions) -> (n,) quality``; prompts are the plain prompt texts.
QualityFn = Callable[[list[str], list[str]], np.ndarray]
#: ``texts -> (n, d)`` embeddings (rows are normalised again in divtune.reward.online).
EmbedFn = Callable[[list[str]], np.ndarray]

# Keys added to the trainer's logs (and so to metrics.jsonl).
QUALITY_KEY = "online/quality"
DIVERSITY_KEY = "online/diversity"
REWARD_KEY = "online/diversity_weighted_reward"


# ---------------------------------------------------------------- data


def load_online_prompts(train_path: str | Path) -> tuple[list[dict[str, str]], dict[str, int]]:
    """One prompt per pool from a prepared ``train.jsonl`` (pairs share their pool's prompt).

    Returns ``(rows, counts)`` with rows ``{"pool_id", "prompt"}`` in file
    order and counts of rows read / prompts kept / rows that repeat a pool.
    """
    train_path = Path(train_path)
    if not train_path.is_file():
        raise InputError(train_path, "prepared training pairs not found (run `divtune prepare` first)")
    prompts: dict[str, str] = {}
    rows_read = 0
    for lineno, obj in iter_jsonl(train_path):
        rows_read += 1
        if not isinstance(obj, dict):
            raise InputError(train_path, "expected a JSON object", line=lineno)
        for field in ("pool_id", "prompt"):
            if field not in obj:
                raise InputError(train_path, "missing field", line=lineno, field=field)
        prompt = obj["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(train_path, "prompt must be a non-empty string", line=lineno, field="prompt")
        pool_id = str(obj["pool_id"])
        if pool_id in prompts and prompts[pool_id] != prompt:
            raise InputError(train_path, f"pool {pool_id!r} has two different prompts", line=lineno, field="prompt")
        prompts.setdefault(pool_id, prompt)
    if not prompts:
        raise InputError(train_path, "no prompts to train on")
    counts = {"rows_read": rows_read, "prompts": len(prompts), "rows_repeating_a_pool": rows_read - len(prompts)}
    return [{"pool_id": k, "prompt": v} for k, v in prompts.items()], counts


def completion_text(completion: Any) -> str:
    """TRL completions are strings, or message lists for conversational prompts."""
    if isinstance(completion, str):
        return completion
    return "".join(str(message.get("content", "")) for message in completion)


# ---------------------------------------------------------------- rewards


def constant_quality(prompts: list[str], completions: list[str]) -> np.ndarray:
    """Quality without a reward model: 1 for every sample (the diversity term alone)."""
    return np.ones(len(completions))


def reward_model_quality(reward_dir: str | Path, use_gpu: bool = False) -> QualityFn:
    """Quality from a ``divtune reward train`` model, loaded at first use.

    Loading late puts it on this process's device: by then the trainer's
    accelerator has selected the process's GPU as the current CUDA device.
    """
    reward_dir = Path(reward_dir)
    if not reward_dir.is_dir():
        raise InputError(reward_dir, "reward model folder not found (run `divtune reward train` first)")
    loaded: list[Any] = []

    def quality(prompts: list[str], completions: list[str]) -> np.ndarray:
        if not loaded:
            import torch

            from divtune.reward.model import RewardModel

            device = f"cuda:{torch.cuda.current_device()}" if use_gpu else "cpu"
            loaded.append(RewardModel.load(reward_dir, device=device))
        return np.asarray(loaded[0].score(prompts, completions), dtype=np.float64)

    return quality


def embedder_fn(spec: str) -> EmbedFn:
    from divtune.embedders import load_embedder

    embedder = load_embedder(spec)
    return lambda texts: embedder.embed(texts, show_progress=False)


class QualityReward:
    """The per-sample TRL reward function (quality only; diversity is added on whole groups later)."""

    def __init__(self, quality_fn: QualityFn, name: str):
        self.quality_fn = quality_fn
        # TRL names reward columns (and metrics ``rewards/<name>/mean``) after ``__name__``.
        self.__name__ = name

    def __call__(self, prompts, completions, prompt_text: Sequence[str], **_: Any) -> list[float]:
        texts = [completion_text(c) for c in completions]
        return [float(x) for x in self.quality_fn(list(prompt_text), texts)]


def score_gathered_groups(
    quality_all: np.ndarray,
    local_completions: list[str],
    *,
    method: str,
    online: OnlineConfig,
    embed: EmbedFn | None,
    gather: Callable[[Any], Any],
    device: Any = "cpu",
    num_generations: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The group-integrity step shared by every process.

    ``quality_all`` (N,) is already gathered over processes (process 0's
    slice first); ``local_completions`` is this process's slice. Local
    embeddings are gathered with the same ``gather`` so row k of both is the
    same sample, then whole groups of ``num_generations`` (default
    ``online.num_generations``) are scored.
    ``device`` is where the gather happens (NCCL gathers CUDA tensors only).
    Returns the diversity-weighted reward (N,) and the diversity term (N,).
    """
    group_size = num_generations or online.num_generations
    if method == "grpo":
        return group_rewards("grpo", quality_all, None, group_size)
    if embed is None:
        raise ValueError(f"method {method!r} needs an embedder")
    import torch

    local_emb = torch.as_tensor(np.asarray(embed(local_completions), dtype=np.float64), device=device)
    all_emb = gather(local_emb).cpu().numpy()
    return group_rewards(
        method,
        quality_all,
        all_emb,
        group_size,
        alpha=online.alpha,
        threshold=online.darling_threshold,
        floor=online.darling_floor,
    )


def _grpo_trainer_class():
    # Imported lazily so `import divtune.train.online` stays cheap.
    from accelerate.utils import gather
    from trl import GRPOTrainer

    class DiversityGRPOTrainer(GRPOTrainer):
        """GRPOTrainer whose single reward column becomes the diversity-weighted reward of whole groups."""

        def __init__(self, *args, method: str, online: OnlineConfig, embed: EmbedFn | None, **kwargs):
            super().__init__(*args, **kwargs)
            self.divtune_method = method
            self.divtune_online = online
            self.divtune_embed = embed

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            # TRL's version: per-sample quality on this process's slice, gathered over processes.
            quality_all = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            mode = "train" if self.model.training else "eval"
            reward, diversity = score_gathered_groups(
                quality_all[:, 0].float().cpu().numpy(),
                [completion_text(c) for c in completions],
                method=self.divtune_method,
                online=self.divtune_online,
                embed=self.divtune_embed,
                gather=gather,
                device=quality_all.device,
                num_generations=self.num_generations if mode == "train" else self.num_generations_eval,
            )
            self._metrics[mode][QUALITY_KEY].append(float(np.nanmean(quality_all[:, 0].cpu().numpy())))
            self._metrics[mode][REWARD_KEY].append(float(np.nanmean(reward)))
            if diversity is not None:
                self._metrics[mode][DIVERSITY_KEY].append(float(np.mean(diversity)))
            return quality_all.new_tensor(reward).unsqueeze(1)

    return DiversityGRPOTrainer


# ---------------------------------------------------------------- config

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
    from divtune.train.config import COMMON_DEFAULTS, device_defaults

    online: OnlineConfig = cfg.online
    training = dict(getattr(cfg, "training", None) or {})
    clash = sorted(ONLINE_OWNED_KEYS & training.keys())
    if clash:
        raise ValueError(f"set {clash} under `online` (num_generations, kl_beta, ...), not under `training`")
    kwargs: dict[str, Any] = {**COMMON_DEFAULTS, **device_defaults(device), **ONLINE_DEFAULTS}
    if hasattr(cfg, "dtype"):
        from divtune.train.config import precision_defaults

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
    from trl import GRPOConfig

    return GRPOConfig(**grpo_config_kwargs(cfg, device))


def _vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


# ---------------------------------------------------------------- entry point


def build_prompt_dataset(rows: list[dict[str, str]], tokenizer, max_prompt_tokens: int | None):
    """TRL dataset: ``prompt`` (chat messages when the tokenizer has a chat template) + ``prompt_text``.

    Prompts longer than ``max_prompt_tokens`` are cut (counted in the returned number).
    """
    from datasets import Dataset

    conversational = bool(getattr(tokenizer, "chat_template", None))
    records, truncated = [], 0
    for row in rows:
        text = row["prompt"]
        if max_prompt_tokens is not None:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) > max_prompt_tokens:
                text = tokenizer.decode(ids[:max_prompt_tokens])
                truncated += 1
        prompt = [{"role": "user", "content": text}] if conversational else text
        records.append({"prompt": prompt, "prompt_text": text, "pool_id": row["pool_id"]})
    return Dataset.from_list(records), truncated


def make_trainer(
    cfg: Any,
    *,
    model,
    tokenizer,
    dataset,
    quality_fn: QualityFn,
    embed_fn: EmbedFn | None,
    device: str,
    callbacks=(),
    args=None,
):
    """The DiversityGRPOTrainer for ``cfg`` (also used by the multi-process group-integrity test).

    ``args``: the GRPOConfig, built before the model loaded (:func:`run_online_train`);
    built here when not given.
    """
    from peft import PeftModel

    lora = getattr(cfg, "lora", None)
    # An adapter being trained further (``init``) already is a PeftModel: no second adapter.
    peft_config = None
    if lora is not None and lora.enabled and not isinstance(model, PeftModel):
        from divtune.train.runner import lora_config

        peft_config = lora_config(cfg, model)
    trainer_cls = _grpo_trainer_class()
    return trainer_cls(
        model=model,
        reward_funcs=[QualityReward(quality_fn, name=cfg.method)],
        args=args if args is not None else build_grpo_config(cfg, device),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
        method=cfg.method,
        online=cfg.online,
        embed=embed_fn,
    )


def _save_by_time(cfg: Any, device: str) -> list[Any]:
    """The time-based checkpoint callback (train/save_by_time.py) of an online run, or none."""
    from divtune.train.run_notices import world_size
    from divtune.train.save_by_time import resolved_save_minutes, save_by_time_callbacks

    strategy = grpo_config_kwargs(cfg, device).get("save_strategy", "steps")
    return save_by_time_callbacks(resolved_save_minutes(cfg.save_minutes, device), strategy, world_size())


@quiet_checkpointing_rename()  # TRL/PEFT read transformers' deprecated name (divtune/deprecations.py)
def run_online_train(
    cfg: Any,
    *,
    quality_fn: QualityFn | None = None,
    embed_fn: EmbedFn | None = None,
    callbacks: list[Any] | None = None,
    overwrite: bool = False,
    memory_check: bool = True,
) -> Path:
    """Train ``cfg`` (a TrainConfig with method grpo / dqo / darling); returns the output dir.

    The output dir holds the adapter (or model) and tokenizer, ``config.yaml``,
    ``metrics.jsonl`` (with ``online/quality``, ``online/diversity`` and
    ``online/diversity_weighted_reward`` per step), ``divtune_base.json``,
    ``checkpoint-*`` for ``--resume`` and the done marker. ``quality_fn`` /
    ``embed_fn`` replace the reward model / embedder (programmatic use, tests).
    """
    from divtune.config import ConfigError
    from divtune.models import load_tokenizer
    from divtune.train.callbacks import MetricsJsonlCallback, truncate_metrics
    from divtune.train.config import check_gpu_options, resolve_device, with_device_sizes
    from divtune.train.runner import claim_train_output, load_policy, save_final

    method = cfg.method
    if not METHODS[method].online:
        raise ConfigError(f"run_online_train handles {', '.join(names(online=True))}, not {method!r}")
    if not cfg.data:
        raise ConfigError(f"train/{method}: `data` (prepared folder) is required")
    if not cfg.output:
        raise ConfigError(f"train/{method}: `output` folder is required")
    online: OnlineConfig = cfg.online
    output = Path(cfg.output)
    device = resolve_device(cfg)
    check_gpu_options(cfg, device)
    cfg = with_device_sizes(cfg, device)
    from divtune.prepared import train_file

    path = train_file(cfg.data)
    claim, resume_from = claim_train_output(cfg, overwrite)
    from divtune.train import run_notices

    lost = run_notices.restart_warning(output, run_notices.unfinished_step(output), run_notices.checkpoint_step(resume_from))
    if lost and claim.state != "reuse":
        print(f"[divtune train/{method}] warning: {lost}")
    if claim.state == "reuse":
        print(f"[divtune train/{method}] {output} already holds a finished train run with these settings; reusing it")
        return output

    rows, counts = load_online_prompts(path)
    print(
        f"[divtune train/{method}] {counts['prompts']} prompts from {counts['rows_read']} pair rows "
        f"({counts['rows_repeating_a_pool']} rows repeat a pool's prompt)"
    )
    if quality_fn is None:
        if cfg.reward:
            quality_fn = reward_model_quality(cfg.reward, use_gpu=device.startswith("cuda"))
        else:
            print(
                f"[divtune train/{method}] WARNING: no reward model given (--reward); quality is a constant 1, "
                "so only the diversity term drives learning"
                + (" (plain GRPO then has no learning signal)" if method == "grpo" else "")
            )
            quality_fn = constant_quality
    if method != "grpo" and embed_fn is None:
        embed_fn = embedder_fn(online.embedder)

    tokenizer = load_tokenizer(cfg.init or cfg.model, trust_remote_code=cfg.trust_remote_code, padding_side="left")
    max_prompt_tokens = cfg.max_length - online.max_completion_length
    if max_prompt_tokens < 1:
        raise ConfigError(
            f"max_length {cfg.max_length} leaves no room for a prompt next to "
            f"online.max_completion_length {online.max_completion_length}"
        )
    dataset, truncated = build_prompt_dataset(rows, tokenizer, max_prompt_tokens)
    if truncated:
        print(f"[divtune train/{method}] {truncated} prompts cut to {max_prompt_tokens} tokens (max_length)")

    if memory_check and device == "cpu":
        import logging

        from divtune.train.memory import check_training_memory

        batch = int(grpo_config_kwargs(cfg, device)["per_device_train_batch_size"])
        check_training_memory(cfg, batch, logging.getLogger(__name__))
    # GRPOConfig (TrainingArguments) before the model: it sets up the distributed state and
    # DeepSpeed's ZeRO-3 config, which the load must see (see divtune.train.runner.run_train).
    args = build_grpo_config(cfg, device)
    model, base_spec = load_policy(cfg, device, args)
    trainer = make_trainer(
        cfg,
        args=args,
        model=model,
        tokenizer=tokenizer,
        dataset=dataset,
        quality_fn=quality_fn,
        embed_fn=embed_fn,
        device=device,
        callbacks=[MetricsJsonlCallback(output), *(callbacks or []), *_save_by_time(cfg, device)],
    )
    is_main = trainer.is_world_process_zero()
    if is_main:
        claim.begin()
        training = {k: v for k, v in grpo_config_kwargs(cfg, device).items() if k not in ONLINE_OWNED_KEYS}
        training.pop("output_dir"), training.pop("seed")
        cfg.model_copy(update={"training": training}).save(output / "config.yaml")
        if resume_from is not None:
            truncate_metrics(output, int(Path(resume_from).name.split("-")[-1]))
        else:
            (output / "metrics.jsonl").unlink(missing_ok=True)
    trainer.train(resume_from_checkpoint=resume_from)
    save_final(trainer, tokenizer, output, base_spec)
    trainer.accelerator.wait_for_everyone()
    if is_main:
        claim.finish({"method": method, "global_step": trainer.state.global_step, "data": counts})
    return output
