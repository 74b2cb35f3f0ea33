"""The DPO trainer's two caches: the reference log-probs (divtune.train.ref_cache) and the
frozen-prefix hidden states (divtune.train.prefix_cache), both filled by the reference pass
that ``precompute_ref_log_probs`` runs before training, and read back by later runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from divtune.train import prefix_cache, ref_cache

logger = logging.getLogger(__name__)


class ReferenceCachesMixin:
    """The reference pass of DeviationDPOTrainer through the on-disk caches (call ``_init_caches(args)`` first)."""

    def _init_caches(self, args) -> None:
        """The caches' state, before TRL's __init__ (which may already run the reference pass)."""
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
            self.prefix_cache_settings = prefix_cache.PrefixCacheSettings(
                layer=args.prefix_cache_layer, cache_dir=args.prefix_cache_dir or str(prefix_cache.default_cache_dir())
            )
            self.prefix_cache_record = prefix_cache.new_record(args.prefix_cache_layer)

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
        from accelerate.utils import broadcast_object_list  # heavy

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
        from torch.utils.data import DataLoader  # heavy

        loader = self.accelerator.prepare(DataLoader(
            dataset, batch_size=batch_size, collate_fn=self.data_collator, shuffle=False,
            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory,
        ))
        model = self.ref_model or self.model
        if self.ref_model is None and self.is_deepspeed_enabled:
            # As TRL: DeepSpeed has not placed (ZeRO-1/2) or gathered (ZeRO-3) the parameters yet; one inference
            # engine serves every pass.
            from trl.models import prepare_deepspeed  # heavy

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
        if len(chosen) != len(dataset):
            raise RuntimeError(f"reference pass gave {len(chosen)} log-probs for {len(dataset)} pairs")
        return dataset.add_column(ref_cache.CHOSEN, chosen.tolist()).add_column(ref_cache.REJECTED, rejected.tolist())

    def _prefix_cache_refusal(self) -> str | None:
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
