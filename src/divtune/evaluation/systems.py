"""A system: one row of the evaluation (a generations file, or the human ``gold`` row), its samples per prompt.

Reading a generations file, the seeded choice of gold responses, unique system names, and
dropping the prompts diversity is undefined for.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from divtune.config import ConfigError
from divtune.evaluation.keys import GOLD, GOLD_MATCHED
from divtune.io import InputError, iter_jsonl

#: A generations line needs ``text`` and ``prompt_id`` or ``prompt``; ``sample_index`` and ``model`` are optional.
_PROMPT_KEY_FIELDS = ("prompt_id", "prompt")


@dataclass
class System:
    """All samples of one system, grouped by prompt (prompt ids as strings, samples in index order)."""

    name: str
    source: str
    prompts: dict[str, str] = field(default_factory=dict)
    texts: dict[str, list[str]] = field(default_factory=dict)
    quality: dict[str, list[float | None]] = field(default_factory=dict)
    original_ids: dict[str, Any] = field(default_factory=dict)
    is_gold: bool = False
    #: ``prompt_id``, or ``prompt`` for files from other tools that give only the prompt text.
    keyed_by: str = "prompt_id"
    #: Gold rows: per prompt, the human response each text is (or was cut from), for centrality's self-exclusion.
    origins: dict[str, list[str]] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return sum(len(t) for t in self.texts.values())

    def has_quality(self) -> bool:
        return bool(self.quality) and all(q is not None for qs in self.quality.values() for q in qs)


def read_generations(path: str | Path) -> System:
    """Read one generations file; the system name is its ``model`` field, else the file stem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "generations file not found")
    rows: dict[str, dict[int, tuple[str, float | None]]] = {}
    system = System(name="", source=str(path))
    model_name: str | None = None
    # The first line decides how the file names prompts and whether it numbers samples;
    # every line must then do the same (a mix would be ambiguous).
    has_index: bool | None = None
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj, dict):
            raise InputError(path, f"expected a JSON object, got {type(obj).__name__}", line=lineno)
        if not rows and not any(key in obj for key in _PROMPT_KEY_FIELDS):
            raise InputError(path, "missing required field (prompt_id or prompt)", line=lineno, field="prompt_id")
        if not rows:
            system.keyed_by = "prompt_id" if "prompt_id" in obj else "prompt"
            has_index = "sample_index" in obj
        if system.keyed_by not in obj:
            raise InputError(path, f"missing required field (earlier lines have {system.keyed_by!r})",
                             line=lineno, field=system.keyed_by)
        if "text" not in obj:
            raise InputError(path, "missing required field", line=lineno, field="text")
        if not isinstance(obj["text"], str):
            raise InputError(path, f"must be a string, got {type(obj['text']).__name__}", line=lineno, field="text")
        if "prompt" in obj and not isinstance(obj["prompt"], str):
            raise InputError(path, "must be a string", line=lineno, field="prompt")
        if ("sample_index" in obj) != has_index:
            raise InputError(path, "present on some lines and absent on others", line=lineno, field="sample_index")
        prompt_key = str(obj["prompt_id"]) if system.keyed_by == "prompt_id" else obj["prompt"]
        if not has_index:
            obj["sample_index"] = len(rows.get(prompt_key, {}))  # samples numbered in file order
        if not isinstance(obj["sample_index"], int) or isinstance(obj["sample_index"], bool):
            raise InputError(path, "must be an integer", line=lineno, field="sample_index")
        model = obj.get("model")
        if model is not None:
            if model_name is None:
                model_name = str(model)
            elif str(model) != model_name:
                raise InputError(
                    path, f"{model!r} differs from {model_name!r} earlier in the file (one system per file)",
                    line=lineno, field="model",
                )
        quality = obj.get("quality")
        if quality is not None and (not isinstance(quality, (int, float)) or isinstance(quality, bool)):
            raise InputError(path, f"must be a number, got {quality!r}", line=lineno, field="quality")
        samples = rows.setdefault(prompt_key, {})
        if obj["sample_index"] in samples:
            raise InputError(
                path, f"sample {obj['sample_index']} of prompt {prompt_key!r} appears twice", line=lineno,
                field="sample_index",
            )
        samples[obj["sample_index"]] = (obj["text"], None if quality is None else float(quality))
        if "prompt" in obj:
            system.prompts.setdefault(prompt_key, obj["prompt"])
        system.original_ids.setdefault(prompt_key, obj.get("prompt_id", prompt_key))
    if not rows:
        raise InputError(path, "no generations in file")
    for prompt_key, samples in rows.items():
        ordered = [samples[i] for i in sorted(samples)]
        system.texts[prompt_key] = [text for text, _ in ordered]
        system.quality[prompt_key] = [q for _, q in ordered]
    system.name = model_name or path.name.split(".")[0]
    return system


def pick_gold_indices(pool_id: str, available: int, n: int, seed: int) -> list[int]:
    """Seeded choice of n of a pool's responses; seeded per pool so it does not depend on file order."""
    pool_seed = int.from_bytes(hashlib.sha256(pool_id.encode()).digest()[:8], "little")
    rng = np.random.default_rng([seed, pool_seed])
    return sorted(rng.choice(available, size=n, replace=False).tolist())


def draw_gold_texts(key: str, responses: list[str], n: int, seed: int, skipped: Counter, scope: str = "") -> list[str] | None:
    """``n`` of a prompt's human responses for the gold row (seeded per prompt), or None when it has
    fewer; what is left out is counted in ``skipped`` (``scope``: e.g. "test " for a prepared test split)."""
    if len(responses) < n:
        skipped[f"gold: {scope}prompts with fewer than {n} human responses"] += 1
        skipped[f"gold: responses of {scope}prompts with fewer than {n} human responses"] += len(responses)
        return None
    if len(responses) > n:
        skipped[f"gold: {scope}responses not drawn (only {n} per prompt)"] += len(responses) - n
    return [responses[i] for i in pick_gold_indices(key, len(responses), n, seed)]


def unique_system_names(systems: list[System]) -> None:
    """Generation files naming the same model (or ``gold``) get ``name (file stem)`` so none overwrites another."""
    generated = [s for s in systems if not s.is_gold]
    counts = Counter(s.name for s in generated)
    for system in generated:
        if counts[system.name] > 1 or system.name in (GOLD, GOLD_MATCHED):
            system.name = f"{system.name} ({Path(system.source).name.split('.')[0]})"
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise ConfigError(f"system names collide even after adding file stems: {names}; rename the files")


def drop_prompts_under_two_samples(systems: list[System], skipped: Counter) -> None:
    """Diversity needs two samples: prompts with fewer leave every table (counted in ``skipped``)."""
    for system in systems:
        for key in [k for k, t in system.texts.items() if len(t) < 2]:
            skipped[f"{system.name}: prompts with fewer than 2 samples"] += 1
            for table in (system.texts, system.quality, system.prompts):
                table.pop(key, None)
        if not system.texts:
            raise InputError(system.source, "no prompt with at least 2 samples: diversity is undefined")
