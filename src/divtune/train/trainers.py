"""The public trainers: thin subclasses of TRL's that own two things only: the
per-pair weight column and the loss (from :mod:`divtune.losses`, docs/method.md §4).
Tokenisation, collation, the reference model (adapter disabled, or precomputed
log-probs), PEFT handling and the training loop are TRL's and transformers'.
Every setting is a field of their configs (:mod:`divtune.train.trainer_configs`).

Pinned against TRL 1.16 (``DPOTrainer``; ``trl.experimental.orpo.ORPOTrainer``).

Their parts: the weight collators (:mod:`divtune.train.collators`), the batch
reduction by global counts (:mod:`divtune.train.global_counts`) and the DPO
trainer's reference and frozen-prefix caches (:mod:`divtune.train.reference_caches`).
"""

from __future__ import annotations

from typing import Any

import torch
from trl import DPOTrainer
from trl.trainer.utils import selective_log_softmax

from divtune import losses
from divtune.train import prefix_cache
from divtune.train.collators import (
    WEIGHT, WeightedORPOCollator, WeightedPreferenceCollator, check_weight_column, with_weight_column,
)
from divtune.train.global_counts import REAL, GlobalCountsMixin
from divtune.train.reference_caches import ReferenceCachesMixin
from divtune.train.trainer_configs import DeviationDPOConfig, DeviationORPOConfig
from divtune.train.trl_orpo import import_orpo

ORPOTrainer = import_orpo().ORPOTrainer


def _eval_prefix(logs: dict[str, Any]) -> str | None:
    """``eval_<set>_`` for the log of a named eval set (``eval_<set>_loss`` is in it), else None."""
    for key in logs:
        if key.startswith("eval_") and key.endswith("_loss") and key != "eval_loss":
            return key[: -len("loss")]
    return None


def _min_max_of_period(store: dict[str, list[float]]) -> None:
    """Logged metrics are averaged over the logging period; min/max must stay min/max."""
    for key, reduce in (("weight/min", min), ("weight/max", max)):
        if store.get(key):
            store[key] = [reduce(store[key])]


def _config_of(args, config_class, model, suffix: str):
    """``args`` when it is a ``config_class``; TRL's default output folder when None; else a one-line error."""
    if args is None:
        name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "") or "model"
        return config_class(f"{str(name).rstrip('/').split('/')[-1]}-{suffix}")
    if not isinstance(args, config_class):
        raise TypeError(
            f"args: expected a divtune.{config_class.__name__} (a {config_class.__mro__[1].__name__} with the weight "
            f"settings), got {type(args).__name__}"
        )
    return args


