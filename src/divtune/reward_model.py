"""The quality reward model: a score of (prompt, response) trained either as
the paper's regression of the compressed vote ``quality`` (docs/method.md §1, L1 loss,
``objective: l1``) or as a Bradley-Terry ranker on within-prompt pairs
(``objective: pairwise``, see :mod:`divtune.reward_pairs`), with early stopping
on a validation split carved from train by prompt.

Two backbone kinds:

- ``encoder`` (offline default: the shipped MiniLM): the prompt and response
  are cross-encoded as a text pair, token states are mean-pooled and a small
  head regresses the score. With ``freeze_backbone`` (default) the pooled
  features are computed once and only the head trains: minutes on a CPU.
- ``sequence_classification`` (the paper's ``google/gemma-2-2b`` + LoRA, for
  GPU users): ``AutoModelForSequenceClassification(num_labels=1)``, optionally
  with a PEFT LoRA adapter; the score head is trained and saved with it.

Saved folder: ``reward_config.json``, weights as safetensors only (``head.safetensors``,
``backbone/`` when the encoder was trained, ``model/`` for the other kind),
``config.yaml`` and ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from divtune.config import ConfigError, StageConfig
from divtune.deprecations import quiet_checkpointing_rename
from divtune.io import InputError, atomic_write_text, iter_jsonl, write_json, write_jsonl
from divtune.reward_pairs import (
    all_pairs_within_pools,
    bradley_terry_loss,
    listed_pairs,
    pairs_inside,
    pairwise_accuracy,
    pool_batches,
    validation_pairwise_accuracy,
)

logger = logging.getLogger(__name__)

REWARD_CONFIG_FILE = "reward_config.json"
HEAD_FILE = "head.safetensors"

#: Separator between prompt and response for backbones that read one text
#: (causal LMs); encoders get a proper text pair instead.
PAIR_SEPARATOR = "\n\n"


class RewardTrainConfig(StageConfig):
    """Settings of ``divtune reward train``."""

    data: str
    output: str
    backbone: str = "minilm"
    backbone_kind: Literal["auto", "encoder", "sequence_classification"] = "auto"
    freeze_backbone: bool = True
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    max_length: int = Field(256, ge=8)
    #: l1: regress the compressed vote (the paper); pairwise: Bradley-Terry on within-prompt pairs.
    objective: Literal["l1", "pairwise"] = "l1"
    #: Pairwise objective: every within-prompt pair with different votes (all), or only the
    #: gap pairs of train.jsonl (gap).
    train_pairs: Literal["all", "gap"] = "all"
    #: auto: val_l1 for the l1 objective, val_pairwise_accuracy for pairwise.
    early_stopping: Literal["auto", "val_l1", "val_pairwise_accuracy"] = "auto"
    head_hidden: int = Field(256, ge=0)
    learning_rate: float = 1e-3
    backbone_learning_rate: float = 2e-5
    batch_size: int = Field(32, ge=1)
    max_epochs: int = Field(30, ge=1)
    patience: int = Field(3, ge=1)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    max_train_responses: int | None = Field(None, ge=2)
    #: Also evaluate on every test response cut to its first N words: with N at most
    #: prepare's min_words (100) chosen and rejected are equally long, so length cannot
    #: help, and the texts are as long as the samples an evaluation scores. null: skip.
    eval_opening_words: int | None = Field(100, ge=1)
    seed: int = 0
    bootstrap_samples: int = Field(2000, ge=1)
    device: str | None = None
    trust_remote_code: bool = False
    show_progress: bool = True


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ScoredResponse:
    pool_id: Any
    prompt: str
    text: str
    quality: float
    score: float


@dataclass(frozen=True)
class Pair:
    pool_id: Any
    prompt: str
    chosen: str
    rejected: str


def _field(path: Path, lineno: int, obj: dict, name: str, kind: type | tuple) -> Any:
    if name not in obj:
        raise InputError(path, "missing field", line=lineno, field=name)
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(path, f"expected {getattr(kind, '__name__', kind)}, got {value!r:.60}", line=lineno, field=name)
    return value


def read_pairs(path: str | Path) -> list[Pair]:
    """Preference pairs of a prepared ``train.jsonl``/``test.jsonl``."""
    path = Path(path)
    pairs = []
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj, dict):
            raise InputError(path, "expected a JSON object", line=lineno)
        pairs.append(Pair(
            _field(path, lineno, obj, "pool_id", (str, int)),
            _field(path, lineno, obj, "prompt", str),
            _field(path, lineno, obj, "chosen", str),
            _field(path, lineno, obj, "rejected", str),
        ))
    return pairs


def read_scored_responses(data_dir: str | Path, split: str) -> list[ScoredResponse]:
    """Every response of ``split`` with its ``quality`` target and raw ``score``.

    From ``responses.jsonl`` when present (all kept responses, prompt text
    looked up in ``<split>.jsonl``), else from the chosen and rejected sides of
    ``<split>.jsonl`` (each distinct response once).
    """
    data_dir = Path(data_dir)
    pairs_path = data_dir / f"{split}.jsonl"
    if not pairs_path.is_file():
        raise FileNotFoundError(f"prepared pairs not found: {pairs_path}")
    responses_path = data_dir / "responses.jsonl"
    if responses_path.is_file():
        return _responses_from_responses_file(responses_path, pairs_path, split)
    return _responses_from_pairs(pairs_path)


def _number(path, lineno, obj, name) -> float:
    return float(_field(path, lineno, obj, name, (int, float)))


def _responses_from_pairs(path: Path) -> list[ScoredResponse]:
    rows: dict[tuple, ScoredResponse] = {}
    for lineno, obj in iter_jsonl(path):
        pool = _field(path, lineno, obj, "pool_id", (str, int))
        prompt = _field(path, lineno, obj, "prompt", str)
        for side in ("chosen", "rejected"):
            text = _field(path, lineno, obj, side, str)
            row = ScoredResponse(pool, prompt, text, _number(path, lineno, obj, f"quality_{side}"),
                                 _number(path, lineno, obj, f"score_{side}"))
            rows.setdefault((json.dumps(pool), text), row)
    return list(rows.values())


def _responses_from_responses_file(path: Path, pairs_path: Path, split: str) -> list[ScoredResponse]:
    prompts = {json.dumps(p.pool_id): p.prompt for p in read_pairs(pairs_path)}
    rows, no_prompt = [], 0
    for lineno, obj in iter_jsonl(path):
        if _field(path, lineno, obj, "split", str) != split:
            continue
        pool = _field(path, lineno, obj, "pool_id", (str, int))
        prompt = prompts.get(json.dumps(pool))
        if prompt is None:
            no_prompt += 1
            continue
        rows.append(ScoredResponse(pool, prompt, _field(path, lineno, obj, "text", str),
                                   _number(path, lineno, obj, "quality"), _number(path, lineno, obj, "score")))
    if no_prompt:
        # Such pools formed no pair, so their prompt text is nowhere in the prepared folder.
        logger.warning("%s: %d %s responses skipped: their pool has no prompt text in %s",
                       path, no_prompt, split, pairs_path)
    return rows


def split_by_pool(pool_ids: list, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, val) that keep each pool whole on one side."""
    keys = [json.dumps(p) for p in pool_ids]
    pools = sorted(set(keys))
    if len(pools) < 2:
        raise ConfigError(f"need at least 2 training prompts to carve a validation split, got {len(pools)}")
    rng = np.random.default_rng(seed)
    n_val = min(len(pools) - 1, max(1, round(val_fraction * len(pools))))
    val_pools = set(rng.permutation(pools)[:n_val].tolist())
    val = np.array([k in val_pools for k in keys])
    return ~val, val


