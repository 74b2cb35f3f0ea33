#!/usr/bin/env python
r"""One-command GPU proof of divtune on tiny random models (no downloads).

    python scripts/gpu_smoke.py --out gpu_smoke.json              # the GPU when there is one
    python scripts/gpu_smoke.py --device cpu --out cpu_smoke.json # the same checks on CPU, fp32
    bash scripts/gpu_smoke.sh                                      # the same, from anywhere

It drives divtune through its public API (``divtune.train.TrainConfig`` +
``run_train``, ``divtune.generation``) and ``accelerate launch -m``-style
launches of this script's worker, on a 2-layer Llama and a BPE tokenizer built
here from a config. Checks (``--list`` prints them):

- ``train/<method>/<lora|full>``: every offline method (sft, dpo, ddpo, orpo,
  dorpo, divpo) for 2 steps with LoRA and with full fine-tuning. On a GPU in
  bf16: a LoRA base in bf16 with bf16 mixed precision, full fine-tuning with
  ``dtype=bfloat16`` weights; on CPU in fp32.
- ``ddpo_split/<fp32|bf16>``: one SGD step of DDPO on 8 pairs gives the same
  loss and adapter as 4 accumulated micro-batches of 2 (fp32: relative error
  <= 1e-4; bf16: <= 5e-2).
- ``precompute_ref/miss_hit``: the reference log-prob cache misses, then hits,
  and both runs end with the same adapter.
- ``sft_then_dpo_init``: DPO from the SFT adapter (``init``).
- ``accelerate/<zero2|zero3|fsdp>``: ``accelerate launch`` with the shipped
  configs/accelerate/*.yaml at one process; the worker records whether the model
  loaded under ZeRO-3's partitioned init / FSDP's low-memory loading.
- ``online/<grpo|dqo|darling>``: 2 steps of each online method.
- ``generate/prompt_cache``: greedy text is identical with prompt-cache sharing
  on and off; ``generate/resume``: a run stopped after one batch and resumed
  writes the same file as an uninterrupted run.
- ``options/qlora_4bit``, ``options/flash_attention_2``: the GPU options.

Each check records its time, peak memory (GPU: ``torch.cuda.max_memory_allocated``;
CPU: the process's peak RSS, reset before the check) and samples per second.
What the machine cannot run (no GPU, bf16 kernels on CPU, DeepSpeed, bitsandbytes
or flash-attn not installed) is recorded as skipped with the reason. The JSON
summary (``--out``) lists every check as passed, failed or skipped; the exit
status is 1 when any check failed, 2 when an import is missing.
Budget: at most 8 minutes on one GPU, 5 minutes on a 2-core CPU.

Carrying the dependencies to a GPU machine without network (the device image
has torch 2.11 but no TRL or datasets). On a machine with network, download
wheels for the device's Python (3.12 here) without dependency resolution. The
surest list is a working divtune environment's own, less torch and CUDA:

    pip list --format=freeze | grep -v -E '^(torch|triton|nvidia-|divtune)' > carry.txt
    pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d .whl -r carry.txt

or, by name, what the checks import and what those import in turn:

    pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d .whl \
        trl==1.16.* datasets==5.2.* transformers==5.23.* peft==0.21.* accelerate==1.15.* \
        huggingface_hub tokenizers safetensors hf-xet pydantic pydantic-core annotated-types \
        typing-inspection typing-extensions pyyaml tqdm psutil regex packaging filelock \
        pyarrow dill multiprocess xxhash fsspec aiohttp aiosignal aiohappyeyeballs frozenlist \
        multidict yarl propcache attrs httpx httpcore h11 anyio sniffio certifi idna requests \
        urllib3 charset-normalizer numpy pandas python-dateutil pytz tzdata six \
        typer typer-slim click rich shellingham markdown-it-py mdurl pygments \
        bitsandbytes==0.50.*          # optional, for options/qlora_4bit

For accelerate/zero2 and zero3 (optional): DeepSpeed, which PyPI has as a
source package only, built as a pure-Python wheel, and its own dependencies:

    DS_BUILD_OPS=0 pip wheel --no-deps -w .whl deepspeed==0.19.*
    pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux2014_x86_64 -d .whl hjson ninja py-cpuinfo msgpack einops

carry ``.whl`` and this repository over, and install into a folder put in front
of the image's packages (the image's torch stays):

    pip install --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:src python scripts/gpu_smoke.py --out gpu_smoke.json

Leave out of ``.whl`` what the image already has (``pip list``). A module still
missing is named on one line (``gpu_smoke: cannot import trl (...); install
trl==1.16.*``) before any check runs. divtune itself is used from this
checkout's ``src``. flash-attn has no wheel on PyPI (its GitHub releases have
them, per torch and CUDA version); without it ``options/flash_attention_2`` is
skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import importlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
ACCELERATE_CONFIGS = ROOT / "configs" / "accelerate"
if str(SRC) not in sys.path:  # the script runs from a checkout, installed or not
    sys.path.insert(0, str(SRC))

from divtune.methods import names  # noqa: E402  (light: no torch)

#: Modules the checks import, and the distribution that provides each.
REQUIRED = {
    "torch": "torch", "numpy": "numpy", "transformers": "transformers==5.23.*", "tokenizers": "tokenizers",
    "safetensors": "safetensors", "accelerate": "accelerate==1.15.*", "peft": "peft==0.21.*", "trl": "trl==1.16.*",
    "datasets": "datasets==5.2.*", "pydantic": "pydantic", "yaml": "pyyaml", "tqdm": "tqdm", "psutil": "psutil",
    "huggingface_hub": "huggingface_hub",
}

OFFLINE_METHODS = names(online=False)
ONLINE_METHODS = names(online=True)
CHECKS = (
    *(f"train/{m}/{kind}" for m in OFFLINE_METHODS for kind in ("lora", "full")),
    "ddpo_split/fp32", "ddpo_split/bf16",
    "precompute_ref/miss_hit",
    "sft_then_dpo_init",
    "accelerate/zero2", "accelerate/zero3", "accelerate/fsdp",
    *(f"online/{m}" for m in ONLINE_METHODS),
    "generate/prompt_cache", "generate/resume",
    "options/qlora_4bit", "options/flash_attention_2",
)

#: Split-invariance tolerances: the largest relative error (Frobenius norm) of loss and adapter tensors.
SPLIT_TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2}


class Skip(Exception):
    """The check cannot run here; the message says why (and ``details``, what did run)."""

    def __init__(self, reason: str, details: dict[str, Any] | None = None):
        super().__init__(reason)
        self.details = details or {}


class Failed(Exception):
    """The check ran and its result is wrong."""


# ---------------------------------------------------------------- environment


def missing_imports() -> list[str]:
    """One line per module that cannot be imported, naming what to install."""
    lines = []
    for module, dist in REQUIRED.items():
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - any import failure is reported the same way
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            lines.append(
                f"gpu_smoke: cannot import {module} ({first}); install {dist} "
                "(offline: see `pip download ... -d .whl` in this script's docstring)"
            )
    if not lines:
        try:
            import divtune  # noqa: F401
        except Exception as err:  # noqa: BLE001
            lines.append(f"gpu_smoke: cannot import divtune from {SRC} ({err}); run from a divtune checkout")
    return lines


def quiet() -> None:
    """Less log noise: one line per check is the script's output."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


