"""Pair weights of a prepared training split: how many pairs were switched off, how heavy the tail,
and whether the weight sees the surface mode of the chosen response."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from divtune.io import InputError, iter_jsonl
from divtune.modes import MODES, opening_mode


def weights_by_mode(pairs: list[tuple[str, float]]) -> dict[str, dict[str, float]]:
    """Mean pair weight by the surface mode (divtune.modes) of the chosen response: does the weight see the mode?"""
    grouped: dict[str, list[float]] = {mode: [] for mode in MODES}
    for chosen, weight in pairs:
        grouped[opening_mode(chosen)].append(weight)
    return {mode: {"n": len(w), "mean": float(np.mean(w)) if w else math.nan} for mode, w in grouped.items()}


def read_chosen_weights(train_file: str | Path) -> list[tuple[str, float]]:
    """(chosen text, weight) of every pair of a prepared ``train.jsonl`` (chat-format chosen: its content)."""
    out = []
    for lineno, obj in iter_jsonl(train_file):
        if not isinstance(obj, dict) or "chosen" not in obj:
            raise InputError(train_file, "missing field", line=lineno, field="chosen")
        chosen = obj["chosen"]
        if isinstance(chosen, list):  # conversational: [{"role": "assistant", "content": ...}]
            chosen = " ".join(str(m.get("content", "")) for m in chosen if isinstance(m, dict))
        weight = obj.get("weight")
        out.append((str(chosen), 1.0 if weight is None else float(weight)))
    return out


def weight_summary(weights: np.ndarray) -> dict[str, float]:
    """Distribution of the training pairs' weights: how many are switched off, how heavy the tail."""
    w = np.asarray(weights, dtype=np.float64)
    if w.size == 0:
        return {"n": 0}
    q10, q50, q90 = np.quantile(w, [0.1, 0.5, 0.9])
    return {
        "n": int(w.size),
        "mean": float(w.mean()),
        "std": float(w.std()),
        "min": float(w.min()),
        "max": float(w.max()),
        "share_zero": float(np.mean(w == 0.0)),
        "share_below_0.5": float(np.mean(w < 0.5)),
        "q10": float(q10),
        "median": float(q50),
        "q90": float(q90),
        # Effective number of pairs (Kish): n when all weights are equal, fewer as weight concentrates.
        "effective_pairs": float(w.sum() ** 2 / np.sum(w**2)) if np.any(w > 0) else 0.0,
    }


def read_weights(train_file: str | Path) -> np.ndarray:
    """The ``weight`` of every pair in a prepared ``train.jsonl`` (pairs without one count as 1)."""
    weights = []
    for lineno, obj in iter_jsonl(train_file):
        value = obj.get("weight", 1.0) if isinstance(obj, dict) else None
        if value is None:
            value = 1.0
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise InputError(train_file, f"weight must be a number, got {value!r}", line=lineno, field="weight")
        weights.append(float(value))
    return np.array(weights, dtype=np.float64)