# --------------------------------------------------------------------------- pure metrics


def bootstrap_pair_accuracy(correct: np.ndarray, pool_ids: list, n_boot: int = 2000, seed: int = 0,
                            level: float = 0.95) -> tuple[float, list[float]]:
    """Pairwise accuracy and its percentile bootstrap interval, resampling prompts (pools)."""
    correct = np.asarray(correct, float)
    keys = [json.dumps(p) for p in pool_ids]
    _, pool_index = np.unique(keys, return_inverse=True)
    sums = np.bincount(pool_index, weights=correct)
    counts = np.bincount(pool_index).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    resampled = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(resampled, [alpha, 1 - alpha])
    return float(correct.mean()), [float(low), float(high)]


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


def early_stopping_metric(cfg: RewardTrainConfig) -> str:
    """The validation figure training stops on: the one that matches the objective unless set."""
    if cfg.early_stopping != "auto":
        return cfg.early_stopping
    return "val_pairwise_accuracy" if cfg.objective == "pairwise" else "val_l1"


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


# --------------------------------------------------------------------------- model


def _build_head(hidden_size: int, head_hidden: int):
    import torch.nn as nn

    if head_hidden <= 0:
        return nn.Linear(hidden_size, 1)
    return nn.Sequential(nn.Linear(hidden_size, head_hidden), nn.GELU(), nn.Linear(head_hidden, 1))


