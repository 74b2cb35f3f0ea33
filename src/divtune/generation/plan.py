"""Seeds and the work plan of a generation run: which samples go together and how each batch is seeded.

Determinism: the work is a fixed list of (prompt, sample_index) items, in
prompt order, cut into batches of ``batch_size`` sequences. Batch ``k`` is
sampled after seeding torch with ``batch_seed(seed, k)``. A resumed run
therefore regenerates an interrupted batch exactly as an uninterrupted run
would (same prompts, same batch, same seed) and writes only its missing
samples, so the file ends up identical, as long as the prompts, ``seed`` and
``batch_size`` are unchanged. The vllm backend instead seeds every request
with ``sample_seed(seed, prompt_id, sample_index)``, which does not depend on
batching at all. The strategies seed their rounds' batches from :func:`derive_seed` too.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def derive_seed(*parts: Any) -> int:
    digest = hashlib.sha256("|".join(json.dumps(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def batch_seed(seed: int, batch_index: int) -> int:
    """Torch seed of batch ``batch_index`` (HF backend)."""
    return derive_seed("batch", seed, batch_index)


def sample_seed(seed: int, prompt_id: Any, sample_index: int) -> int:
    """Per-request seed (vllm backend): independent of batching."""
    return derive_seed("sample", seed, prompt_id, sample_index)


def plan_batches(n_prompts: int, num_samples: int, batch_size: int) -> list[list[tuple[int, int]]]:
    """All (prompt position, sample_index) items in prompt order, cut into batches."""
    items = [(p, s) for p in range(n_prompts) for s in range(num_samples)]
    return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]


def batches_of(positions: list[int], batch_size: int) -> list[list[int]]:
    """``positions`` cut into consecutive batches of ``batch_size`` (a strategy round's prompts)."""
    return [positions[i : i + batch_size] for i in range(0, len(positions), batch_size)]
