"""``divtune diagnostics``: did each run move, and what did the weights look like?

When DDPO and DPO end up alike, the first questions are whether training moved
the policy at all (loss, implicit reward margin) and what the deviation weights
were (how many pairs were switched off, how heavy the tail). This module reads
an experiment folder (``models/*/metrics.jsonl``, ``models/*/config.yaml``,
``data/*/train.jsonl``) and writes ``diagnostics.md``, ``diagnostics.json``,
``training_curves.png`` and ``weights.png``.

The summaries are pure functions on arrays (reporting.training_logs,
reporting.pair_weights); only ``run_diagnostics`` touches files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from divtune.io import InputError, atomic_write_text, write_json
from divtune.modes import MODES
from divtune.outputs import claim_output_dir, stamped
from divtune.prepared import TRAIN_FILE, pairs_file
from divtune.reporting.pair_weights import read_chosen_weights, read_weights, weight_summary, weights_by_mode
from divtune.reporting.plots import plot_training_curves, plot_weight_histograms
from divtune.reporting.render import Block, Document, Figure, Heading, Strong, Table, paragraph, to_markdown
from divtune.reporting.training_logs import (
    MOVED_ACCURACY,
    MOVED_MARGIN,
    probe_summary,
    read_training_log,
    training_summary,
)

#: A training run's per-step log (divtune.train.callbacks writes it).
TRAINING_LOG = "metrics.jsonl"
CURVES_PLOT = "training_curves.png"
WEIGHTS_PLOT = "weights.png"
FILES = ("diagnostics.md", "diagnostics.json", CURVES_PLOT, WEIGHTS_PLOT)


def run_diagnostics(root: str | Path, output: str | Path, window: int = 4, overwrite: bool = False) -> Path:
    """Diagnostics of an experiment folder ``root`` into ``output``; returns ``diagnostics.md``'s path.

    The output folder follows divtune.outputs' rule; the training logs and pair
    files read are its inputs.
    """
    root, output = Path(root), Path(output)
    runs = sorted(p.parent for p in (root / "models").glob(f"*/{TRAINING_LOG}"))
    variants = sorted(p.parent for p in (root / "data").glob(f"*/{TRAIN_FILE}"))
    if not runs and not variants:
        raise InputError(root, f"no models/*/{TRAINING_LOG} and no data/*/{TRAIN_FILE}: not an experiment folder")
    inputs = [r / TRAINING_LOG for r in runs] + [pairs_file(v, "train") for v in variants]
    claim = claim_output_dir(output, "diagnostics", stamped({"root": str(root), "window": window}, inputs), overwrite)
    if claim.state == "reuse":
        return output / "diagnostics.md"

    logs = {run.name: read_training_log(run / TRAINING_LOG) for run in runs}
    setups = {run.name: _run_setup(run) for run in runs}
    # The data the runs trained on (a folder may hold other, unused variants); all of them when no run says.
    used = {setup["data"] for setup in setups.values() if setup["data"]}
    weights = {v.name: read_weights(pairs_file(v, "train")) for v in variants if not used or v.name in used}
    summary = {
        "runs": {
            name: setups[name] | training_summary(log, k=window) | {"probes": probe_summary(log)}
            for name, log in logs.items()
        },
        "moved_threshold": {"train_probe_margin_end": MOVED_MARGIN, "train_probe_accuracy_end": MOVED_ACCURACY},
        "weights": {name: weight_summary(w) for name, w in weights.items()},
        # Every weighted variant, used by a run or not: one per embedder answers "does the weight see the mode?".
        "weights_by_mode": _weights_by_mode(variants),
    }
    claim.begin()
    write_json(output / "diagnostics.json", summary)
    plot_training_curves(logs, output / CURVES_PLOT, window)
    plot_weight_histograms(weights, output / WEIGHTS_PLOT)
    path = atomic_write_text(output / "diagnostics.md", to_markdown(diagnostics_document(summary, root, window)))
    claim.finish()
    return path


def _read_config(folder: Path) -> Any:
    config = folder / "config.yaml"
    return yaml.safe_load(config.read_text(encoding="utf-8")) if config.is_file() else None


def _run_setup(run: Path) -> dict[str, Any]:
    """The method and data folder name a training run's config.yaml records."""
    loaded = _read_config(run)
    loaded = loaded if isinstance(loaded, dict) else {}
    return {"method": loaded.get("method"), "data": Path(str(loaded.get("data", ""))).name or None}


def _weights_by_mode(variants: list[Path]) -> dict[str, dict[str, Any]]:
    """Per data variant whose weights vary: its embedders and the mean weight per surface mode."""
    embedders = {variant.name: _embedders(variant) for variant in variants}
    out = {}
    for variant in variants:
        pairs = read_chosen_weights(pairs_file(variant, "train"))
        if pairs and np.ptp([w for _, w in pairs]) > 0:
            out[variant.name] = {"embedders": embedders[variant.name], "modes": weights_by_mode(pairs)}
    return out


