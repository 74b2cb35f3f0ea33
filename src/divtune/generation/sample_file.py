"""The generations file: one JSON line per sample, appended batch by batch, and its summary.

One output line per sample: ``prompt_id, prompt, sample_index, text, model,
seed`` plus the decoding settings (:func:`sample_row`). The file is resumable:
every finished batch is appended and fsync'ed, and a restarted run skips the
samples already on disk (a torn last line from a killed run is cut off first).
Samples are keyed by :func:`sample_key`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from divtune.io import InputError, iter_jsonl

if TYPE_CHECKING:
    from divtune.generation.config import GenerateConfig
    from divtune.generation.prompts import Prompt

logger = logging.getLogger(__name__)


def cut_torn_line(path: Path) -> None:
    """Cut off an unterminated last line, left by a run killed while appending."""
    if not path.is_file():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        logger.warning("%s: cutting off a torn last line (%d bytes) left by an interrupted run",
                       path, len(data) - end)
        with open(path, "r+b") as handle:
            handle.truncate(end)
            handle.flush()
            os.fsync(handle.fileno())


def load_done(output: Path) -> set[tuple[str, int]]:
    """Keys of the samples already written; a torn (unterminated) last line is cut off."""
    if not output.is_file():
        return set()
    cut_torn_line(output)
    done = set()
    for lineno, obj in iter_jsonl(output):
        for field in ("prompt_id", "sample_index"):
            if field not in obj:
                raise InputError(output, "existing generations line lacks a field", line=lineno, field=field)
        done.add(sample_key(obj["prompt_id"], obj["sample_index"]))
    return done


def sample_key(prompt_id: Any, sample_index: int) -> tuple[str, int]:
    # JSON round-trips keep types, but key on the JSON text so 1 and "1" stay distinct.
    return json.dumps(prompt_id), int(sample_index)


def append_rows(output: Path, rows: list[dict]) -> None:
    """Append a finished batch and make it durable before the next one starts."""
    with open(output, "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        handle.flush()
        os.fsync(handle.fileno())


def system_name(cfg: GenerateConfig) -> str:
    """The ``model`` field of every line: ``--name``, else the model folder/file stem or hub id.

    A strategy other than ``independent`` is part of the name (``base-iterative``):
    it is appended unless the name already contains it, so reports never show a
    prompting baseline under the bare model's name.
    """
    if cfg.name:
        name = cfg.name
    else:
        spec = cfg.model.rstrip("/")
        path = Path(spec)
        name = path.stem if path.suffix == ".gguf" else (path.name or spec)
    if cfg.strategy != "independent" and cfg.strategy not in name:
        name = f"{name}-{cfg.strategy}"
    return name


def summary_path(output: Path) -> Path:
    """``FILE.summary.json``: what the generations file holds and, per strategy, what was dropped and why."""
    return output.with_name(output.name + ".summary.json")


def count_summary(cfg: GenerateConfig, prompts: list[Prompt], output: Path) -> dict:
    """Samples per prompt found in ``output``; prompts with fewer than ``num_samples`` are listed."""
    per_prompt: dict[str, int] = {json.dumps(p.prompt_id): 0 for p in prompts}
    if output.is_file():
        for _, obj in iter_jsonl(output):
            key = json.dumps(obj.get("prompt_id"))
            if key in per_prompt:
                per_prompt[key] += 1
    short = {key: n for key, n in per_prompt.items() if n < cfg.num_samples}
    return {
        "strategy": cfg.strategy,
        "model": system_name(cfg),
        "prompts": len(prompts),
        "samples_per_prompt": cfg.num_samples,
        "samples": sum(per_prompt.values()),
        "prompts_short": [{"prompt_id": json.loads(key), "samples": n} for key, n in short.items()],
    }


def sample_row(cfg: GenerateConfig, prompt: Prompt, sample_index: int, text: str, seed: int, n_tokens: int,
               **extra: Any) -> dict:
    """One line of the generations file: the sample, its prompt, its seed and the decoding settings."""
    return {
        "prompt_id": prompt.prompt_id,
        "prompt": prompt.prompt,
        "sample_index": sample_index,
        "text": text,
        "model": system_name(cfg),
        "seed": seed,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": cfg.top_k,
        "repetition_penalty": cfg.repetition_penalty,
        "max_new_tokens": cfg.max_new_tokens,
        "num_new_tokens": n_tokens,
        "strategy": cfg.strategy,
        **extra,
    }
