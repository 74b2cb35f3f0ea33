"""Training the reward model: the regression of the compressed vote ``quality``
(docs/method.md §1, L1 loss, ``objective: l1``, the paper's) or a Bradley-Terry ranker on
within-prompt pairs (``objective: pairwise``, see :mod:`divtune.reward.pairs`), epoch by
epoch until early stopping on a validation split carved from train by prompt; then the
output calibration, the saved folder and its test figures (:mod:`divtune.reward.score`).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from divtune.io import write_json
from divtune.models import check_model_spec
from divtune.outputs import claim_output_dir, stamped
from divtune.prepared import check_finished_prepare
from divtune.reward.config import RewardTrainConfig, early_stopping_metric
from divtune.reward.data import TrainingSet, load_training_sets
from divtune.reward.model import RewardModel
from divtune.reward.pairs import bradley_terry_loss, pairs_inside, pool_batches, validation_pairwise_accuracy
from divtune.reward.score import mean_l1, reward_test_metrics

logger = logging.getLogger(__name__)


class EarlyStopping:
    """Stop when the validation metric has not improved for ``patience`` epochs.

    ``mode="min"`` for a loss (val L1), ``"max"`` for an accuracy (val pairwise accuracy).
    """

    def __init__(self, patience: int, min_delta: float = 0.0, mode: Literal["min", "max"] = "min"):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.best = float("inf") if mode == "min" else float("-inf")
        self.best_epoch = -1
        self.bad_epochs = 0

    def update(self, epoch: int, value: float) -> tuple[bool, bool]:
        """Record an epoch; returns (improved, should_stop)."""
        better = value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        if better:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True, False
        self.bad_epochs += 1
        return False, self.bad_epochs >= self.patience


def moment_matching(predicted: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """``(scale, shift)`` with ``scale > 0`` that give ``predicted`` the mean and spread of ``target``.

    A Bradley-Terry score has no unit; this puts it on the vote scale (about [-1, 1]) that
    quality thresholds and the online rewards expect, without changing any ranking.
    """
    predicted, target = np.asarray(predicted, float), np.asarray(target, float)
    spread = predicted.std()
    if not np.isfinite(spread) or spread <= 1e-12 or len(predicted) < 2:
        return 1.0, float(target.mean() - predicted.mean()) if len(predicted) else 0.0
    scale = float(target.std() / spread) or 1.0
    return scale, float(target.mean() - scale * predicted.mean())


def train_reward_model(cfg: RewardTrainConfig, overwrite: bool = False) -> dict:
    """Train, early-stop on a by-prompt validation split, save, and report test metrics.

    The output folder follows divtune.outputs' rule; nothing is written before training ends.
    """
    import torch  # heavy

    torch.manual_seed(cfg.seed)
    output = Path(cfg.output)
    check_model_spec(cfg.backbone, "backbone")
    if Path(cfg.data).is_dir():
        check_finished_prepare(Path(cfg.data))
    settings = {k: v for k, v in cfg.to_dict().items() if k not in ("output", "show_progress")}
    claim = claim_output_dir(output, "reward", stamped(settings, [cfg.data]), overwrite)
    if claim.state == "reuse":
        logger.info("%s already holds a finished reward run with these settings and inputs; reusing it", output)
        return json.loads((output / "metrics.json").read_text(encoding="utf-8"))
    train, val = load_training_sets(cfg)
    logger.info("reward model: %d train / %d validation responses, %d train / %d validation pairs",
                len(train.rows), len(val.rows), len(train.chosen), len(val.chosen))

    model = RewardModel.create(cfg)
    history, best_val_pred, seconds = _train(model, cfg, train, val)
    if cfg.objective == "pairwise":
        scale, shift = moment_matching(best_val_pred, val.quality)
        model.spec.update(output_scale=scale, output_shift=shift)
    claim.begin()
    cfg.save(output / "config.yaml")
    model.save(output)

    metrics = reward_test_metrics(model, cfg, val)
    metrics.update(_training_facts(cfg, model, train, val, history, seconds))
    write_json(output / "metrics.json", metrics)
    claim.finish()
    return metrics


def _train(model: RewardModel, cfg: RewardTrainConfig, train: TrainingSet, val: TrainingSet):
    """``(history, best epoch's validation predictions, (wall seconds, CPU seconds))`` of the fit."""
    started, cpu_started = time.perf_counter(), time.process_time()
    if model.kind == "encoder" and cfg.freeze_backbone:
        history, best_val_pred = _train_head_on_features(model, cfg, train, val)
    else:
        history, best_val_pred = _train_end_to_end(model, cfg, train, val)
    train_seconds = time.perf_counter() - started
    # CPU time of this process: on a shared machine, wall time also counts other people's work.
    train_cpu_seconds = time.process_time() - cpu_started
    return history, best_val_pred, (train_seconds, train_cpu_seconds)


def _training_facts(cfg: RewardTrainConfig, model: RewardModel, train: TrainingSet, val: TrainingSet,
                    history: list[dict], seconds: tuple[float, float]) -> dict:
    """What metrics.json records of the training beside the test figures."""
    stop_on = early_stopping_metric(cfg)
    best = (min if stop_on == "val_l1" else max)(history, key=lambda h: h[stop_on])
    train_seconds, train_cpu_seconds = seconds
    return {
        "backbone": cfg.backbone,
        "kind": model.kind,
        "freeze_backbone": cfg.freeze_backbone,
        "objective": cfg.objective,
        "train_pairs": cfg.train_pairs if cfg.objective == "pairwise" else None,
        "early_stopping": stop_on,
        "n_train_responses": len(train.rows),
        "n_val_responses": len(val.rows),
        "n_train_pairs": int(len(train.chosen)),
        "n_val_pairs": int(len(val.chosen)),
        "best_epoch": best["epoch"],
        "best_val_l1": best["val_l1"],
        "best_val_pairwise_accuracy": best["val_pairwise_accuracy"],
        "epochs_run": len(history),
        "stopped_early": len(history) < cfg.max_epochs,
        "train_seconds": round(train_seconds, 2),
        "train_cpu_seconds": round(train_cpu_seconds, 2),
        "history": history,
    }


def _epoch_batches(n: int, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _objective_steps(cfg: RewardTrainConfig, train: TrainingSet, rng: np.random.Generator):
    """One epoch's steps as ``(response indices, pairs within them or None)``.

    L1: random batches of responses. Pairwise: batches of whole prompts, so every
    training pair of a prompt is formed from responses encoded once in that step.
    """
    if cfg.objective == "l1":
        return [(idx, None) for idx in _epoch_batches(len(train.rows), cfg.batch_size, rng)]
    steps = []
    for batch in pool_batches([r.pool_id for r in train.rows], cfg.batch_size, rng):
        inside = pairs_inside(batch, train.chosen, train.rejected)
        if len(inside[0]):  # a prompt whose votes all tie gives no pair to learn from
            steps.append((batch, inside))
    return steps


def _step_loss(pred, idx: np.ndarray, pairs, targets):
    """The objective on one step: L1 against the vote targets, or Bradley-Terry on the pairs."""
    import torch  # heavy

    if pairs is None:
        return torch.nn.functional.l1_loss(pred, targets[torch.from_numpy(idx).to(targets.device)])
    chosen, rejected = (torch.from_numpy(p).to(pred.device) for p in pairs)
    return bradley_terry_loss(pred[chosen], pred[rejected])


def _train_head_on_features(model: RewardModel, cfg, train: TrainingSet, val: TrainingSet):
    """Frozen encoder: embed every response once, then fit only the head (fast on CPU)."""
    import torch  # heavy

    def embed(rows):
        feats = model.pooled_features([r.prompt for r in rows], [r.text for r in rows], cfg.batch_size,
                                      cfg.show_progress)
        return torch.from_numpy(feats).to(model.device)

    x_train, x_val = embed(train.rows), embed(val.rows)
    y_train = torch.from_numpy(train.quality).to(model.device)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=cfg.learning_rate)
    rng = np.random.default_rng(cfg.seed)

    def train_epoch():
        model.head.train()
        losses = []
        for idx, pairs in _objective_steps(cfg, train, rng):
            pred = model.head(x_train[torch.from_numpy(idx).to(model.device)]).squeeze(-1)
            loss = _step_loss(pred, idx, pairs, y_train)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.head.eval()
        with torch.no_grad():
            val_pred = model.head(x_val).squeeze(-1).cpu().numpy()
        return float(np.mean(losses)), val_pred

    return _fit(train_epoch, [model.head], cfg, val)


def _train_end_to_end(model: RewardModel, cfg, train: TrainingSet, val: TrainingSet):
    import torch  # heavy

    if model.kind == "encoder":
        groups = [{"params": list(model.backbone.parameters()), "lr": cfg.backbone_learning_rate},
                  {"params": list(model.head.parameters()), "lr": cfg.learning_rate}]
        modules = [model.backbone, model.head]
    else:
        if cfg.freeze_backbone and not cfg.lora:
            # Only the classification head ("score" / "classifier") trains.
            for name, p in model.backbone.named_parameters():
                p.requires_grad_(name.split(".")[0] in ("score", "classifier"))
        groups = [{"params": [p for p in model.backbone.parameters() if p.requires_grad],
                   "lr": cfg.backbone_learning_rate}]
        modules = [model.backbone]
    optimizer = torch.optim.AdamW(groups)
    rng = np.random.default_rng(cfg.seed)
    y_train = torch.from_numpy(train.quality).to(model.device)

    def train_epoch():
        for module in modules:
            module.train()
        losses = []
        for idx, pairs in tqdm(_objective_steps(cfg, train, rng), desc="reward train",
                               disable=not cfg.show_progress):
            rows = [train.rows[i] for i in idx]
            batch = model.encode([r.prompt for r in rows], [r.text for r in rows])
            loss = _step_loss(model.forward(batch).float(), idx, pairs, y_train)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        # Raw scores: the output calibration is fitted only after training.
        val_pred = model._batched([r.prompt for r in val.rows], [r.text for r in val.rows], cfg.batch_size,
                                  model.forward, False, "reward validate")
        return float(np.mean(losses)), val_pred

    return _fit(train_epoch, modules, cfg, val)


def _fit(train_epoch, modules, cfg, val: TrainingSet) -> tuple[list[dict], np.ndarray]:
    """Run epochs until early stopping; the best epoch's weights are restored at the end.

    Returns the per-epoch history and the best epoch's (raw) validation predictions.
    """
    stop_on = early_stopping_metric(cfg)
    stopper = EarlyStopping(cfg.patience, mode="min" if stop_on == "val_l1" else "max")
    has_val_pairs = len(val.chosen) > 0
    history, best_state, best_val_pred = [], None, None
    for epoch in range(cfg.max_epochs):
        train_loss, val_pred = train_epoch()
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_l1": mean_l1(val_pred, val.quality),
            "val_pairwise_accuracy": (validation_pairwise_accuracy(val_pred, val.chosen, val.rejected)
                                      if has_val_pairs else None),
        }
        history.append(record)
        logger.info("reward epoch %d: train %s %.4f, val L1 %.4f, val pairwise accuracy %s", epoch, cfg.objective,
                    train_loss, record["val_l1"], record["val_pairwise_accuracy"])
        improved, stop = stopper.update(epoch, record[stop_on])
        if improved:
            best_state = [copy.deepcopy({k: v for k, v in m.state_dict().items()}) for m in modules]
            best_val_pred = val_pred
        if stop:
            break
    for module, state in zip(modules, best_state):
        module.load_state_dict(state)
    return history, best_val_pred