def _resolve_kind(source: str, kind: str, trust_remote_code: bool) -> str:
    if kind != "auto":
        return kind
    from transformers import AutoConfig

    architectures = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code).architectures or []
    generative = any(a.endswith(("ForCausalLM", "ForSequenceClassification")) for a in architectures)
    return "sequence_classification" if generative else "encoder"


def _mean_pool(hidden, attention_mask):
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class RewardModel:
    """A trained quality reward model; ``score`` is batched, no-grad, eval-mode."""

    def __init__(self, kind: str, tokenizer, backbone, head, max_length: int, device: str, spec: dict):
        self.kind = kind
        self.tokenizer = tokenizer
        self.backbone = backbone
        self.head = head
        self.max_length = max_length
        self.device = device
        self.spec = spec

    # ---- construction

    @classmethod
    @quiet_checkpointing_rename()
    def create(cls, cfg: RewardTrainConfig) -> "RewardModel":
        """A fresh, untrained model from the config's backbone."""
        from divtune.models import default_device, hub_errors, load_tokenizer, resolve_model_source

        device = cfg.device or default_device()
        source = resolve_model_source(cfg.backbone)
        with hub_errors(cfg.backbone, source, "backbone"):
            kind = _resolve_kind(source, cfg.backbone_kind, cfg.trust_remote_code)
        tokenizer = load_tokenizer(source, trust_remote_code=cfg.trust_remote_code, padding_side="right")
        spec = {"kind": kind, "backbone": cfg.backbone, "max_length": cfg.max_length,
                "head_hidden": cfg.head_hidden, "lora": cfg.lora, "backbone_saved": False,
                "objective": cfg.objective, "output_scale": 1.0, "output_shift": 0.0}
        if kind == "encoder":
            from transformers import AutoModel

            backbone = AutoModel.from_pretrained(source, use_safetensors=True, trust_remote_code=cfg.trust_remote_code)
            head = _build_head(backbone.config.hidden_size, cfg.head_hidden)
            spec["hidden_size"] = backbone.config.hidden_size
            spec["backbone_saved"] = not cfg.freeze_backbone
        else:
            backbone = _load_sequence_classifier(source, tokenizer, cfg.trust_remote_code)
            if cfg.lora:
                from peft import LoraConfig, TaskType, get_peft_model

                backbone = get_peft_model(backbone, LoraConfig(
                    task_type=TaskType.SEQ_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout))
            head = None
        return cls(kind, tokenizer, backbone.to(device), head.to(device) if head is not None else None,
                   cfg.max_length, device, spec)

    @classmethod
    @quiet_checkpointing_rename()
    def load(cls, directory: str | Path, device: str | None = None) -> "RewardModel":
        from safetensors.torch import load_file

        from divtune.models import default_device, load_tokenizer, resolve_model_source

        directory = Path(directory)
        config_path = directory / REWARD_CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"not a reward model folder (no {REWARD_CONFIG_FILE}): {directory}")
        spec = json.loads(config_path.read_text())
        device = device or default_device()
        if spec["kind"] == "encoder":
            from transformers import AutoModel

            source = str(directory / "backbone") if spec["backbone_saved"] else resolve_model_source(spec["backbone"])
            tokenizer = load_tokenizer(source, padding_side="right")
            backbone = AutoModel.from_pretrained(source, use_safetensors=True)
            head = _build_head(spec["hidden_size"], spec["head_hidden"])
            head.load_state_dict(load_file(directory / HEAD_FILE))
            head = head.to(device)
        else:
            base_source = resolve_model_source(spec["backbone"])
            tokenizer = load_tokenizer(directory / "model" if (directory / "model" / "tokenizer_config.json").is_file()
                                       else base_source, padding_side="right")
            if spec["lora"]:
                from peft import PeftModel

                base = _load_sequence_classifier(base_source, tokenizer, False)
                backbone = PeftModel.from_pretrained(base, directory / "model")
            else:
                backbone = _load_sequence_classifier(str(directory / "model"), tokenizer, False)
            head = None
        model = cls(spec["kind"], tokenizer, backbone.to(device), head, spec["max_length"], device, spec)
        model.eval()
        return model

    def save(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.kind == "encoder":
            save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, directory / HEAD_FILE)
            if self.spec["backbone_saved"]:
                self.backbone.save_pretrained(directory / "backbone", safe_serialization=True)
                self.tokenizer.save_pretrained(directory / "backbone")
        else:
            self.backbone.save_pretrained(directory / "model", safe_serialization=True)
            self.tokenizer.save_pretrained(directory / "model")
        write_json(directory / REWARD_CONFIG_FILE, self.spec)

    # ---- forward

    def eval(self) -> None:
        self.backbone.eval()
        if self.head is not None:
            self.head.eval()

    def encode(self, prompts: list[str], responses: list[str]):
        if self.kind == "encoder":
            # Prompts are short and come first: truncate the longer side (the response) first.
            batch = self.tokenizer(prompts, responses, truncation="longest_first", max_length=self.max_length,
                                   padding=True, return_tensors="pt")
        else:
            texts = [p + PAIR_SEPARATOR + r for p, r in zip(prompts, responses)]
            batch = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True,
                                   return_tensors="pt")
        return batch.to(self.device)

    def features(self, batch):
        """Mean-pooled backbone states (encoder kind)."""
        out = self.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            **({"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}))
        return _mean_pool(out.last_hidden_state, batch["attention_mask"])

    def forward(self, batch):
        if self.kind == "encoder":
            return self.head(self.features(batch)).squeeze(-1)
        return self.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)

    def _batched(self, prompts, responses, batch_size, fn, show_progress, desc):
        """Apply ``fn`` to length-sorted batches (less padding) and restore the input order."""
        import torch
        from tqdm.auto import tqdm

        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        order = np.argsort([len(p) + len(r) for p, r in zip(prompts, responses)], kind="stable")
        outputs = []
        self.eval()
        with torch.inference_mode():
            for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not show_progress):
                idx = order[start : start + batch_size]
                batch = self.encode([prompts[i] for i in idx], [responses[i] for i in idx])
                outputs.append(fn(batch).float().cpu())
        if not outputs:
            return None
        stacked = torch.cat(outputs).numpy()
        result = np.empty_like(stacked)
        result[order] = stacked
        return result

    def score(self, prompts: list[str], responses: list[str], batch_size: int = 64,
              show_progress: bool = False) -> np.ndarray:
        """Predicted quality (compressed vote scale, about [-1, 1]) per (prompt, response).

        A pairwise model's raw score is mapped onto that scale by the increasing affine map
        fitted at training time (``output_scale``, ``output_shift``; identity for L1)."""
        result = self._batched(prompts, responses, batch_size, self.forward, show_progress, "reward score")
        if result is None:
            return np.zeros(0, dtype=np.float32)
        scale, shift = self.spec.get("output_scale", 1.0), self.spec.get("output_shift", 0.0)
        return (result * scale + shift).astype(np.float32)

    def pooled_features(self, prompts, responses, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        return self._batched(prompts, responses, batch_size, self.features, show_progress, "encode")


def _load_sequence_classifier(source: str, tokenizer, trust_remote_code: bool):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=1, use_safetensors=True, trust_remote_code=trust_remote_code)
    # Causal-LM classifiers find the last real token through the pad id.
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainingSet:
    """Rows one side of the validation split trains or validates on, with their pairs
    (index arrays into ``rows``; the higher vote is chosen)."""

    rows: list[ScoredResponse]
    chosen: np.ndarray
    rejected: np.ndarray

    @property
    def quality(self) -> np.ndarray:
        return np.array([r.quality for r in self.rows], dtype=np.float32)


