"""Frozen-prefix hidden-state cache: LoRA on the last N layers skips the frozen first L - N.

With ``lora.last_layers=N`` the embedding and the first ``L - N`` decoder layers
carry no adapter and no gradient, so their output for a given token sequence is
the same at every step, for every method, system and seed. The hidden states
entering layer ``L - N`` are therefore computed once per distinct sequence row
(with the adapter irrelevant: the prefix holds none), stored unpadded
(``[len, hidden]``, float32) and, at each step, re-padded and fed to the model
as ``inputs_embeds`` while the backbone runs only its last N layers
(:func:`tail_only`).

Why that is exact (checked for the installed transformers' Llama backbone, the
only architecture enabled; others fall back with a recorded reason):

- TRL's collator pads on the right, and attention is causal, so the hidden
  state at a real position does not depend on the padding; pads get zeros and
  are masked out as keys and excluded from the labels;
- ``LlamaModel.forward`` takes ``inputs_embeds`` as the hidden states as they
  are (no embedding scaling), builds position ids ``0..T-1``, the causal mask and
  the rotary embeddings from the batch shape and the attention mask alone, and
  loops over ``self.layers[: config.num_hidden_layers]``, so a ModuleList of the
  last N layers runs exactly those layers;
- the frozen layers must have no active dropout (``attention_dropout == 0``, no
  ``Dropout`` module with p > 0) and no adapter or trainable parameter.

On-disk cache (``<cache>/prefix_hidden/<key>.safetensors``), one file per
dataset (train pairs, each probe set). The key covers the frozen prefix weights
(embedding, the first ``L - N`` layers, the rotary buffers) and the model
config, the token ids of the pairs, ``max_length`` and the truncation mode, the
layer index, the dtype and the library versions. A hit gives the very floats the
run that computed them used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from divtune import resources
from divtune.train import memory
from divtune.train.ref_cache import hashed_key, save_atomic

logger = logging.getLogger(__name__)

#: Model types whose backbone forward was checked for the tail-only swap (see module docstring).
SUPPORTED_MODEL_TYPES = ("llama",)
#: The cache may take at most this fraction of the memory available when it is built.
MEMORY_FRACTION = 0.25
#: Rows per forward pass when filling the cache (rows sorted by length, so little padding).
FILL_BATCH_SIZE = 16
HIDDEN, TOKENS, OFFSETS = "hidden", "tokens", "offsets"
TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
#: Bumped when the stored layout or what it means changes.
FORMAT = 1


@dataclass
class PrefixCacheSettings:
    """What the runner decided from the config: the first adapted layer and where the cache lives.

    ``off`` is the reason the cache is not used (None: try to use it; the model
    is checked when the trainer is built, see :func:`unsupported_reason`).
    """

    layer: int | None = None
    cache_dir: str | None = None
    off: str | None = None


def new_record(layer: int | None, reason: str | None = None) -> dict:
    """The record written beside a run (PREFIX_CACHE_FILE) before the cache did anything."""
    return {"used": False, "reason": reason, "layer": layer, "datasets": {}, "forward_passes": {"from_cache": 0, "full": 0}}


def default_cache_dir() -> Path:
    return resources.cache_root() / "prefix_hidden"


def available_memory() -> int:
    return memory.available_memory()


def unwrap(model):
    """The transformers model under a PEFT wrapper."""
    from peft import PeftModel  # heavy

    return model.get_base_model() if isinstance(model, PeftModel) else model


def backbone_of(model):
    """The decoder stack (``LlamaModel``) of a causal LM, PEFT-wrapped or not."""
    return unwrap(model).base_model


def unsupported_reason(model, layer: int) -> str | None:
    """Why the hidden states entering ``layer`` cannot stand in for the frozen prefix (None: they can)."""
    import torch  # heavy
    from peft.tuners.tuners_utils import BaseTunerLayer  # heavy

    config = unwrap(model).config
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        checked = ", ".join(SUPPORTED_MODEL_TYPES)
        return f"model type {config.model_type!r} is not one whose backbone was checked ({checked})"
    backbone = backbone_of(model)
    layers = getattr(backbone, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) != config.num_hidden_layers:
        return "the backbone has no `layers` list of num_hidden_layers decoder layers"
    if not 0 < layer < len(layers):
        return f"no frozen decoder layer below the adapted ones (first adapted layer {layer} of {len(layers)})"
    if getattr(config, "attention_dropout", 0.0):
        return f"attention_dropout={config.attention_dropout} is active in the frozen layers in train mode"
    for module in (backbone.embed_tokens, *layers[:layer]):
        for name, sub in module.named_modules():
            if isinstance(sub, BaseTunerLayer):
                return f"an adapter sits in the frozen layers ({name})"
            if isinstance(sub, torch.nn.Dropout) and sub.p > 0:
                return f"dropout p={sub.p} in the frozen layers ({name})"
        if any(p.requires_grad for p in module.parameters()):
            return "the layers below the adapted ones have trainable parameters"
    return None


@contextmanager
def tail_only(backbone, layer: int):
    """The backbone runs only its layers from ``layer`` on; ``inputs_embeds`` are then the hidden states entering it."""
    import torch  # heavy

    layers = backbone.layers
    backbone.layers = torch.nn.ModuleList(list(layers)[layer:])
    try:
        yield
    finally:
        backbone.layers = layers


@contextmanager
def prefix_only(backbone, layer: int):
    """The backbone runs its layers below ``layer`` and no final norm: its output enters ``layer``."""
    import torch  # heavy

    layers, norm = backbone.layers, backbone.norm
    backbone.layers = torch.nn.ModuleList(list(layers)[:layer])
    backbone.norm = torch.nn.Identity()
    try:
        yield
    finally:
        backbone.layers, backbone.norm = layers, norm


def prefix_tensors(backbone, layer: int) -> list[tuple[str, Any]]:
    """The tensors the prefix output depends on: embedding, layers below ``layer``, the backbone's own buffers."""
    tensors = [(f"embed_tokens.{n}", t) for n, t in backbone.embed_tokens.state_dict().items()]
    for index in range(layer):
        tensors += [(f"layers.{index}.{n}", t) for n, t in backbone.layers[index].state_dict().items()]
    tensors += [(f"rotary_emb.{n}", t) for n, t in backbone.rotary_emb.named_buffers()]
    return tensors