class DeviationDPOTrainer(GlobalCountsMixin, ReferenceCachesMixin, DPOTrainer):
    """TRL's ``DPOTrainer`` with each pair's loss multiplied by its weight (DDPO, docs/method.md §4).

    The weights come from the dataset column ``args.weight_column`` (see
    :func:`divtune.add_deviation_weights`). With every weight 1, or
    ``weight_column=None``, this is TRL's DPO loss with the same gradients. The
    batch is reduced by global counts, so the result does not depend on how a
    batch is split over processes and accumulation steps. Only TRL's default
    loss (sigmoid, reverse KL) is implemented.
    """

    def __init__(self, model, ref_model=None, args: DeviationDPOConfig | None = None, data_collator=None,
                 train_dataset=None, eval_dataset=None, processing_class=None, **kwargs):
        args = _config_of(args, DeviationDPOConfig, model, "DDPO")
        check_weight_column(args.weight_column, train_dataset, eval_dataset)
        self._init_caches(args)
        super().__init__(
            model, ref_model=ref_model, args=args, data_collator=data_collator, train_dataset=train_dataset,
            eval_dataset=eval_dataset, processing_class=processing_class, **kwargs,
        )
        if data_collator is None and not isinstance(self.data_collator, WeightedPreferenceCollator):
            self.data_collator = with_weight_column(self.data_collator, WeightedPreferenceCollator, args.weight_column)
        if self.loss_types != ["sigmoid"] or self.f_divergence_type != "reverse_kl" or self.ld_alpha is not None:
            raise ValueError("DeviationDPOTrainer implements the sigmoid loss with reverse KL only (TRL's default loss_type)")

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        column = self.args.weight_column
        if column is not None and column not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, column]

    def _batch_pairs(self, batch):
        return batch["input_ids"].shape[0] // 2  # rows are [chosen..., rejected...]

    def _local_counts(self, batch):
        real = batch.get(REAL)
        weights = batch[WEIGHT] if real is None else batch[WEIGHT][real.to(batch[WEIGHT].device)]
        return [weights.numel(), 0.0, float(weights.sum())]

    def _sequence_logps(self, model, inputs) -> torch.Tensor:
        """Summed completion log-probs of every row, through TRL's fused LM head."""
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        embeds = self._prefix_embeds(inputs)
        if embeds is None:
            outputs = model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                labels=labels,
                use_cache=False,
                fused_lm_head=True,
            )
        else:
            # The frozen layers' output is cached: the backbone runs the adapted layers only (train/prefix_cache.py).
            backbone, layer, _ = self._prefix
            with prefix_cache.tail_only(backbone, layer):
                outputs = model(
                    inputs_embeds=embeds,
                    attention_mask=inputs["attention_mask"],
                    labels=labels,
                    use_cache=False,
                    fused_lm_head=True,
                )
        return outputs.log_probs[:, -(completion_mask.shape[1] - 1) :].sum(dim=1)

    def _reference_logps(self, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        if self.precompute_ref_logps:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        return self.compute_ref_log_probs(self.ref_model or self.model, inputs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        weights = inputs.pop(WEIGHT)
        mode = "train" if self.model.training else "eval"
        real = self._batch_real_pairs(inputs, training=num_items_in_batch is not None)
        chosen_logps, rejected_logps = self._sequence_logps(model, inputs).chunk(2, dim=0)
        ref_chosen_logps, ref_rejected_logps = self._reference_logps(inputs)
        self._record(mode, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, weights)
        per_pair = (chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, weights)
        if real is not None:  # repeats that fill the last batch: forward run (every rank), left out of the loss
            per_pair = tuple(t[real.to(t.device)] for t in per_pair)
        weights = per_pair[-1]
        pairs, _, _, scale = self._normalisers(num_items_in_batch, [weights.numel(), 0.0, weights.sum()])
        loss = scale * losses.ddpo_loss(*per_pair[:4], weights, self.beta, pairs)
        if return_outputs:
            return loss, {}
        return loss

    def _record(self, mode, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, weights) -> None:
        gather = self.accelerator.gather_for_metrics
        chosen_rewards = self.beta * (chosen_logps.detach() - ref_chosen_logps)
        rejected_rewards = self.beta * (rejected_logps.detach() - ref_rejected_logps)
        rewards = gather(torch.stack([chosen_rewards, rejected_rewards], dim=1))
        logps = gather(torch.stack([chosen_logps.detach(), rejected_logps.detach()], dim=1))
        metrics = {
            "rewards/chosen": rewards[:, 0].mean().item(),
            "rewards/rejected": rewards[:, 1].mean().item(),
            "rewards/margins": (rewards[:, 0] - rewards[:, 1]).mean().item(),
            "rewards/accuracies": (rewards[:, 0] > rewards[:, 1]).float().mean().item(),
            "logps/chosen": logps[:, 0].mean().item(),
            "logps/rejected": logps[:, 1].mean().item(),
            # How far the policy moved from the reference: mean log-prob change per sequence.
            "logps/change": (rewards.mean() / self.beta).item(),
            **self._weight_metrics(weights),
        }
        for key, value in metrics.items():
            self._metrics[mode][key].append(value)

    def log(self, logs, start_time=None):
        mode = "train" if self.model.training else "eval"
        _min_max_of_period(self._metrics[mode])
        prefix = _eval_prefix(logs) if mode == "eval" else None
        if prefix:
            # Several eval sets (probes): name TRL's eval metrics after the set they came from.
            logs.update({f"{prefix}{key}": sum(v) / len(v) for key, v in self._metrics[mode].items() if v})
            self._metrics[mode].clear()
        super().log(logs, start_time)


class DeviationORPOTrainer(GlobalCountsMixin, ORPOTrainer):
    """TRL's experimental ``ORPOTrainer`` with each pair weighted (DORPO, docs/method.md §4).

    ``args.dorpo_mode`` picks how the weight enters the loss (``outside``: w x the
    pair's ORPO loss; ``released``: the paper's released code). With every weight
    1, or ``weight_column=None``, both modes are TRL's ORPO loss with the same
    gradients.
    """

    def __init__(self, model=None, args: DeviationORPOConfig | None = None, data_collator=None, train_dataset=None,
                 eval_dataset=None, processing_class=None, **kwargs):
        args = _config_of(args, DeviationORPOConfig, model, "DORPO")
        check_weight_column(args.weight_column, train_dataset, eval_dataset)
        super().__init__(
            model, args=args, data_collator=data_collator, train_dataset=train_dataset, eval_dataset=eval_dataset,
            processing_class=processing_class, **kwargs,
        )
        if data_collator is None and not isinstance(self.data_collator, WeightedORPOCollator):
            self.data_collator = with_weight_column(self.data_collator, WeightedORPOCollator, args.weight_column)
        # Our collator is a DPODataCollatorWithPadding, so TRL's eval path applies.
        self.use_dpo_data_collator = True

    def _nll_mask(self, attention_mask: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
        return attention_mask if self.args.nll_tokens == "full" else completion_mask

    def _batch_pairs(self, batch):
        return batch["chosen_input_ids"].shape[0]

    def _local_counts(self, batch):
        completion = batch["chosen_labels"][:, 1:] != -100
        nll = self._nll_mask(batch["chosen_attention_mask"][:, 1:].bool(), completion)
        weights = batch[WEIGHT]
        real = batch.get(REAL)
        if real is not None:
            nll, weights = nll[real.to(nll.device)], weights[real.to(weights.device)]
        return [weights.numel(), float(nll.sum()), float(weights.sum())]

    def _forward_logps(self, model, batch):
        """One forward over [chosen; rejected]: mean completion log-probs and chosen NLL sums/counts."""
        concatenated = self.concatenated_inputs(
            batch, is_encoder_decoder=False, padding_value=self.padding_value, device=self.accelerator.device
        )
        input_ids = concatenated["concatenated_input_ids"]
        attention_mask = concatenated["concatenated_attention_mask"]
        outputs = model(input_ids, attention_mask=attention_mask, use_cache=False)
        token_logps = selective_log_softmax(outputs.logits[:, :-1, :], input_ids[:, 1:])
        completion_mask = (concatenated["concatenated_labels"][:, 1:] != -100).to(token_logps.dtype)
        mean_logps = (token_logps * completion_mask).sum(-1) / completion_mask.sum(-1)
        chosen_count = batch["chosen_input_ids"].shape[0]
        nll_mask = self._nll_mask(attention_mask[:, 1:].to(token_logps.dtype), completion_mask)[:chosen_count]
        nll_sums = -(token_logps[:chosen_count] * nll_mask).sum(-1)
        return mean_logps[:chosen_count], mean_logps[chosen_count:], nll_sums, nll_mask.sum(-1)

    def _weighted_loss(self, model, batch, num_items_in_batch, train_eval):
        batch = dict(batch)
        weights = batch.pop(WEIGHT)
        real = self._batch_real_pairs(batch, training=num_items_in_batch is not None)
        chosen_logps, rejected_logps, nll_sums, nll_counts = self._forward_logps(model, batch)
        metrics = self._orpo_metrics(chosen_logps, rejected_logps, nll_sums, nll_counts, weights, train_eval)
        per_pair = (chosen_logps, rejected_logps, nll_sums, nll_counts, weights)
        if real is not None:  # repeats that fill the last batch: forward run (every rank), left out of the loss
            per_pair = tuple(t[real.to(t.device)] for t in per_pair)
        chosen_logps, rejected_logps, nll_sums, nll_counts, weights = per_pair
        local = [weights.numel(), nll_counts.sum(), weights.sum()]
        pairs, tokens, mean_weight, scale = self._normalisers(num_items_in_batch, local)
        loss = scale * losses.dorpo_loss(
            chosen_logps, rejected_logps, nll_sums, nll_counts, weights,
            orpo_lambda=self.beta, mode=self.args.dorpo_mode,
            num_pairs=pairs, num_nll_tokens=tokens, mean_weight=mean_weight,
        )
        return loss, metrics

    def _orpo_metrics(self, chosen_logps, rejected_logps, nll_sums, nll_counts, weights, train_eval):
        gather = self.accelerator.gather_for_metrics
        prefix = "eval_" if train_eval == "eval" else ""
        chosen_rewards = self.beta * chosen_logps.detach()
        rejected_rewards = self.beta * rejected_logps.detach()
        rewards = gather(torch.stack([chosen_rewards, rejected_rewards], dim=1))
        log_odds = gather(losses.orpo_log_odds(chosen_logps.detach(), rejected_logps.detach()))
        nll = gather(torch.stack([nll_sums.detach().sum(), nll_counts.sum().to(nll_sums.dtype)]).unsqueeze(0))
        metrics = {
            "rewards/chosen": rewards[:, 0].mean().item(),
            "rewards/rejected": rewards[:, 1].mean().item(),
            "rewards/margins": (rewards[:, 0] - rewards[:, 1]).mean().item(),
            "rewards/accuracies": (rewards[:, 0] > rewards[:, 1]).float().mean().item(),
            "log_odds_chosen": log_odds.mean().item(),
            "nll_loss": (nll[:, 0].sum() / nll[:, 1].sum()).item(),
            **self._weight_metrics(weights),
        }
        return {prefix + key: value for key, value in metrics.items()}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, metrics = self._weighted_loss(model, inputs, num_items_in_batch, "train")
        self.store_metrics(metrics, train_eval="train")
        return (loss, metrics) if return_outputs else loss

    def get_batch_loss_metrics(self, model, batch, train_eval="train"):
        # Evaluation path of ORPOTrainer.prediction_step: local normalisation.
        return self._weighted_loss(model, batch, None, train_eval)

    def log(self, logs, start_time=None):
        _min_max_of_period(self._stored_metrics["train" if "loss" in logs else "eval"])
        return super().log(logs, start_time)
