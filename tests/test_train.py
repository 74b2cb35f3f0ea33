"""divtune's trainers against TRL's own (same tiny model, same batch), weights
through the real forward/backward, the config rules and bad input.

TRL version pinned by these tests: 1.16 (``DPOTrainer``, ``trl.experimental.orpo.ORPOTrainer``).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from _train_support import make_pairs, tiny_overrides, write_pairs
from conftest import build_tiny_llama, build_tiny_tokenizer
from divtune.config import ConfigError
from divtune.io import InputError

warnings.filterwarnings("ignore", category=FutureWarning)
BATCH = 4


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def conversational(rows, with_weight: bool, weight_value: float | None = None):
    out = []
    for row in rows:
        item = {
            "prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}],
        }
        if with_weight:
            item["weight"] = row["weight"] if weight_value is None else weight_value
        out.append(item)
    return out


def trainer_args(config_class, tmp_path, **extra):
    return config_class(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to=[],
        max_length=128,
        per_device_train_batch_size=BATCH,
        disable_tqdm=True,
        **extra,
    )


def loss_and_grads(trainer, batch):
    model = trainer.model
    model.train()
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def assert_same_grads(grads_a, grads_b, rtol=1e-5):
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=rtol, atol=1e-8, msg=name)


# DPO ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dpo_pair(tokenizer, tmp_path_factory):
    """TRL's DPOTrainer and divtune's, on copies of one policy and one (different) reference."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from divtune import DeviationDPOConfig, DeviationDPOTrainer

    rows = make_pairs(BATCH, seed=3)
    policy, reference = build_tiny_llama(tokenizer, seed=1), build_tiny_llama(tokenizer, seed=2)
    trl_trainer = DPOTrainer(
        model=copy.deepcopy(policy),
        ref_model=copy.deepcopy(reference),
        args=trainer_args(DPOConfig, tmp_path_factory.mktemp("trl_dpo"), beta=0.1),
        train_dataset=Dataset.from_list(conversational(rows, with_weight=False)),
        processing_class=tokenizer,
    )
    ours = DeviationDPOTrainer(
        model=copy.deepcopy(policy),
        ref_model=copy.deepcopy(reference),
        args=trainer_args(DeviationDPOConfig, tmp_path_factory.mktemp("our_dpo"), beta=0.1),
        train_dataset=Dataset.from_list(conversational(rows, with_weight=True, weight_value=1.0)),
        processing_class=tokenizer,
    )
    return trl_trainer, ours


def our_dpo_batch(trainer, weights):
    examples = [dict(trainer.train_dataset[i], weight=w) for i, w in enumerate(weights)]
    return trainer.data_collator(examples)


def test_ddpo_with_unit_weights_equals_trl_dpo_loss_and_gradients(dpo_pair):
    trl_trainer, ours = dpo_pair
    trl_batch = trl_trainer.data_collator([trl_trainer.train_dataset[i] for i in range(BATCH)])
    trl_loss, trl_grads = loss_and_grads(trl_trainer, trl_batch)
    our_loss, our_grads = loss_and_grads(ours, our_dpo_batch(ours, [1.0] * BATCH))
    assert abs(trl_loss.item() - 0.6931) > 1e-3  # policy != reference: a real DPO loss, not log 2
    torch.testing.assert_close(our_loss, trl_loss, rtol=1e-5, atol=0)
    assert_same_grads(trl_grads, our_grads)


def test_ddpo_doubled_weights_double_the_loss(dpo_pair):
    _, ours = dpo_pair
    weights = [0.3, 1.2, 0.7, 2.0]
    once, grads_once = loss_and_grads(ours, our_dpo_batch(ours, weights))
    twice, grads_twice = loss_and_grads(ours, our_dpo_batch(ours, [2 * w for w in weights]))
    torch.testing.assert_close(twice, 2 * once, rtol=1e-6, atol=0)
    assert_same_grads({k: 2 * v for k, v in grads_once.items()}, grads_twice)


