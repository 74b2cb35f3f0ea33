"""The on-disk cache of reference log-probs: its key, and runs that read it back bit for bit."""

from __future__ import annotations

import json

import pytest
import torch

from _train_support import make_pairs, step_losses, tiny_overrides, write_pairs
from divtune.train import ref_cache


def _key(**changes):
    values = dict(reference="w1", pairs="p1", max_length=128, truncation_mode="keep_start", batch_size=4,
                  extra={"torch": "2.13.0"})
    values.update(changes)
    return ref_cache.cache_key(**values)


def test_key_changes_with_model_pairs_max_length_and_nothing_else():
    base = _key()
    assert _key() == base
    assert _key(reference="w2") != base
    assert _key(pairs="p2") != base
    assert _key(max_length=64) != base
    assert _key(truncation_mode="keep_end") != base
    assert _key(extra={"torch": "2.14.0"}) != base


def test_dataset_digest_sees_every_token_and_the_order():
    columns = {"prompt_ids": [[1, 2], [3]], "chosen_ids": [[4], [5, 6]], "rejected_ids": [[7], [8]]}
    digest = ref_cache.dataset_digest(columns)
    assert ref_cache.dataset_digest(dict(columns, chosen_ids=[[4], [5, 7]])) != digest
    assert ref_cache.dataset_digest({k: v[::-1] for k, v in columns.items()}) != digest


def test_reference_digest_ignores_the_trained_adapter_but_not_the_base(tiny_lm_dir):
    from peft import LoraConfig, get_peft_model

    from divtune.models import load_causal_lm

    def digest(lora_seed: int, perturb_base: bool = False) -> str:
        model = load_causal_lm(str(tiny_lm_dir), device="cpu")
        if perturb_base:
            with torch.no_grad():
                model.model.layers[0].mlp.up_proj.weight[0, 0] += 1e-3
        torch.manual_seed(lora_seed)
        peft = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
        return ref_cache.weights_digest(ref_cache.reference_tensors(peft))

    assert digest(0) == digest(1)  # LoRA A is random per seed; the reference is the same base
    assert digest(0, perturb_base=True) != digest(0)


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("ref_cache_pairs"), make_pairs(12, seed=5))


def _train(tiny_lm_dir, data, output, cache_dir, method="dpo", seed=1, **overrides):
    from divtune.train import TrainConfig, run_train

    settings = dict(max_steps=3, learning_rate=2e-2, per_device_train_batch_size=4, gradient_accumulation_steps=1)
    settings.update(overrides)
    cfg = TrainConfig.load(
        None, tiny_overrides(**settings), method=method, data=str(data), model=str(tiny_lm_dir), output=str(output),
        seed=seed, precompute_ref=True, ref_cache_dir=str(cache_dir) if cache_dir else None,
        ref_cache=cache_dir is not None,
    )
    return run_train(cfg)


def _record(output):
    return json.loads((output / "ref_logps.json").read_text())["train"]


@pytest.mark.slow
def test_a_cache_hit_trains_bit_identically_and_is_shared_across_methods_and_seeds(tiny_lm_dir, pairs_dir, tmp_path):
    cache = tmp_path / "cache"
    first = _train(tiny_lm_dir, pairs_dir, tmp_path / "miss", cache)
    again = _train(tiny_lm_dir, pairs_dir, tmp_path / "hit", cache)
    assert _record(first)["hit"] is False and _record(again)["hit"] is True
    assert _record(first)["key"] == _record(again)["key"]
    assert len(list(cache.glob("*.safetensors"))) == 1
    assert step_losses(again) == step_losses(first)  # bit for bit, not approximately
    assert len(step_losses(first)) == 3

    # Without the cache the same numbers are computed again; on the fly (no precompute) they agree closely.
    uncached = _train(tiny_lm_dir, pairs_dir, tmp_path / "uncached", None)
    assert step_losses(uncached) == step_losses(first)
    assert not (uncached / "ref_logps.json").exists()

    # Another method and seed with the same reference and pairs: a hit. Another max_length: a miss.
    other_seed = _train(tiny_lm_dir, pairs_dir, tmp_path / "ddpo", cache, method="ddpo", seed=7)
    assert _record(other_seed)["hit"] is True
    shorter = _train(tiny_lm_dir, pairs_dir, tmp_path / "short", cache, max_length=24)
    assert _record(shorter)["hit"] is False and _record(shorter)["key"] != _record(first)["key"]
    assert len(list(cache.glob("*.safetensors"))) == 2


@pytest.mark.slow
def test_cached_reference_matches_the_reference_computed_at_every_step(tiny_lm_dir, pairs_dir, tmp_path):
    cached = _train(tiny_lm_dir, pairs_dir, tmp_path / "cached", tmp_path / "cache")
    from divtune.train import TrainConfig, run_train

    cfg = TrainConfig.load(
        None, tiny_overrides(max_steps=3, learning_rate=2e-2, per_device_train_batch_size=4, gradient_accumulation_steps=1),
        method="dpo", data=str(pairs_dir), model=str(tiny_lm_dir), output=str(tmp_path / "on_the_fly"), seed=1,
    )
    on_the_fly = run_train(cfg)
    assert step_losses(cached) == pytest.approx(step_losses(on_the_fly), rel=1e-5)


