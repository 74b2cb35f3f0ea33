"""Training logs: did a run move?

Reads a run's ``metrics.jsonl`` (one line per logged step) into per-step arrays,
and sums up each curve (CURVES: loss, implicit reward margin, online reward) by
its start and end, and each probe set (a fixed probe of train pairs, a held-out
one) by whether the run moved. Pure functions on arrays, but for the reader.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from divtune.io import InputError, iter_jsonl

#: Logged per-step quantities drawn as curves, when a run logs them:
#: the (weighted) training loss, DPO/ORPO's implicit reward margin, and the online reward.
CURVES = {
    "loss": "training loss (weighted for DDPO/DORPO)",
    "rewards/margins": "implicit reward margin (chosen − rejected)",
    "reward": "online reward (GRPO/DQO/DARLING)",
}

#: A preference run "moved" when, on its fixed probe of train pairs (``probe_pairs``),
#: the implicit-reward margin ends at least this high (beta x log-ratio difference:
#: 0.1 is one nat at beta = 0.1)...
MOVED_MARGIN = 0.1
#: ...and the implicit-reward accuracy ends at least this high (chance is 0.5).
MOVED_ACCURACY = 0.65
PROBE_SETS = ("train_probe", "heldout")


def read_training_log(path: str | Path) -> dict[str, np.ndarray]:
    """Per-step arrays from a ``metrics.jsonl`` training log, ordered by ``step``.

    Only lines with a ``step`` count; lines of the same step merge (the trainer's
    end-of-run summary shares the last step's number); a key missing on a step
    is ``nan`` there.
    """
    by_step: dict[int, dict[str, Any]] = {}
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj, dict):
            raise InputError(path, "expected a JSON object per line", line=lineno)
        if "step" in obj:
            by_step.setdefault(obj["step"], {}).update(obj)
    rows = [by_step[step] for step in sorted(by_step)]
    keys = {k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {k: np.array([float(r.get(k, math.nan)) for r in rows], dtype=np.float64) for k in sorted(keys)}


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` steps (``nan`` steps ignored; ``nan`` if none)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape, np.nan)
    for i in range(values.size):
        chunk = values[max(0, i - window + 1) : i + 1]
        chunk = chunk[~np.isnan(chunk)]
        if chunk.size:
            out[i] = chunk.mean()
    return out


def edge_means(values: np.ndarray, k: int) -> tuple[float, float]:
    """Means of the first and last ``k`` defined values (``nan`` when none): "start" and "end" of a curve."""
    defined = np.asarray(values, dtype=np.float64)
    defined = defined[~np.isnan(defined)]
    if defined.size == 0:
        return math.nan, math.nan
    return float(defined[:k].mean()), float(defined[-k:].mean())


def training_summary(log: dict[str, np.ndarray], k: int = 4) -> dict[str, Any]:
    """Steps logged, and start/end means (over ``k`` steps) of every curve the run logs."""
    out: dict[str, Any] = {"steps": int(log["step"].size) if "step" in log else 0}
    for key in CURVES:
        if key in log and not np.all(np.isnan(log[key])):
            start, end = edge_means(log[key], k)
            out[key] = {"start": start, "end": end}
    if "rewards/accuracies" in log:
        out["rewards/accuracies_end"] = edge_means(log["rewards/accuracies"], k)[1]
    return out


def probe_summary(log: dict[str, np.ndarray]) -> dict[str, Any]:
    """Start and end of each probe set's accuracy, margin and log-prob change, and whether the run moved.

    ``moved`` is None when the run logged no train probe (see MOVED_MARGIN, MOVED_ACCURACY).
    """
    out: dict[str, Any] = {}
    for name in PROBE_SETS:
        keys = {"accuracy": f"eval_{name}_rewards/accuracies", "margin": f"eval_{name}_rewards/margins",
                "logps_change": f"eval_{name}_logps/change"}
        if keys["accuracy"] not in log:
            continue
        entry = {}
        for label, key in keys.items():
            values = log.get(key, np.array([]))
            values = values[~np.isnan(values)]
            entry[label] = {"start": float(values[0]), "end": float(values[-1])} if values.size else None
        out[name] = entry
    probe = out.get("train_probe")
    out["moved"] = None if not probe else bool(
        probe["margin"]["end"] >= MOVED_MARGIN and probe["accuracy"]["end"] >= MOVED_ACCURACY
    )
    return out
