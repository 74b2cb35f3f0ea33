"""Real training runs on a tiny model: batch-split invariance (including two
processes under torchrun), every method learns, DDPO weights steer the margin,
and a SIGKILLed run resumed with --resume ends exactly where an uninterrupted
run does."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from _train_support import load_adapter_tensors, make_pairs, read_metrics, step_losses, tiny_overrides, write_pairs

warnings.filterwarnings("ignore", category=FutureWarning)
TESTS_DIR = Path(__file__).parent
WORKER = TESTS_DIR / "_mp_train_worker.py"


def run(tiny_lm_dir, data, output, method, **overrides):
    from divtune.train import TrainConfig, run_train

    cfg = TrainConfig.load(
        None, tiny_overrides(**overrides), method=method, data=str(data), model=str(tiny_lm_dir), output=str(output)
    )
    return run_train(cfg)


def assert_same_adapter(dir_a, dir_b, rtol=1e-5):
    a, b = load_adapter_tensors(dir_a), load_adapter_tensors(dir_b)
    assert a.keys() == b.keys() and a
    moved = False
    for name in a:
        # Tolerance relative to the tensor's scale: reference log-probs computed in batches of
        # another size differ in the last float32 bits, and that noise reaches entries near 0
        # (measured up to 5e-7 on weights of scale 0.08 on one CPU), while a wrong reference
        # or a skipped weight moves them by orders of magnitude more.
        scale = float(a[name].abs().max())
        torch.testing.assert_close(a[name], b[name], rtol=rtol, atol=max(1e-7, rtol * scale), msg=name)
        moved |= "lora_B" in name and bool(a[name].abs().max() > 0)
    assert moved  # the step really changed the adapter


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Batch-split invariance ----------------------------------------------------------
# One optimizer step of plain SGD over the same 8 pairs; no gradient clipping
# (clipping to a fixed norm would hide a wrongly scaled gradient).

SPLIT_STEP = dict(max_steps=1, optim="sgd", learning_rate=0.5, max_grad_norm=0.0, warmup_steps=0)
SPLITS = {
    "8x1": dict(per_device_train_batch_size=8, gradient_accumulation_steps=1),
    "2x4_accumulated": dict(per_device_train_batch_size=2, gradient_accumulation_steps=4),
    "3+3+2_accumulated": dict(per_device_train_batch_size=3, gradient_accumulation_steps=3),
}


@pytest.fixture(scope="module")
def split_data(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("split_data"), make_pairs(8, seed=11))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ddpo", "dorpo"])
def test_update_is_the_same_however_the_global_batch_is_split(tiny_lm_dir, split_data, tmp_path, method):
    outputs = {
        name: run(tiny_lm_dir, split_data, tmp_path / name, method, **SPLIT_STEP, **split)
        for name, split in SPLITS.items()
    }
    reference_loss = step_losses(outputs["8x1"])[1]
    for name, output in outputs.items():
        assert step_losses(output)[1] == pytest.approx(reference_loss, rel=1e-5), name
        assert_same_adapter(outputs["8x1"], output)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_under_torchrun_give_the_same_update(tiny_lm_dir, split_data, tmp_path):
    """2 processes x 4 pairs (gloo on CPU) vs one process x 8 pairs, for DDPO and DORPO in one launch."""
    methods = ("ddpo", "dorpo")
    spec_paths = []
    for method in methods:
        spec = {
            "overrides": tiny_overrides(**SPLIT_STEP, per_device_train_batch_size=4, gradient_accumulation_steps=1),
            "explicit": {
                "method": method, "data": str(split_data), "model": str(tiny_lm_dir),
                "output": str(tmp_path / f"two_procs_{method}"),
            },
        }
        spec_paths.append(tmp_path / f"spec_{method}.json")
        spec_paths[-1].write_text(json.dumps(spec))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
        str(WORKER), "run", *map(str, spec_paths),
    ]
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    for method in methods:
        output = tmp_path / f"two_procs_{method}"
        assert (output / "world_size.txt").read_text().split() == ["2", "2", "MULTI_CPU"]
        single = run(tiny_lm_dir, split_data, tmp_path / f"single_{method}", method, **SPLIT_STEP, **SPLITS["8x1"])
        assert step_losses(output)[1] == pytest.approx(step_losses(single)[1], rel=1e-5), method
        assert_same_adapter(single, output)


# Every method learns -----------------------------------------------------------


@pytest.fixture(scope="module")
def learn_data(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("learn_data"), make_pairs(8, seed=21))


@pytest.mark.parametrize("method", ["sft", "dpo", "ddpo", "orpo", "dorpo", "divpo"])
def test_each_method_trains_loss_falls_and_weights_move(tiny_lm_dir, learn_data, tmp_path, method):
    # The same full batch every step, so the loss curve is comparable step to step.
    output = run(
        tiny_lm_dir, learn_data, tmp_path / method, method,
        max_steps=6, learning_rate=2e-2, per_device_train_batch_size=8, gradient_accumulation_steps=1,
        report_to="[tensorboard]" if method == "ddpo" else "[]",
    )
    losses = step_losses(output)
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    assert losses[6] < losses[1] - 1e-3, losses
    adapter = load_adapter_tensors(output)
    assert max(t.abs().max().item() for n, t in adapter.items() if "lora_B" in n) > 0
    assert (output / "divtune_base.json").is_file() and (output / "config.yaml").is_file()
    if method == "ddpo":
        assert list((output / "runs").rglob("events.out.tfevents*"))  # TensorBoard logs
    if method in ("ddpo", "dorpo"):
        assert {"weight/mean", "weight/min", "weight/max", "rewards/margins", "rewards/accuracies"} <= set(
            read_metrics(output)[0]
        )


def sequence_logp(model, tokenizer, prompt: str, completion: str) -> float:
    user = [{"role": "user", "content": prompt}]
    prompt_ids = tokenizer(tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True),
                           add_special_tokens=False)["input_ids"]
    full = user + [{"role": "assistant", "content": completion}]
    ids = tokenizer(tokenizer.apply_chat_template(full, tokenize=False), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1]
    token_logps = logits.log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    return token_logps[len(prompt_ids) - 1 :].sum().item()


def margin_gains(adapter_dir, rows) -> list[float]:
    """Per pair: (log p(chosen) - log p(rejected)) under the trained policy minus under the reference."""
    from divtune.models import load_causal_lm, load_tokenizer

    model = load_causal_lm(adapter_dir, dtype=torch.float32, device="cpu")
    tokenizer = load_tokenizer(adapter_dir)
    model.eval()

    def margins():
        return [
            sequence_logp(model, tokenizer, r["prompt"], r["chosen"]) - sequence_logp(model, tokenizer, r["prompt"], r["rejected"])
            for r in rows
        ]

    trained = margins()
    with model.disable_adapter():
        reference = margins()
    return [t - r for t, r in zip(trained, reference)]


@pytest.mark.slow
def test_ddpo_margin_grows_more_for_high_weight_pairs(tiny_lm_dir, tmp_path):
    """The same pairs trained twice with high/low weights swapped: each pair gains more when weighted high."""
    high, low = 1.9, 0.1
    pattern = [high, low] * 4
    gains = {}
    for name, weights in (("a", pattern), ("b", [high + low - w for w in pattern])):
        rows = make_pairs(8, seed=31, weights=weights)
        data = write_pairs(tmp_path / f"data_{name}", rows)
        output = run(
            tiny_lm_dir, data, tmp_path / name, "ddpo",
            max_steps=8, learning_rate=1e-2, per_device_train_batch_size=8, gradient_accumulation_steps=1, beta=0.5,
        )
        gains[name] = margin_gains(output, rows)
    when_high = [gains["a"][i] if pattern[i] == high else gains["b"][i] for i in range(8)]
    when_low = [gains["b"][i] if pattern[i] == high else gains["a"][i] for i in range(8)]
    assert sum(when_high) / 8 > sum(when_low) / 8 + 1e-3
    assert sum(h > l for h, l in zip(when_high, when_low)) >= 7, (when_high, when_low)


# Resume after SIGKILL ------------------------------------------------------------


@pytest.mark.slow
def test_sigkilled_run_resumed_matches_uninterrupted_run(tiny_lm_dir, tmp_path):
    data = write_pairs(tmp_path / "data", make_pairs(8, seed=41))
    # 4 steps per epoch, 6 steps: the kill at step 5 is mid-way through epoch 2,
    # after checkpoint-4. LoRA dropout is on, so the RNG state must be restored too.
    settings = dict(
        max_steps=6, learning_rate=1e-2, per_device_train_batch_size=2, gradient_accumulation_steps=1,
        save_strategy="steps", save_steps=2, **{"lora.dropout": 0.1},
    )
    uninterrupted = run(tiny_lm_dir, data, tmp_path / "uninterrupted", "dorpo", **settings)

    output = tmp_path / "killed"
    explicit = {"method": "dorpo", "data": str(data), "model": str(tiny_lm_dir), "output": str(output)}
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"overrides": tiny_overrides(**settings), "explicit": explicit}))
    killed = subprocess.run(
        [sys.executable, str(WORKER), "kill", str(spec), "5"], env=subprocess_env(), capture_output=True, text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (output / "checkpoint-4" / "trainer_state.json").is_file()
    assert not (output / "adapter_model.safetensors").exists()

    sets = [arg for item in tiny_overrides(**settings) for arg in ("--set", item)]
    resumed = subprocess.run(
        [sys.executable, "-m", "divtune", "train", "--method", "dorpo", "--data", str(data), "--model",
         str(tiny_lm_dir), "--output", str(output), "--resume", *sets],
        env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_adapter(uninterrupted, output)
    steps = [m["step"] for m in read_metrics(output) if "loss" in m]
    assert steps == [1, 2, 3, 4, 5, 6]  # no step repeated or lost
    expected = step_losses(uninterrupted)
    for step, loss in step_losses(output).items():
        assert loss == pytest.approx(expected[step], rel=1e-5), step  # same batches in the same order


# --init and --precompute-ref -------------------------------------------------------


@pytest.mark.slow
def test_ddpo_from_sft_adapter_with_and_without_precomputed_reference(tiny_lm_dir, learn_data, tmp_path):
    sft = run(tiny_lm_dir, learn_data, tmp_path / "sft", "sft", max_steps=3, learning_rate=2e-2,
              per_device_train_batch_size=8, gradient_accumulation_steps=1)
    outputs = {}
    for precompute in (False, True):
        from divtune.train import TrainConfig, run_train

        cfg = TrainConfig.load(
            None,
            tiny_overrides(max_steps=3, learning_rate=2e-2, per_device_train_batch_size=4, gradient_accumulation_steps=1),
            method="ddpo", data=str(learn_data), model=str(tiny_lm_dir), init=str(sft),
            output=str(tmp_path / f"ddpo_{precompute}"), precompute_ref=precompute,
        )
        outputs[precompute] = run_train(cfg)
    for output in outputs.values():
        first = read_metrics(output)[0]
        # The reference is the SFT model: at the first step policy == reference.
        assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
        assert json.loads((output / "divtune_base.json").read_text())["base_model"] == str(tiny_lm_dir)
        assert not (output / "ref").exists()  # TRL's frozen reference copy is not saved
        # The SFT adapter was trained further, not replaced by a fresh one.
        sft_b = {k: v for k, v in load_adapter_tensors(sft).items() if "lora_B" in k}
        assert any(not torch.equal(sft_b[k], load_adapter_tensors(output)[k]) for k in sft_b)
    assert_same_adapter(outputs[False], outputs[True])
    assert step_losses(outputs[True]) == pytest.approx(step_losses(outputs[False]), rel=1e-5)
