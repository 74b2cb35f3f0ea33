"""Training defaults that fit the device, and the peak-memory estimate checked
before the model loads (divtune.train.memory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _train_support import make_pairs, write_pairs
from divtune.config import ConfigError
from divtune.train import TrainConfig
from divtune.train.config import resolved_training
from divtune.train.devices import with_device_sizes
from divtune.train.memory import GIB, estimate_options, estimate_peak, lora_parameters, model_shape

REPO = Path(__file__).resolve().parents[1]


def test_cpu_defaults_are_the_quickstarts_sizes_gpu_keeps_the_larger_ones():
    cfg = TrainConfig(method="ddpo")
    assert cfg.max_length is None
    assert with_device_sizes(cfg, "cpu").max_length == 128
    assert with_device_sizes(cfg, "cuda").max_length == 1024
    assert with_device_sizes(cfg.model_copy(update={"max_length": 300}), "cpu").max_length == 300
    assert resolved_training(cfg, "cpu")["per_device_train_batch_size"] == 2
    assert resolved_training(cfg, "cuda")["per_device_train_batch_size"] == 4
    user = TrainConfig(method="ddpo", training={"per_device_train_batch_size": 8})
    assert resolved_training(user, "cpu")["per_device_train_batch_size"] == 8


@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj"]])
def test_shape_and_lora_count_match_the_real_model(tiny_lm_dir, targets):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    shape = model_shape(str(tiny_lm_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    assert shape.parameters == model.num_parameters()  # tied embeddings counted once
    assert (shape.vocab, shape.layers, shape.hidden) == (model.config.vocab_size, 2, 32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert lora_parameters(shape, 4, targets) == trainable


def test_estimate_grows_with_batch_and_length_and_counts_the_reference_copy(tiny_lm_dir):
    shape = model_shape(str(tiny_lm_dir))
    lora = estimate_options(TrainConfig(method="ddpo"))
    small = estimate_peak(shape, batch=1, max_length=64, **lora)
    assert estimate_peak(shape, batch=2, max_length=64, **lora).activations == 2 * small.activations
    assert estimate_peak(shape, batch=1, max_length=128, **lora).activations == 2 * small.activations
    # SFT reads one sequence per example, the preference methods two.
    sft = estimate_peak(shape, batch=1, max_length=64, **estimate_options(TrainConfig(method="sft")))
    assert 2 * sft.activations == small.activations
    full = estimate_options(TrainConfig(method="dpo", lora={"enabled": False}))
    assert full["reference_copy"] and not lora["reference_copy"]
    full_peak = estimate_peak(shape, batch=1, max_length=64, **full)
    assert full_peak.reference == full_peak.weights == 4 * shape.parameters
    assert full_peak.trainable_state == 12 * shape.parameters
    precomputed = estimate_options(TrainConfig(method="dpo", lora={"enabled": False}, precompute_ref=True))
    assert not precomputed["reference_copy"]


def _tiny_run(tmp_path, tiny_lm_dir, *extra):
    data = write_pairs(tmp_path / "data", make_pairs(4))
    overrides = ["lora.r=2", "lora.alpha=4", "device=cpu", "report_to=[]", "save_strategy=no", "disable_tqdm=true",
                 "max_steps=1", *extra]
    return TrainConfig.load(None, overrides, method="dpo", data=str(data), model=str(tiny_lm_dir),
                            output=str(tmp_path / "out"))


@pytest.mark.parametrize("budget_at, suggested", [
    ((3, 256), (1, 512)),  # 1536 tokens of room: batch 1 at the asked max_length fits, batch 2 does not
    ((1, 256), (1, 256)),  # 512 tokens of room: even batch 1 needs max_length halved
])
def test_a_run_that_would_not_fit_is_refused_with_sizes_that_fit(tmp_path, tiny_lm_dir, monkeypatch, budget_at, suggested):
    import divtune.train.memory as memory
    from divtune.train import run_train

    cfg = _tiny_run(tmp_path, tiny_lm_dir, "max_length=512", "per_device_train_batch_size=8")
    shape = model_shape(str(tiny_lm_dir))
    options = estimate_options(cfg)
    needed = estimate_peak(shape, batch=8, max_length=512, **options).total
    budget = estimate_peak(shape, batch=budget_at[0], max_length=budget_at[1], **options).total + 1
    monkeypatch.setattr(memory, "available_memory", lambda: budget)
    with pytest.raises(ConfigError) as err:
        run_train(cfg)
    message = str(err.value)
    assert message.startswith(f"train: the estimated peak memory, {needed / GIB:.1f} GiB (weights ")
    assert f"exceeds the {budget / GIB:.1f} GiB available" in message
    assert message.endswith(
        f"--set per_device_train_batch_size={suggested[0]} --set max_length={suggested[1]} fits (raise "
        "gradient_accumulation_steps to keep the global batch); --no-memory-check tries anyway"
    )
    assert not (tmp_path / "out").exists()


def test_no_memory_check_trains_anyway(tmp_path, tiny_lm_dir, monkeypatch):
    import divtune.train.memory as memory
    from divtune.train import run_train

    monkeypatch.setattr(memory, "available_memory", lambda: 1)
    cfg = _tiny_run(tmp_path, tiny_lm_dir, "max_length=64")
    with pytest.raises(ConfigError, match="even batch 1 at max_length 64 does not fit"):
        run_train(cfg)
    run_train(cfg, memory_check=False)
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


CHILD = """
import resource, sys
from divtune.cli import main
try:
    main()
finally:
    print("PEAK_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
"""


@pytest.mark.slow
def test_cpu_default_settings_run_one_step_within_the_machines_memory(tmp_path):
    """`divtune train` with nothing but data, output and one step: the shipped SmolLM2, DDPO, CPU defaults.

    Every prompt + response is longer than max_length, so each batch is as large as the defaults allow.
    """
    from divtune.models import resolve_model_source
    from divtune.train.memory import available_memory

    long_text = " ".join(["dragon", "sea", "light", "door"] * 200)
    rows = [dict(r, chosen=long_text, rejected=long_text[::-1]) for r in make_pairs(8)]
    data = write_pairs(tmp_path / "data", rows)
    available = available_memory()
    shape = model_shape(resolve_model_source("smollm2"))
    defaults = with_device_sizes(TrainConfig(), "cpu")
    estimate = estimate_peak(shape, batch=2, max_length=defaults.max_length, **estimate_options(defaults)).total
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", CHILD, "train", "--data", str(data), "--output", str(tmp_path / "out"),
         "--device", "cpu", "--set", "max_steps=1", "--set", "report_to=[]"],
        capture_output=True, text=True, env=env, timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    peak = int([line for line in result.stdout.splitlines() if line.startswith("PEAK_KIB")][-1].split()[1]) * 1024
    resolved = (tmp_path / "out" / "config.yaml").read_text()
    assert "method: ddpo" in resolved and "model: smollm2" in resolved and "max_length: 128" in resolved
    assert "per_device_train_batch_size: 2" in resolved
    assert json.loads((tmp_path / "out" / ".divtune-done.json").read_text())["global_step"] == 1
    print(f"peak RSS of one default CPU step: {peak / GIB:.2f} GiB (estimate {estimate / GIB:.2f} GiB, "
          f"{available / GIB:.1f} GiB available)")
    assert peak < available
    assert peak <= estimate  # the estimate is an upper bound at the defaults
