"""The frozen-prefix hidden-state cache (train/prefix_cache.py): with LoRA on the last
layers only, the hidden states entering the first adapted layer are cached per row and
the backbone runs the adapted layers only. Same log-probs, gradients and training as
the normal path; its key; its refusals."""

from __future__ import annotations

import json

import pytest
import torch

from _train_support import load_adapter_tensors, make_pairs, step_losses, tiny_overrides, write_pairs
from conftest import build_tiny_llama, build_tiny_tokenizer
from divtune import prepared
from divtune.train import prefix_cache, ref_cache

LAYERS, LAST = 4, 2  # LoRA on layers 2 and 3; layers 0 and 1 (and the embedding) are cached


@pytest.fixture(scope="module")
def lm4(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_lm4")
    tokenizer = build_tiny_tokenizer()
    build_tiny_llama(tokenizer, seed=3, num_layers=LAYERS).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("prefix_pairs"), make_pairs(12, seed=5))


def _cfg(lm, data, output, cache, prefix=True, last_layers=LAST, **overrides):
    from divtune.train import TrainConfig

    settings = dict(max_steps=3, learning_rate=2e-2, per_device_train_batch_size=4, gradient_accumulation_steps=1)
    if last_layers is not None:
        settings["lora.last_layers"] = last_layers
    settings.update(overrides)
    return TrainConfig.load(
        None, tiny_overrides(**settings), method="dpo", data=str(data), model=str(lm), output=str(output), seed=1,
        precompute_ref=True, ref_cache_dir=str(cache / "ref"), prefix_cache_dir=str(cache / "prefix"),
        prefix_cache=prefix,
    )


def _trainer(cfg):
    """The run's trainer as run_train builds it (policy, tokenised pairs, reference and prefix passes)."""
    from datasets import Dataset

    from divtune.train import data as pairs_data
    from divtune.train.build import build_trainer
    from divtune.train.policy import load_policy, policy_tokenizer

    tokenizer = policy_tokenizer(cfg)
    rows = prepared.read_pairs(prepared.train_file(cfg.data), cfg.method)
    dataset = Dataset.from_list(pairs_data.to_trl_rows(rows, cfg.method, pairs_data.has_chat_template(tokenizer)))
    model, _ = load_policy(cfg, "cpu")
    return build_trainer(cfg, "cpu", model, tokenizer, dataset, [])


def _record(output):
    return json.loads((output / "prefix_cache.json").read_text())


def test_cached_prefix_gives_the_same_logps_and_lora_gradients(lm4, pairs_dir, tmp_path):
    trainer = _trainer(_cfg(lm4, pairs_dir, tmp_path / "run", tmp_path / "cache"))
    record = trainer.prefix_cache_record
    assert record["used"] is True and record["layer"] == LAYERS - LAST and record["datasets"]["train"]["hit"] is False
    model = trainer.model
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():  # LoRA B starts at zero, which would leave every A gradient zero
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.2)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
    lengths = batch["attention_mask"].sum(dim=1)
    assert len(set(lengths.tolist())) > 3 and (batch["attention_mask"] == 0).any()  # rows of many lengths, padded
    weights = torch.linspace(0.5, 1.5, lengths.numel())

    backbone = prefix_cache.backbone_of(model)
    calls = {0: 0, LAYERS - LAST: 0}
    hooks = [backbone.layers[i].register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1)) for i in calls]

    def forward(cached: bool):
        saved = trainer._prefix
        trainer._prefix = saved if cached else None
        try:
            logps = trainer._sequence_logps(model, batch)
        finally:
            trainer._prefix = saved
        (logps * weights).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        model.zero_grad(set_to_none=True)
        return logps.detach(), grads

    normal_logps, normal_grads = forward(cached=False)
    assert calls == {0: 1, LAYERS - LAST: 1}
    cached_logps, cached_grads = forward(cached=True)
    assert calls == {0: 1, LAYERS - LAST: 2}  # the frozen layers did not run again
    for hook in hooks:
        hook.remove()
    assert record["forward_passes"] == {"from_cache": 1, "full": 0}

    scale = float(normal_logps.abs().max())
    torch.testing.assert_close(cached_logps, normal_logps, rtol=1e-5, atol=1e-5 * scale)
    assert normal_grads.keys() == cached_grads.keys()
    assert len(normal_grads) == 2 * 7 * LAST  # A and B of 7 linear layers in each adapted layer
    for name, grad in normal_grads.items():
        grad_scale = float(grad.abs().max())
        assert grad_scale > 0, name
        torch.testing.assert_close(cached_grads[name], grad, rtol=1e-5, atol=1e-5 * grad_scale, msg=name)


