"""GPU options of `divtune train` (attn_implementation, dtype, quantization), checked when the
settings are read; the model load after TRL's config (TrainingArguments) exists; and how
`experiment --jobs` hands out GPUs. Everything here runs on a CPU: the GPU-only paths are
checked for their one-line refusals, the kernels themselves by scripts/gpu_smoke.py."""

from __future__ import annotations

import pytest
import torch

from _cli_support import run_cli
from _train_support import make_pairs, tiny_overrides, write_pairs
from divtune.config import ConfigError
from divtune.train import TrainConfig


def load(*sets: str) -> TrainConfig:
    return TrainConfig.load(None, list(sets))


def refusal(*sets: str) -> str:
    with pytest.raises(ConfigError) as err:
        load(*sets)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.fixture
def packages(monkeypatch):
    """Pretend these modules are (True) or are not (False) installed, whatever this machine has."""
    import divtune.train.devices as config

    real = config._installed
    table: dict[str, bool] = {}
    monkeypatch.setattr(config, "_installed", lambda module: table.get(module, real(module)))
    return table


# ---------------------------------------------------------------- values, read with the settings


def test_defaults_leave_loading_as_before():
    cfg = load()
    assert (cfg.attn_implementation, cfg.dtype, cfg.quantization) == (None, "auto", "none")


@pytest.mark.parametrize(
    "sets, expected",
    [
        (["attn_implementation=bogus"], "attn_implementation: expected one of eager, sdpa, flex_attention, "
                                        "flash_attention_2, flash_attention_3 (or null), got 'bogus'"),
        (["dtype=fp8"], "dtype: expected 'auto', 'float32', 'bfloat16' or 'float16', got 'fp8'"),
        (["quantization=2bit"], "quantization: expected 'none', '4bit' or '8bit', got '2bit'"),
        (["quantization=4bit", "lora.enabled=false"], "full fine-tuning (lora.enabled=false) cannot train quantised weights"),
        (["quantization=8bit", "device=cpu"], "quantization=8bit (bitsandbytes QLoRA) needs a CUDA GPU"),
        (["attn_implementation=flash_attention_2", "device=cpu"],
         "attn_implementation=flash_attention_2 needs a CUDA GPU; on CPU use sdpa or eager"),
        (["dtype=float16", "lora.enabled=false", "fp16=true"], "fp16 mixed precision needs fp32 master weights"),
    ],
)
def test_a_bad_value_is_one_line_when_the_settings_are_read(sets, expected):
    assert expected in refusal(*sets)


def test_qlora_without_bitsandbytes_names_the_install_command(packages):
    packages["bitsandbytes"] = False
    assert refusal("quantization=4bit", "device=cuda") == (
        "quantization=4bit needs bitsandbytes, which is not installed: "
        "pip install 'divtune[qlora]' (or: pip install bitsandbytes)"
    )
    packages["bitsandbytes"] = True
    assert load("quantization=4bit", "device=cuda").quantization == "4bit"


def test_flash_attention_without_its_package_names_the_install_command(packages):
    packages.update(flash_attn=False, kernels=False)
    assert refusal("attn_implementation=flash_attention_2", "device=cuda") == (
        "attn_implementation=flash_attention_2 needs the flash_attn module: pip install flash-attn --no-build-isolation"
    )
    packages["kernels"] = True  # transformers fetches the kernel through `kernels` instead
    assert load("attn_implementation=flash_attention_2", "device=cuda").attn_implementation == "flash_attention_2"


def test_the_cli_refuses_a_bad_value_before_anything_loads(tmp_path, monkeypatch, capsys):
    import divtune.models

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr(divtune.models, "load_causal_lm", no_loading)
    monkeypatch.setattr(divtune.models, "load_tokenizer", no_loading)
    code, out = run_cli(
        ["train", "--data", tmp_path, "--output", tmp_path / "out", "--set", "dtype=half"], monkeypatch, capsys
    )
    assert code == 2
    assert out == "error: dtype: expected 'auto', 'float32', 'bfloat16' or 'float16', got 'half'\n"
    assert not (tmp_path / "out").exists()


