"""On-disk cache of DPO reference log-probs, shared by every run that has the same reference.

DPO, DDPO and their seeds all compare the policy with the same base model on
the same pairs. Their reference log-probs are therefore one computation: it is
done once (the ``precompute_ref_log_probs`` pass, spread over the processes
of a multi-process run), stored as safetensors under
``<cache>/ref_logps/<key>.safetensors`` by the main process and read back by
every later run (the main process reads it and broadcasts the numbers).

The key covers everything the numbers depend on:

- the reference model: its identity, :func:`model_identity` (hashes of the
  weight and config files of the model folder, or of the Hub snapshot, and of
  an ``init`` adapter's folder and its base), given by the caller that loaded
  it (the CLI runner) as ``DeviationDPOConfig.ref_cache_model_id``, plus its
  config (attention implementation, quantisation). So the randomly initialised
  LoRA adapter being trained (which differs per seed) does not split the cache,
  while a different base model, or an SFT adapter used as the reference, does.
  Without an identity the trainer hashes the reference parameters instead
  (:func:`weights_digest` of :func:`reference_tensors`), which is not ZeRO-3
  safe: sharded parameters are empty on every rank;
- the pairs exactly as the model sees them: the token ids TRL produced
  (prompt, chosen, rejected), hence the chat template and the tokenizer;
- the collator's cut (``max_length``, ``truncation_mode``) and the batch size
  of the pass (batch shapes can move the last float bits);
- the library versions and the computation dtype.

A hit gives the very floats a miss stored (a test checks that two trainings,
one computing and one reading the cache, log bit-identical losses).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from divtune import resources
from divtune.models import adapter_base_source, is_adapter_dir, resolve_model_source

logger = logging.getLogger(__name__)

TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
CHOSEN, REJECTED = "ref_chosen_logps", "ref_rejected_logps"


def weights_digest(named_tensors: Iterable[tuple[str, Any]]) -> str:
    """A digest of named tensors (name, dtype, shape and bytes), independent of their order."""
    import torch  # heavy

    digest = hashlib.blake2b(digest_size=20)
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16; the bits are what matter
            tensor = tensor.view(torch.int16)
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def reference_tensors(model, ref_model=None) -> list[tuple[str, Any]]:
    """The tensors that define the reference: a separate ref model's, or the frozen ones of the policy.

    With PEFT the reference is the base with the trained adapter disabled, so the
    trainable adapter weights are left out; a frozen ``ref`` adapter stays in.
    """
    if ref_model is not None:
        return list(ref_model.state_dict().items())
    frozen = [(name, p) for name, p in model.named_parameters() if not p.requires_grad]
    if not frozen:  # full fine-tuning precomputes with the policy itself, before any step
        return list(model.state_dict().items())
    buffers = list(model.named_buffers())
    return frozen + buffers


#: Files of a model folder its weights and architecture come from. Tokenizer files are left
#: out: the key holds the token ids themselves.
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".py")
MODEL_FILE_NAMES = ("config.json", "adapter_config.json")
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_hash(path: Path) -> str:
    """A file's content hash: a Hugging Face cache blob's own name (it is the hash), else sha256, memoised."""
    real = Path(path).resolve()
    if real.parent.name == "blobs":
        return real.name
    stat = real.stat()
    memo = (str(real), stat.st_size, stat.st_mtime_ns)
    if memo not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(real, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 24), b""):
                digest.update(chunk)
        _FILE_HASHES[memo] = digest.hexdigest()
    return _FILE_HASHES[memo]


def folder_digest(folder: Path) -> str | None:
    """Names and content hashes of a model folder's weight and config files (None: it has no weights)."""
    files = sorted(
        path for path in Path(folder).iterdir()
        if path.is_file() and (path.suffix in MODEL_FILE_SUFFIXES or path.name in MODEL_FILE_NAMES)
    )
    if not any(path.suffix in MODEL_FILE_SUFFIXES for path in files):
        return None
    return hashed_key({path.name: file_hash(path) for path in files})


def _hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a Hub model (the revision ``main`` points to), None if not cached."""
    from huggingface_hub import try_to_load_from_cache  # heavy

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def model_identity(spec: str) -> dict[str, Any] | None:
    """What a model spec loads, by content: its folder's (or Hub snapshot's) weight and config files, and for
    an adapter folder its base's too. None when that cannot be told (not in the local cache, no weight files).

    A copy of the same files elsewhere has the same identity; a changed byte changes it.
    """
    source = resolve_model_source(spec)
    folder = Path(source) if Path(source).is_dir() else _hub_snapshot(source)
    if folder is None:
        return None
    files = folder_digest(folder)
    if files is None:
        return None
    identity: dict[str, Any] = {"files": files}
    if is_adapter_dir(folder):
        identity["base"] = model_identity(adapter_base_source(folder))
        if identity["base"] is None:
            return None
    return identity


def dataset_digest(columns: dict[str, list]) -> str:
    """A digest of the tokenised pairs (the lists of token ids of each column, in dataset order)."""
    digest = hashlib.blake2b(digest_size=20)
    for name in TOKEN_COLUMNS:
        digest.update(name.encode())
        digest.update(json.dumps(columns[name], separators=(",", ":")).encode())
    return digest.hexdigest()


def cache_key(
    reference: str, pairs: str, max_length: int | None, truncation_mode: str, batch_size: int, extra: dict[str, Any]
) -> str:
    """The cache file name: a hash of everything the reference log-probs depend on."""
    return hashed_key({
        "reference": reference,
        "pairs": pairs,
        "max_length": max_length,
        "truncation_mode": truncation_mode,
        "batch_size": batch_size,
        **extra,
    })


def hashed_key(fields: dict[str, Any]) -> str:
    """A cache file name: the hash of the fields it depends on (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def library_versions() -> dict[str, str]:
    return {name: md.version(name) for name in ("torch", "transformers", "trl", "peft")}


def load(path: Path):
    """(chosen, rejected) float tensors of a cache file."""
    from safetensors.torch import load_file  # heavy

    tensors = load_file(str(path))
    return tensors[CHOSEN], tensors[REJECTED]


def save(path: Path, chosen, rejected, meta: dict[str, str]) -> None:
    """Write atomically: a killed run never leaves a half-written cache file behind."""
    save_atomic(path, {CHOSEN: chosen.contiguous(), REJECTED: rejected.contiguous()}, meta)


def save_atomic(path: Path, tensors: dict, meta: dict[str, str]) -> None:
    """A safetensors cache file written to a temporary name, then renamed into place."""
    from safetensors.torch import save_file  # heavy

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def default_cache_dir() -> Path:
    return resources.cache_root() / "ref_logps"