def test_ddpo_weight_zero_pair_contributes_no_gradient(dpo_pair, tokenizer):
    _, ours = dpo_pair
    examples = [dict(ours.train_dataset[i]) for i in range(BATCH)]
    weights = [1.0, 0.5, 0.0, 2.0]
    batch = ours.data_collator([dict(e, weight=w) for e, w in zip(examples, weights)])
    # Replace the weight-0 pair by a different pair: nothing may change.
    swapped = list(examples)
    swapped[2] = dict(examples[2], chosen_ids=examples[0]["rejected_ids"], rejected_ids=examples[1]["chosen_ids"])
    other = ours.data_collator([dict(e, weight=w) for e, w in zip(swapped, weights)])
    loss_a, grads_a = loss_and_grads(ours, batch)
    loss_b, grads_b = loss_and_grads(ours, other)
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=0)
    assert_same_grads(grads_a, grads_b)
    # ...while a non-zero weight on that slot does change the gradient.
    batch_c = ours.data_collator([dict(e, weight=1.0) for e in swapped])
    _, grads_c = loss_and_grads(ours, batch_c)
    assert any(not torch.allclose(grads_a[k], grads_c[k], rtol=1e-3) for k in grads_a)


# ORPO --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def orpo_pair(tokenizer, tmp_path_factory):
    from datasets import Dataset
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    from divtune import DeviationORPOConfig, DeviationORPOTrainer

    rows = make_pairs(BATCH, seed=5)
    policy = build_tiny_llama(tokenizer, seed=4)
    trl_trainer = ORPOTrainer(
        model=copy.deepcopy(policy),
        args=trainer_args(ORPOConfig, tmp_path_factory.mktemp("trl_orpo"), beta=0.25),
        train_dataset=Dataset.from_list(conversational(rows, with_weight=False)),
        processing_class=tokenizer,
    )
    ours = DeviationORPOTrainer(
        model=copy.deepcopy(policy),
        args=trainer_args(DeviationORPOConfig, tmp_path_factory.mktemp("our_orpo"), beta=0.25, dorpo_mode="outside"),
        train_dataset=Dataset.from_list(conversational(rows, with_weight=True, weight_value=1.0)),
        processing_class=tokenizer,
    )
    return trl_trainer, ours


def our_orpo_batch(trainer, weights, mode=None):
    if mode:
        trainer.args.dorpo_mode = mode
    return trainer.data_collator([dict(trainer.train_dataset[i], weight=w) for i, w in enumerate(weights)])


@pytest.mark.parametrize("mode", ["outside", "released"])
def test_dorpo_with_unit_weights_equals_trl_orpo_loss_and_gradients(orpo_pair, mode):
    trl_trainer, ours = orpo_pair
    trl_batch = trl_trainer.data_collator([trl_trainer.train_dataset[i] for i in range(BATCH)])
    lengths = trl_batch["chosen_attention_mask"].sum(1)
    assert len(set(lengths.tolist())) > 1  # uneven lengths: token-mean vs pair-mean would differ
    trl_loss, trl_grads = loss_and_grads(trl_trainer, trl_batch)
    our_loss, our_grads = loss_and_grads(ours, our_orpo_batch(ours, [1.0] * BATCH, mode))
    torch.testing.assert_close(our_loss, trl_loss, rtol=1e-5, atol=0)
    assert_same_grads(trl_grads, our_grads)


def test_dorpo_outside_doubled_weights_double_the_loss_and_zero_weight_is_inert(orpo_pair):
    _, ours = orpo_pair
    weights = [0.3, 1.2, 0.0, 2.0]
    once, grads_once = loss_and_grads(ours, our_orpo_batch(ours, weights, "outside"))
    twice, _ = loss_and_grads(ours, our_orpo_batch(ours, [2 * w for w in weights]))
    torch.testing.assert_close(twice, 2 * once, rtol=1e-6, atol=0)
    # Same batch without pair 2 at all, normalised to the same pair/token counts: same gradient.
    examples = [dict(ours.train_dataset[i], weight=w) for i, w in enumerate(weights)]
    batch = ours.data_collator(examples)
    pairs, tokens, weight_sum = ours._local_counts(batch)
    counts = torch.tensor([pairs, tokens, weight_sum], dtype=torch.float32)
    ours.model.zero_grad()
    ours.compute_loss(ours.model, ours.data_collator([e for i, e in enumerate(examples) if i != 2]), num_items_in_batch=counts).backward()
    without = {n: p.grad.clone() for n, p in ours.model.named_parameters() if p.grad is not None}
    assert_same_grads(grads_once, without)


