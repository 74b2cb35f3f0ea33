"""The public trainers: thin subclasses of TRL's that own two things only: the
per-pair weight column and the loss (from :mod:`divtune.losses`, docs/method.md §4).
Tokenisation, collation, the reference model (adapter disabled, or precomputed
log-probs), PEFT handling and the training loop are TRL's and transformers'.
Every setting is a field of their configs (:mod:`divtune.train.trainer_configs`).

Pinned against TRL 1.16 (``DPOTrainer``; ``trl.experimental.orpo.ORPOTrainer``).

Batch reduction: :meth:`GlobalCountsMixin.get_batch_samples` counts pairs,
NLL tokens and the weight sum over every micro-batch of one optimizer step on
every process. Each micro-batch returns ``world_size * sum(local
contributions) / global count``; the Trainer does not divide by the
accumulation steps (``loss_is_scaled_for_ga = True``) and DDP / DeepSpeed /
FSDP average gradients over processes, so the gradient of a step is exactly
``sum over the global batch / global count`` however the batch is split.

Uneven last batch: under several processes accelerate (``even_batches``, its
default) fills the last batch of an epoch on some ranks with pairs from the
start of the epoch, so every rank gets a batch of the same size. Those repeats
are marked (:meth:`GlobalCountsMixin._mark_repeats`) and left out of the loss
and the counts (and from the eval loss), so the last step equals a
one-process step over the pairs really left. Logged metrics go through
accelerate's ``gather_for_metrics`` as before (docs/train.md, "Uneven last batch").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference
from trl.trainer.utils import selective_log_softmax

from divtune import losses
from divtune.train.trainer_configs import DeviationDPOConfig, DeviationORPOConfig, checked_weight
from divtune.train.trl_orpo import import_orpo

ORPOTrainer = import_orpo().ORPOTrainer
# trl.experimental is already imported (above, with its warning silenced).
from trl.experimental.utils import DPODataCollatorWithPadding  # noqa: E402

#: The batch key the collators put the weights under, whatever the dataset column is called.
WEIGHT = "weight"
#: Batch key of a bool tensor, one per pair, False for a pair accelerate repeated to fill the last batch
#: (set only on such a batch; see GlobalCountsMixin._mark_repeats).
REAL = "divtune_real_pairs"
logger = logging.getLogger(__name__)


@dataclass
class WeightedPreferenceCollator(DataCollatorForPreference):
    """TRL's DPO collator plus a float ``weight`` tensor (all 1 when ``weight_column`` is None)."""

    weight_column: str | None = WEIGHT

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        batch[WEIGHT] = weights_of(examples, self.weight_column)
        return batch


@dataclass
class WeightedORPOCollator(DPODataCollatorWithPadding):
    """TRL's ORPO collator with the weights as a float tensor under ``weight`` instead of a list."""

    weight_column: str | None = WEIGHT

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().__call__(features)
        if self.weight_column is not None:
            batch.pop(self.weight_column, None)
        batch[WEIGHT] = weights_of(features, self.weight_column)
        return batch


def weights_of(examples: list[dict[str, Any]], column: str | None) -> torch.Tensor:
    """The weights of one batch; a missing, non-finite or negative weight is a one-line error."""
    if column is None:
        return torch.ones(len(examples), dtype=torch.float32)
    values = []
    for index, example in enumerate(examples):
        if column not in example:
            raise ValueError(f"batch example {index} has no column {column!r} (weight_column); it has {', '.join(example)}")
        values.append(checked_weight(example[column], column, index, "batch example"))
    return torch.tensor(values, dtype=torch.float32)


def check_weight_column(column: str | None, train_dataset, eval_dataset) -> None:
    """Every dataset the trainer was given has ``column`` with finite weights >= 0 (one-line error otherwise).

    Streaming datasets, whose rows cannot be read ahead, are checked batch by batch in the collator.
    """
    if column is None:
        return
    named = [("train_dataset", train_dataset)]
    if isinstance(eval_dataset, dict):
        named += [(f"eval_dataset[{name!r}]", dataset) for name, dataset in eval_dataset.items()]
    else:
        named.append(("eval_dataset", eval_dataset))
    for where, dataset in named:
        names = getattr(dataset, "column_names", None)
        if dataset is None or names is None:
            continue
        if column not in names:
            raise ValueError(
                f"{where} has no column {column!r} (weight_column); its columns are {', '.join(names)}. "
                "Add one with divtune.add_deviation_weights, or set weight_column=None to train unweighted"
            )
        if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
            for row, value in enumerate(dataset[column]):
                checked_weight(value, column, row, where)


