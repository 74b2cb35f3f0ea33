"""``--strategy verbalized``: one call asks for several responses with their probabilities.

Each prompt's first call asks for ``responses_per_call`` (default
``num_samples``) responses. The reply is parsed
(:mod:`divtune.generation.strategies.verbalized_parse`); at most the number asked is kept,
in reply order. A prompt still short of ``num_samples`` is *topped up*: the next
round calls it again for the number still missing, until it is full or has
had ``max_calls`` calls. What each call asked, got and lost is counted in the
summary; a prompt left short is listed there with its reasons.

Work plan (seeded, resumable): round r makes call r of every prompt still
short after rounds < r. Those prompts, in prompt order, are cut into batches of
``batch_size`` calls, and batch b of round r is sampled after seeding with
``verbalized_seed(seed, r, b)``. Every call is logged (reply, parsed responses,
problems) in ``FILE.calls.jsonl`` before its samples are appended to ``FILE``;
the samples are a pure function of the log (responses numbered in call order),
so a resumed run rebuilds its state from the log, appends samples the log has
but the file lacks, and reruns an interrupted batch with the same inputs and seed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from divtune.generation.plan import batches_of, derive_seed
from divtune.generation.prompts import truncate_prompt
from divtune.generation.sample_file import (
    append_rows,
    cut_torn_line,
    load_done,
    sample_key,
    sample_row,
    system_name,
)
from divtune.generation.strategies.prompts import verbalized_message
from divtune.generation.strategies.verbalized_parse import PROBLEMS, parse_verbalized
from divtune.io import InputError, iter_jsonl

#: Counted beside the parser's problems.
CALL_PROBLEMS = {
    **PROBLEMS,
    "beyond_asked": "responses beyond the number asked (not used)",
    "taken_as_one_response": "reply without structure taken whole as one response (unstructured: one_response)",
}


def verbalized_seed(seed: int, round_index: int, batch_index: int) -> int:
    return derive_seed("verbalized", seed, round_index, batch_index)


def calls_path(output: Path) -> Path:
    return output.with_name(output.name + ".calls.jsonl")


def read_calls(path: Path) -> dict[tuple[str, int], dict]:
    """Logged calls by (prompt id as JSON, round); a torn last line is cut off."""
    cut_torn_line(path)
    calls: dict[tuple[str, int], dict] = {}
    if not path.is_file():
        return calls
    for lineno, obj in iter_jsonl(path):
        for field in ("prompt_id", "round", "texts"):
            if field not in obj:
                raise InputError(path, "call log line lacks a field", line=lineno, field=field)
        calls[(json.dumps(obj["prompt_id"]), obj["round"])] = obj
    return calls


def read_call(reply: str, asked: int, unstructured: str) -> dict:
    """What one reply gives: at most ``asked`` responses, with the problems counted."""
    parsed = parse_verbalized(reply)
    problems = Counter(parsed.problems)
    texts, probabilities = parsed.texts, parsed.probabilities
    if not texts and parsed.form == "none" and reply.strip() and unstructured == "one_response":
        texts, probabilities = [reply.strip()], [None]
        problems["taken_as_one_response"] += 1
        problems.pop("no_responses", None)
    if len(texts) > asked:
        problems["beyond_asked"] += len(texts) - asked
        texts, probabilities = texts[:asked], probabilities[:asked]
    return {"form": parsed.form, "texts": texts, "probabilities": probabilities, "problems": dict(problems)}


def _cut_responses(call: dict, tokenizer, max_tokens: int) -> None:
    cut = [truncate_prompt(tokenizer, text, max_tokens) for text in call["texts"]]
    call["texts"] = [text.strip() for text, _ in cut]
    call["cut_to_max_new_tokens"] = sum(was_cut for _, was_cut in cut)
    # Tokens kept, not a recount of the cut text (a cut inside a character re-encodes longer).
    call["token_counts"] = [min(n, max_tokens) for n in call["token_counts"]]


def _kept_before(calls: dict, prompt_key: str, round_index: int) -> int:
    return sum(len(calls[(prompt_key, r)]["texts"]) for r in range(round_index) if (prompt_key, r) in calls)


def expected_rows(cfg, prompts, calls: dict) -> list[dict]:
    """Every sample line the logged calls give, in prompt order then call order (the file's content)."""
    rows = []
    for prompt in prompts:
        key = json.dumps(prompt.prompt_id)
        index = 0
        for r in range(cfg.verbalized.max_calls):
            call = calls.get((key, r))
            if call is None:
                break
            for position, (text, probability, n_tokens) in enumerate(
                zip(call["texts"], call["probabilities"], call["token_counts"])
            ):
                rows.append(sample_row(cfg, prompt, index, text, call["seed"], n_tokens,
                                 call_index=r, position_in_call=position, probability=probability))
                index += 1
    return rows


def _append_missing_samples(cfg, prompts, calls, output: Path, written: set) -> None:
    missing = [row for row in expected_rows(cfg, prompts, calls)
               if sample_key(row["prompt_id"], row["sample_index"]) not in written]
    if missing:
        append_rows(output, missing)
        written.update(sample_key(row["prompt_id"], row["sample_index"]) for row in missing)


def run_verbalized(cfg, prompts, prompt_texts: list[str], output: Path, sampler, stop_after_batches=None) -> dict:
    settings = cfg.verbalized
    per_call = settings.responses_per_call or cfg.num_samples
    log_path = calls_path(output)
    calls = read_calls(log_path)
    written = load_done(output)
    # A run killed between logging a batch's calls and writing their samples.
    _append_missing_samples(cfg, prompts, calls, output, written)
    keys = [json.dumps(p.prompt_id) for p in prompts]
    batches_run = 0
    for r in range(settings.max_calls):
        active = [p for p in range(len(prompts)) if _kept_before(calls, keys[p], r) < cfg.num_samples]
        for b, positions in enumerate(batches_of(active, cfg.batch_size)):
            if all((keys[p], r) in calls for p in positions):
                continue
            asked = [min(per_call, cfg.num_samples - _kept_before(calls, keys[p], r)) for p in positions]
            messages = [verbalized_message(prompt_texts[p], k, settings) for p, k in zip(positions, asked)]
            seed = verbalized_seed(cfg.seed, r, b)
            budget = max(asked) * (cfg.max_new_tokens + settings.overhead_tokens_per_response)
            outputs = sampler.sample(messages, seed, budget)
            new_calls = []
            for p, k, (reply, n_tokens) in zip(positions, asked, outputs):
                if (keys[p], r) in calls:
                    continue
                call = {"prompt_id": prompts[p].prompt_id, "round": r, "seed": seed, "asked": k,
                        "reply": reply, "reply_tokens": n_tokens, **read_call(reply, k, settings.unstructured)}
                call["token_counts"] = [sampler.count_tokens(text) for text in call["texts"]]
                if settings.cut_to_max_new_tokens:
                    _cut_responses(call, sampler.tokenizer, cfg.max_new_tokens)
                new_calls.append(call)
            append_rows(log_path, new_calls)
            calls.update({(json.dumps(c["prompt_id"]), r): c for c in new_calls})
            _append_missing_samples(cfg, prompts, calls, output, written)
            batches_run += 1
            if stop_after_batches is not None and batches_run >= stop_after_batches:
                return verbalized_summary(cfg, prompts, calls)
    return verbalized_summary(cfg, prompts, calls)


def verbalized_summary(cfg, prompts, calls: dict) -> dict:
    """Calls, responses asked / kept / missing, the problems behind them, and every prompt left short."""
    problems: Counter = Counter()
    asked = kept = with_probability = cut = 0
    forms: Counter = Counter()
    short, topped_up = [], 0
    unparsed = 0  # replies that gave no usable response at all
    for prompt in prompts:
        key = json.dumps(prompt.prompt_id)
        own = [calls[(key, r)] for r in range(cfg.verbalized.max_calls) if (key, r) in calls]
        own_problems: Counter = Counter()
        for call in own:
            asked += call["asked"]
            kept += len(call["texts"])
            with_probability += sum(p is not None for p in call["probabilities"])
            cut += call.get("cut_to_max_new_tokens", 0)
            forms[call["form"]] += 1
            unparsed += not call["texts"]
            own_problems.update(call["problems"])
        problems.update(own_problems)
        n = sum(len(call["texts"]) for call in own)
        topped_up += len(own) > 1
        if n < cfg.num_samples:
            reasons = {CALL_PROBLEMS.get(k, k): v for k, v in own_problems.items()}
            short.append({"prompt_id": prompt.prompt_id, "samples": n, "calls": len(own),
                          "why": f"{cfg.num_samples - n} missing after {len(own)} of at most "
                                 f"{cfg.verbalized.max_calls} calls", "problems": reasons})
    return {
        "strategy": "verbalized",
        "model": system_name(cfg),
        "prompts": len(prompts),
        "samples_per_prompt": cfg.num_samples,
        "samples": kept,
        "prompts_short": short,
        "calls": sum(forms.values()),
        "prompts_topped_up": topped_up,
        "responses_asked": asked,
        "responses_kept": kept,
        "responses_missing_or_unparseable": asked - kept,
        "replies_without_responses": unparsed,
        "responses_with_probability": with_probability,
        "responses_cut_to_max_new_tokens": cut,
        "reply_forms": dict(forms),
        "problems": {CALL_PROBLEMS.get(k, k): v for k, v in sorted(problems.items())},
    }
