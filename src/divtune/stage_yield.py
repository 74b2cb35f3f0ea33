"""Did a stage produce something worth its output? (pure functions of its summary)

A stage that read its input without error can still produce nothing: ``prepare``
on data whose responses are all too short, single or tied gives no pair, and a
verbalized ``generate`` whose replies cannot be parsed gives no sample. Writing
an empty ``train.jsonl`` and exiting 0 hides that until a later stage fails
for a reason far from the cause. So a stage with nothing to show stops (the CLI
exits 2) with the counts of why, before it writes its outputs, and one that
produces very little says so with the same counts.
"""

from __future__ import annotations

from typing import Any

#: Fewer train pairs than this is a warning: a few optimizer steps' worth, not a training set.
MIN_TRAIN_PAIRS = 10

#: What to change, by the reason that lost the most (the summary's keys).
_ADVICE = {
    "too_short": "lower --min-words",
    "fewer than 2 responses": "each prompt needs 2 or more responses",
    "fewer than 2 distinct scores": "each prompt needs responses with different scores",
    "duplicate_in_prompt": "responses to one prompt must differ",
}


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def prepare_losses(summary: dict[str, Any]) -> str:
    """Where the input went: responses dropped and prompts without pairs, by reason, with the largest first."""
    responses, prompts = summary["responses"], summary["prompts"]
    parts = [f"{prompts['read']} prompts and {responses['read']} responses read"]
    if responses["dropped"]:
        parts.append(f"responses dropped: {_counts(responses['dropped'])}")
    if prompts["dropped"].get("no_response_left"):
        parts.append(f"{prompts['dropped']['no_response_left']} prompts had no response left")
    without: dict[str, int] = {}
    for split in ("train", "test"):
        for reason, n in summary["pools_without_pairs"][split].items():
            without[reason] = without.get(reason, 0) + n
    if without:
        parts.append(f"prompts without a pair: {_counts(without)}")
    return "; ".join(parts)


def _advice(summary: dict[str, Any]) -> str:
    losses = dict(summary["responses"]["dropped"])
    for split in ("train", "test"):
        losses.update({k: losses.get(k, 0) + v for k, v in summary["pools_without_pairs"][split].items()})
    ranked = [reason for reason, _ in sorted(losses.items(), key=lambda kv: -kv[1]) if reason in _ADVICE]
    return f" ({_ADVICE[ranked[0]]})" if ranked else ""


def prepare_problem(summary: dict[str, Any]) -> str | None:
    """Why ``prepare`` produced nothing to train on (no train pair), or None."""
    pairs = summary["pairs"]
    if pairs["train"] > 0:
        return None
    return (f"no preference pairs to train on ({pairs['train']} train, {pairs['test']} test): "
            f"{prepare_losses(summary)}{_advice(summary)}; nothing was written")


def prepare_warning(summary: dict[str, Any]) -> str | None:
    """A warning when ``prepare`` produced fewer than MIN_TRAIN_PAIRS train pairs, or None."""
    pairs = summary["pairs"]
    if not 0 < pairs["train"] < MIN_TRAIN_PAIRS:
        return None
    return (f"only {pairs['train']} train pairs ({pairs['test']} test), fewer than {MIN_TRAIN_PAIRS}: "
            f"{prepare_losses(summary)}{_advice(summary)}")


def verbalized_problem(summary: dict[str, Any]) -> str | None:
    """Why a verbalized ``generate`` produced no sample (every reply unparsed), or None."""
    if summary.get("samples", 0) > 0:
        return None
    problems = summary.get("problems") or {}
    detail = f" ({_counts(problems)})" if problems else ""
    return (f"no sample: none of the {summary.get('calls', 0)} replies could be read as responses{detail}; "
            "the replies are in the .calls.jsonl file beside the output. A small model often ignores the "
            "requested format: try --strategy independent, or a larger model")


def verbalized_warning(summary: dict[str, Any]) -> str | None:
    """A warning naming how many replies gave no response when some did, or None."""
    unparsed = summary.get("replies_without_responses", 0)
    if not unparsed or summary.get("samples", 0) == 0:
        return None
    return (f"{unparsed} of {summary['calls']} verbalized replies could not be read as responses; "
            f"{summary['samples']} samples for {summary['prompts']} prompts "
            f"({len(summary.get('prompts_short', []))} prompts short of {summary['samples_per_prompt']})")