def config_digest(config) -> str:
    """The model config without its path (a copy of the same model elsewhere is the same model)."""
    values = {k: v for k, v in config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
    values["attn_implementation"] = getattr(config, "_attn_implementation", None)
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cache_key(
    prefix_weights: str, pairs: str, max_length: int | None, truncation_mode: str, layer: int, extra: dict[str, Any]
) -> str:
    """The cache file name: a hash of everything the cached hidden states depend on."""
    return hashed_key({
        "prefix_weights": prefix_weights,
        "pairs": pairs,
        "max_length": max_length,
        "truncation_mode": truncation_mode,
        "layer": layer,
        "format": FORMAT,
        "fill_batch_size": FILL_BATCH_SIZE,
        **extra,
    })


def row_key(ids) -> bytes:
    import torch  # heavy

    return ids.to(torch.int64).cpu().numpy().tobytes()


def distinct_rows(dataset, collator, chunk: int = 256) -> list:
    """The distinct unpadded sequence rows the collator makes of ``dataset`` (prompt+chosen, prompt+rejected)."""
    rows: dict[bytes, Any] = {}
    for start in range(0, len(dataset), chunk):
        part = dataset[start : start + chunk]
        examples = [dict(zip(TOKEN_COLUMNS, values)) for values in zip(*(part[c] for c in TOKEN_COLUMNS))]
        batch = collator(examples)
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
            ids = ids[: int(mask.sum())]
            rows.setdefault(row_key(ids), ids)
    return list(rows.values())


class PrefixStore:
    """Hidden states entering the first adapted layer, per distinct token row (unpadded, float32, on the CPU)."""

    def __init__(self) -> None:
        self.rows: dict[bytes, Any] = {}
        self.nbytes = 0

    def __contains__(self, ids) -> bool:
        return row_key(ids) in self.rows

    def add(self, ids, hidden) -> None:
        key = row_key(ids)
        if key not in self.rows:
            self.rows[key] = hidden
            self.nbytes += hidden.numel() * hidden.element_size()

    def embeds(self, input_ids, attention_mask, dtype, device):
        """``inputs_embeds`` for a right-padded batch (pads: zeros), or None if a row is missing or left-padded."""
        import torch  # heavy

        lengths = attention_mask.sum(dim=1).tolist()
        hidden = []
        for ids, mask, length in zip(input_ids, attention_mask, lengths):
            if not bool(mask[:length].all()):
                return None  # not right-padded
            row = self.rows.get(row_key(ids[:length]))
            if row is None:
                return None
            hidden.append(row)
        out = torch.zeros(*input_ids.shape, hidden[0].shape[-1], dtype=dtype)
        for index, (row, length) in enumerate(zip(hidden, lengths)):
            out[index, :length] = row
        return out.to(device)


def compute_hidden(backbone, layer: int, rows: list, pad_id: int, device) -> list:
    """Hidden states entering ``layer`` for every row (float32, CPU), batched by length, without gradients."""
    import torch  # heavy

    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out: list = [None] * len(rows)
    with torch.no_grad(), prefix_only(backbone, layer):
        for start in range(0, len(order), FILL_BATCH_SIZE):
            picked = order[start : start + FILL_BATCH_SIZE]
            width = max(len(rows[i]) for i in picked)
            ids = torch.full((len(picked), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(picked), width), dtype=torch.long)
            for j, i in enumerate(picked):
                ids[j, : len(rows[i])] = rows[i]
                mask[j, : len(rows[i])] = 1
            outputs = backbone(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
            hidden = outputs.last_hidden_state.detach().float().cpu()
            for j, i in enumerate(picked):
                out[i] = hidden[j, : len(rows[i])].clone()
    return out


def save(path: Path, rows: list, hidden: list, meta: dict[str, str]) -> None:
    """One file per dataset: the rows' token ids and hidden states concatenated, with row offsets. Atomic."""
    import torch  # heavy

    lengths = torch.tensor([0] + [len(r) for r in rows], dtype=torch.int64)
    save_atomic(path, {
        TOKENS: torch.cat([r.to(torch.int64) for r in rows]),
        HIDDEN: torch.cat(hidden).contiguous(),
        OFFSETS: torch.cumsum(lengths, dim=0),
    }, meta)


def load(path: Path) -> tuple[list, list]:
    """(rows, hidden states) of a cache file; the hidden states are views into one tensor."""
    from safetensors.torch import load_file  # heavy

    tensors = load_file(str(path))
    offsets = tensors[OFFSETS].tolist()
    spans = list(zip(offsets[:-1], offsets[1:]))
    return [tensors[TOKENS][a:b] for a, b in spans], [tensors[HIDDEN][a:b] for a, b in spans]


def size_refusal(new_bytes: int, held_bytes: int) -> str | None:
    """Why a cache of ``held_bytes + new_bytes`` is too big for this machine (None: it fits)."""
    available = available_memory()
    limit = MEMORY_FRACTION * (available + held_bytes)
    if held_bytes + new_bytes <= limit:
        return None
    mib = 1024 * 1024
    return (
        f"the cache would take {(held_bytes + new_bytes) / mib:.0f} MiB, over {MEMORY_FRACTION:.0%} "
        f"of the {(available + held_bytes) / mib:.0f} MiB available"
    )