def test_qlora_with_device_auto_on_a_machine_without_a_gpu_stops_before_writing(tmp_path, packages, monkeypatch):
    from divtune.train import run_train

    packages["bitsandbytes"] = True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = write_pairs(tmp_path / "data", make_pairs(2))
    cfg = TrainConfig.load(None, ["quantization=4bit"], data=str(data), output=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"^quantization=4bit \(bitsandbytes QLoRA\) needs a CUDA GPU and none is available"):
        run_train(cfg)
    assert not (tmp_path / "out").exists()


def test_a_deepspeed_launch_without_deepspeed_is_one_line(tmp_path, packages, monkeypatch):
    from divtune.train import run_train

    packages["deepspeed"] = False
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    data = write_pairs(tmp_path / "data", make_pairs(2))
    cfg = TrainConfig.load(None, ["device=cpu"], data=str(data), output=str(tmp_path / "out"))
    with pytest.raises(ConfigError) as err:
        run_train(cfg)
    assert str(err.value) == (
        "this run was launched with a DeepSpeed accelerate config, but deepspeed is not installed: "
        "pip install 'divtune[deepspeed]' (or: pip install deepspeed)"
    )
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- what they resolve to


def test_weights_dtype_keeps_fp32_master_weights_for_full_fine_tuning_by_default():
    from divtune.train.devices import weights_dtype

    assert weights_dtype(load("lora.enabled=false"), "cpu") == torch.float32
    assert weights_dtype(load(), "cpu") == torch.float32  # a LoRA base on CPU: fp32 (bf16 is ~10x slower there)
    assert weights_dtype(load("lora.enabled=false", "dtype=bfloat16"), "cpu") == torch.bfloat16
    assert weights_dtype(load("dtype=float16"), "cuda") == torch.float16


def test_mixed_precision_follows_the_weights_dtype_on_a_gpu():
    from divtune.train.config import resolved_training

    full_bf16 = resolved_training(load("lora.enabled=false", "dtype=bfloat16"), "cuda")
    assert (full_bf16["bf16"], full_bf16["fp16"]) == (False, False)
    lora_fp16 = resolved_training(load("dtype=float16"), "cuda")
    assert (lora_fp16["bf16"], lora_fp16["fp16"]) == (False, True)
    # The user's own setting wins, and CPU runs stay without mixed precision.
    kept = resolved_training(load("lora.enabled=false", "dtype=bfloat16", "bf16=true"), "cuda")
    assert kept["bf16"] is True
    cpu = resolved_training(load("lora.enabled=false", "dtype=bfloat16"), "cpu")
    assert (cpu["bf16"], cpu["fp16"]) == (False, False)


def test_grpo_config_takes_the_same_precision_defaults(tmp_path):
    from divtune.train.online_args import grpo_config_kwargs

    cfg = TrainConfig.load(None, ["lora.enabled=false", "dtype=bfloat16"], method="grpo", output=str(tmp_path))
    kwargs = grpo_config_kwargs(cfg, "cuda")
    assert (kwargs["bf16"], kwargs["fp16"]) == (False, False)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attn_implementation_and_dtype_reach_the_loaded_policy(tiny_lm_dir, tmp_path, attn):
    from divtune.train.policy import load_policy

    cfg = TrainConfig.load(None, [f"attn_implementation={attn}", "dtype=bfloat16", "lora.enabled=false"],
                           model=str(tiny_lm_dir), output=str(tmp_path))
    model, base = load_policy(cfg, "cpu")
    assert model.config._attn_implementation == attn
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert base == str(tiny_lm_dir)
    default, _ = load_policy(TrainConfig.load(None, ["lora.enabled=false"], model=str(tiny_lm_dir)), "cpu")
    assert {p.dtype for p in default.parameters()} == {torch.float32}


def test_without_bitsandbytes_the_qlora_load_itself_is_one_line(tmp_path, packages):
    """Past the settings check (e.g. bitsandbytes removed since), the load still fails with one line."""
    from divtune.train.devices import quantization_config

    packages["bitsandbytes"] = True
    cfg = load("quantization=4bit", "device=cuda")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"pip install 'divtune\[qlora\]'"):
            quantization_config(cfg, "cuda")
    else:
        config = quantization_config(cfg, "cuda")
        assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"


# ---------------------------------------------------------------- the load comes after TrainingArguments