def build_training_sets(cfg: RewardTrainConfig, rows: list[ScoredResponse]) -> tuple[TrainingSet, TrainingSet]:
    """Carve the validation prompts out of ``rows`` and form each side's pairs.

    Training pairs follow ``train_pairs``; validation pairs are always every
    within-prompt pair with different votes: on a handful of validation prompts the
    gap pairs alone (about N/2 per prompt) would make the stopping metric too noisy.
    """
    train_mask, val_mask = split_by_pool([r.pool_id for r in rows], cfg.val_fraction, cfg.seed)
    train_rows = [r for r, m in zip(rows, train_mask) if m]
    val_rows = [r for r, m in zip(rows, val_mask) if m]
    if cfg.train_pairs == "gap":
        listed = [(p.pool_id, p.chosen, p.rejected) for p in read_pairs(Path(cfg.data) / "train.jsonl")]
        chosen, rejected, missing = listed_pairs([r.pool_id for r in train_rows], [r.text for r in train_rows], listed)
        # The validation prompts' gap pairs are the other part of `missing`: not trained on.
        logger.info("reward model: %d gap pairs of train.jsonl on the training prompts (%d on validation "
                    "prompts or naming a response not kept)", len(chosen), missing)
    else:
        chosen, rejected = all_pairs_within_pools([r.pool_id for r in train_rows], [r.score for r in train_rows])
    val_chosen, val_rejected = all_pairs_within_pools([r.pool_id for r in val_rows], [r.score for r in val_rows])
    if cfg.objective == "pairwise" and len(chosen) == 0:
        raise ConfigError(f"{cfg.data}: no training pair with different votes for the pairwise objective")
    if early_stopping_metric(cfg) == "val_pairwise_accuracy" and len(val_chosen) == 0:
        raise ConfigError(f"{cfg.data}: the validation prompts have no pair with different votes to stop on; "
                          "raise val_fraction or use early_stopping=val_l1")
    return TrainingSet(train_rows, chosen, rejected), TrainingSet(val_rows, val_chosen, val_rejected)


