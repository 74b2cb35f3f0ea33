"""Online diversity training (GRPO / DQO / DARLING) on TRL's GRPOTrainer: data loading,
group integrity across 2 processes, and a CPU training smoke test on a tiny local model."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import write_jsonl

from divtune.io import InputError, is_stage_done
from divtune.reward.online import group_rewards
from divtune.train import TrainConfig, run_train
from divtune.train.online import run_online_train
from divtune.train.online_args import build_grpo_config
from divtune.train.online_data import load_online_prompts
from divtune.train.online_trainer import DIVERSITY_KEY, QUALITY_KEY, REWARD_KEY
from divtune.train.online_config import OnlineConfig

TESTS = Path(__file__).resolve().parent
PY = Path(sys.executable)


def pair_row(pool_id: str, prompt: str) -> dict:
    return {
        "pool_id": pool_id, "prompt": prompt, "chosen": "c", "rejected": "r", "score_chosen": 2,
        "score_rejected": 1, "quality_chosen": 0.5, "quality_rejected": -0.5, "weight": 1.0,
    }


# ---------------------------------------------------------------- prompts


def test_prompts_are_unique_by_pool_and_counted(tmp_path):
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [pair_row("a", "Write about rain."), pair_row("b", "Write about fire."), pair_row("a", "Write about rain.")],
    )
    rows, counts = load_online_prompts(path)
    assert [r["pool_id"] for r in rows] == ["a", "b"]
    assert counts == {"rows_read": 3, "prompts": 2, "rows_repeating_a_pool": 1}


def test_missing_prompt_field_names_file_line_and_field(tmp_path):
    bad = pair_row("b", "x")
    del bad["prompt"]
    path = write_jsonl(tmp_path / "train.jsonl", [pair_row("a", "ok"), bad])
    with pytest.raises(InputError) as err:
        load_online_prompts(path)
    assert (err.value.line, err.value.field) == (2, "prompt")
    assert "train.jsonl, line 2, field 'prompt'" in str(err.value)


def test_a_pool_with_two_different_prompts_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [pair_row("a", "One."), pair_row("a", "Two.")])
    with pytest.raises(InputError, match="line 2.*two different prompts"):
        load_online_prompts(path)


def test_settings_owned_by_online_config_cannot_be_set_twice(tmp_path):
    cfg = SimpleNamespace(output=str(tmp_path), online=OnlineConfig(), training={"max_completion_length": 9}, seed=0)
    with pytest.raises(ValueError, match="online"):
        build_grpo_config(cfg, "cpu")


def test_grpo_config_is_cpu_sane_and_takes_online_settings(tmp_path):
    online = OnlineConfig(num_generations=3, kl_beta=0.2, max_completion_length=12, use_vllm=True)
    cfg = TrainConfig(method="dqo", output=str(tmp_path), online=online, training={"learning_rate": 0.01}, seed=3)
    with pytest.warns(UserWarning, match="vLLM"):
        args = build_grpo_config(cfg, "cpu")
    assert (args.num_generations, args.beta, args.max_completion_length) == (3, 0.2, 12)
    assert not args.bf16 and not args.activation_checkpointing and not args.use_vllm
    assert args.learning_rate == 0.01 and args.seed == 3
    # Whole groups per device micro-batch by default.
    assert args.per_device_train_batch_size % 3 == 0


# ---------------------------------------------------------------- group integrity


def free_port() -> int:
    """A port nobody listens on now (other test runs may share this machine)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_worker(launcher: list[str], model_dir: Path, out: Path, world: int) -> dict:
    # This checkout's divtune, not an installed one.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent / "src")])}
    cmd = [*launcher, str(TESTS / "_mp_online_rewards.py"), str(model_dir), str(out), str(world)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.multiprocess
@pytest.mark.slow
def test_group_rewards_identical_with_one_and_two_processes(tiny_lm_dir, tmp_path):
    sys.path.insert(0, str(TESTS))
    import _mp_online_rewards as worker

    one = run_worker([str(PY)], tiny_lm_dir, tmp_path / "one.json", 1)
    two = run_worker(
        [str(PY), "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())],
        tiny_lm_dir, tmp_path / "two.json", 2,
    )
    assert one["world_size"] == 1 and two["world_size"] == 2
    # The middle group straddles the two processes (6 samples each, G=4).
    assert len(worker.COMPLETIONS) // 2 % worker.G != 0

    from divtune.embedders import load_embedder

    emb = load_embedder("stylometric").embed(worker.COMPLETIONS, show_progress=False)
    quality = np.array(worker.quality(worker.PROMPTS, worker.COMPLETIONS))
    for method in ("grpo", "dqo", "darling"):
        np.testing.assert_allclose(two["rewards"][method], one["rewards"][method], rtol=0, atol=1e-6)
        # ...and both equal the pure per-group computation over the whole batch.
        expected, _ = group_rewards(method, quality, emb, worker.G, alpha=1.5, threshold=0.95, floor=0.1)
        np.testing.assert_allclose(two["rewards"][method], expected, rtol=1e-5, atol=1e-6)
    # Duplicates inside a group are penalised by both terms, so the check above is not vacuous.
    assert two["rewards"]["dqo"][0] < two["rewards"]["dqo"][2]
    assert two["rewards"]["darling"][8] != pytest.approx(quality[8])


# ---------------------------------------------------------------- training smoke test


def vowel_share(prompts: list[str], completions: list[str]) -> list[float]:
    """A per-sample quality in [0, 1] that varies between random samples (a stand-in reward model)."""
    return [sum(ch in "aeiou" for ch in c) / max(1, len(c)) for c in completions]


def state_of(path: Path) -> dict:
    from safetensors.numpy import load_file

    files = sorted(path.glob("*.safetensors"))
    assert files, f"no safetensors in {path}"
    state: dict = {}
    for file in files:
        state.update(load_file(file))
    return state


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    prompts = ["Write a story about a dragon.", "Describe the sea at night.", "A robot learns to paint.", "The lost city."]
    write_jsonl(root / "train.jsonl", [pair_row(f"p{i}", p) for i, p in enumerate(prompts)] + [pair_row("p0", prompts[0])])
    return root


def smoke_cfg(method: str, model: Path, data: Path, out: Path, lora=None, reward=None, steps=3) -> TrainConfig:
    return TrainConfig(
        method=method, data=str(data), model=str(model), output=str(out), seed=0, device="cpu", reward=reward,
        lora=lora or {"enabled": False}, max_length=96,
        online=OnlineConfig(num_generations=4, max_completion_length=8, embedder="stylometric", alpha=1.0,
                            darling_threshold=0.9, darling_floor=0.1),
        training={"max_steps": steps, "learning_rate": 1e-3, "gradient_accumulation_steps": 1, "report_to": "none"},
    )


def logged_rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if REWARD_KEY in r]


@pytest.mark.parametrize("method", ["grpo", "dqo", "darling"])
def test_smoke_training_logs_diversity_weighted_reward_and_changes_parameters(
    method, tiny_lm_dir, prepared_dir, tmp_path, capsys
):
    out = tmp_path / method
    # DQO runs without a reward model (constant quality 1, warning); the others with a varying quality.
    if method == "dqo":
        run_train(smoke_cfg(method, tiny_lm_dir, prepared_dir, out))  # the `divtune train` path
    else:
        run_online_train(smoke_cfg(method, tiny_lm_dir, prepared_dir, out), quality_fn=vowel_share)
    assert is_stage_done(out)
    saved = TrainConfig.load(out / "config.yaml")
    assert saved.method == method and saved.online.num_generations == 4

    rows = logged_rows(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert all(math.isfinite(row[k]) for k in (REWARD_KEY, QUALITY_KEY))
        if method == "grpo":
            assert DIVERSITY_KEY not in row and row[REWARD_KEY] == pytest.approx(row[QUALITY_KEY])
        elif method == "dqo":
            assert row[QUALITY_KEY] == 1.0
            assert 0.0 <= row[DIVERSITY_KEY] <= math.log(2)
            assert row[REWARD_KEY] == pytest.approx(row[QUALITY_KEY] + 1.0 * row[DIVERSITY_KEY])
        else:
            assert 0.1 <= row[DIVERSITY_KEY] <= 1.0
            assert row[REWARD_KEY] <= row[QUALITY_KEY] + 1e-9  # quality >= 0 times novelty <= 1
    if method == "dqo":
        assert "no reward model" in capsys.readouterr().out

    before, after = state_of(tiny_lm_dir), state_of(out)
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert changed, "no parameter changed during training"
    from divtune.models import read_base_spec

    assert read_base_spec(out) == str(tiny_lm_dir)


def test_smoke_training_with_lora_trains_the_adapter(tiny_lm_dir, prepared_dir, tmp_path):
    out = tmp_path / "darling_lora"
    lora = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    run_online_train(smoke_cfg("darling", tiny_lm_dir, prepared_dir, out, lora=lora), quality_fn=vowel_share)
    adapter = state_of(out)
    lora_b = {k: v for k, v in adapter.items() if "lora_B" in k}
    # PEFT initialises lora_B to zero, so any non-zero entry was learned.
    assert lora_b and any(np.abs(v).max() > 0 for v in lora_b.values())
    assert (out / "adapter_config.json").is_file()
    from divtune.models import read_base_spec

    assert read_base_spec(out) == str(tiny_lm_dir)


def test_quality_comes_from_the_reward_model_folder(tiny_lm_dir, prepared_dir, minilm_path, tmp_path):
    from divtune.reward.config import RewardTrainConfig
    from divtune.reward.model import RewardModel

    reward_dir = tmp_path / "reward"
    rcfg = RewardTrainConfig(data=str(prepared_dir), output=str(reward_dir), backbone=str(minilm_path), device="cpu")
    reward_model = RewardModel.create(rcfg)
    reward_model.save(reward_dir)
    run_online_train(smoke_cfg("grpo", tiny_lm_dir, prepared_dir, tmp_path / "grpo_rm", reward=str(reward_dir), steps=1))
    [row] = logged_rows(tmp_path / "grpo_rm")
    # An untrained head scores real numbers that are not the constant-1 fallback.
    assert math.isfinite(row[QUALITY_KEY]) and row[QUALITY_KEY] != 1.0
    assert row["reward_std"] > 0


def test_missing_reward_folder_is_a_clear_error(tiny_lm_dir, prepared_dir, tmp_path):
    cfg = smoke_cfg("dqo", tiny_lm_dir, prepared_dir, tmp_path / "out", reward=str(tmp_path / "nope"))
    with pytest.raises(InputError, match="reward model folder not found"):
        run_online_train(cfg)


def test_cli_runs_darling_with_online_settings_from_set(tiny_lm_dir, prepared_dir, tmp_path):
    from typer.testing import CliRunner

    from divtune.cli import app

    out = tmp_path / "cli_darling"
    sets = [
        "online.num_generations=2", "online.max_completion_length=6", "online.embedder=stylometric",
        "online.darling_threshold=0.5", "online.darling_floor=0.25", "max_steps=2", "report_to=none",
        "lora.enabled=false", "max_length=64",
    ]
    args = ["train", "--method", "darling", "--data", str(prepared_dir), "--model", str(tiny_lm_dir),
            "--output", str(out), "--device", "cpu"]
    result = CliRunner().invoke(app, args + [x for s in sets for x in ("--set", s)])
    assert result.exit_code == 0, result.output
    saved = TrainConfig.load(out / "config.yaml")
    assert (saved.online.num_generations, saved.online.darling_floor) == (2, 0.25)
    rows = logged_rows(out)
    assert len(rows) == 2
    # With G=2 the novelty is 1 (two classes) or the floor 0.25 (one class); the mean lies in between.
    assert all(0.25 <= r[DIVERSITY_KEY] <= 1.0 for r in rows)


def test_resume_continues_from_the_last_checkpoint(tiny_lm_dir, prepared_dir, tmp_path):
    import shutil

    from divtune.io import clear_stage_done

    out = tmp_path / "resume"
    cfg = smoke_cfg("dqo", tiny_lm_dir, prepared_dir, out, steps=2)
    cfg = cfg.model_copy(update={"training": {**cfg.training, "save_strategy": "steps", "save_steps": 1}})
    run_online_train(cfg)
    assert (out / "checkpoint-1" / "trainer_state.json").is_file()
    # As if the run had been killed right after its first checkpoint: no checkpoint-2, no done marker.
    shutil.rmtree(out / "checkpoint-2")
    clear_stage_done(out)
    # Tag the logged steps: a fresh start would rewrite metrics.jsonl and lose the tag of step 1.
    lines = (out / "metrics.jsonl").read_text().splitlines()
    tagged = [json.dumps({**json.loads(line), "first_run": True}) for line in lines]
    (out / "metrics.jsonl").write_text("\n".join(tagged) + "\n")
    run_online_train(cfg.model_copy(update={"resume": True}))
    assert is_stage_done(out)
    rows = logged_rows(out)
    assert [r["step"] for r in rows] == [1, 2]  # step 1 kept once, step 2 logged again
    assert rows[0].get("first_run") and not rows[1].get("first_run")


def test_cli_reward_option_reaches_the_online_trainer(tiny_lm_dir, prepared_dir, tmp_path):
    from typer.testing import CliRunner

    from divtune.cli import app

    args = ["train", "--method", "dqo", "--data", str(prepared_dir), "--model", str(tiny_lm_dir),
            "--output", str(tmp_path / "o"), "--reward", str(tmp_path / "no-such-reward"), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "reward model folder not found" in str(result.exception) + result.output


def test_grpo_only_training_fields_are_accepted_for_online_methods():
    cfg = TrainConfig.load(overrides=["temperature=0.7", "num_iterations=2"], method="darling")
    assert cfg.training["temperature"] == 0.7 and cfg.training["num_iterations"] == 2
