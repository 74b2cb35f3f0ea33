"""Online diversity training (docs/method.md §6): GRPO, DQO and DARLING on TRL's GRPOTrainer.

``run_online_train(cfg)`` is what ``divtune train --method {grpo,dqo,darling}``
calls (through ``divtune.train.run_train``). ``cfg`` is the ``TrainConfig``;
this module reads only: method, data, model, output, reward, seed, device,
lora, max_length, dtype, attn_implementation, quantization, online
(``OnlineConfig``) and training (extra GRPOConfig keys).

Its parts: the prompts (divtune.train.online_data), the rewards
(divtune.train.online_rewards), the GRPOConfig (divtune.train.online_args) and
the trainer that scores whole groups across processes (divtune.train.online_trainer).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from divtune.config import ConfigError
from divtune.deprecations import quiet_checkpointing_rename
from divtune.methods import METHODS, names
from divtune.prepared import train_file
from divtune.train import run_notices
from divtune.train.devices import settle_device
from divtune.train.memory import check_training_memory
from divtune.train.online_args import ONLINE_OWNED_KEYS, build_grpo_config, grpo_config_kwargs
from divtune.train.online_data import build_prompt_dataset, load_online_prompts
from divtune.train.online_rewards import EmbedFn, QualityFn, constant_quality, embedder_fn, reward_model_quality
from divtune.train.online_trainer import make_trainer
from divtune.train.policy import load_policy, policy_tokenizer
from divtune.train.run_output import claim_train_output, save_final


def _save_by_time(cfg: Any, device: str) -> list[Any]:
    """The time-based checkpoint callback (train/save_by_time.py) of an online run, or none."""
    from divtune.train.save_by_time import resolved_save_minutes, save_by_time_callbacks  # heavy: loads transformers

    strategy = grpo_config_kwargs(cfg, device).get("save_strategy", "steps")
    return save_by_time_callbacks(resolved_save_minutes(cfg.save_minutes, device), strategy, run_notices.world_size())


def _say(method: str, text: str) -> None:
    print(f"[divtune train/{method}] {text}")


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
    from divtune.train.callbacks import MetricsJsonlCallback  # heavy: loads transformers

    method = cfg.method
    check_online_settings(cfg)
    output = Path(cfg.output)
    cfg, device = settle_device(cfg)
    path = train_file(cfg.data)
    claim, resume_from = claim_train_output(cfg, overwrite)
    lost = run_notices.lost_steps_warning(output, resume_from)
    if lost and claim.state != "reuse":
        _say(method, f"warning: {lost}")
    if claim.state == "reuse":
        _say(method, f"{output} already holds a finished train run with these settings; reusing it")
        return output

    rows, counts = load_online_prompts(path)
    _say(method, f"{counts['prompts']} prompts from {counts['rows_read']} pair rows "
                 f"({counts['rows_repeating_a_pool']} rows repeat a pool's prompt)")
    quality_fn, embed_fn = online_rewards(cfg, device, quality_fn, embed_fn)
    tokenizer = policy_tokenizer(cfg)
    dataset = prompt_dataset(cfg, rows, tokenizer)
    if memory_check and device == "cpu":
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
        write_online_record(cfg, device, resume_from)
    trainer.train(resume_from_checkpoint=resume_from)
    save_final(trainer, tokenizer, output, base_spec)
    trainer.accelerator.wait_for_everyone()
    if is_main:
        claim.finish({"method": method, "global_step": trainer.state.global_step, "data": counts})
    return output


def check_online_settings(cfg: Any) -> None:
    """An online method, with data and an output folder (one-line errors)."""
    method = cfg.method
    if not METHODS[method].online:
        raise ConfigError(f"run_online_train handles {', '.join(names(online=True))}, not {method!r}")
    if not cfg.data:
        raise ConfigError(f"train/{method}: `data` (prepared folder) is required")
    if not cfg.output:
        raise ConfigError(f"train/{method}: `output` folder is required")


def online_rewards(
    cfg: Any, device: str, quality_fn: QualityFn | None, embed_fn: EmbedFn | None
) -> tuple[QualityFn, EmbedFn | None]:
    """The quality function (given, the reward model of ``cfg.reward``, or a constant 1 with a warning)
    and the embedder of a method with a diversity term."""
    method = cfg.method
    if quality_fn is None:
        if cfg.reward:
            quality_fn = reward_model_quality(cfg.reward, use_gpu=device.startswith("cuda"))
        else:
            _say(
                method,
                "WARNING: no reward model given (--reward); quality is a constant 1, "
                "so only the diversity term drives learning"
                + (" (plain GRPO then has no learning signal)" if METHODS[method].diversity_reward is None else ""),
            )
            quality_fn = constant_quality
    if METHODS[method].diversity_reward is not None and embed_fn is None:
        embed_fn = embedder_fn(cfg.online.embedder)
    return quality_fn, embed_fn


def prompt_dataset(cfg: Any, rows: list[dict[str, str]], tokenizer):
    """The prompts as TRL's dataset, each cut to leave ``online.max_completion_length`` of ``max_length``."""
    max_prompt_tokens = cfg.max_length - cfg.online.max_completion_length
    if max_prompt_tokens < 1:
        raise ConfigError(
            f"max_length {cfg.max_length} leaves no room for a prompt next to "
            f"online.max_completion_length {cfg.online.max_completion_length}"
        )
    dataset, truncated = build_prompt_dataset(rows, tokenizer, max_prompt_tokens)
    if truncated:
        _say(cfg.method, f"{truncated} prompts cut to {max_prompt_tokens} tokens (max_length)")
    return dataset


def write_online_record(cfg: Any, device: str, resume_from: str | None) -> None:
    """The resolved config.yaml; metrics.jsonl cut to the resumed step, or gone when starting over."""
    from divtune.train.callbacks import truncate_metrics  # heavy: loads transformers

    output = Path(cfg.output)
    training = {k: v for k, v in grpo_config_kwargs(cfg, device).items() if k not in ONLINE_OWNED_KEYS}
    training.pop("output_dir"), training.pop("seed")
    cfg.model_copy(update={"training": training}).save(output / "config.yaml")
    if resume_from is not None:
        truncate_metrics(output, run_notices.checkpoint_step(resume_from))
    else:
        (output / "metrics.jsonl").unlink(missing_ok=True)