def load_training_sets(cfg: RewardTrainConfig) -> tuple[TrainingSet, TrainingSet]:
    """The train split's responses (capped by ``max_train_responses``, seeded), split into train and validation."""
    rows = read_scored_responses(cfg.data, "train")
    if cfg.max_train_responses is not None and len(rows) > cfg.max_train_responses:
        keep = np.random.default_rng(cfg.seed).permutation(len(rows))[: cfg.max_train_responses]
        rows = [rows[i] for i in sorted(keep)]
    return build_training_sets(cfg, rows)


def train_reward_model(cfg: RewardTrainConfig, overwrite: bool = False) -> dict:
    """Train, early-stop on a by-prompt validation split, save, and report test metrics.

    The output folder follows divtune.outputs' rule; nothing is written before training ends.
    """
    import torch

    from divtune.models import check_model_spec
    from divtune.outputs import claim_output_dir, stamped

    torch.manual_seed(cfg.seed)
    output = Path(cfg.output)
    check_model_spec(cfg.backbone, "backbone")
    if Path(cfg.data).is_dir():
        from divtune.prepared import check_finished_prepare

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
    started, cpu_started = time.perf_counter(), time.process_time()
    if model.kind == "encoder" and cfg.freeze_backbone:
        history, best_val_pred = _train_head_on_features(model, cfg, train, val)
    else:
        history, best_val_pred = _train_end_to_end(model, cfg, train, val)
    train_seconds = time.perf_counter() - started
    # CPU time of this process: on a shared machine, wall time also counts other people's work.
    train_cpu_seconds = time.process_time() - cpu_started
    if cfg.objective == "pairwise":
        scale, shift = moment_matching(best_val_pred, val.quality)
        model.spec.update(output_scale=scale, output_shift=shift)
    claim.begin()
    cfg.save(output / "config.yaml")
    model.save(output)

    metrics = reward_test_metrics(model, cfg, val)
    stop_on = early_stopping_metric(cfg)
    best = (min if stop_on == "val_l1" else max)(history, key=lambda h: h[stop_on])
    metrics.update({
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
    })
    write_json(output / "metrics.json", metrics)
    claim.finish()
    return metrics