def _embedders(variant: Path) -> list[str]:
    """The embedders a data variant's config.yaml records (prepare's ``embedders``), sorted."""
    loaded = _read_config(variant)
    return sorted((loaded or {}).get("embedders", {}).values()) if isinstance(loaded, dict) else []


# ---------------------------------------------------------------- diagnostics.md


def _fmt(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.3f}"


def _span(curve: dict[str, Any] | None) -> str:
    """``start → end`` of a summarised curve."""
    curve = curve or {}
    return f"{_fmt(curve.get('start'))} → {_fmt(curve.get('end'))}"


def diagnostics_document(summary: dict[str, Any], root: Path, window: int) -> Document:
    blocks: list[Block] = [
        paragraph(f"Experiment folder: {root}. Start and end are means over the first and last {window} logged steps."),
        *_runs_section(summary["runs"]),
        *_probes_section(summary["runs"]),
        *_modes_section(summary["weights_by_mode"]),
        *_weights_section(summary["weights"]),
    ]
    return Document("Training diagnostics", blocks)


def _runs_section(runs: dict[str, dict[str, Any]]) -> list[Block]:
    header = ["run", "method", "data", "steps", "loss start → end", "margin start → end", "accuracy end",
              "online reward start → end"]
    rows = [[name, s["method"] or "n/a", s["data"] or "n/a", str(s["steps"]), _span(s.get("loss")),
             _span(s.get("rewards/margins")), _fmt(s.get("rewards/accuracies_end")), _span(s.get("reward"))]
            for name, s in runs.items()]
    return [
        Heading(2, "Training runs"),
        Table(header, rows),
        paragraph(
            "A margin near 0 at the end means the policy has hardly left the reference: weights cannot steer a run that"
            " does not move. Within the first epoch every step sees new pairs, so the margin and accuracy are measured"
            " on pairs the policy has not yet trained on."),
        Figure(CURVES_PLOT, "training curves"),
    ]


def _probes_section(runs: dict[str, dict[str, Any]]) -> list[Block]:
    probed = {name: r["probes"] for name, r in runs.items() if r["probes"].get("moved") is not None}
    if not probed:
        return []
    header = ["run", "train-probe accuracy start → end", "train-probe margin start → end", "held-out accuracy end",
              "held-out margin end", "log-prob change end (train probe)", "moved"]
    rows = []
    for name, probe in probed.items():
        train, held = probe["train_probe"], probe.get("heldout") or {}
        rows.append([name, _span(train.get("accuracy")), _span(train.get("margin")),
                     _fmt((held.get("accuracy") or {}).get("end")), _fmt((held.get("margin") or {}).get("end")),
                     _fmt((train.get("logps_change") or {}).get("end")),
                     "yes" if probe["moved"] else "**no**"])  # Markdown-only report: the bold is written out
    return [
        Heading(2, "Did each run move? (probes)"),
        paragraph(
            "A run ", Strong("moved"),
            f" when its fixed probe of train pairs ends with an implicit-reward margin ≥ {MOVED_MARGIN}"
            f" and an accuracy ≥ {MOVED_ACCURACY} (chance 0.5). The held-out probe uses pairs of test prompts."
            " Accuracy counts a pair when the chosen reward is strictly higher, so at step 0, where every margin"
            " is exactly 0, it is 0."),
        Table(header, rows),
    ]


def _modes_section(by_mode: dict[str, dict[str, Any]]) -> list[Block]:
    if not by_mode:
        return []
    rows = [[name, ", ".join(entry["embedders"]) or "n/a",
             *[f"{_fmt(entry['modes'][m]['mean'])} ({entry['modes'][m]['n']})" for m in MODES]]
            for name, entry in by_mode.items()]
    return [
        Heading(2, "Does the deviation weight see the surface mode?"),
        paragraph(
            "Mean pair weight by the surface mode of the chosen response (n pairs in brackets), per data variant and its"
            " embedders. Equal means across modes: the weight is blind to the mode."),
        Table(["data", "embedders", *MODES], rows),
    ]


def _weights_section(weights: dict[str, dict[str, Any]]) -> list[Block]:
    header = ["data", "pairs", "mean", "std", "min", "median", "max", "share w = 0", "share w < 0.5", "effective pairs"]
    rows = []
    for name, w in weights.items():
        if w["n"] == 0:
            rows.append([name, "0", *[""] * (len(header) - 2)])
            continue
        rows.append([name, str(w["n"]), *[_fmt(w[k]) for k in ("mean", "std", "min", "median", "max", "share_zero",
                                                                 "share_below_0.5")], f"{w['effective_pairs']:.1f}"])
    return [
        Heading(2, "Pair weights (train split)"),
        Table(header, rows),
        paragraph(
            "Effective pairs = (Σw)² / Σw² (Kish): the number of equally weighted pairs carrying the same information."
            " DPO uses the same pairs with w = 1."),
        Figure(WEIGHTS_PLOT, "pair weights"),
    ]
