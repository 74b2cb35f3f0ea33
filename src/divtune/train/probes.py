"""Probes of a DPO-family run: a fixed set of train pairs and held-out pairs, evaluated
at the start, every ``probe_steps`` steps and at the end (implicit-reward accuracy, margin
and log-prob change in metrics.jsonl).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from divtune import prepared
from divtune.config import ConfigError
from divtune.train import data as pairs_data

if TYPE_CHECKING:
    from divtune.train.config import TrainConfig


#: Names of the probe sets in metrics.jsonl: ``eval_train_probe_rewards/accuracies`` etc.
PROBE_SETS = ("train_probe", "heldout")


def probe_datasets(cfg: "TrainConfig", rows, tokenizer, chat: bool) -> dict[str, Any] | None:
    """The fixed train-pair probe and the held-out pairs as TRL datasets, or None without probes.

    The train probe is drawn with a fixed seed (0), not the run's seed, so every
    method and seed on the same data is probed on the same pairs.
    """
    if not (cfg.probe_pairs or cfg.probe_heldout_pairs):
        return None
    import numpy as np  # heavy
    from datasets import Dataset  # heavy

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


def probe_arguments(cfg: "TrainConfig", training: dict[str, Any], n_pairs: int) -> dict[str, Any]:
    """TrainingArguments that evaluate the probes at the start, every ``probe_steps`` and (callback) at the end."""
    batch = int(training.get("per_device_train_batch_size", 4))
    total = int(training.get("max_steps") or -1)
    if total <= 0:
        per_epoch = math.ceil(n_pairs / (batch * int(training.get("gradient_accumulation_steps", 1))))
        total = math.ceil(per_epoch * float(training.get("num_train_epochs", 3)))
    steps = cfg.probe_steps or max(1, total // 8)
    return {"eval_strategy": "steps", "eval_steps": steps, "eval_on_start": True, "per_device_eval_batch_size": batch}