def reward_test_metrics(model: "RewardModel", cfg: RewardTrainConfig, val: TrainingSet) -> dict:
    """Test-split figures of a trained model: its own, the length baseline's and, optionally, on openings.

    Separate from training so that a saved model can be evaluated again on the same
    data (e.g. when its training finished but the evaluation was interrupted).
    """
    metrics = evaluate_reward_model(model, cfg.data, cfg.batch_size, cfg.bootstrap_samples, cfg.seed)
    ranking_keys = ("pairwise_accuracy", "pairwise_accuracy_ci", "spearman")
    length = evaluate_scorer(response_word_count, cfg.data, cfg.bootstrap_samples, cfg.seed)
    # Does the model beat "longer is better"? (Word counts are not on the vote scale: no L1.)
    metrics["length_baseline"] = {k: length[k] for k in ranking_keys}
    if len(val.chosen):  # the same figure on the validation pairs, where variants are compared
        val_lengths = response_word_count([], [r.text for r in val.rows])
        metrics["length_baseline"]["val_pairwise_accuracy"] = validation_pairwise_accuracy(
            val_lengths, val.chosen, val.rejected)
    if cfg.eval_opening_words is not None:
        n = cfg.eval_opening_words
        openings = evaluate_scorer(
            lambda prompts, responses: model.score(prompts, [opening(r, n) for r in responses], cfg.batch_size),
            cfg.data, cfg.bootstrap_samples, cfg.seed)
        metrics["openings"] = {"words": n, **{k: openings[k] for k in ranking_keys}}
    return metrics


def _l1(pred, target) -> float:
    return float(np.mean(np.abs(np.asarray(pred) - np.asarray(target))))


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
    import torch

    if pairs is None:
        return torch.nn.functional.l1_loss(pred, targets[torch.from_numpy(idx).to(targets.device)])
    chosen, rejected = (torch.from_numpy(p).to(pred.device) for p in pairs)
    return bradley_terry_loss(pred[chosen], pred[rejected])


def _train_head_on_features(model: RewardModel, cfg, train: TrainingSet, val: TrainingSet):
    """Frozen encoder: embed every response once, then fit only the head (fast on CPU)."""
    import torch

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
    import torch
    from tqdm.auto import tqdm

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
    import copy

    stop_on = early_stopping_metric(cfg)
    stopper = EarlyStopping(cfg.patience, mode="min" if stop_on == "val_l1" else "max")
    has_val_pairs = len(val.chosen) > 0
    history, best_state, best_val_pred = [], None, None
    for epoch in range(cfg.max_epochs):
        train_loss, val_pred = train_epoch()
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_l1": _l1(val_pred, val.quality),
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


# --------------------------------------------------------------------------- evaluation and scoring


def opening(text: str, words: int) -> str:
    """The first ``words`` words of ``text`` (whitespace-normalised)."""
    return " ".join(text.split()[:words])


def response_word_count(prompts: list[str], responses: list[str]) -> np.ndarray:
    """The "longer is better" baseline scorer: the response's number of words."""
    return np.array([len(r.split()) for r in responses], dtype=float)