def test_training_with_the_cache_matches_training_without_and_a_second_run_hits_the_disk(lm4, pairs_dir, tmp_path):
    from divtune.train import run_train

    cache = tmp_path / "cache"
    probes = dict(probe_pairs=4, probe_steps=3)
    first = run_train(_cfg(lm4, pairs_dir, tmp_path / "on", cache, **probes))
    off = run_train(_cfg(lm4, pairs_dir, tmp_path / "off", cache, prefix=False, **probes))
    again = run_train(_cfg(lm4, pairs_dir, tmp_path / "again", cache, **probes))

    record = _record(first)
    assert record["used"] is True and record["reason"] is None
    assert {name: entry["hit"] for name, entry in record["datasets"].items()} == {"train": False, "train_probe": False}
    # 3 training steps + the probe evaluated at steps 0 and 3: every policy forward skipped the frozen layers.
    assert record["forward_passes"] == {"from_cache": 5, "full": 0}
    assert len(list((cache / "prefix").glob("*.safetensors"))) == 2
    assert _record(off) == {"used": False, "reason": "prefix_cache=false", "layer": None, "datasets": {},
                            "forward_passes": {"from_cache": 0, "full": 0}}
    # Not set (a run on its own): off, and the record says why.
    unset = run_train(_cfg(lm4, pairs_dir, tmp_path / "unset", cache, prefix=None, max_steps=1))
    assert _record(unset)["used"] is False and _record(unset)["reason"].startswith("prefix_cache not set (auto")
    hit = _record(again)
    assert {name: entry["hit"] for name, entry in hit["datasets"].items()} == {"train": True, "train_probe": True}
    assert hit["datasets"]["train"]["key"] == record["datasets"]["train"]["key"]

    losses = step_losses(first)
    assert len(losses) == 3
    assert losses == pytest.approx(step_losses(off), rel=1e-4)
    assert step_losses(again) == losses  # a hit feeds the very floats the miss computed and used
    for name in ("eval_train_probe_rewards/margins", "eval_train_probe_logps/change"):
        on_probe = [m[name] for m in _metrics(first) if name in m]
        off_probe = [m[name] for m in _metrics(off) if name in m]
        # At step 0 the policy is the reference, so both paths give 0 up to float32 rounding: the
        # log-probs are sums of about -70 nats, whose last bit is 7.6e-6, and the cached prefix adds
        # them in another order (measured: 1.4e-6 on one CPU, 0 on another). A wrong cache is off by
        # far more than 5e-5.
        assert len(on_probe) == 2 and on_probe == pytest.approx(off_probe, rel=1e-4, abs=5e-5)

    cached, normal = load_adapter_tensors(first), load_adapter_tensors(off)
    assert cached.keys() == normal.keys() and cached
    assert all(".layers.2." in name or ".layers.3." in name for name in cached)
    for name, tensor in normal.items():
        scale = float(tensor.abs().max())
        torch.testing.assert_close(cached[name], tensor, rtol=1e-4, atol=1e-4 * scale, msg=name)
    assert any("lora_B" in name and float(t.abs().max()) > 0 for name, t in normal.items())  # training moved it


def _metrics(folder):
    from _train_support import read_metrics

    return read_metrics(folder)


def _key(**changes):
    values = dict(prefix_weights="w1", pairs="p1", max_length=128, truncation_mode="keep_start", layer=22,
                  extra={"torch": "2.13.0", "dtype": "torch.float32"})
    values.update(changes)
    return prefix_cache.cache_key(**values)


