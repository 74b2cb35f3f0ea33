"""What ``divtune prepare`` reports in ``summary.json``: counts of what was read, kept,
dropped (by reason) and paired per split, the weights' spread, and plain-sentence notes
on what limited the output. :mod:`divtune.stage_yield` judges a run by it.
"""

from __future__ import annotations

import numpy as np


def _stats(values: list[float]) -> dict:
    """Count, mean, min, max and std of ``values`` (None for each but the count when there are none)."""
    if not values:
        return {"count": 0, "mean": None, "min": None, "max": None, "std": None}
    arr = np.asarray(values, dtype=np.float64)
    return {
        "count": int(arr.size),
        "mean": float(arr.mean()),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "std": float(arr.std()),
    }


def prepare_summary(
    cfg, input_paths, report, prompts_read, works, dropped, prompts_dropped, without_pairs,
    pair_rows, response_rows, embed_info, score_min, score_max,
) -> dict:
    """The summary of one prepare run, from its pools on their way to pairs (``works``) and its rows."""
    kept_responses = sum(len(w.pool.texts) for w in works)
    by_split = {s: [w for w in works if w.split == s] for s in ("train", "test")}
    summary = {
        "inputs": [str(p) for p in input_paths],
        "layouts": report.files,
        "rows": {"read": report.rows_read, "invalid": dict(report.rows_invalid)},
        "prompts": {
            "read": prompts_read,
            "kept": len(works),
            "train": len(by_split["train"]),
            "test": len(by_split["test"]),
            "dropped": {k: v for k, v in prompts_dropped.items() if v},
        },
        "responses": {
            "read": report.responses_read,
            "kept": kept_responses,
            "train": sum(len(w.pool.texts) for w in by_split["train"]),
            "test": sum(len(w.pool.texts) for w in by_split["test"]),
            "dropped": dict(dropped),
            "in_pairs": sum(r["in_pairs"] for r in response_rows),
        },
        "pairs": {s: len(pair_rows[s]) for s in ("train", "test")},
        "pools_with_pairs": {s: sum(1 for w in by_split[s] if w.pairs) for s in ("train", "test")},
        "pools_without_pairs": {s: dict(without_pairs[s]) for s in ("train", "test")},
        "pair_weights": {s: _stats([r["weight"] for r in pair_rows[s]]) for s in ("train", "test")},
        "response_weights": {
            s: _stats([r["weight"] for r in response_rows if r["split"] == s and r["weight"] is not None])
            for s in ("train", "test")
        },
        "quality": {"vote_transform": cfg.vote_transform, "score_min": score_min, "score_max": score_max},
        "pair_mode": cfg.pairs,
        "embedders": embed_info,
    }
    summary["notes"] = _notes(summary)
    return summary


def _notes(summary: dict) -> list[str]:
    """Plain sentences on what limited the output (e.g. tied scores on fresh posts)."""
    notes = []
    for split in ("train", "test"):
        reasons = summary["pools_without_pairs"][split]
        if reasons:
            total = summary["prompts"][split]
            detail = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
            notes.append(f"{sum(reasons.values())} of {total} {split} prompts give no pairs ({detail})")
    if summary["pairs"]["train"] + summary["pairs"]["test"] == 0:
        notes.append("no preference pairs at all: every prompt has fewer than 2 usable responses with different scores")
    dropped = summary["responses"]["dropped"]
    if dropped:
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(dropped.items(), key=lambda kv: -kv[1]))
        notes.append(f"{sum(dropped.values())} of {summary['responses']['read']} responses dropped ({detail})")
    return notes
