"""The quality reward model: a backbone and a score head, built from a config, saved and loaded.

Two backbone kinds:

- ``encoder`` (offline default: the shipped MiniLM): the prompt and response
  are cross-encoded as a text pair, token states are mean-pooled and a small
  head regresses the score. With ``freeze_backbone`` (default) the pooled
  features are computed once and only the head trains: minutes on a CPU.
- ``sequence_classification`` (the paper's ``google/gemma-2-2b`` + LoRA, for
  GPU users): ``AutoModelForSequenceClassification(num_labels=1)``, optionally
  with a PEFT LoRA adapter; the score head is trained and saved with it.

Saved folder: ``reward_config.json``, weights as safetensors only (``head.safetensors``,
``backbone/`` when the encoder was trained, ``model/`` for the other kind); the
training run adds ``config.yaml`` and ``metrics.json`` (:mod:`divtune.reward.fit`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from divtune.deprecations import quiet_checkpointing_rename
from divtune.io import write_json
from divtune.models import default_device, hub_errors, load_tokenizer, resolve_model_source
from divtune.reward.config import RewardTrainConfig

REWARD_CONFIG_FILE = "reward_config.json"
HEAD_FILE = "head.safetensors"

#: Separator between prompt and response for backbones that read one text
#: (causal LMs); encoders get a proper text pair instead.
PAIR_SEPARATOR = "\n\n"


def _build_head(hidden_size: int, head_hidden: int):
    import torch.nn as nn  # heavy

    if head_hidden <= 0:
        return nn.Linear(hidden_size, 1)
    return nn.Sequential(nn.Linear(hidden_size, head_hidden), nn.GELU(), nn.Linear(head_hidden, 1))


def _resolve_kind(source: str, kind: str, trust_remote_code: bool) -> str:
    if kind != "auto":
        return kind
    from transformers import AutoConfig  # heavy

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
        device = cfg.device or default_device()
        source = resolve_model_source(cfg.backbone)
        with hub_errors(cfg.backbone, source, "backbone"):
            kind = _resolve_kind(source, cfg.backbone_kind, cfg.trust_remote_code)
        tokenizer = load_tokenizer(source, trust_remote_code=cfg.trust_remote_code, padding_side="right")
        spec = {"kind": kind, "backbone": cfg.backbone, "max_length": cfg.max_length,
                "head_hidden": cfg.head_hidden, "lora": cfg.lora, "backbone_saved": False,
                "objective": cfg.objective, "output_scale": 1.0, "output_shift": 0.0}
        if kind == "encoder":
            from transformers import AutoModel  # heavy

            backbone = AutoModel.from_pretrained(source, use_safetensors=True, trust_remote_code=cfg.trust_remote_code)
            head = _build_head(backbone.config.hidden_size, cfg.head_hidden)
            spec["hidden_size"] = backbone.config.hidden_size
            spec["backbone_saved"] = not cfg.freeze_backbone
        else:
            backbone = _load_sequence_classifier(source, tokenizer, cfg.trust_remote_code)
            if cfg.lora:
                from peft import LoraConfig, TaskType, get_peft_model  # heavy

                backbone = get_peft_model(backbone, LoraConfig(
                    task_type=TaskType.SEQ_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout))
            head = None
        return cls(kind, tokenizer, backbone.to(device), head.to(device) if head is not None else None,
                   cfg.max_length, device, spec)

    @classmethod
    @quiet_checkpointing_rename()
    def load(cls, directory: str | Path, device: str | None = None) -> "RewardModel":
        from safetensors.torch import load_file  # heavy

        directory = Path(directory)
        config_path = directory / REWARD_CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"not a reward model folder (no {REWARD_CONFIG_FILE}): {directory}")
        spec = json.loads(config_path.read_text())
        device = device or default_device()
        if spec["kind"] == "encoder":
            from transformers import AutoModel  # heavy

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
                from peft import PeftModel  # heavy

                base = _load_sequence_classifier(base_source, tokenizer, False)
                backbone = PeftModel.from_pretrained(base, directory / "model")
            else:
                backbone = _load_sequence_classifier(str(directory / "model"), tokenizer, False)
            head = None
        model = cls(spec["kind"], tokenizer, backbone.to(device), head, spec["max_length"], device, spec)
        model.eval()
        return model

    def save(self, directory: str | Path) -> None:
        from safetensors.torch import save_file  # heavy

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
        import torch  # heavy

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
    from transformers import AutoModelForSequenceClassification  # heavy

    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=1, use_safetensors=True, trust_remote_code=trust_remote_code)
    # Causal-LM classifiers find the last real token through the pad id.
    model.config.pad_token_id = tokenizer.pad_token_id
    return model