# Config rules ------------------------------------------------------------------


def test_training_argument_names_route_into_training():
    from divtune.train import TrainConfig

    cfg = TrainConfig.load(None, ["max_steps=5", "learning_rate=1e-4", "training.warmup_steps=2", "beta=0.2"])
    assert cfg.training == {"max_steps": 5, "learning_rate": 1e-4, "warmup_steps": 2}
    assert cfg.beta == 0.2  # a TrainConfig field stays top-level
    with pytest.raises(ConfigError, match="not_a_setting"):
        TrainConfig.load(None, ["not_a_setting=1"])
    with pytest.raises(ConfigError, match="output_dir"):
        TrainConfig.load(None, ["output_dir=/tmp/x"])


def test_yaml_config_with_training_argument_names(tmp_path):
    from divtune.train import TrainConfig

    path = tmp_path / "run.yaml"
    path.write_text("method: dorpo\nmax_steps: 3\nsave_strategy: no\nlora:\n  r: 8\ntraining:\n  warmup_steps: 1\n")
    cfg = TrainConfig.load(path, ["max_steps=4"], output="out")
    assert cfg.method == "dorpo" and cfg.lora.r == 8 and cfg.output == "out"
    assert cfg.training == {"max_steps": 4, "save_strategy": "no", "warmup_steps": 1}


def test_online_methods_dispatch_to_the_online_runner(monkeypatch, tmp_path):
    import sys
    import types

    from divtune.train import TrainConfig, run_train

    seen = []
    fake = types.ModuleType("divtune.train.online")
    fake.run_online_train = lambda cfg, **options: seen.append(cfg.method) or tmp_path
    monkeypatch.setitem(sys.modules, "divtune.train.online", fake)
    assert run_train(TrainConfig(method="dqo", data="d", output=str(tmp_path))) == tmp_path
    assert seen == ["dqo"]


def test_paper_defaults_and_cpu_defaults():
    from divtune.train import TrainConfig
    from divtune.train.config import resolved_training, trl_config_kwargs

    dpo = resolved_training(TrainConfig(method="ddpo"), "cpu")
    orpo = resolved_training(TrainConfig(method="dorpo"), "cpu")
    sft = resolved_training(TrainConfig(method="sft"), "cpu")
    assert (dpo["learning_rate"], dpo["num_train_epochs"]) == (5e-6, 3)
    assert (orpo["learning_rate"], orpo["num_train_epochs"]) == (5e-6, 4)
    assert (sft["learning_rate"], sft["num_train_epochs"], sft["lr_scheduler_type"]) == (3e-5, 1, "cosine")
    assert dpo["bf16"] is False and dpo["gradient_checkpointing"] is False
    assert trl_config_kwargs(TrainConfig(method="dorpo"), "cpu")["beta"] == 0.25
    assert TrainConfig().lora.r == 128 and TrainConfig().lora.alpha == 256
    user = resolved_training(TrainConfig(method="ddpo", training={"learning_rate": 1e-3}), "cpu")
    assert user["learning_rate"] == 1e-3


# Bad input ---------------------------------------------------------------------


def _cfg(tmp_path, data, method="ddpo", **extra):
    from divtune.train import TrainConfig

    return TrainConfig.load(
        None, tiny_overrides(max_steps=1, **extra), method=method, data=str(data), model=str(tmp_path / "no_model"),
        output=str(tmp_path / "out"),
    )


@pytest.mark.parametrize("method", ["ddpo", "dorpo"])
def test_missing_weight_column_names_file_line_field(tmp_path, method):
    from divtune.train import run_train

    rows = make_pairs(3)
    del rows[1]["weight"]
    data = write_pairs(tmp_path / "data", rows)
    with pytest.raises(InputError) as err:
        run_train(_cfg(tmp_path, data, method))
    assert "train.jsonl, line 2, field 'weight'" in str(err.value)


