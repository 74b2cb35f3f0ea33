"""``divtune experiment --check``: the experiment shrunk so every stage runs its real code path in minutes."""

from __future__ import annotations

from typing import Any

from divtune.config import deep_merge
from divtune.experiments.config import ExperimentConfig
from divtune.train.config import PROBE_PAIR_SETTINGS

#: ``--check`` sizes: enough for every stage to run its real code path on the real data
#: (model and data loading, tokenisation, the trainer with its probes, steps and a
#: checkpoint, sampling, evaluation and the report), in minutes instead of hours.
CHECK_TRAINING = {"max_steps": 2, "save_steps": 1}
CHECK_GENERATE = {"num_samples": 2, "max_new_tokens": 8, "max_prompts": 2}
CHECK_EVALUATE = {"bootstrap": 20}
CHECK_REWARD = {"max_epochs": 1}
CHECK_PROBE_PAIRS = 4


def _small_train(block: dict[str, Any], shared: bool) -> dict[str, Any]:
    """A ``train:`` block at check size: the shared block, or what a system's own block sets again over it."""
    fitted = deep_merge(block, {"training": CHECK_TRAINING}) if shared or "training" in block else dict(block)
    if shared or "prefix_cache" in block:
        fitted["prefix_cache"] = False
    if shared or "probe_steps" in block:
        fitted["probe_steps"] = 1
    for name in PROBE_PAIR_SETTINGS:
        if block.get(name):
            fitted[name] = min(int(block[name]), CHECK_PROBE_PAIRS)
    return fitted


def check_config(cfg: ExperimentConfig, output: str | None = None) -> ExperimentConfig:
    """``cfg`` shrunk for a check run: the first seed, 2 steps per training, 2 short samples for
    2 prompts, one reward epoch, into its own folder (``<output>-check`` unless given).

    Data preparation is not shrunk (its embeddings, like the reference log-probs, are cached on
    disk and reused by the full run). The frozen-prefix cache is off: its fill pays off over
    hundreds of steps, not two. Nothing in a check folder is a result.
    """
    systems = [s.model_copy(update={"train": _small_train(s.train, shared=False)}) for s in cfg.systems]
    return cfg.model_copy(update={
        "output": output or f"{cfg.output.rstrip('/')}-check",
        "seeds": cfg.seeds[:1],
        "train": _small_train(cfg.train, shared=True),
        "systems": systems,
        "generate": deep_merge(cfg.generate, CHECK_GENERATE),
        "evaluate": deep_merge(cfg.evaluate, CHECK_EVALUATE),
        "reward": None if cfg.reward is None else deep_merge(cfg.reward, CHECK_REWARD),
    })