@pytest.fixture
def fresh_accelerate_state():
    """No distributed state yet, as in a fresh `divtune train` process."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _spy_on_loading(monkeypatch):
    """Record, at each policy load, whether accelerate's state and a TRL config already exist."""
    import divtune.models
    from accelerate.state import PartialState
    from transformers import TrainingArguments

    seen: list[dict] = []
    made: list[TrainingArguments] = []
    real_init = TrainingArguments.__post_init__

    def post_init(self):
        real_init(self)
        made.append(self)

    real_load = divtune.models.load_causal_lm

    def spy(*args, **kwargs):
        seen.append({"partial_state": bool(PartialState._shared_state), "training_args": len(made), **kwargs})
        return real_load(*args, **kwargs)

    monkeypatch.setattr(TrainingArguments, "__post_init__", post_init)
    monkeypatch.setattr(divtune.models, "load_causal_lm", spy)
    return seen


@pytest.mark.parametrize("method", ["ddpo", "sft", "dorpo"])
def test_the_policy_loads_after_trls_config_has_set_up_the_distributed_state(
    tiny_lm_dir, tmp_path, monkeypatch, fresh_accelerate_state, method
):
    from accelerate.state import PartialState

    from divtune.train import run_train

    assert not PartialState._shared_state
    seen = _spy_on_loading(monkeypatch)
    data = write_pairs(tmp_path / "data", make_pairs(4))
    cfg = TrainConfig.load(None, tiny_overrides(max_steps=1, per_device_train_batch_size=2, gradient_accumulation_steps=1),
                           method=method, data=str(data), model=str(tiny_lm_dir), output=str(tmp_path / "out"))
    run_train(cfg)
    assert seen and seen[0]["partial_state"] and seen[0]["training_args"] >= 1, seen
    # Not under ZeRO-3 / FSDP low-memory loading here: the weights are placed as before.
    assert seen[0]["place"] is True


def test_online_training_also_loads_after_its_grpo_config(tiny_lm_dir, tmp_path, monkeypatch, fresh_accelerate_state):
    from divtune.train import run_train

    seen = _spy_on_loading(monkeypatch)
    data = write_pairs(tmp_path / "data", make_pairs(2))
    cfg = TrainConfig.load(
        None,
        tiny_overrides(max_steps=1, gradient_accumulation_steps=1, **{
            "online.num_generations": 2, "online.max_completion_length": 4, "online.embedder": "stylometric",
        }),
        method="darling", data=str(data), model=str(tiny_lm_dir), output=str(tmp_path / "out"),
    )
    run_train(cfg)
    assert seen and seen[0]["partial_state"] and seen[0]["training_args"] >= 1, seen