class GlobalCountsMixin:
    """Normalise losses by counts of the whole optimizer step (see module docstring)."""

    loss_is_scaled_for_ga = True

    def _local_counts(self, batch: dict[str, Any]) -> list[float]:
        """[pairs, NLL tokens, weight sum] of one micro-batch, without the pairs marked as repeats."""
        raise NotImplementedError

    def _batch_pairs(self, batch: dict[str, Any]) -> int:
        """How many pairs a collated micro-batch holds."""
        raise NotImplementedError

    def _real_pairs(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """Which pairs of the batch just fetched are not repeats (None: all of them).

        Under several processes with ``even_batches`` (accelerate's default) and no ``drop_last``, the last
        round of batches (one per rank) holds ``remainder = len(dataset) % (batch size x processes)`` real
        pairs: the first ``remainder`` in rank order (rank 0's batch, then rank 1's, ...), each rank's real
        pairs first and the repeats from the start of the epoch after them (accelerate's
        ``BatchSamplerShard``; ``gather_for_metrics`` keeps the same first ``remainder``). The active loader
        flags its last batch when it yields it.
        """
        accelerator = self.accelerator
        state = accelerator.gradient_state
        if accelerator.num_processes == 1 or not accelerator.even_batches or not state.end_of_dataloader:
            return None
        if state.remainder <= 0:
            return None  # every batch was full (or the loader drops the last one)
        size = self._batch_pairs(batch)
        real = min(max(state.remainder - accelerator.process_index * size, 0), size)
        return torch.arange(size) < real if real < size else None

    def _mark_repeats(self, batch: dict[str, Any]) -> None:
        """Put the mask of real pairs in ``batch[REAL]`` when some pairs of the batch are repeats."""
        real = self._real_pairs(batch)
        if real is not None:
            batch[REAL] = real

    def _batch_real_pairs(self, batch: dict[str, Any], training: bool) -> torch.Tensor | None:
        """Pop the mask of real pairs: marked by get_batch_samples in training, looked up for an eval batch.

        Evaluation normalises each batch on its own process and the Trainer keeps ``remainder`` copies of
        the per-rank losses, so a rank's loss over its real pairs only makes the eval loss exact too.
        """
        real = batch.pop(REAL, None)
        return real if training else self._real_pairs(batch)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        if batch_samples:
            # Only the last micro-batch of a step can be the epoch's last: the loader flags it when it is fetched.
            self._mark_repeats(batch_samples[-1])
        totals = [0.0, 0.0, 0.0]
        for batch in batch_samples:
            for index, value in enumerate(self._local_counts(batch)):
                totals[index] += float(value)
        counts = torch.tensor(totals, dtype=torch.float32, device=device)  # float32: MPS has no float64
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        return batch_samples, counts

    def _normalisers(self, num_items_in_batch, local: list[float]) -> tuple[Any, Any, Any, float]:
        """(pairs, NLL tokens, mean weight, scale): global counts in training, local ones otherwise."""
        if num_items_in_batch is None or not torch.is_tensor(num_items_in_batch) or num_items_in_batch.numel() != 3:
            pairs, tokens, weight_sum = local
            # A batch of repeats only (a rank's last eval batch) has no pairs: loss 0, and the Trainer drops it.
            pairs, tokens = max(pairs, 1), max(tokens, 1)
            return pairs, tokens, weight_sum / pairs, 1.0
        pairs, tokens, weight_sum = (num_items_in_batch[i].float() for i in range(3))
        # DDP averages gradients over processes; multiplying by the world size
        # turns that average back into the global sum over the global count.
        return pairs, tokens, weight_sum / pairs, float(self.accelerator.num_processes)

    def _weight_metrics(self, weights: torch.Tensor) -> dict[str, float]:
        gathered = self.accelerator.gather_for_metrics(weights.detach().float())
        return {
            "weight/mean": gathered.mean().item(),
            "weight/min": gathered.min().item(),
            "weight/max": gathered.max().item(),
        }


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


def _with_weight_column(collator, collator_class, column: str | None):
    """TRL's collator as ``collator_class`` (same settings) with the weight column."""
    import dataclasses

    settings = {f.name: getattr(collator, f.name) for f in dataclasses.fields(collator) if f.init}
    return collator_class(**settings, weight_column=column)


class DeviationDPOTrainer(GlobalCountsMixin, DPOTrainer):
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
        #: What the reference cache did, per dataset name: {"key", "hit", "path"} (written beside the run).
        self.ref_cache_record: dict[str, dict[str, Any]] = {}
        #: The reference model's part of the cache key, computed once (on the main process).
        self._ref_identity: str | None = None
        #: train/prefix_cache.py's PrefixCacheSettings (None: not asked for); filled with the reference pass.
        self.prefix_cache_settings = None
        #: (backbone, first adapted layer, PrefixStore) while the frozen-prefix cache is in use, else None.
        self._prefix = None
        #: Whether the frozen-prefix cache was used, why not, per dataset its key and hit, and how many
        #: policy forward passes it served (written beside the run).
        self.prefix_cache_record: dict[str, Any] = {}
        if args.prefix_cache_layer is not None:
            from divtune.train import prefix_cache

            self.prefix_cache_settings = prefix_cache.PrefixCacheSettings(
                layer=args.prefix_cache_layer, cache_dir=args.prefix_cache_dir or str(prefix_cache.default_cache_dir())
            )
            self.prefix_cache_record = prefix_cache.new_record(args.prefix_cache_layer)
        super().__init__(
            model, ref_model=ref_model, args=args, data_collator=data_collator, train_dataset=train_dataset,
            eval_dataset=eval_dataset, processing_class=processing_class, **kwargs,
        )
        if data_collator is None and not isinstance(self.data_collator, WeightedPreferenceCollator):
            self.data_collator = _with_weight_column(self.data_collator, WeightedPreferenceCollator, args.weight_column)
        if self.loss_types != ["sigmoid"] or self.f_divergence_type != "reverse_kl" or self.ld_alpha is not None:
            raise ValueError("DeviationDPOTrainer implements the sigmoid loss with reverse KL only (TRL's default loss_type)")

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        column = self.args.weight_column
        if column is not None and column not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, column]

    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        """The reference pass (through the on-disk cache), then the frozen-prefix cache of the same pairs."""
        dataset = self._cached_ref_logps(dataset, name, batch_size)
        self._fill_prefix_cache(dataset, name)
        return dataset

    def _cached_ref_logps(self, dataset, name: str, batch_size: int):
        """The reference log-probs as two columns: from divtune's on-disk cache (train/ref_cache.py) or computed.

        Several processes: the main process alone computes the key, reads the cache and decides hit or miss;
        the decision and, on a hit, the numbers are broadcast, so every rank takes the same path even if the
        cache folder is not shared between machines. On a miss every rank joins the reference pass and the
        main process writes the file (atomically).
        """
        from accelerate.utils import broadcast_object_list

        from divtune.train import ref_cache

        if self.args.ref_cache_dir is None:
            return self._with_ref_logps(dataset, *self._reference_pass(dataset, batch_size))
        found: list[Any] = [None]
        if self.accelerator.is_main_process:
            key = self._ref_cache_key(dataset, batch_size)
            path = Path(self.args.ref_cache_dir) / f"{key}.safetensors"
            logps = ref_cache.load(path) if path.is_file() else None
            if logps is not None and len(logps[0]) != len(dataset):
                logps = None
            found = [{"key": key, "path": str(path), "logps": logps}]
        found = broadcast_object_list(found, from_process=0)[0]
        logps = found.pop("logps")
        self.ref_cache_record[name] = {**found, "hit": logps is not None}
        if logps is None:
            logps = self._reference_pass(dataset, batch_size)
            if self.accelerator.is_main_process:
                ref_cache.save(Path(found["path"]), *logps, {"pairs": str(len(dataset)), "dataset": name})
        return self._with_ref_logps(dataset, *logps)

    def _ref_cache_key(self, dataset, batch_size: int) -> str:
        """The cache file name of ``dataset``'s reference log-probs (main process only: it may hash weights)."""
        from divtune.train import prefix_cache, ref_cache

        if self._ref_identity is None:
            reference = self.ref_model or self.model
            if self.args.ref_cache_model_id is not None:
                config = self.accelerator.unwrap_model(reference).config
                self._ref_identity = ref_cache.hashed_key(
                    {"model": self.args.ref_cache_model_id, "config": prefix_cache.config_digest(config)}
                )
            else:
                # Fallback for callers that do not name the model: hash the reference parameters. Not ZeRO-3
                # safe: under ZeRO-3 each rank holds empty shards, so different models could share a key.
                self._ref_identity = ref_cache.weights_digest(ref_cache.reference_tensors(self.model, self.ref_model))
        return ref_cache.cache_key(
            self._ref_identity,
            ref_cache.dataset_digest({column: list(dataset[column]) for column in ref_cache.TOKEN_COLUMNS}),
            self.args.max_length,
            self.args.truncation_mode,
            batch_size,
            {
                **ref_cache.library_versions(), "bf16": self.args.bf16, "fp16": self.args.fp16,
                "dtype": str(next(self.model.parameters()).dtype),
            },
        )

    def _reference_pass(self, dataset, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference log-probs (chosen, rejected; float32, CPU) of every row of ``dataset``, on every process.

        TRL's own pass (``DPOTrainer._precompute_ref_logps``) hands its result over through a datasets cache
        file that the main process writes and every rank opens. An in-memory dataset (the CLI's
        ``Dataset.from_list``) has no cache folder, so that file lands in a temporary folder of the main
        process that the other ranks cannot open, and a second process crashes. The result is two floats per
        pair, so here each process computes its share of the batches, they are gathered in memory (in dataset
        order, accelerate's padding of the last batch dropped) and added as columns: no file, no shared disk.
        Across runs divtune's own cache (``ref_cache_dir``) keeps them.
        """
        from torch.utils.data import DataLoader

        loader = self.accelerator.prepare(DataLoader(
            dataset, batch_size=batch_size, collate_fn=self.data_collator, shuffle=False,
            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory,
        ))
        model = self.ref_model or self.model
        if self.ref_model is None and self.is_deepspeed_enabled:
            # As TRL: DeepSpeed has not placed (ZeRO-1/2) or gathered (ZeRO-3) the parameters yet; one inference
            # engine serves every pass.
            from trl.models import prepare_deepspeed

            if self._precompute_engine is None:
                self._precompute_engine = prepare_deepspeed(self.model, self.accelerator)
            model = self._precompute_engine
        chosen, rejected = [], []
        for batch in loader:
            logps = self.accelerator.gather_for_metrics(self.compute_ref_log_probs(model, batch))
            chosen.append(logps[0].detach().float().cpu())
            rejected.append(logps[1].detach().float().cpu())
        return torch.cat(chosen), torch.cat(rejected)

    @staticmethod
    def _with_ref_logps(dataset, chosen: torch.Tensor, rejected: torch.Tensor):
        from divtune.train.ref_cache import CHOSEN, REJECTED

        if len(chosen) != len(dataset):
            raise RuntimeError(f"reference pass gave {len(chosen)} log-probs for {len(dataset)} pairs")
        return dataset.add_column(CHOSEN, chosen.tolist()).add_column(REJECTED, rejected.tolist())

    def _prefix_cache_refusal(self) -> str | None:
        from divtune.train import prefix_cache

        if self.accelerator.num_processes > 1:
            return "several processes (the cache is filled and checked for one)"
        if self.args.gradient_checkpointing:
            return "gradient checkpointing (its re-entrant variant needs inputs that require grad)"
        if self.args.torch_compile:
            return "torch_compile (the layer swap is not checked under compilation)"
        model = self.accelerator.unwrap_model(self.model)
        return prefix_cache.unsupported_reason(model, self.prefix_cache_settings.layer)

    def _prefix_cache_off(self, reason: str) -> None:
        logger.warning("frozen-prefix cache not used: %s", reason)
        self._prefix = None
        self.prefix_cache_settings.off = reason
        self.prefix_cache_record.update(used=False, reason=reason)

    def _fill_prefix_cache(self, dataset, name: str) -> None:
        """Hidden states entering the first adapted layer for every row of ``dataset``: from disk, or computed once."""
        settings = self.prefix_cache_settings
        if settings is None or settings.off is not None:
            return
        from divtune.train import prefix_cache, ref_cache

        if self._prefix is None:
            reason = self._prefix_cache_refusal()
            if reason is not None:
                return self._prefix_cache_off(reason)
            backbone = prefix_cache.backbone_of(self.accelerator.unwrap_model(self.model))
            self._prefix = (backbone, settings.layer, prefix_cache.PrefixStore())
            self._prefix_weights = ref_cache.weights_digest(prefix_cache.prefix_tensors(backbone, settings.layer))
        backbone, layer, store = self._prefix
        rows = prefix_cache.distinct_rows(dataset, self.data_collator)
        new_rows = [row for row in rows if row not in store]
        hidden_size = backbone.embed_tokens.weight.shape[-1]
        reason = prefix_cache.size_refusal(sum(len(row) for row in new_rows) * hidden_size * 4, store.nbytes)
        if reason is not None:
            return self._prefix_cache_off(reason)
        key = prefix_cache.cache_key(
            self._prefix_weights,
            ref_cache.dataset_digest({column: list(dataset[column]) for column in ref_cache.TOKEN_COLUMNS}),
            self.args.max_length,
            self.args.truncation_mode,
            layer,
            {
                **ref_cache.library_versions(),
                "config": prefix_cache.config_digest(backbone.config),
                "dtype": str(backbone.embed_tokens.weight.dtype),
                "bf16": self.args.bf16,
                "fp16": self.args.fp16,
            },
        )
        path = Path(settings.cache_dir) / f"{key}.safetensors"
        # One process only (several are refused above, before any key or weight digest), so this
        # hit-or-miss decision and the weight digest of the key need no broadcast and see whole tensors.
        hit = path.is_file()
        if hit:
            cached_rows, hidden = prefix_cache.load(path)
            hit = {prefix_cache.row_key(row) for row in cached_rows} == {prefix_cache.row_key(row) for row in rows}
            if hit:
                rows = cached_rows
        if not hit:
            with self.accelerator.autocast():  # rows another dataset (the train pairs for a probe) brought are reused
                pad_id = getattr(self.data_collator, "pad_token_id", 0)
                computed = prefix_cache.compute_hidden(backbone, layer, new_rows, pad_id, self.accelerator.device)
            computed = {prefix_cache.row_key(row): h for row, h in zip(new_rows, computed)}
            hidden = [store.rows.get(k, computed.get(k)) for k in map(prefix_cache.row_key, rows)]
            if self.accelerator.is_main_process:
                prefix_cache.save(path, rows, hidden, {"rows": str(len(rows)), "dataset": name, "layer": str(layer)})
        for row, row_hidden in zip(rows, hidden):
            store.add(row, row_hidden)
        self.prefix_cache_record["used"] = True
        self.prefix_cache_record["datasets"][name] = {
            "key": key, "hit": hit, "path": str(path), "rows": len(rows),
            "mib": round(sum(h.numel() for h in hidden) * 4 / 2**20, 3),
        }

    def _prefix_embeds(self, inputs):
        """The cached hidden states entering the first adapted layer, padded like the batch (None: not all cached)."""
        if self._prefix is None:
            return None
        backbone, _, store = self._prefix
        input_ids = inputs["input_ids"]
        embeds = store.embeds(input_ids, inputs["attention_mask"], backbone.embed_tokens.weight.dtype, input_ids.device)
        self.prefix_cache_record["forward_passes"]["full" if embeds is None else "from_cache"] += 1
        return embeds

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
            from divtune.train.prefix_cache import tail_only

            # The frozen layers' output is cached: the backbone runs the adapted layers only (train/prefix_cache.py).
            backbone, layer, _ = self._prefix
            with tail_only(backbone, layer):
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
            self.data_collator = _with_weight_column(self.data_collator, WeightedORPOCollator, args.weight_column)
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
