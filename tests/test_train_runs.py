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
    import divtune

    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    # The divtune these tests imported (this checkout's src/), not whichever one the venv has installed.
    source = str(Path(divtune.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([source, str(TESTS_DIR), env.get("PYTHONPATH", "")])
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


# Several processes (gloo on CPU) --------------------------------------------------
# Each run under torchrun is compared with a one-process run of the same global batch,
# adapters to assert_same_adapter's tolerance (1e-5 of each tensor's scale) and step losses to
# rel 1e-5. One process x 4 accumulation steps is "2x4_accumulated" above. All multi-process
# cases share three launches: the CLI command with precompute_ref (cache miss), then one
# worker launch of 2 processes and one of 4, each running several SPEC.json files in turn.


def torchrun(nproc: int, args: list[str], timeout: int = 400) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
        "--master_port", str(free_port()), *args,
    ]
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]


def launch_worker(nproc: int, folder: Path, model: Path, specs: dict[str, tuple[str, Path, dict]]) -> dict[str, Path]:
    """Run every spec (name: (method, data, settings)) in one torchrun launch; their output folders."""
    spec_paths, outputs = [], {}
    for name, (method, data, settings) in specs.items():
        outputs[name] = folder / name
        spec = {
            "overrides": tiny_overrides(**settings),
            "explicit": {"method": method, "data": str(data), "model": str(model), "output": str(outputs[name])},
        }
        spec_paths.append(folder / f"{name}.json")
        spec_paths[-1].write_text(json.dumps(spec))
    torchrun(nproc, [str(WORKER), "run", *map(str, spec_paths)])
    for output in outputs.values():
        assert (output / "world_size.txt").read_text().split() == [str(nproc), str(nproc), "MULTI_CPU"]
    return outputs


PROCS_2x2 = dict(SPLIT_STEP, per_device_train_batch_size=2, gradient_accumulation_steps=2)
PROCS_4x1 = dict(SPLIT_STEP, per_device_train_batch_size=2, gradient_accumulation_steps=1)
ONE_8x1 = dict(SPLIT_STEP, **SPLITS["8x1"])
# Uneven: 7 pairs, global batch 8 (2 processes x 2 x 2 accumulation): the last micro-batch holds 3 pairs,
# so accelerate repeats a pair on rank 1. Released-mode DORPO, 2 x 2 x 1, 2 steps: step 2 holds 3 pairs.
# 5 pairs on 4 processes x 2: ranks hold 2, 2, 1 and 0 real pairs.
UNEVEN_DORPO = dict(SPLIT_STEP, max_steps=2, dorpo_mode="released", per_device_train_batch_size=2,
                    gradient_accumulation_steps=1)
PRECOMPUTE = dict(SPLIT_STEP, max_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=1,
                  precompute_ref="true")


@pytest.fixture(scope="module")
def mp_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp_data")
    data = {n: write_pairs(root / f"pairs{n}", make_pairs(n, seed=11)) for n in (5, 7, 8)}
    write_pairs(root / "held", make_pairs(3, seed=9))
    (root / "held" / "train.jsonl").rename(data[8] / "test.jsonl")
    return data


@pytest.fixture(scope="module")
def mp_runs(tiny_lm_dir, mp_data, tmp_path_factory):
    """Every multi-process run: {name: output folder}, plus the reference cache folder under "cache"."""
    root = tmp_path_factory.mktemp("mp_runs")
    cache = root / "ref_cache"
    runs = {"cache": cache, "precompute_miss": root / "precompute_miss"}
    # The command of docs/train.md, with precompute_ref and a cold reference cache.
    sets = [arg for item in tiny_overrides(**PRECOMPUTE, ref_cache_dir=cache) for arg in ("--set", item)]
    torchrun(2, ["-m", "divtune", "train", "--method", "ddpo", "--model", str(tiny_lm_dir), "--data",
                 str(mp_data[8]), "--output", str(runs["precompute_miss"]), *sets])
    runs.update(launch_worker(2, root, tiny_lm_dir, {
        "precompute_hit": ("ddpo", mp_data[8], dict(PRECOMPUTE, ref_cache_dir=cache)),
        "ddpo_2x2": ("ddpo", mp_data[8], PROCS_2x2),
        "dorpo_2x2": ("dorpo", mp_data[8], PROCS_2x2),
        "dpo_2x2": ("dpo", mp_data[8], PROCS_2x2),
        "divpo_2x2_probes": ("divpo", mp_data[8], dict(PROCS_2x2, probe_pairs=4, probe_heldout_pairs=3)),
        "ddpo_uneven_2x2": ("ddpo", mp_data[7], PROCS_2x2),
        "dorpo_uneven_2x1": ("dorpo", mp_data[7], UNEVEN_DORPO),
    }))
    runs.update(launch_worker(4, root, tiny_lm_dir, {
        "ddpo_4x1": ("ddpo", mp_data[8], PROCS_4x1),
        "dorpo_4x1": ("dorpo", mp_data[8], PROCS_4x1),
        "ddpo_uneven_4x1": ("ddpo", mp_data[5], PROCS_4x1),
    }))
    return runs