def test_key_changes_with_weights_token_ids_max_length_layer_and_versions(lm4):
    base = _key()
    assert _key() == base
    for change in (dict(prefix_weights="w2"), dict(pairs="p2"), dict(max_length=64), dict(layer=21),
                   dict(truncation_mode="keep_end"), dict(extra={"torch": "2.14.0", "dtype": "torch.float32"}),
                   dict(extra={"torch": "2.13.0", "dtype": "torch.bfloat16"})):
        assert _key(**change) != base, change

    # The token ids of the pairs reach the key through their digest.
    columns = {"prompt_ids": [[1, 2]], "chosen_ids": [[3]], "rejected_ids": [[4]]}
    assert ref_cache.dataset_digest(columns) != ref_cache.dataset_digest(dict(columns, chosen_ids=[[5]]))

    # The weights digest covers the embedding and the frozen layers below the cached one, not the adapted ones.
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(lm4))
    backbone = model.model

    def digest(layer):
        return ref_cache.weights_digest(prefix_cache.prefix_tensors(backbone, layer))

    before = digest(2)
    assert digest(3) != before  # another layer index, other tensors
    with torch.no_grad():
        backbone.layers[2].mlp.up_proj.weight[0, 0] += 1.0  # an adapted layer: its input does not change
    assert digest(2) == before
    with torch.no_grad():
        backbone.layers[1].mlp.up_proj.weight[0, 0] += 1e-3
    assert digest(2) != before
    after_layer = digest(2)
    with torch.no_grad():
        backbone.embed_tokens.weight[3, 0] += 1e-3
    assert digest(2) != after_layer


def test_falls_back_with_the_reason_when_last_layers_is_unset(lm4, pairs_dir, tmp_path):
    from divtune.train import run_train

    output = run_train(_cfg(lm4, pairs_dir, tmp_path / "run", tmp_path / "cache", last_layers=None, max_steps=1))
    record = _record(output)
    assert record["used"] is False and "lora.last_layers is not set" in record["reason"]
    assert record["forward_passes"] == {"from_cache": 0, "full": 0}
    assert not (tmp_path / "cache" / "prefix").exists()
    assert len(step_losses(output)) == 1


def test_falls_back_with_the_reason_when_the_cache_would_not_fit_in_memory(lm4, pairs_dir, tmp_path, monkeypatch):
    from divtune.train import run_train

    # 12 pairs of a few dozen tokens x 32 floats: tens of KiB. With 64 KiB available the limit is 16 KiB.
    monkeypatch.setattr(prefix_cache, "available_memory", lambda: 64 * 1024)
    output = run_train(_cfg(lm4, pairs_dir, tmp_path / "run", tmp_path / "cache", max_steps=2))
    record = _record(output)
    assert record["used"] is False and "over 25% of the" in record["reason"], record
    assert record["forward_passes"] == {"from_cache": 0, "full": 0}
    assert not (tmp_path / "cache" / "prefix").exists()
    assert len(step_losses(output)) == 2

    monkeypatch.setattr(prefix_cache, "available_memory", lambda: 64 * 1024 * 1024)
    fits = run_train(_cfg(lm4, pairs_dir, tmp_path / "fits", tmp_path / "cache", max_steps=2))
    assert _record(fits)["used"] is True
    assert step_losses(fits) == pytest.approx(step_losses(output), rel=1e-4)


def test_refuses_models_whose_frozen_layers_are_not_plain(lm4):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    def peft_model(layers, **config_changes):
        config = AutoConfig.from_pretrained(str(lm4))
        for key, value in config_changes.items():
            setattr(config, key, value)
        model = AutoModelForCausalLM.from_pretrained(str(lm4), config=config)
        lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], layers_to_transform=layers, task_type="CAUSAL_LM")
        return get_peft_model(model, lora)

    assert prefix_cache.unsupported_reason(peft_model([2, 3]), 2) is None
    assert "adapter sits in the frozen layers" in prefix_cache.unsupported_reason(peft_model([1, 2, 3]), 2)
    assert "attention_dropout" in prefix_cache.unsupported_reason(peft_model([2, 3], attention_dropout=0.1), 2)
    assert "no frozen decoder layer" in prefix_cache.unsupported_reason(peft_model([0, 1, 2, 3]), 0)
    unchecked = peft_model([2, 3])
    unchecked.get_base_model().config.model_type = "gemma"  # scales its embeddings: inputs_embeds would differ
    assert "not one whose backbone was checked" in prefix_cache.unsupported_reason(unchecked, 2)
