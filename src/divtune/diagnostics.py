"""Training diagnostics: did each run move, and what did the weights look like?

When DDPO and DPO end up alike, the first questions are whether training moved
the policy at all (loss, implicit reward margin) and what the deviation weights
were (how many pairs were switched off, how heavy the tail). This module reads
an experiment folder (``models/*/metrics.jsonl``, ``models/*/config.yaml``,
``data/*/train.jsonl``) and writes ``diagnostics.md``, ``diagnostics.json``,
``training_curves.png`` and ``weights.png``.

The summaries are pure functions on arrays; only ``run_diagnostics`` touches files.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from divtune.io import InputError, atomic_write_text, iter_jsonl, write_json

#: Logged per-step quantities drawn as curves, when a run logs them:
#: the (weighted) training loss, DPO/ORPO's implicit reward margin, and the online reward.
CURVES = {
    "loss": "training loss (weighted for DDPO/DORPO)",
    "rewards/margins": "implicit reward margin (chosen − rejected)",
    "reward": "online reward (GRPO/DQO/DARLING)",
}
FILES = ("diagnostics.md", "diagnostics.json", "training_curves.png", "weights.png")

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


def weights_by_mode(pairs: list[tuple[str, float]]) -> dict[str, dict[str, float]]:
    """Mean pair weight by the surface mode (divtune.modes) of the chosen response: does the weight see the mode?"""
    from divtune.modes import MODES, opening_mode

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


# ---------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(logs: dict[str, dict[str, np.ndarray]], path: Path, window: int) -> None:
    plt = _plt()
    keys = [k for k in CURVES if any(k in log and not np.all(np.isnan(log[k])) for log in logs.values())]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(5.2 * max(len(keys), 1), 4.2), squeeze=False)
    colours = plt.get_cmap("tab10")
    # Runs of one system over several seeds (``name-s0``, ``name-s1``) share a colour; the seed sets the line style.
    systems = list(dict.fromkeys(re.sub(r"-s\d+$", "", name) for name in logs))
    styles = ["-", "--", ":", "-."]
    for ax, key in zip(axes.flat, keys):
        for name, log in logs.items():
            if key not in log or np.all(np.isnan(log[key])):
                continue
            system = re.sub(r"-s\d+$", "", name)
            seed = re.search(r"-s(\d+)$", name)
            ax.plot(log["step"], running_mean(log[key], window), label=name,
                    color=colours(systems.index(system) % 10),
                    linestyle=styles[int(seed.group(1)) % len(styles)] if seed else "-", linewidth=1.4)
        ax.set_title(f"{CURVES[key]}\n(running mean over {window} steps)", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if key == "rewards/margins":
            ax.axhline(0.0, color="black", linewidth=0.8)
    if keys:
        axes.flat[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_weight_histograms(weights: dict[str, np.ndarray], path: Path) -> None:
    plt = _plt()
    n = max(len(weights), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False, sharey=True)
    for ax, (variant, w) in zip(axes.flat, weights.items()):
        ax.hist(w, bins=30, color="#1f77b4", edgecolor="black", linewidth=0.4)
        ax.axvline(1.0, color="#d62728", linestyle="--", linewidth=1, label="DPO (w = 1)")
        ax.set_title(f"data {variant}: {w.size} train pairs", fontsize=9)
        ax.set_xlabel("pair weight w")
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("pairs")
    if weights:  # with no weighted data the panel is empty: no legend to draw
        axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- files


def _fmt(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.3f}"


def run_diagnostics(root: str | Path, output: str | Path, window: int = 4, overwrite: bool = False) -> Path:
    """Diagnostics of an experiment folder ``root`` into ``output``; returns ``diagnostics.md``'s path.

    The output folder follows divtune.outputs' rule; the training logs and pair
    files read are its inputs.
    """
    from divtune.outputs import claim_output_dir, stamped

    root, output = Path(root), Path(output)
    runs = sorted(p.parent for p in (root / "models").glob("*/metrics.jsonl"))
    variants = sorted(p.parent for p in (root / "data").glob("*/train.jsonl"))
    if not runs and not variants:
        raise InputError(root, "no models/*/metrics.jsonl and no data/*/train.jsonl: not an experiment folder")
    inputs = [r / "metrics.jsonl" for r in runs] + [v / "train.jsonl" for v in variants]
    claim = claim_output_dir(output, "diagnostics", stamped({"root": str(root), "window": window}, inputs), overwrite)
    if claim.state == "reuse":
        return output / "diagnostics.md"

    logs = {run.name: read_training_log(run / "metrics.jsonl") for run in runs}
    setups: dict[str, dict[str, Any]] = {}
    for run in runs:
        config = run / "config.yaml"
        loaded = yaml.safe_load(config.read_text(encoding="utf-8")) if config.is_file() else None
        loaded = loaded if isinstance(loaded, dict) else {}
        setups[run.name] = {"method": loaded.get("method"), "data": Path(str(loaded.get("data", ""))).name or None}
    # The data the runs trained on (a folder may hold other, unused variants); all of them when no run says.
    used = {setup["data"] for setup in setups.values() if setup["data"]}
    weights = {v.name: read_weights(v / "train.jsonl") for v in variants if not used or v.name in used}

    embedders = {}
    for variant in variants:
        config = variant / "config.yaml"
        loaded = yaml.safe_load(config.read_text(encoding="utf-8")) if config.is_file() else None
        embedders[variant.name] = sorted((loaded or {}).get("embedders", {}).values()) if isinstance(loaded, dict) else []
    summary = {
        "runs": {
            name: setups[name] | training_summary(log, k=window) | {"probes": probe_summary(log)}
            for name, log in logs.items()
        },
        "moved_threshold": {"train_probe_margin_end": MOVED_MARGIN, "train_probe_accuracy_end": MOVED_ACCURACY},
        "weights": {name: weight_summary(w) for name, w in weights.items()},
        # Every weighted variant, used by a run or not: one per embedder answers "does the weight see the mode?".
        "weights_by_mode": {
            v.name: {"embedders": embedders[v.name], "modes": weights_by_mode(pairs)}
            for v in variants
            for pairs in [read_chosen_weights(v / "train.jsonl")]
            if pairs and np.ptp([w for _, w in pairs]) > 0
        },
    }
    claim.begin()
    write_json(output / "diagnostics.json", summary)
    plot_training_curves(logs, output / "training_curves.png", window)
    plot_weight_histograms(weights, output / "weights.png")

    lines = [
        "# Training diagnostics",
        "",
        f"Experiment folder: {root}. Start and end are means over the first and last {window} logged steps.",
        "",
        "## Training runs",
        "",
        "| run | method | data | steps | loss start → end | margin start → end | accuracy end | online reward start → end |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary["runs"].items():
        cells = [name, s["method"] or "n/a", s["data"] or "n/a", str(s["steps"])]
        for key in ("loss", "rewards/margins"):
            curve = s.get(key, {})
            cells.append(f"{_fmt(curve.get('start'))} → {_fmt(curve.get('end'))}")
        cells.append(_fmt(s.get("rewards/accuracies_end")))
        reward = s.get("reward", {})
        cells.append(f"{_fmt(reward.get('start'))} → {_fmt(reward.get('end'))}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "A margin near 0 at the end means the policy has hardly left the reference: weights cannot steer a run that does not move."
        " Within the first epoch every step sees new pairs, so the margin and accuracy are measured on pairs the policy has not"
        " yet trained on.",
        "",
        "![training curves](training_curves.png)",
        "",
    ]
    probed = {name: r["probes"] for name, r in summary["runs"].items() if r["probes"].get("moved") is not None}
    if probed:
        lines += [
            "## Did each run move? (probes)",
            "",
            f"A run **moved** when its fixed probe of train pairs ends with an implicit-reward margin ≥ {MOVED_MARGIN}"
            f" and an accuracy ≥ {MOVED_ACCURACY} (chance 0.5). The held-out probe uses pairs of test prompts."
            " Accuracy counts a pair when the chosen reward is strictly higher, so at step 0, where every margin"
            " is exactly 0, it is 0.",
            "",
            "| run | train-probe accuracy start → end | train-probe margin start → end | held-out accuracy end |"
            " held-out margin end | log-prob change end (train probe) | moved |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, probe in probed.items():
            train, held = probe["train_probe"], probe.get("heldout") or {}

            def edge(entry, key, which):
                return _fmt((entry.get(key) or {}).get(which))

            lines.append(
                f"| {name} | {edge(train, 'accuracy', 'start')} → {edge(train, 'accuracy', 'end')} | "
                f"{edge(train, 'margin', 'start')} → {edge(train, 'margin', 'end')} | {edge(held, 'accuracy', 'end')} | "
                f"{edge(held, 'margin', 'end')} | {edge(train, 'logps_change', 'end')} | {'yes' if probe['moved'] else '**no**'} |"
            )
        lines.append("")
    if summary["weights_by_mode"]:
        from divtune.modes import MODES

        lines += [
            "## Does the deviation weight see the surface mode?",
            "",
            "Mean pair weight by the surface mode of the chosen response (n pairs in brackets), per data variant and its"
            " embedders. Equal means across modes: the weight is blind to the mode.",
            "",
            "| data | embedders | " + " | ".join(MODES) + " |",
            "|---|---|" + "---|" * len(MODES),
        ]
        for name, entry in summary["weights_by_mode"].items():
            cells = [f"{_fmt(entry['modes'][m]['mean'])} ({entry['modes'][m]['n']})" for m in MODES]
            lines.append(f"| {name} | {', '.join(entry['embedders']) or 'n/a'} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## Pair weights (train split)",
        "",
        "| data | pairs | mean | std | min | median | max | share w = 0 | share w < 0.5 | effective pairs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, w in summary["weights"].items():
        if w["n"] == 0:
            lines.append(f"| {name} | 0 | | | | | | | | |")
            continue
        lines.append(
            f"| {name} | {w['n']} | {_fmt(w['mean'])} | {_fmt(w['std'])} | {_fmt(w['min'])} | {_fmt(w['median'])} | "
            f"{_fmt(w['max'])} | {_fmt(w['share_zero'])} | {_fmt(w['share_below_0.5'])} | {w['effective_pairs']:.1f} |"
        )
    lines += [
        "",
        "Effective pairs = (Σw)² / Σw² (Kish): the number of equally weighted pairs carrying the same information."
        " DPO uses the same pairs with w = 1.",
        "",
        "![pair weights](weights.png)",
        "",
    ]
    path = atomic_write_text(output / "diagnostics.md", "\n".join(lines))
    claim.finish()
    return path