@pytest.fixture(scope="module")
def single_run(tiny_lm_dir, mp_data, tmp_path_factory):
    """One-process runs for the comparisons, each trained once per module: single_run(method, n_pairs, **settings)."""
    root, done = tmp_path_factory.mktemp("single_runs"), {}

    def get(method: str, n_pairs: int, **settings) -> Path:
        key = json.dumps([method, n_pairs, settings], sort_keys=True, default=str)
        if key not in done:
            done[key] = run(tiny_lm_dir, mp_data[n_pairs], root / f"run{len(done)}", method, **settings)
        return done[key]

    return get


def assert_same_run(single: Path, several: Path) -> None:
    expected = step_losses(single)
    assert sorted(step_losses(several)) == sorted(expected)
    for step, loss in step_losses(several).items():
        assert loss == pytest.approx(expected[step], rel=1e-5), step
    assert_same_adapter(single, several)


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("name", ["ddpo_2x2", "dorpo_2x2", "dpo_2x2", "ddpo_4x1", "dorpo_4x1"])
def test_several_processes_give_the_update_of_one_process(mp_runs, single_run, name):
    """2 processes x 2 accumulation and 4 processes x 1 (2 pairs each) vs one process x 8 pairs."""
    assert_same_run(single_run(name.split("_")[0], 8, **ONE_8x1), mp_runs[name])


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("name, n_pairs, settings", [
    ("ddpo_uneven_2x2", 7, ONE_8x1),
    ("dorpo_uneven_2x1", 7, dict(UNEVEN_DORPO, per_device_train_batch_size=4)),
    ("ddpo_uneven_4x1", 5, ONE_8x1),
])
def test_pairs_repeated_to_fill_the_last_batch_do_not_count(mp_runs, single_run, name, n_pairs, settings):
    """accelerate fills the last batch of every rank with pairs from the epoch's start (even_batches); the
    trainers leave those out, so the step is the one-process step over the pairs really left."""
    assert_same_run(single_run(name.split("_")[0], n_pairs, **settings), mp_runs[name])


@pytest.mark.slow
@pytest.mark.multiprocess
def test_precompute_ref_under_torchrun_misses_then_hits_the_cache(tiny_lm_dir, mp_data, mp_runs, tmp_path):
    from safetensors.torch import load_file

    miss, hit = mp_runs["precompute_miss"], mp_runs["precompute_hit"]
    records = [json.loads((output / "ref_logps.json").read_text())["train"] for output in (miss, hit)]
    assert [r["hit"] for r in records] == [False, True] and records[0]["key"] == records[1]["key"]
    assert [p.name for p in mp_runs["cache"].iterdir()] == [f"{records[0]['key']}.safetensors"]
    assert step_losses(hit) == step_losses(miss)  # the numbers the miss computed, bit for bit
    assert load_adapter_tensors(hit).keys() == load_adapter_tensors(miss).keys()
    for name, tensor in load_adapter_tensors(hit).items():
        assert torch.equal(tensor, load_adapter_tensors(miss)[name]), name

    # One process, same global batch (4) and reference batch size (2), its own cache: the same key
    # (the key names the model's files, not the process count) and the same log-probs.
    cache = tmp_path / "cache"
    single = run(tiny_lm_dir, mp_data[8], tmp_path / "single", "ddpo", ref_cache_dir=cache, precompute_ref_batch_size=2,
                 **dict(PRECOMPUTE, per_device_train_batch_size=4))
    record = json.loads((single / "ref_logps.json").read_text())["train"]
    assert record["hit"] is False and record["key"] == records[0]["key"]
    several_logps = load_file(str(mp_runs["cache"] / f"{record['key']}.safetensors"))
    for column, values in load_file(record["path"]).items():
        torch.testing.assert_close(several_logps[column], values, rtol=1e-6, atol=1e-5)
    assert_same_run(single, miss)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_probes_under_several_processes(tiny_lm_dir, mp_data, mp_runs, tmp_path):
    """DivPO with probes (4 train pairs, 3 held-out), 2 x 2 vs one process x 8."""
    several = mp_runs["divpo_2x2_probes"]
    single = run(tiny_lm_dir, mp_data[8], tmp_path / "single", "divpo", probe_pairs=4, probe_heldout_pairs=3,
                 **ONE_8x1)
    assert_same_run(single, several)
    logged = []
    for output in (single, several):
        evals: dict[int, dict] = {}
        for line in read_metrics(output):
            evals.setdefault(line["step"], {}).update({k: v for k, v in line.items() if k.startswith("eval_")})
        logged.append({step: values for step, values in evals.items() if values})
    assert sorted(logged[0]) == sorted(logged[1]) == [0, 1]
    for step in (0, 1):
        for probe in ("train_probe", "heldout"):
            # The 3 held-out pairs leave rank 1 one real pair and one repeat: the loss leaves it out too.
            for metric in ("loss", "rewards/margins", "rewards/accuracies", "logps/change", "logps/chosen"):
                key = f"eval_{probe}_{metric}"
                assert logged[1][step][key] == pytest.approx(logged[0][step][key], rel=1e-5, abs=1e-6), (step, key)


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