class Memory:
    """Peak memory of what runs between ``reset`` and ``peak_mib``: GPU allocations, or the process's RSS."""

    def __init__(self, device: str):
        self.device = device

    def reset(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)

    def peak_mib(self) -> float | None:
        if self.device == "cuda":
            import torch

            return round(torch.cuda.max_memory_allocated() / 2**20, 1)
        with contextlib.suppress(OSError):
            found = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
            if found:
                return round(int(found.group(1)) / 1024, 1)
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ---------------------------------------------------------------- tiny model and data

CORPUS = [
    "Once upon a time there was a dragon who loved to read stories.",
    "The knight rode across the hills at dawn, looking for the lost city.",
    "She opened the door and the room was full of light and music.",
    "Write a story about a robot who learns to paint.",
    "The sea was calm; the old sailor told his tale again.",
    "\"Where are you going?\" he asked. \"Home,\" she said, smiling.",
] * 4
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
WORDS = "the dragon knight sea robot paint light music home story door city hills dawn sailor tale room".split()


def build_tiny_model(directory: Path) -> Path:
    """A 2-layer Llama (hidden 64, head size 16) and a byte-level BPE tokenizer with a chat template.

    The special tokens come first in the vocabulary (ids 0-4).
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<|pad|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainer=trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    ))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>", bos_token=None)
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # Untied, and the special tokens' output rows at zero: their logits are 0 while the others spread
        # around it, so greedy decoding of this random model writes text (tied embeddings make it repeat
        # the last prompt token, <|assistant|>, which decodes to nothing).
        model.get_output_embeddings().weight[: len(special)].zero_()
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def write_pairs(directory: Path, n: int = 8, seed: int = 0) -> Path:
    """Prepared-style pairs (``train.jsonl``) of varied lengths, each with a deviation weight."""
    import random

    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "train.jsonl", "w") as handle:
        for i in range(n):
            row = {
                "pool_id": f"p{i}",
                "prompt": "Write a story about " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5))),
                "chosen": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))),
                "rejected": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 10))),
                "score_chosen": 10, "score_rejected": 1, "weight": round(rng.uniform(0.2, 2.0), 3),
            }
            handle.write(json.dumps(row) + "\n")
    return directory


# ---------------------------------------------------------------- the checks


class Smoke:
    """Runs the checks in one work folder on one device; ``results`` is the summary's list."""

    def __init__(self, device: str, work: Path):
        import torch

        self.device = device
        self.work = work
        self.memory = Memory(device)
        self.bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
        self.model = build_tiny_model(work / "tiny")
        self.data = write_pairs(work / "pairs")
        self.results: list[dict[str, Any]] = []
        self.outputs: dict[str, Path] = {}

    # -- helpers

    def settings(self, **extra: Any) -> list[str]:
        """``--set`` overrides of a 2-step run of the tiny model on this device."""
        values: dict[str, Any] = {
            "device": self.device, "max_length": 64, "lora.r": 8, "lora.alpha": 16, "lora.dropout": 0.0,
            "max_steps": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
            "learning_rate": 1e-3, "report_to": "[]", "save_strategy": "no", "disable_tqdm": "true",
            "warmup_steps": 0,
        }
        if self.device == "cpu":
            values["dtype"] = "float32"
        values.update(extra)
        return [f"{key}={value}" for key, value in values.items()]

    def train(self, name: str, method: str, overrides: list[str], quality_fn=None, **explicit: Any) -> Path:
        """``run_train`` (``run_online_train`` with a quality function, for the online methods)."""
        from divtune.train import TrainConfig, run_train
        from divtune.train.online import run_online_train

        output = self.work / "runs" / name.replace("/", "_")
        shutil.rmtree(output, ignore_errors=True)  # a finished run with the same settings would be reused
        cfg = TrainConfig.load(None, overrides, method=method, data=str(self.data), model=str(self.model),
                               output=str(output), **explicit)
        if quality_fn is not None:
            return run_online_train(cfg, quality_fn=quality_fn, overwrite=True)
        return run_train(cfg, overwrite=True)

    @staticmethod
    def metrics(output: Path) -> list[dict[str, Any]]:
        path = output / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []

    def trained_steps(self, output: Path, key: str = "loss", steps: int = 2) -> dict[str, Any]:
        """Checks a finished run logged ``key`` finitely at every step; returns its details."""
        from divtune.io import is_stage_done

        if not is_stage_done(output):
            raise Failed(f"{output} has no done marker")
        rows = self.metrics(output)
        logged = {r["step"]: r[key] for r in rows if key in r}
        if sorted(logged) != list(range(1, steps + 1)):
            raise Failed(f"{key} logged at steps {sorted(logged)}, expected 1..{steps}")
        bad = {s: v for s, v in logged.items() if not math.isfinite(float(v))}
        if bad:
            raise Failed(f"{key} is not finite at steps {sorted(bad)}")
        final = next((r for r in reversed(rows) if "train_samples_per_second" in r), {})
        return {key: [round(float(logged[s]), 6) for s in sorted(logged)],
                "samples_per_second": final.get("train_samples_per_second")}

    def precision(self, full: bool) -> tuple[list[str], str]:
        """Overrides and label of this device's precision: bf16 on a bf16 GPU, fp32 elsewhere."""
        if self.device == "cpu":
            return [], "fp32"
        if not self.bf16:  # (fp16 weights would need loss scaling that full fine-tuning of fp16 cannot have)
            return [], "fp32"
        return (["dtype=bfloat16"] if full else []), "bf16 weights" if full else "bf16 base, bf16 autocast"

    # -- checks

    def check_train(self, method: str, kind: str) -> dict[str, Any]:
        extra, label = self.precision(full=kind == "full")
        overrides = self.settings() + extra + (["lora.enabled=false"] if kind == "full" else [])
        output = self.train(f"train/{method}/{kind}", method, overrides)
        self.outputs[f"train/{method}/{kind}"] = output
        return {**self.trained_steps(output), "precision": label}

    def check_ddpo_split(self, precision: str) -> dict[str, Any]:
        if precision == "bf16":
            if self.device == "cpu":
                raise Skip("bf16 kernels: the bf16 tolerance is for a GPU's bf16 matmuls (CPU mode runs fp32)")
            if not self.bf16:
                raise Skip("this GPU has no bf16 support")
            extra = ["dtype=bfloat16", "bf16=true"]
        else:
            extra = ["dtype=float32", "bf16=false", "fp16=false"]
        step = dict(max_steps=1, optim="sgd", learning_rate=0.5, max_grad_norm=0.0)
        runs = {}
        for split, (batch, accumulation) in {"8x1": (8, 1), "2x4": (2, 4)}.items():
            overrides = self.settings(**step, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation)
            runs[split] = self.train(f"ddpo_split/{precision}/{split}", "ddpo", overrides + extra)
        losses = {split: self.trained_steps(out, steps=1)["loss"][0] for split, out in runs.items()}
        loss_error = abs(losses["2x4"] - losses["8x1"]) / max(abs(losses["8x1"]), 1e-12)
        a, b = adapter_tensors(runs["8x1"]), adapter_tensors(runs["2x4"])
        if a.keys() != b.keys() or not a:
            raise Failed("the two runs saved different adapters")
        errors = {name: relative_error(a[name], b[name]) for name in a if bool(a[name].abs().max() > 0)}
        worst = max(errors.values()) if errors else 0.0
        tolerance = SPLIT_TOLERANCE[precision]
        details = {"loss_8x1": losses["8x1"], "loss_2x4": losses["2x4"], "loss_relative_error": loss_error,
                   "adapter_max_relative_error": worst, "tolerance": tolerance}
        if not errors:
            raise Failed("the adapter did not move in one SGD step")
        if loss_error > tolerance or worst > tolerance:
            raise Failed(f"8x1 and 2x4 differ beyond {tolerance}: loss {loss_error:.2e}, adapter {worst:.2e}")
        return details

    def check_precompute_ref(self) -> dict[str, Any]:
        import torch

        cache = self.work / "ref_cache"
        shutil.rmtree(cache, ignore_errors=True)
        # fp32 and plain SGD on every device: the check is about the cache, and Adam's first step
        # (lr x the gradient's sign) would turn a GPU kernel's last-bit differences into whole steps.
        extra = ["dtype=float32", "bf16=false", "fp16=false", "optim=sgd", f"ref_cache_dir={cache}"]
        records, outputs = [], []
        for attempt in ("miss", "hit"):
            output = self.train(f"precompute_ref/{attempt}", "ddpo", self.settings() + extra, precompute_ref=True)
            self.trained_steps(output)
            records.append(json.loads((output / "ref_logps.json").read_text()))
            outputs.append(output)
        hits = [record["train"]["hit"] for record in records]
        if hits != [False, True]:
            raise Failed(f"reference cache hits were {hits}, expected a miss then a hit")
        a, b = adapter_tensors(outputs[0]), adapter_tensors(outputs[1])
        if a.keys() != b.keys() or not a:
            raise Failed("the two runs saved different adapters")
        identical = all(torch.equal(a[k], b[k]) for k in a)
        worst = max(relative_error(a[k], b[k]) for k in a)
        if worst > 1e-4:
            raise Failed(f"the run that read the cache ended elsewhere (relative difference {worst:.2e})")
        return {"hits": hits, "bit_identical_adapters": identical, "adapter_max_relative_error": worst}

    def check_sft_then_dpo(self) -> dict[str, Any]:
        from divtune.models import read_base_spec

        sft = self.outputs.get("train/sft/lora")
        if sft is None:
            raise Failed("needs the adapter of train/sft/lora, which did not finish")
        output = self.train("sft_then_dpo_init", "dpo", self.settings() + self.precision(full=False)[0], init=str(sft))
        details = self.trained_steps(output)
        if not (output / "adapter_model.safetensors").is_file():
            raise Failed("no adapter saved")
        if read_base_spec(output) != str(self.model):
            raise Failed(f"the adapter names {read_base_spec(output)} as its base, not the tiny model")
        return details

    def check_accelerate(self, kind: str) -> dict[str, Any]:
        config = ACCELERATE_CONFIGS / {"zero2": "deepspeed_zero2.yaml", "zero3": "deepspeed_zero3.yaml",
                                       "fsdp": "fsdp.yaml"}[kind]
        launch = ["--num_processes", "1"]
        if kind.startswith("zero"):
            if not _installed("deepspeed"):
                raise Skip("deepspeed is not installed (pip install 'divtune[deepspeed]')")
            if self.device == "cpu":
                raise Skip("the shipped DeepSpeed configs train on CUDA GPUs")
        if self.device == "cpu":
            launch += ["--mixed_precision", "no"]  # (``--cpu`` would drop the FSDP settings altogether)
        elif not self.bf16:
            launch += ["--mixed_precision", "fp16"]
        output = self.work / "runs" / f"accelerate_{kind}"
        shutil.rmtree(output, ignore_errors=True)
        spec = self.work / f"accelerate_{kind}.json"
        spec.write_text(json.dumps({
            "overrides": self.settings() + self.precision(full=False)[0],
            "explicit": {"method": "ddpo", "data": str(self.data), "model": str(self.model), "output": str(output)},
            "result": str(self.work / f"accelerate_{kind}.result.json"),
            "device": self.device,
        }))
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), *launch,
                   "--main_process_port", str(free_port()), str(Path(__file__).resolve()), "--worker", str(spec)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
        print(done.stdout, done.stderr, sep="\n")  # into this check's log
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-12:]
            raise Failed(f"accelerate launch exited {done.returncode}: " + " | ".join(tail))
        result = json.loads(Path(json.loads(spec.read_text())["result"]).read_text())
        details = {**self.trained_steps(output), **result}
        expected_type = "DEEPSPEED" if kind.startswith("zero") else "FSDP"
        if kind == "fsdp" and self.device == "cpu":
            if not (result["load"]["fsdp_low_memory_loading"] and not result["load"]["placed"]):
                raise Failed(f"under the FSDP launch the policy did not load with FSDP's low-memory loading: {result['load']}")
            raise Skip(
                f"FSDP itself needs CUDA: on CPU accelerate runs the FSDP config as {result['distributed_type']} (DDP); "
                "the launch did train, with the policy loaded after TrainingArguments under FSDP's low-memory loading "
                "(left where it was loaded), see details", details,
            )
        if result["distributed_type"] != expected_type:
            raise Failed(f"the worker ran as {result['distributed_type']}, not {expected_type}")
        if kind == "zero3" and not result["load"]["zero3_init"]:
            raise Failed("the model was not loaded under ZeRO-3's partitioned init")
        if kind == "fsdp" and not result["load"]["fsdp_low_memory_loading"]:
            raise Failed("the model was not loaded with FSDP's low-memory loading")
        return details

    def check_online(self, method: str) -> dict[str, Any]:
        overrides = self.settings(**{
            "online.num_generations": 2, "online.max_completion_length": 8, "online.embedder": "stylometric",
            "max_length": 48,
        }) + self.precision(full=False)[0]
        output = self.train(f"online/{method}", method, overrides, quality_fn=vowel_share)
        details = self.trained_steps(output, key="online/diversity_weighted_reward")
        norms = [float(r["grad_norm"]) for r in self.metrics(output) if "grad_norm" in r]
        if not all(math.isfinite(n) for n in norms):
            raise Failed(f"gradient norms {norms} are not finite")
        return {**details, "grad_norm": norms}

    def generate_cfg(self, output: Path, **extra: Any):
        from divtune.generation.config import GenerateConfig

        output.parent.mkdir(parents=True, exist_ok=True)
        prompts = self.work / "prompts.txt"
        if not prompts.is_file():
            prompts.write_text("".join(f"Write a story about the {w}.\n" for w in ("dragon", "sea", "robot", "city")))
        values = dict(model=str(self.model), prompts=str(prompts), output=str(output), num_samples=3, max_new_tokens=12,
                      batch_size=6, device=self.device, dtype="float32", show_progress=False, seed=0)
        values.update(extra)
        return GenerateConfig(**values)

    def check_generate_cache(self) -> dict[str, Any]:
        from divtune.generation.run import run_generate

        texts, rates = {}, {}
        for share in (True, False):
            output = fresh(self.work / "generate" / f"greedy_share_{share}.jsonl")
            start = time.perf_counter()
            run_generate(self.generate_cfg(output, temperature=0.0, share_prompt_cache=share), overwrite=True)
            rows = [json.loads(line) for line in output.read_text().splitlines()]
            rates[share] = len(rows) / (time.perf_counter() - start)
            texts[share] = [(r["prompt_id"], r["sample_index"], r["text"]) for r in rows]
        if texts[True] != texts[False]:
            differ = sum(a != b for a, b in zip(texts[True], texts[False]))
            raise Failed(f"{differ} of {len(texts[True])} greedy samples differ with the prompt cache shared")
        if not any(t for _, _, t in texts[True]):
            raise Failed("every sample is empty")
        return {"samples": len(texts[True]), "dtype": "float32", "samples_per_second": round(rates[True], 2),
                "samples_per_second_unshared": round(rates[False], 2)}

    def check_generate_resume(self) -> dict[str, Any]:
        from divtune.generation.run import run_generate

        whole = fresh(self.work / "generate" / "whole.jsonl")
        start = time.perf_counter()
        run_generate(self.generate_cfg(whole), overwrite=True)
        rate = sum(1 for _ in whole.open()) / (time.perf_counter() - start)
        resumed = fresh(self.work / "generate" / "resumed.jsonl")
        run_generate(self.generate_cfg(resumed), stop_after_batches=1)
        partial = sum(1 for _ in resumed.open())
        run_generate(self.generate_cfg(resumed))
        if resumed.read_bytes() != whole.read_bytes():
            raise Failed("the resumed file differs from the uninterrupted one")
        return {"samples": sum(1 for _ in whole.open()), "after_first_batch": partial, "samples_per_second": round(rate, 2)}

    def check_qlora(self) -> dict[str, Any]:
        if self.device == "cpu":
            raise Skip("bitsandbytes 4-bit training needs a CUDA GPU")
        if not _installed("bitsandbytes"):
            raise Skip("bitsandbytes is not installed (pip install 'divtune[qlora]')")
        output = self.train("options/qlora_4bit", "ddpo", self.settings(quantization="4bit"))
        return self.trained_steps(output)

    def check_flash_attention(self) -> dict[str, Any]:
        if self.device == "cpu":
            raise Skip("flash attention needs a CUDA GPU")
        if not _installed("flash_attn"):  # (the `kernels` fallback downloads the kernel: no network here)
            raise Skip("flash-attn is not installed (pip install flash-attn --no-build-isolation)")
        if not self.bf16:
            raise Skip("flash attention runs in bf16/fp16; this GPU has no bf16")
        output = self.train("options/flash_attention_2", "ddpo",
                            self.settings(attn_implementation="flash_attention_2") + self.precision(full=False)[0])
        return self.trained_steps(output)

    def plan(self) -> dict[str, Callable[[], dict[str, Any]]]:
        plan: dict[str, Callable[[], dict[str, Any]]] = {}
        for method in OFFLINE_METHODS:
            for kind in ("lora", "full"):
                plan[f"train/{method}/{kind}"] = lambda m=method, k=kind: self.check_train(m, k)
        plan["ddpo_split/fp32"] = lambda: self.check_ddpo_split("fp32")
        plan["ddpo_split/bf16"] = lambda: self.check_ddpo_split("bf16")
        plan["precompute_ref/miss_hit"] = self.check_precompute_ref
        plan["sft_then_dpo_init"] = self.check_sft_then_dpo
        for kind in ("zero2", "zero3", "fsdp"):
            plan[f"accelerate/{kind}"] = lambda k=kind: self.check_accelerate(k)
        for method in ONLINE_METHODS:
            plan[f"online/{method}"] = lambda m=method: self.check_online(m)
        plan["generate/prompt_cache"] = self.check_generate_cache
        plan["generate/resume"] = self.check_generate_resume
        plan["options/qlora_4bit"] = self.check_qlora
        plan["options/flash_attention_2"] = self.check_flash_attention
        assert tuple(plan) == CHECKS
        return plan

    def run(self, name: str, check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """One check, its output kept in ``WORK/logs/<name>.log`` (the tail goes into a failure's record)."""
        log = self.work / "logs" / (name.replace("/", "_") + ".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        self.memory.reset()
        start = time.perf_counter()
        record: dict[str, Any] = {"name": name}
        with open(log, "w") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
            try:
                details = check() or {}
                record["status"] = "passed"
            except Skip as why:
                record.update(status="skipped", reason=str(why))
                details = why.details
            except Exception as err:  # noqa: BLE001 - a failed check is recorded; the others still run
                lines = str(err).strip().splitlines() or [type(err).__name__]
                record.update(status="failed", error=f"{type(err).__name__}: {lines[0]}"[:2000])
                traceback.print_exc()
                details = {}
        if record["status"] == "failed":
            record["log_tail"] = log.read_text(errors="replace")[-4000:]
        record["seconds"] = round(time.perf_counter() - start, 2)
        if record["status"] != "skipped" or details:
            worker_peak = details.pop("worker_peak_memory_mib", None)
            record["peak_memory_mib"] = worker_peak if worker_peak is not None else self.memory.peak_mib()
            record["samples_per_second"] = details.pop("samples_per_second", None)
        if details:
            record["details"] = details
        self.results.append(record)
        return record


def fresh(output: Path) -> Path:
    """``output`` with no generations file (or its sidecars) left from an earlier smoke run in the same folder."""
    for old in output.parent.glob(output.name + "*"):
        old.unlink()
    return output


def vowel_share(prompts: list[str], completions: list[str]):
    """A quality that differs between samples (so GRPO's advantages, and gradients, are not all zero)."""
    import numpy as np

    return np.array([sum(c in "aeiou" for c in text.lower()) / max(len(text), 1) for text in completions])


def relative_error(a, b) -> float:
    """||a - b|| / ||a|| (Frobenius; 0 when both are zero)."""
    import torch

    a, b = a.float(), b.float()
    scale = float(torch.linalg.norm(a))
    difference = float(torch.linalg.norm(a - b))
    return difference / scale if scale > 0 else difference


def adapter_tensors(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- accelerate worker


def worker(spec_path: str) -> int:
    """One training under ``accelerate launch``: records how the model was loaded, then trains."""
    quiet()
    import accelerate.state
    import torch
    from transformers.integrations import is_deepspeed_zero3_enabled

    import divtune.models
    from divtune.train import TrainConfig, run_train
    from divtune.train.policy import sharded_loading

    spec = json.loads(Path(spec_path).read_text())
    seen: dict[str, Any] = {}
    real_load = divtune.models.load_causal_lm

    def spy(*args, **kwargs):
        from transformers.distributed.fsdp import is_fsdp_enabled

        seen.update(zero3_init=bool(is_deepspeed_zero3_enabled()), fsdp_low_memory_loading=bool(is_fsdp_enabled()),
                    placed=bool(kwargs.get("place", True)), sharded_loading=sharded_loading())
        return real_load(*args, **kwargs)

    divtune.models.load_causal_lm = spy
    memory = Memory(spec["device"])
    memory.reset()
    cfg = TrainConfig.load(None, spec["overrides"], **spec["explicit"])
    run_train(cfg, overwrite=True)
    state = accelerate.state.PartialState()
    if state.is_main_process:
        Path(spec["result"]).write_text(json.dumps({
            "distributed_type": str(state.distributed_type).split(".")[-1], "num_processes": state.num_processes,
            "load": seen, "worker_peak_memory_mib": memory.peak_mib(), "torch_threads": torch.get_num_threads(),
        }))
    return 0


# ---------------------------------------------------------------- main


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_smoke: --device cuda but torch sees no CUDA device (torch.cuda.is_available() is False)")
    return requested


def environment(device: str) -> dict[str, Any]:
    import torch

    versions = {}
    for module in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed", "bitsandbytes", "flash_attn"):
        try:
            versions[module] = importlib.import_module(module).__version__
        except Exception:  # noqa: BLE001 - absent or broken: recorded as None
            versions[module] = None
    record = {"device": device, "python": platform.python_version(), "versions": versions,
              "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device == "cuda":
        record["gpu"] = torch.cuda.get_device_name(0)
        record["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        record["bf16"] = torch.cuda.is_bf16_supported()
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="cuda (bf16 where supported) or cpu (fp32); auto: cuda when available")
    parser.add_argument("--out", type=Path, help="write the JSON summary here")
    parser.add_argument("--only", action="append", default=[], metavar="PATTERN",
                        help="run only the checks matching this glob (repeatable), e.g. 'train/*'")
    parser.add_argument("--workdir", type=Path, help="work folder (default: a temporary folder, removed at the end)")
    parser.add_argument("--list", action="store_true", help="print the checks and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(CHECKS))
        return 0
    missing = missing_imports()
    if missing:
        print("\n".join(missing), file=sys.stderr)
        return 2
    if args.worker:
        return worker(args.worker)
    quiet()
    device = resolve_device(args.device)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="divtune-gpu-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary: dict[str, Any] = {"environment": environment(device), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    print(f"gpu_smoke on {device}" + (f" ({summary['environment']['gpu']})" if device == "cuda" else "") + f", work in {work}",
          flush=True)
    smoke = None
    try:
        try:
            with open(work / "setup.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                smoke = Smoke(device, work)
        except Exception:
            print((work / "setup.log").read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        for name, check in smoke.plan().items():
            if args.only and not any(fnmatch.fnmatch(name, pattern) for pattern in args.only):
                continue
            record = smoke.run(name, check)
            note = record.get("reason") or record.get("error") or ""
            numbers = ""
            if record["status"] != "skipped":
                rate = record.get("samples_per_second")
                numbers = f" peak {record.get('peak_memory_mib')} MiB" + (f", {float(rate):.1f} samples/s" if rate else "")
            print(f"[{record['status']:>7}] {name:28s} {record['seconds']:6.1f} s{numbers}{'  ' + note if note else ''}",
                  flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    results = smoke.results if smoke is not None else []
    counts = {status: sum(r["status"] == status for r in results) for status in ("passed", "failed", "skipped")}
    summary.update(checks=results, counts=counts, wall_seconds=round(time.perf_counter() - started, 1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"gpu_smoke: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped "
          f"in {summary['wall_seconds']} s" + (f"; summary in {args.out}" if args.out else ""), flush=True)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
