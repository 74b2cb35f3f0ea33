"""``divtune export RUN_DIR --output DIR [--merge] [--eval EVAL_DIR]``: a trained run as a
folder that leaves the machine.

DIR holds safetensors weights (the LoRA adapter, or with ``--merge`` the base
with the adapter folded in), the tokenizer, ``generation_config.json`` with
the paper's decoding settings, a model card (``README.md`` with the Hub's YAML
header, see :mod:`divtune.model_card`), ``training_config.yaml`` and
``export_config.yaml``. A merged folder loads with
``AutoModelForCausalLM.from_pretrained(DIR)``; an adapter folder with
``AutoPeftModelForCausalLM.from_pretrained(DIR)``, its ``adapter_config.json``
naming the base by its portable id (the public Hub id of a shipped model).
Everything is written to ``DIR.partial`` and renamed at the end, so a failed
export leaves nothing that looks finished.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

import divtune
from divtune import models, resources
from divtune.config import ConfigError, StageConfig
from divtune.generation.config import GenerateConfig
from divtune.io import DONE_MARKER, InputError, atomic_write_text, read_stage_done, run_kind
from divtune.methods import METHODS
from divtune.model_card import render_card
from divtune.models import (
    BASE_SPEC_FILE,
    adapter_base_source,
    is_adapter_dir,
    make_adapter_portable,
    portable_base_id,
    read_base_spec,
    write_base_spec,
)
from divtune.prepared import pairs_file

logger = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


class ExportConfig(StageConfig):
    """Settings of ``divtune export``."""

    run: str = Field(description="a finished `divtune train` output folder")
    output: str = Field(description="the folder to write (must not exist, or be empty)")
    merge: bool = False
    eval: str | None = Field(None, description="a `divtune evaluate` folder whose metrics go on the card")
    #: The system of ``eval`` that is this model (default: the one whose generations were sampled from RUN_DIR).
    system: str | None = None
    #: Card title (default: the output folder's name).
    name: str | None = None


def run_export(cfg: ExportConfig) -> Path:
    """Export ``cfg.run`` into ``cfg.output``; returns the output folder."""
    run = Path(cfg.run)
    output = Path(cfg.output)
    train_cfg, done = read_run(run)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"{output} already exists and is not empty; choose another --output")
    is_adapter = (run / "adapter_config.json").is_file()
    if cfg.merge and not is_adapter:
        logger.info("%s holds full weights (no LoRA adapter): --merge has nothing to merge", run)
    facts = collect_facts(cfg, run, train_cfg, done, is_adapter)

    partial = output.with_name(output.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    if is_adapter and not cfg.merge:
        write_adapter(run, partial, facts["base"]["spec"])
    else:
        write_full_model(run, partial)
    write_tokenizer(run, partial)
    write_generation_config(run, partial, facts["generation"])
    atomic_write_text(partial / "README.md", render_card(facts))
    atomic_write_text(partial / "training_config.yaml", yaml.safe_dump(train_cfg, sort_keys=False, allow_unicode=True))
    cfg.save(partial / "export_config.yaml")
    if output.exists():
        output.rmdir()
    partial.rename(output)
    return output


# ---------------------------------------------------------------- reading the run


def read_run(run: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's resolved training config and done record; only a finished run is exported."""
    if not run.is_dir():
        raise InputError(run, "training run folder not found")
    wrong_kind = not_a_train_run(run)
    if wrong_kind:
        raise InputError(run, wrong_kind)
    done = read_stage_done(run)
    if done is None:
        raise InputError(run / DONE_MARKER, "missing: the run has not finished (resume it with `divtune train --resume`)")
    config_path = run / "config.yaml"
    if not config_path.is_file():
        raise InputError(config_path, "missing: the run's resolved training config is needed for the model card")
    train_cfg = yaml.safe_load(config_path.read_text()) or {}
    if "method" not in train_cfg:
        raise InputError(config_path, "missing field", field="method")
    if not (run / "adapter_config.json").is_file() and not (run / "config.json").is_file():
        raise InputError(run, "holds neither a LoRA adapter (adapter_config.json) nor a model (config.json)")
    return train_cfg, done


def not_a_train_run(folder: Path) -> str | None:
    """Why ``folder`` is not a training run, named by the stage its markers record; None when it may be one."""
    found = run_kind(folder)
    if found is None or found[0] in (None, "train"):
        return None
    stage, finished = found
    hint = ""
    if stage == "experiment":
        models = sorted(p.name for p in (folder / "models").iterdir() if p.is_dir()) if (folder / "models").is_dir() else []
        hint = f"; its trained models are in {folder / 'models'}/NAME" + (f" ({', '.join(models)})" if models else "")
    return (f"holds {'a finished' if finished else 'an unfinished'} `divtune {stage}` run, not a training run; "
            f"export takes the output folder of a finished `divtune train` run{hint}")