def evaluate_scorer(score_fn, data_dir: str | Path, bootstrap_samples: int = 2000, seed: int = 0) -> dict:
    """Test-split figures of any scorer ``score_fn(prompts, responses) -> scores``: pairwise
    accuracy on the test gap pairs (+ bootstrap CI over prompts) and Spearman with votes."""
    from scipy.stats import spearmanr

    data_dir = Path(data_dir)
    pairs = read_pairs(data_dir / "test.jsonl")
    if not pairs:
        raise InputError(data_dir / "test.jsonl", "no test pairs to evaluate on")
    responses = read_scored_responses(data_dir, "test")
    # Each distinct (prompt, response) is scored once: pairs reuse the response scores.
    items = {(p.prompt, text): None for p in pairs for text in (p.chosen, p.rejected)}
    items.update({(r.prompt, r.text): None for r in responses})
    keys = list(items)
    values = np.asarray(score_fn([k[0] for k in keys], [k[1] for k in keys]), dtype=float)
    score_of = dict(zip(keys, values.tolist()))
    chosen = np.array([score_of[(p.prompt, p.chosen)] for p in pairs])
    rejected = np.array([score_of[(p.prompt, p.rejected)] for p in pairs])
    accuracy, interval = bootstrap_pair_accuracy(pairwise_accuracy(chosen, rejected), [p.pool_id for p in pairs],
                                                 bootstrap_samples, seed)
    predicted = np.array([score_of[(r.prompt, r.text)] for r in responses])
    # A constant scorer (e.g. word counts of equally long texts) has no rank correlation.
    rho, p_value = spearmanr(predicted, [r.score for r in responses]) if np.ptp(predicted) > 0 else (np.nan, np.nan)
    return {
        "pairwise_accuracy": accuracy,
        "pairwise_accuracy_ci": interval,
        "n_test_pairs": len(pairs),
        "n_test_prompts": len({json.dumps(p.pool_id) for p in pairs}),
        # A constant scorer has no rank correlation: null, not NaN (invalid JSON).
        "spearman": float(rho) if np.isfinite(rho) else None,
        "spearman_pvalue": float(p_value) if np.isfinite(p_value) else None,
        "n_test_responses": len(responses),
        "test_l1": _l1(predicted, [r.quality for r in responses]),
    }


def evaluate_reward_model(model: RewardModel, data_dir: str | Path, batch_size: int = 64,
                          bootstrap_samples: int = 2000, seed: int = 0) -> dict:
    """Test-split figures of a reward model (see :func:`evaluate_scorer`)."""
    return evaluate_scorer(lambda prompts, responses: model.score(prompts, responses, batch_size), data_dir,
                           bootstrap_samples, seed)


def score_generations(reward_dir: str | Path, generations_path: str | Path, output_path: str | Path,
                      batch_size: int = 64, model: RewardModel | None = None, overwrite: bool = False) -> Path:
    """Copy a generations file, adding a ``quality`` field (the reward) to every line.

    The output file follows divtune.outputs' rule: its settings are kept in
    ``OUTPUT.config.yaml``; the same settings and inputs reuse it.
    """
    from divtune.outputs import claim_output_file, sidecar_path, stamped

    generations_path, output_path = Path(generations_path), Path(output_path)
    rows = []
    for lineno, obj in iter_jsonl(generations_path):
        if not isinstance(obj, dict):
            raise InputError(generations_path, "expected a JSON object", line=lineno)
        for name in ("prompt", "text"):
            _field(generations_path, lineno, obj, name, str)
        rows.append(obj)
    settings = stamped({"stage": "reward score", "reward": str(reward_dir), "generations": str(generations_path)},
                       [reward_dir, generations_path])
    state = claim_output_file(output_path, settings, settings.keys(), overwrite)
    if state == "continue":
        logger.info("%s already holds these scores; reusing it", output_path)
        return output_path
    model = model or RewardModel.load(reward_dir)
    scores = model.score([r["prompt"] for r in rows], [r["text"] for r in rows], batch_size, show_progress=True)
    for row, value in zip(rows, scores):
        row["quality"] = float(value)
    # The settings go first: a scores file never exists without them.
    import yaml

    atomic_write_text(sidecar_path(output_path), yaml.safe_dump(settings, sort_keys=False))
    return write_jsonl(output_path, rows)
