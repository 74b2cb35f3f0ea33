"""The trainer of online training: TRL's GRPOTrainer whose reward is the diversity-weighted
reward of whole groups.

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

from typing import Any

import numpy as np

from divtune.train.lora import lora_config
from divtune.train.online_args import build_grpo_config
from divtune.train.online_config import OnlineConfig
from divtune.train.online_rewards import EmbedFn, QualityFn, QualityReward, completion_text, score_gathered_groups

# Keys added to the trainer's logs (and so to metrics.jsonl).
QUALITY_KEY = "online/quality"
DIVERSITY_KEY = "online/diversity"
REWARD_KEY = "online/diversity_weighted_reward"


def _grpo_trainer_class():
    # Imported lazily so `import divtune.train.online_trainer` stays cheap.
    from accelerate.utils import gather  # heavy
    from trl import GRPOTrainer  # heavy

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
    from peft import PeftModel  # heavy

    lora = getattr(cfg, "lora", None)
    # An adapter being trained further (``init``) already is a PeftModel: no second adapter.
    peft_config = None
    if lora is not None and lora.enabled and not isinstance(model, PeftModel):
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