def collect_facts(cfg: ExportConfig, run: Path, train_cfg: dict, done: dict, is_adapter: bool) -> dict[str, Any]:
    """Everything the model card states, read from the run's own files."""

    decoding = GenerateConfig.model_fields
    generation = {key: decoding[key].default for key in ("temperature", "top_p", "top_k", "repetition_penalty",
                                                          "max_new_tokens")}
    data = data_facts(train_cfg)
    return {
        "name": cfg.name or Path(cfg.output).name,
        "run_dir": str(run),
        "method": train_cfg["method"],
        "format": "adapter" if is_adapter and not cfg.merge else "merged" if is_adapter else "full",
        "lora": is_adapter,
        "divtune_version": divtune.__version__,
        "train_config": train_cfg,
        "base": base_facts(run, train_cfg),
        "data": data,
        "run": run_facts(run, train_cfg, done, data),
        "generation": generation,
        "evaluation": evaluation_facts(Path(cfg.eval), run, cfg.system) if cfg.eval else None,
    }


def base_facts(run: Path, train_cfg: dict) -> dict[str, Any]:

    spec = read_base_spec(run) or train_cfg.get("model") or ""
    base_id = portable_base_id(spec)
    return {
        "spec": spec,
        "id": base_id,
        "is_hub_id": not Path(base_id).is_absolute() and base_id.count("/") == 1,
        "shipped_gguf": spec == resources.SMOLLM2_ALIAS,
    }


def data_facts(train_cfg: dict) -> dict[str, Any]:
    """The prepared data the run trained on: inputs, counts, embedders, weights and attribution."""
    from divtune.reporting.pair_weights import read_weights, weight_summary  # heavy: loads numpy

    path = Path(train_cfg.get("data") or "")
    folder = path if path.is_dir() else path.parent
    facts: dict[str, Any] = {"path": str(path), "found": (folder / "config.yaml").is_file()}
    train_file = pairs_file(folder, "train") if path.is_dir() else path
    if train_file.is_file():
        facts["weights"] = weight_summary(read_weights(train_file))
    if not facts["found"]:
        return facts
    prepare_cfg = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    facts.update({
        "inputs": prepare_cfg.get("inputs", []),
        "embedders": prepare_cfg.get("embedders", {}),
        "weight_floor": prepare_cfg.get("weight_floor", 0.0),
        "min_words": prepare_cfg.get("min_words"),
        "max_responses_per_prompt": prepare_cfg.get("max_responses_per_prompt"),
    })
    summary_path = folder / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        facts["counts"] = {
            "prompts_kept": summary["prompts"]["kept"],
            "prompts_train": summary["prompts"]["train"],
            "prompts_test": summary["prompts"]["test"],
            "responses_kept": summary["responses"]["kept"],
            "pairs_train": summary["pairs"]["train"],
        }
        facts["embedder_ids"] = {name: info.get("id") for name, info in summary.get("embedders", {}).items()}
    shipped = [i for i in facts["inputs"] if str(i).startswith("shipped:")]
    if shipped and len(shipped) == len(facts["inputs"]):
        facts["attribution"] = shipped_attribution()
        facts["language"] = ["en"]
    return facts


def shipped_attribution() -> str:
    return (
        "The shipped r/WritingPrompts sample: top-level comments of r/WritingPrompts posts in the layout of "
        "`euclaise/WritingPrompts_preferences`, from the public GitHub repository "
        "GhostOf0days/Reddit-Data-Scraper (commit 5fc2913, folder subreddit-data/r-WritingPrompts, scraped "
        "2023). That repository has no licence file; the texts are public Reddit comments by their authors. "
        "Only the layout was changed; no text was edited (divtune's resources/data/ATTRIBUTION.md)."
    )


