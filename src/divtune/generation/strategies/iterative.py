"""``--strategy iterative``: sample k of a prompt is asked for with samples 1..k-1 in its prompt.

Work plan (seeded, resumable): round k makes sample k of every prompt. A
round's prompts, in prompt order, are cut into batches of ``batch_size``, and
batch b of round k is sampled after seeding with ``iterative_seed(seed, k, b)``.
Rounds run in order, so when a batch of round k runs, samples 1..k-1 of its
prompts are already in the file. A resumed run reads them back, reruns an
interrupted batch with the same inputs and seed, and writes only its missing
samples: the file ends up as an uninterrupted run's.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from divtune.generation.plan import batches_of, derive_seed
from divtune.generation.sample_file import append_rows, cut_torn_line, sample_key, sample_row, system_name
from divtune.generation.strategies.prompts import fill, iterative_message
from divtune.io import InputError, iter_jsonl


def iterative_seed(seed: int, round_index: int, batch_index: int) -> int:
    return derive_seed("iterative", seed, round_index, batch_index)


def read_written(output: Path) -> dict[tuple[str, int], dict]:
    """Lines already in ``output`` by (prompt id as JSON, sample index); a torn last line is cut off."""
    cut_torn_line(output)
    rows: dict[tuple[str, int], dict] = {}
    if not output.is_file():
        return rows
    for lineno, obj in iter_jsonl(output):
        for field in ("prompt_id", "sample_index", "text"):
            if field not in obj:
                raise InputError(output, "existing generations line lacks a field", line=lineno, field=field)
        rows[sample_key(obj["prompt_id"], obj["sample_index"])] = obj
    return rows


def run_iterative(cfg, prompts, prompt_texts: list[str], output: Path, sampler, stop_after_batches=None) -> dict:
    settings = cfg.iterative
    written = read_written(output)
    batches_run = 0
    for k in range(cfg.num_samples):
        for b, positions in enumerate(batches_of(list(range(len(prompts))), cfg.batch_size)):
            keys = [sample_key(prompts[p].prompt_id, k) for p in positions]
            if all(key in written for key in keys):
                continue
            messages, shown = [], []
            for p in positions:
                previous = [written[sample_key(prompts[p].prompt_id, j)]["text"] for j in range(k)]
                if previous:
                    message, n_shown = iterative_message(prompt_texts[p], previous, settings, sampler.count_tokens)
                else:
                    message, n_shown = fill(settings.first_template, prompt=prompt_texts[p]), 0
                messages.append(message)
                shown.append(n_shown)
            seed = iterative_seed(cfg.seed, k, b)
            # The whole batch is sampled, even its samples already written, so the seeded
            # draw is the same as in an uninterrupted run.
            outputs = sampler.sample(messages, seed, cfg.max_new_tokens)
            rows = []
            for p, key, n_shown, (text, n_tokens) in zip(positions, keys, shown, outputs):
                if key in written:
                    continue
                row = sample_row(cfg, prompts[p], k, text, seed, n_tokens, n_previous_shown=n_shown)
                rows.append(row)
                written[key] = row
            append_rows(output, rows)
            batches_run += 1
            if stop_after_batches is not None and batches_run >= stop_after_batches:
                return iterative_summary(cfg, prompts, written)
    return iterative_summary(cfg, prompts, written)


def iterative_summary(cfg, prompts, written: dict) -> dict:
    dropped = Counter()
    for row in written.values():
        hidden = row["sample_index"] - row.get("n_previous_shown", row["sample_index"])
        if hidden > 0:
            dropped["samples"] += 1
            dropped["earlier samples not shown"] += hidden
    per_prompt = Counter(prompt_key for prompt_key, _ in written)
    short = [
        {"prompt_id": prompt.prompt_id, "samples": per_prompt[json.dumps(prompt.prompt_id)]}
        for prompt in prompts
        if per_prompt[json.dumps(prompt.prompt_id)] < cfg.num_samples
    ]
    return {
        "strategy": "iterative",
        "model": system_name(cfg),
        "prompts": len(prompts),
        "samples_per_prompt": cfg.num_samples,
        "samples": len(written),
        "prompts_short": short,
        "max_context_tokens": cfg.iterative.max_context_tokens,
        # Samples whose prompt could not hold every earlier sample (the oldest were dropped).
        "context_cap": {
            "samples_with_earlier_samples_dropped": dropped["samples"],
            "earlier_samples_dropped": dropped["earlier samples not shown"],
        },
    }