@pytest.mark.slow
def test_probes_log_train_and_heldout_accuracy_margin_and_logprob_change(tiny_lm_dir, tmp_path):
    from _train_support import read_metrics

    data = write_pairs(tmp_path / "data", make_pairs(12, seed=5))
    write_pairs(tmp_path / "held", make_pairs(6, seed=9))
    (tmp_path / "held" / "train.jsonl").rename(data / "test.jsonl")
    output = _train(tiny_lm_dir, data, tmp_path / "run", tmp_path / "cache", max_steps=6, learning_rate=5e-2,
                    probe_pairs=4, probe_heldout_pairs=3, probe_steps=4)
    metrics = read_metrics(output)
    for name in ("train_probe", "heldout"):
        logged = {m["step"]: m for m in metrics if f"eval_{name}_rewards/accuracies" in m}
        assert sorted(logged) == [0, 4, 6]  # at the start, every 4 steps and at the end
        start, end = logged[0], logged[6]
        assert start[f"eval_{name}_rewards/margins"] == pytest.approx(0.0, abs=1e-5)  # policy == reference
        assert start[f"eval_{name}_logps/change"] == pytest.approx(0.0, abs=1e-4)
        assert end[f"eval_{name}_logps/change"] != pytest.approx(0.0, abs=1e-3)  # the policy moved
    end = {m["step"]: m for m in metrics if "eval_train_probe_rewards/margins" in m}[6]
    assert end["eval_train_probe_rewards/margins"] > 0  # the probe pairs were trained on
    records = json.loads((output / "ref_logps.json").read_text())
    assert set(records) == {"train", "train_probe", "heldout"}


# The reference's identity: the files it was loaded from ---------------------------------


def test_model_identity_follows_the_weight_files_not_the_folder_or_the_tokenizer(tiny_lm_dir, tmp_path):
    import shutil

    from peft import LoraConfig, get_peft_model

    from divtune.models import load_causal_lm

    base = ref_cache.model_identity(str(tiny_lm_dir))
    assert base is not None
    copy = tmp_path / "copy"
    shutil.copytree(tiny_lm_dir, copy)
    assert ref_cache.model_identity(str(copy)) == base  # a copy elsewhere is the same model
    (copy / "tokenizer.json").write_text((copy / "tokenizer.json").read_text().replace("<|pad|>", "<|pad2|>"))
    assert ref_cache.model_identity(str(copy)) == base  # token ids are in the key on their own
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    changed = ref_cache.model_identity(str(copy))
    assert changed is not None and changed != base

    # An adapter: its own files and its base's.
    model = load_causal_lm(str(tiny_lm_dir), device="cpu")
    torch.manual_seed(0)
    peft = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    peft.save_pretrained(tmp_path / "adapter")
    adapter = ref_cache.model_identity(str(tmp_path / "adapter"))
    assert adapter["base"] == base and adapter["files"] != base["files"]

    # A Hugging Face cache blob is named by its hash: that name is used, the file is not read.
    blobs = tmp_path / "hub" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "0123abcd").write_bytes(b"weights")
    (tmp_path / "hub" / "link.safetensors").symlink_to(blobs / "0123abcd")
    assert ref_cache.file_hash(tmp_path / "hub" / "link.safetensors") == "0123abcd"
    # A folder without weight files cannot be told apart from another: no identity (the trainer hashes weights).
    (tmp_path / "no_weights").mkdir()
    (tmp_path / "no_weights" / "config.json").write_text("{}")
    assert ref_cache.model_identity(str(tmp_path / "no_weights")) is None


def _library_trainer(tmp_path, cache, model_id):
    from datasets import Dataset
    from peft import LoraConfig

    from conftest import build_tiny_llama, build_tiny_tokenizer
    from divtune import DeviationDPOConfig, DeviationDPOTrainer

    rows = make_pairs(4, seed=3)
    tokenizer = build_tiny_tokenizer()
    args = DeviationDPOConfig(
        str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=2, report_to=[], save_strategy="no",
        disable_tqdm=True, max_length=64, precompute_ref_log_probs=True, ref_cache_dir=str(cache),
        ref_cache_model_id=model_id, weight_column=None,
    )
    dataset = Dataset.from_dict({key: [row[key] for row in rows] for key in ("prompt", "chosen", "rejected")})
    trainer = DeviationDPOTrainer(
        model=build_tiny_llama(tokenizer, seed=0), args=args, train_dataset=dataset, processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    return trainer.ref_cache_record["train"]


def test_the_trainer_keys_the_cache_by_ref_cache_model_id_or_else_by_the_weights(tmp_path):
    cache = tmp_path / "cache"
    by_weights = [_library_trainer(tmp_path, cache, None) for _ in range(2)]
    assert [r["hit"] for r in by_weights] == [False, True]
    named = [_library_trainer(tmp_path, cache, model_id) for model_id in ("model-a", "model-a", "model-b")]
    assert [r["hit"] for r in named] == [False, True, False]
    keys = {r["key"] for r in by_weights + named}
    assert len(keys) == 3  # the weights' digest, model-a, model-b