def test_under_sharded_loading_the_weights_are_not_moved(tiny_lm_dir, tmp_path, monkeypatch):
    """ZeRO-3 (partitioned) or FSDP low-memory loading (meta weights off rank 0): no `.to(device)`."""
    import transformers.integrations

    import divtune.models
    from divtune.train.policy import load_policy

    calls = []
    real_load = divtune.models.load_causal_lm
    monkeypatch.setattr(divtune.models, "load_causal_lm", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    monkeypatch.setattr(transformers.integrations, "is_deepspeed_zero3_enabled", lambda: True)
    load_policy(TrainConfig.load(None, [], model=str(tiny_lm_dir), output=str(tmp_path)), "cpu")
    assert calls[0]["place"] is False


# ---------------------------------------------------------------- experiment --jobs on GPUs


def test_jobs_split_the_gpus_evenly():
    from divtune.experiments import partition_gpus

    gpus = [str(i) for i in range(8)]
    assert partition_gpus(2, gpus) == [["0", "1", "2", "3"], ["4", "5", "6", "7"]]
    assert partition_gpus(4, ["3", "5", "6", "7"]) == [["3"], ["5"], ["6"], ["7"]]
    assert partition_gpus(8, gpus) == [[g] for g in gpus]
    # One job, no GPU or a CPU experiment: nothing to hand out.
    assert partition_gpus(1, gpus) is None
    assert partition_gpus(3, []) is None
    assert partition_gpus(3, gpus, device="cpu") is None


@pytest.mark.parametrize(
    "jobs, n_gpus, expected",
    [
        (3, 4, "--jobs 3 on 4 GPUs (0,1,2,3): each parallel stage needs GPUs of its own and 4 do not split into "
               "3 equal parts; use --jobs 1, 2 or 4, or device=cpu"),
        (2, 1, "--jobs 2 on 1 GPU (0): each parallel stage needs GPUs of its own and 1 do not split into 2 equal "
               "parts; use --jobs 1, or device=cpu"),
        (16, 8, "use --jobs 1, 2, 4 or 8, or device=cpu"),
    ],
)
def test_jobs_that_do_not_divide_the_gpus_are_refused_in_one_line(jobs, n_gpus, expected):
    from divtune.experiments import partition_gpus

    with pytest.raises(ConfigError) as err:
        partition_gpus(jobs, [str(i) for i in range(n_gpus)])
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    from divtune.experiments import visible_gpus

    # No CUDA device: no GPUs, whatever the environment lists (a CPU CI machine with the variable set).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert visible_gpus() == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5,7")
    assert visible_gpus() == ["2", "5", "7"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,-1,6")
    assert visible_gpus() == ["4"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert visible_gpus() == ["0", "1"]


def test_each_parallel_worker_sees_only_its_slot_of_gpus(tmp_path, monkeypatch):
    """run_stages_parallel gives a stage started in slot k the k-th GPU slice (fake workers, no GPU)."""
    import subprocess
    import sys
    from pathlib import Path

    import divtune
    from divtune.experiments import schedule as experiment

    src = str(Path(divtune.__file__).parents[1])
    envs: dict[str, str] = {}
    real_popen = subprocess.Popen

    def fake_popen(command, stdout=None, stderr=None, env=None):
        name = command[-1]
        envs[name] = env["CUDA_VISIBLE_DEVICES"]
        stage = next(s for s in stages if s.name == name)
        # A worker that marks its stage done, as `divtune experiment --stage` does.
        script = (
            f"import sys; sys.path.insert(0, {src!r}); from divtune.io import mark_stage_done; "
            f"mark_stage_done({str(stage.directory)!r}, {{'fingerprint': {stage.fingerprint!r}}})"
        )
        return real_popen([sys.executable, "-c", script], stdout=stdout, stderr=stderr, env=env)

    monkeypatch.setattr(experiment.subprocess, "Popen", fake_popen)
    stages = [
        experiment.Stage(name, tmp_path / name, {"n": i}, lambda: None, after=after)
        for i, (name, after) in enumerate([("a", ()), ("b", ()), ("c", ("a", "b"))])
    ]
    config = tmp_path / "config.yaml"
    config.write_text("{}")
    experiment.run_stages_parallel(stages, config, jobs=2, gpus=[["0", "1"], ["2", "3"]])
    assert envs["a"] == "0,1" and envs["b"] == "2,3"
    assert envs["c"] in ("0,1", "2,3")  # a freed slot, never both


def test_experiment_jobs_that_do_not_fit_the_gpus_stop_before_the_folder_is_made(tmp_path, monkeypatch, capsys):
    from divtune.experiments import run as experiment

    monkeypatch.setattr(experiment, "visible_gpus", lambda: ["0", "1", "2", "3"])
    config = tmp_path / "exp.yaml"
    config.write_text(
        f"output: {tmp_path / 'out'}\nprepare: {{inputs: ['shipped:wp_scored']}}\nsystems: [{{name: dpo, method: dpo}}]\n"
    )
    code, out = run_cli(["experiment", config, "--jobs", "3"], monkeypatch, capsys)
    assert code == 2
    assert out.strip().splitlines()[-1] == (
        "error: --jobs 3 on 4 GPUs (0,1,2,3): each parallel stage needs GPUs of its own and 4 do not split "
        "into 3 equal parts; use --jobs 1, 2 or 4, or device=cpu"
    )
    assert not (tmp_path / "out").exists()


def test_runs_recorded_before_these_settings_are_still_recognised(tmp_path):
    """At their defaults the new settings stay out of a run's identity (finished runs and experiment
    stages are reused after the upgrade); any other value is part of it."""
    from divtune.train.run_output import claim_train_output

    data = write_pairs(tmp_path / "data", make_pairs(2))

    def recorded(*sets):
        cfg = TrainConfig.load(None, list(sets), data=str(data), output=str(tmp_path / "out"))
        return claim_train_output(cfg, overwrite=False)[0].settings

    default = recorded()
    assert not {"attn_implementation", "dtype", "quantization"} & set(default)
    assert recorded("dtype=bfloat16")["dtype"] == "bfloat16"
    assert recorded("attn_implementation=eager")["attn_implementation"] == "eager"
    assert recorded("dtype=auto") == default
