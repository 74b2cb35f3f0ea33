"""Running a non-independent strategy: what the strategies share.

A *sampler* is anything with ``tokenizer``, ``count_tokens(text) -> int`` and
``sample(messages, seed, max_new_tokens) -> [(text, new_tokens)]`` (one sample
per user message, after seeding with ``seed``): :class:`divtune.generation.hf.HFSampler`
in a run, a scripted stand-in in tests.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from divtune.generation.prompts import truncate_prompt
from divtune.generation.strategies.iterative import run_iterative
from divtune.generation.strategies.verbalized import run_verbalized

logger = logging.getLogger(__name__)


class Sampler(Protocol):
    tokenizer: Any

    def count_tokens(self, text: str) -> int: ...

    def sample(self, messages: list[str], seed: int, max_new_tokens: int) -> list[tuple[str, int]]: ...


def run_strategy(cfg, prompts, output: Path, sampler: Sampler, stop_after_batches: int | None = None) -> dict:
    """Run ``cfg.strategy`` into ``output`` (resuming what is there); returns the summary."""
    texts = truncated_prompts(cfg, prompts, sampler.tokenizer)
    if cfg.strategy == "iterative":
        return run_iterative(cfg, prompts, texts, output, sampler, stop_after_batches)
    if cfg.strategy == "verbalized":
        return run_verbalized(cfg, prompts, texts, output, sampler, stop_after_batches)
    raise ValueError(f"unknown strategy {cfg.strategy!r}")


def truncated_prompts(cfg, prompts, tokenizer) -> list[str]:
    """Each prompt cut to ``max_prompt_tokens`` (counted in the log), before any template is filled."""
    texts, n_cut = [], 0
    for prompt in prompts:
        text, cut = truncate_prompt(tokenizer, prompt.prompt, cfg.max_prompt_tokens)
        texts.append(text)
        n_cut += cut
    if n_cut:
        logger.info("%d of %d prompts are longer than max_prompt_tokens=%d and keep their start",
                    n_cut, len(prompts), cfg.max_prompt_tokens)
    return texts