def run_facts(run: Path, train_cfg: dict, done: dict, data: dict) -> dict[str, Any]:
    """Steps run, pairs seen against pairs available, and the start/end of the training curves."""
    from divtune.reporting.training_logs import read_training_log, training_summary  # heavy: loads numpy

    steps = done.get("global_step")
    training = train_cfg.get("training") or {}
    per_step = int(training.get("per_device_train_batch_size", 1)) * int(training.get("gradient_accumulation_steps", 1))
    facts: dict[str, Any] = {"global_step": steps, "edge_steps": 0}
    available = (data.get("weights") or {}).get("n")
    if steps is not None and available and not METHODS[train_cfg["method"]].online:
        facts.update(pairs_seen=steps * per_step, pairs_available=available,
                     epoch_fraction=steps * per_step / available)
    log_path = run / "metrics.jsonl"
    if log_path.is_file():
        log = read_training_log(log_path)
        n_steps = int(log["step"].size) if "step" in log else 0
        facts["edge_steps"] = min(4, max(1, n_steps // 2))
        summary = training_summary(log, k=facts["edge_steps"])
        facts["curves"] = {key: summary[key] for key in ("loss", "rewards/margins") if key in summary}
    return facts


# ---------------------------------------------------------------- evaluation


def evaluation_facts(eval_dir: Path, run: Path, system: str | None) -> dict[str, Any]:
    """Metrics of every system of an evaluation, which of them is this run, and its settings."""
    metrics_path = eval_dir / "metrics.json"
    if not metrics_path.is_file():
        raise InputError(metrics_path, "not found (--eval takes a `divtune evaluate` output folder)")
    metrics = json.loads(metrics_path.read_text())
    summary = json.loads((eval_dir / "summary.json").read_text()) if (eval_dir / "summary.json").is_file() else {}
    chosen = system or system_of_run(summary, run)
    if chosen is None or chosen not in metrics:
        raise ConfigError(
            f"{eval_dir}: cannot tell which system is {run} (no generations file there was sampled from it); "
            f"name it with --system, one of {sorted(metrics)}"
        )
    row = metrics[chosen]
    facts = {
        "system": chosen,
        "metrics": metrics,
        "n_prompts": row.get("n_prompts"),
        "samples_per_prompt": round(row["n_samples"] / row["n_prompts"]) if row.get("n_prompts") else None,
        "bootstrap": summary.get("bootstrap"),
        "embedders": summary.get("embedders", {}),
        "quality_source": summary.get("quality_source", "not recorded"),
    }
    config_path = eval_dir / "config.yaml"
    reward_dir = (yaml.safe_load(config_path.read_text()) or {}).get("reward") if config_path.is_file() else None
    if reward_dir and (Path(reward_dir) / "metrics.json").is_file():
        reward = json.loads((Path(reward_dir) / "metrics.json").read_text())
        if reward.get("pairwise_accuracy") is not None and reward.get("pairwise_accuracy_ci"):
            facts["reward_model"] = {key: reward[key] for key in ("pairwise_accuracy", "pairwise_accuracy_ci")}
    return facts


def system_of_run(summary: dict, run: Path) -> str | None:
    """The evaluated system whose generations were sampled from ``run`` (per their ``.config.yaml``)."""
    target = run.resolve()
    for name, info in (summary.get("systems") or {}).items():
        config_path = Path(str(info.get("source", "")) + ".config.yaml")
        if not config_path.is_file():
            continue
        model = (yaml.safe_load(config_path.read_text()) or {}).get("model")
        if model and Path(model).expanduser().exists() and Path(model).resolve() == target:
            return name
    return None


# ---------------------------------------------------------------- writing


def write_adapter(run: Path, target: Path, base_spec: str) -> None:
    """The adapter files, its base named by portable id, and divtune's base record (local resolution)."""
    for name in ADAPTER_FILES:
        shutil.copy2(run / name, target / name)
    if (run / BASE_SPEC_FILE).is_file():
        shutil.copy2(run / BASE_SPEC_FILE, target / BASE_SPEC_FILE)
    else:
        write_base_spec(target, base_spec)
    make_adapter_portable(target, base_spec)


def write_full_model(run: Path, target: Path) -> None:
    """The base with the adapter folded in (or a full fine-tune re-saved), fp32 safetensors."""
    import torch  # heavy

    model = models.load_causal_lm(run, dtype=torch.float32, device="cpu", merge_adapter=True)
    model.save_pretrained(target, safe_serialization=True)


def write_tokenizer(run: Path, target: Path) -> None:
    models.load_tokenizer(run).save_pretrained(target)


def write_generation_config(run: Path, target: Path, decoding: dict[str, Any]) -> None:
    """The base's special tokens with the paper's decoding settings (sampling on)."""
    from transformers import AutoConfig, GenerationConfig  # heavy

    source = adapter_base_source(run) if is_adapter_dir(run) else str(run)
    try:
        generation = GenerationConfig.from_pretrained(source)
    except OSError:
        generation = GenerationConfig.from_model_config(AutoConfig.from_pretrained(source))
    generation.update(do_sample=True, **decoding)
    generation.save_pretrained(target)