def test_bad_weight_value_and_missing_text_field(tmp_path):
    from divtune.train import run_train

    rows = make_pairs(3)
    rows[2]["weight"] = "high"
    with pytest.raises(InputError, match="line 3, field 'weight'"):
        run_train(_cfg(tmp_path, write_pairs(tmp_path / "a", rows)))
    rows = make_pairs(3)
    del rows[0]["rejected"]
    with pytest.raises(InputError, match="line 1, field 'rejected'"):
        run_train(_cfg(tmp_path, write_pairs(tmp_path / "b", rows), method="dpo"))


def test_weight_column_not_needed_for_plain_dpo(tmp_path):
    from divtune.prepared import read_pairs

    rows = make_pairs(2)
    for row in rows:
        del row["weight"]
    data = write_pairs(tmp_path / "data", rows)
    assert [r.weight for r in read_pairs(data / "train.jsonl", "dpo")] == [1.0, 1.0]


def test_unknown_method_and_empty_dataset(tmp_path):
    from divtune.train import TrainConfig, run_train

    with pytest.raises(ConfigError, match="method"):
        TrainConfig.load(None, [], method="ppo")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train.jsonl").write_text("")
    with pytest.raises(InputError, match="empty"):
        run_train(_cfg(tmp_path, empty))
    with pytest.raises(InputError, match="no train.jsonl"):
        run_train(_cfg(tmp_path, tmp_path / "empty" / ".."))


def test_long_prompts_are_dropped_and_counted_or_rejected(tmp_path, tiny_lm_dir):
    from divtune.train import TrainConfig, run_train

    rows = make_pairs(6, seed=1)
    rows[4]["prompt"] = "dragon " * 200  # far over max_length=64
    data = write_pairs(tmp_path / "data", rows)
    cfg = TrainConfig.load(
        None, tiny_overrides(max_steps=1, max_length=64), method="ddpo", data=str(data), model=str(tiny_lm_dir),
        output=str(tmp_path / "out"),
    )
    import json

    out = run_train(cfg)
    report = json.loads((out / "data_report.json").read_text())
    assert report["rows_read"] == 6 and report["pairs_used"] == 5
    assert report["dropped_long_prompt"] == 1 and report["dropped_long_prompt_rows"][0]["line"] == 5
    assert report["dropped_by_trainer"] == 0
    only_long = write_pairs(tmp_path / "long", [rows[4]])
    cfg = cfg.model_copy(update={"data": str(only_long), "output": str(tmp_path / "out2")})
    with pytest.raises(InputError, match="max_length"):
        run_train(cfg)


def test_divpo_refuses_data_prepared_with_other_pairs(tmp_path):
    from divtune.train import run_train

    data = write_pairs(tmp_path / "data", make_pairs(2))
    (data / "config.yaml").write_text("pairs: gap\n")
    with pytest.raises(InputError, match="DivPO pairs"):
        run_train(_cfg(tmp_path, data, method="divpo"))


def test_lora_on_the_last_layers_only(tiny_lm_dir):
    from peft import get_peft_model

    from divtune.config import ConfigError
    from divtune.models import load_causal_lm
    from divtune.train import TrainConfig
    from divtune.train.lora import lora_config

    model = load_causal_lm(str(tiny_lm_dir), device="cpu")  # 2 layers
    cfg = TrainConfig.from_dict({"lora": {"r": 4, "last_layers": 1}})
    peft = get_peft_model(model, lora_config(cfg, model))
    adapted = {name.split(".layers.")[1].split(".")[0] for name, _ in peft.named_parameters() if "lora_" in name}
    assert adapted == {"1"}
    names = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name, _ in peft.named_parameters() if "lora_A" in name}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    with pytest.raises(ConfigError, match="has 2 layers"):
        lora_config(TrainConfig.from_dict({"lora": {"last_layers": 3}}), load_causal_lm(str(tiny_lm_dir), device="cpu"))
