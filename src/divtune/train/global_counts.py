"""Losses normalised by the counts of the whole optimizer step, over every process.

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

from typing import Any

import torch

#: Batch key of a bool tensor, one per pair, False for a pair accelerate repeated to fill the last batch
#: (set only on such a batch; see GlobalCountsMixin._mark_repeats).
REAL = "divtune_real_pairs"


class GlobalCountsMixin:
    """Normalise losses by counts of the whole optimizer step (see the module docstring)."""

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
