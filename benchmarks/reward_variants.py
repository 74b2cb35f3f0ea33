"""Reward-model variants on one fixed data preparation: held-out pairwise accuracy and time.

Each variant is a set of ``RewardTrainConfig`` overrides trained by ``train_reward_model``
into ``OUT/<variant>/`` (config.yaml, metrics.json, weights). ``--table`` prints the
markdown table of docs/reward.md from the finished variants' metrics.json.

The data preparation is the experiment of record's (docs/reward.md):

    divtune prepare --input shipped:wp_scored --output runs/rm_data --set test_fraction=0.3 \\
        --set max_responses_per_prompt=12 --set min_words=100 --set gap=5 --set seed=0

    python benchmarks/reward_variants.py --data runs/rm_data --out runs/reward_variants --variant frozen-pairwise-all
    python benchmarks/reward_variants.py --out runs/reward_variants --table

Variants are chosen on the validation split (``best_val_pairwise_accuracy``), never on test.
Train seconds are wall time on whatever CPU runs this: on a shared machine they are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from datetime import datetime
from pathlib import Path

#: The settings every new variant shares, fixed before any run: a validation split of
#: 14 of the 69 training prompts (10% would be 7, too few to stop on) and MiniLM's 256 tokens.
COMMON = {"val_fraction": 0.2, "max_length": 256, "early_stopping": "val_pairwise_accuracy", "seed": 0}
#: CPU fine-tuning: an epoch of the 22M-parameter encoder over ~600 responses of 256 tokens
#: takes minutes on one core, so few epochs and a short patience.
FINETUNE = {"freeze_backbone": False, "max_epochs": 8, "patience": 2, "backbone_learning_rate": 2e-5,
            "batch_size": 32}

VARIANTS: dict[str, dict] = {
    # Today's reward stage of configs/experiments/wp_smollm2.yaml, unchanged (history).
    "frozen-l1-today": {"objective": "l1", "freeze_backbone": True, "max_length": 192, "max_epochs": 20,
                        "patience": 3},
    "frozen-l1": {**COMMON, "objective": "l1", "max_epochs": 30, "patience": 5},
    "frozen-pairwise-all": {**COMMON, "objective": "pairwise", "train_pairs": "all", "max_epochs": 30,
                            "patience": 5},
    "frozen-pairwise-gap": {**COMMON, "objective": "pairwise", "train_pairs": "gap", "max_epochs": 30,
                            "patience": 5},
    "finetuned-l1": {**COMMON, **FINETUNE, "objective": "l1"},
    "finetuned-pairwise-all": {**COMMON, **FINETUNE, "objective": "pairwise", "train_pairs": "all"},
    "finetuned-pairwise-gap": {**COMMON, **FINETUNE, "objective": "pairwise", "train_pairs": "gap"},
}


def run_variant(name: str, data: str, out: Path, force: bool) -> dict:
    from divtune.reward.config import RewardTrainConfig
    from divtune.reward.fit import train_reward_model

    target = out / name
    if (target / "metrics.json").is_file() and not force:
        print(f"{name}: already done ({target / 'metrics.json'})")
        return json.loads((target / "metrics.json").read_text())
    cfg = RewardTrainConfig(data=data, output=str(target), backbone="minilm", device="cpu", show_progress=False,
                            **VARIANTS[name])
    metrics = train_reward_model(cfg)
    print(f"{name}: {_row(name, metrics)}")
    return metrics


#: Logs of runs before and after the reward model moved to the divtune.reward package.
_EPOCH_LINE = re.compile(r"^(\S+ \S+) INFO divtune\.reward(?:_model|\.fit): reward epoch (\d+): train \w+ ([\d.eE+-]+), "
                         r"val L1 ([\d.eE+-]+), val pairwise accuracy ([\d.eE+-]+)")
_START_LINE = re.compile(r"^(\S+ \S+) INFO divtune\.reward(?:_model|\.fit): reward model: \d+ train / \d+ validation responses")


def history_from_log(lines: list[str]) -> tuple[list[dict], float]:
    """Per-epoch history and wall seconds (first sets line to last epoch line) from a training log."""
    stamp = lambda text: datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f")  # noqa: E731
    history, start, end = [], None, None
    for line in lines:
        if (match := _START_LINE.match(line)) is not None:
            start = stamp(match.group(1))
        elif (match := _EPOCH_LINE.match(line)) is not None:
            end = stamp(match.group(1))
            history.append({"epoch": int(match.group(2)), "train_loss": float(match.group(3)),
                            "val_l1": float(match.group(4)), "val_pairwise_accuracy": float(match.group(5))})
    if start is None or not history:
        raise ValueError("the log has no 'reward model: ... responses' line or no 'reward epoch' line")
    return history, (end - start).total_seconds()


def evaluate_saved(name: str, out: Path, log: Path) -> dict:
    """Test metrics of a variant whose training finished and saved its model but whose evaluation did not.

    The model is the saved best epoch; the history and wall time come from the training log.
    """
    from divtune.reward.config import RewardTrainConfig, early_stopping_metric
    from divtune.reward.data import load_training_sets
    from divtune.reward.model import RewardModel
    from divtune.reward.score import reward_test_metrics

    target = out / name
    cfg = RewardTrainConfig.load(target / "config.yaml")
    train, val = load_training_sets(cfg)
    model = RewardModel.load(target, device=cfg.device)
    metrics = reward_test_metrics(model, cfg, val)
    history, wall = history_from_log(log.read_text(errors="replace").splitlines())
    stop_on = early_stopping_metric(cfg)
    best = (min if stop_on == "val_l1" else max)(history, key=lambda h: h[stop_on])
    metrics.update({
        "backbone": cfg.backbone, "kind": model.kind, "freeze_backbone": cfg.freeze_backbone,
        "objective": cfg.objective, "train_pairs": cfg.train_pairs if cfg.objective == "pairwise" else None,
        "early_stopping": stop_on, "n_train_responses": len(train.rows), "n_val_responses": len(val.rows),
        "n_train_pairs": int(len(train.chosen)), "n_val_pairs": int(len(val.chosen)),
        "best_epoch": best["epoch"], "best_val_l1": best["val_l1"],
        "best_val_pairwise_accuracy": best["val_pairwise_accuracy"], "epochs_run": len(history),
        "stopped_early": len(history) < cfg.max_epochs, "train_seconds": round(wall, 2), "history": history,
        "evaluated_after_training": f"test metrics computed afterwards from the saved model; history and wall "
                                    f"time from {log.name}",
    })
    (target / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"{name}: {_row(name, metrics)}")
    return metrics


def _ci(metrics: dict) -> str:
    low, high = metrics["pairwise_accuracy_ci"]
    return f"{metrics['pairwise_accuracy']:.3f} [{low:.3f}, {high:.3f}]"


def _spearman(value) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _row(name: str, m: dict) -> str:
    openings = m.get("openings")
    return " | ".join([
        name,
        f"{m['best_val_pairwise_accuracy']:.3f}" if m.get("best_val_pairwise_accuracy") is not None else "n/a",
        _ci(m),
        _spearman(m["spearman"]),
        _ci(openings) if openings else "n/a",
        f"{m['best_epoch']} / {m['epochs_run']}",
        f"{m['train_seconds']:.0f}",
        f"{m['train_cpu_seconds']:.0f}" if "train_cpu_seconds" in m else "n/a",
    ])


def table(out: Path) -> str:
    header = ("variant | validation pairwise acc. (best epoch) | held-out pairwise acc. [95% CI] | Spearman with votes"
              " | held-out acc., first 100 words [95% CI] | best epoch / epochs | train s (wall) | train s (CPU)")
    lines = ["| " + header + " |", "|" + "---|" * (header.count("|") + 1)]
    length = None
    for name in VARIANTS:
        path = out / name / "metrics.json"
        if path.is_file():
            metrics = json.loads(path.read_text())
            lines.append("| " + _row(name, metrics) + " |")
            # The last variant: one on the shared validation split (the first is today's, on 10%).
            length = metrics.get("length_baseline") or length
    if length:
        val = length.get("val_pairwise_accuracy")
        lines.append(f"| length only (more words wins) | {'n/a' if val is None else f'{val:.3f}'} | {_ci(length)}"
                     f" | {_spearman(length['spearman'])}"
                     " | 0.500 (all ties) | n/a | 0 | 0 |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="runs/rm_data", help="prepared folder (see the module docstring)")
    parser.add_argument("--out", default="runs/reward_variants", type=Path)
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS), default=[])
    parser.add_argument("--force", action="store_true", help="retrain a variant that already has metrics.json")
    parser.add_argument("--table", action="store_true", help="print the markdown table of finished variants")
    parser.add_argument("--evaluate-saved", metavar="VARIANT", choices=sorted(VARIANTS),
                        help="compute the test metrics of a variant that saved its model but was stopped before "
                             "its evaluation (needs --log)")
    parser.add_argument("--log", type=Path, help="that variant's training log (history and wall time)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in args.variant:
        run_variant(name, args.data, args.out, args.force)
    if args.evaluate_saved:
        if args.log is None:
            parser.error("--evaluate-saved needs --log")
        evaluate_saved(args.evaluate_saved, args.out, args.log)
    if args.table:
        print(table(args.out))


if __name__ == "__main__":
    main()
