"""The public Python API: a cheap ``import divtune``, the TRL-style trainers on
their own (not through the CLI runner), ``add_deviation_weights`` against
``divtune prepare``, the metric functions, and one located line per bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from _train_support import make_pairs
from conftest import build_tiny_llama, build_tiny_tokenizer

PUBLIC = (
    "DeviationDPOTrainer", "DeviationDPOConfig", "DeviationORPOTrainer", "DeviationORPOConfig",
    "add_deviation_weights", "deviation_weights",
)


def test_import_divtune_is_cheap_and_exports_the_api():
    code = (
        "import sys, divtune\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'datasets', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        f"from divtune import {', '.join(PUBLIC)}\n"
        "print(sorted(divtune.__all__))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    exported = set(eval(done.stdout.strip().splitlines()[-1]))
    assert set(PUBLIC) <= exported


def test_every_exported_name_resolves_and_unknown_names_fail():
    import divtune

    for name in divtune.__all__:
        assert getattr(divtune, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'DDPOTrainer'"):
        divtune.DDPOTrainer  # noqa: B018 - TRL's name for diffusion DDPO is deliberately not ours


def test_public_configs_subclass_trl_and_default_to_cpu_sane_settings():
    from trl import DPOConfig

    from divtune import DeviationDPOConfig, DeviationORPOConfig
    from divtune.train.trl_orpo import import_orpo

    dpo = DeviationDPOConfig("out")
    orpo = DeviationORPOConfig("out")
    assert isinstance(dpo, DPOConfig) and isinstance(orpo, import_orpo().ORPOConfig)
    assert dpo.weight_column == orpo.weight_column == "weight" and orpo.dorpo_mode == "outside"
    # No accelerator here: fp32 and no checkpointing unless asked for.
    assert dpo.bf16 is False and dpo.gradient_checkpointing is False and dpo.dataloader_pin_memory is False
    assert DeviationDPOConfig("out", gradient_checkpointing=True).gradient_checkpointing is True
    assert DeviationDPOConfig("out", bf16=True, use_cpu=True).bf16 is True


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dorpo_mode": "inside"}, "DeviationORPOConfig.dorpo_mode: expected one of outside, released, got 'inside'"),
        ({"nll_tokens": "all"}, "DeviationORPOConfig.nll_tokens: expected one of full, completion, got 'all'"),
        ({"weight_column": ""}, "DeviationORPOConfig.weight_column: expected a column name or None, got ''"),
    ],
)
def test_bad_config_values_get_one_line(kwargs, message):
    from divtune import DeviationORPOConfig

    with pytest.raises(ValueError) as err:
        DeviationORPOConfig("out", **kwargs)
    assert str(err.value) == message


# --- the trainers on their own ------------------------------------------------------


def _dataset(rows, weights=None, column="weight"):
    from datasets import Dataset

    data = {key: [row[key] for row in rows] for key in ("prompt", "chosen", "rejected")}
    if weights is not None:
        data[column] = weights
    return Dataset.from_dict(data)


def _dpo_trainer(tmp_path, dataset, steps=2, **config):
    from peft import LoraConfig

    from divtune import DeviationDPOConfig, DeviationDPOTrainer

    tokenizer = build_tiny_tokenizer()
    args = DeviationDPOConfig(
        str(tmp_path), max_steps=steps, per_device_train_batch_size=2, learning_rate=1e-2, report_to=[],
        save_strategy="no", disable_tqdm=True, max_length=64, logging_steps=1, **config,
    )
    return DeviationDPOTrainer(
        model=build_tiny_llama(tokenizer, seed=0), args=args, train_dataset=dataset, processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"),
    )


def _lora_state(trainer):
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters() if "lora_" in name}


@pytest.mark.parametrize("weight, moves", [(0.0, False), (1.0, True)])
def test_dpo_lora_update_is_exactly_zero_with_zero_weights(tmp_path, weight, moves):
    rows = make_pairs(4, seed=1)
    trainer = _dpo_trainer(tmp_path, _dataset(rows, [weight] * len(rows)))
    before = _lora_state(trainer)
    trainer.train()
    after = _lora_state(trainer)
    assert before.keys() == after.keys() and before
    changed = [name for name in before if not torch_equal(before[name], after[name])]
    assert bool(changed) is moves, changed


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_orpo_trainer_trains_with_a_custom_weight_column(tmp_path):
    from peft import LoraConfig

    from divtune import DeviationORPOConfig, DeviationORPOTrainer

    tokenizer = build_tiny_tokenizer()
    rows = make_pairs(4, seed=2)
    args = DeviationORPOConfig(
        str(tmp_path), max_steps=2, per_device_train_batch_size=2, report_to=[], save_strategy="no",
        disable_tqdm=True, max_length=64, weight_column="dev", dorpo_mode="released", logging_steps=1,
    )
    trainer = DeviationORPOTrainer(
        model=build_tiny_llama(tokenizer, seed=0), args=args, processing_class=tokenizer,
        train_dataset=_dataset(rows, [0.5, 1.5, 1.0, 1.0], column="dev"),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(value) for value in losses)
    assert any("weight/mean" in entry for entry in trainer.state.log_history)


@pytest.mark.parametrize(
    "weights, column, config, message",
    [
        (None, "weight", {}, "train_dataset has no column 'weight' (weight_column); its columns are prompt, chosen, "
         "rejected. Add one with divtune.add_deviation_weights, or set weight_column=None to train unweighted"),
        ([1.0, -0.5, 1.0, 1.0], "weight", {}, "train_dataset row 1, column 'weight': a weight must be finite and >= 0, "
         "got -0.5"),
        ([1.0, 1.0, float("nan"), 1.0], "weight", {}, "train_dataset row 2, column 'weight': a weight must be finite "
         "and >= 0, got nan"),
        ([1.0, 1.0, 1.0, float("inf")], "w", {"weight_column": "w"}, "train_dataset row 3, column 'w': a weight must "
         "be finite and >= 0, got inf"),
    ],
)
def test_bad_weights_fed_to_the_trainer_get_one_located_line(tmp_path, weights, column, config, message):
    rows = make_pairs(4, seed=1)
    with pytest.raises(ValueError) as err:
        _dpo_trainer(tmp_path, _dataset(rows, weights, column=column), **config)
    assert str(err.value) == message


def test_unweighted_config_needs_no_weight_column(tmp_path):
    trainer = _dpo_trainer(tmp_path, _dataset(make_pairs(4, seed=1)), steps=1, weight_column=None)
    trainer.train()
    assert trainer.state.global_step == 1


def test_a_plain_trl_config_is_refused_with_the_class_to_use(tmp_path):
    from trl import DPOConfig

    from divtune import DeviationDPOTrainer

    with pytest.raises(TypeError, match=r"^args: expected a divtune.DeviationDPOConfig \(a DPOConfig with the weight "
                                        r"settings\), got DPOConfig$"):
        DeviationDPOTrainer(model="unused", args=DPOConfig(str(tmp_path), use_cpu=True), train_dataset=_dataset(make_pairs(2)))


# --- add_deviation_weights --------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, minilm_path):
    from divtune.prepare import PrepareConfig, run_prepare

    out = tmp_path_factory.mktemp("api_prepare")
    cfg = PrepareConfig(
        inputs=["shipped:wp_scored"], output=str(out / "prep"), cache_dir=str(out / "cache"), max_prompts=12,
        embedders={"semantic": str(minilm_path), "style": "stylometric"}, show_progress=False, test_fraction=0.25,
    )
    run_prepare(cfg)
    rows = []
    for split in ("train", "test"):
        with open(out / "prep" / f"{split}.jsonl", encoding="utf-8") as handle:
            rows += [json.loads(line) for line in handle]
    return cfg, rows


def test_add_deviation_weights_gives_prepare_s_weights(prepared, minilm_path):
    from datasets import Dataset

    from divtune import add_deviation_weights

    cfg, rows = prepared
    assert len({row["pool_id"] for row in rows}) == len({row["prompt"] for row in rows}) >= 8
    # Shuffled rows: the pools are found by prompt, not by position.
    order = np.random.default_rng(0).permutation(len(rows))
    rows = [rows[i] for i in order]
    dataset = Dataset.from_dict({key: [row[key] for row in rows] for key in ("prompt", "chosen", "rejected")})
    weighted = add_deviation_weights(dataset, embedders=[str(minilm_path), "stylometric"], cache_dir=cfg.cache_dir)
    expected = np.array([row["weight"] for row in rows])
    assert weighted.column_names == ["prompt", "chosen", "rejected", "weight"]
    np.testing.assert_allclose(weighted["weight"], expected, rtol=1e-9, atol=1e-12)
    assert np.std(expected) > 0.1  # real spread, not all ones


def test_add_deviation_weights_reads_conversational_rows_and_applies_the_floor(prepared, minilm_path):
    from datasets import Dataset

    from divtune import add_deviation_weights

    cfg, rows = prepared
    chat = Dataset.from_list([
        {"prompt": [{"role": "user", "content": row["prompt"]}],
         "chosen": [{"role": "assistant", "content": row["chosen"]}],
         "rejected": [{"role": "assistant", "content": row["rejected"]}]}
        for row in rows
    ])
    floor = 0.2
    weighted = add_deviation_weights(chat, embedders={"semantic": str(minilm_path), "style": "stylometric"},
                                     weight_floor=floor, cache_dir=cfg.cache_dir, weight_column="w")
    plain = np.array([row["weight"] for row in rows])
    np.testing.assert_allclose(weighted["w"], floor + (1 - floor) * plain, rtol=1e-9, atol=1e-12)


def test_add_deviation_weights_bad_input_gets_one_located_line(tmp_path):
    from datasets import Dataset

    from divtune import add_deviation_weights

    no_rejected = Dataset.from_dict({"prompt": ["p"], "chosen": ["a"], "answer": ["b"]})
    with pytest.raises(ValueError) as err:
        add_deviation_weights(no_rejected, embedders=["stylometric"], cache_dir=tmp_path)
    assert str(err.value) == ("dataset has no column 'rejected'; a preference dataset needs prompt, chosen and "
                              "rejected (its columns: prompt, chosen, answer)")
    same = Dataset.from_dict({"prompt": ["p", "q", "q"], "chosen": ["a", "x y", "x y"], "rejected": ["b", "x y", "x y"]})
    with pytest.raises(ValueError) as err:
        add_deviation_weights(same, embedders=["stylometric"], cache_dir=tmp_path)
    assert str(err.value) == ("row 1: every response of this prompt's pool (2 rows) is the same text, so it has no "
                              "deviation and no preference; drop those rows")
    not_text = Dataset.from_dict({"prompt": ["p"], "chosen": ["a"], "rejected": [[{"role": "assistant"}]]})
    with pytest.raises(ValueError, match=r"^row 0, column 'rejected': expected text or a list of messages"):
        add_deviation_weights(not_text, embedders=["stylometric"], cache_dir=tmp_path)


def test_deviation_weights_of_one_pool_has_mean_one_and_favours_the_outlier():
    from divtune import deviation_weights

    near = np.array([[1.0, 0.0], [0.99, 0.1], [0.98, 0.15]])
    far = np.array([[0.0, 1.0]])
    raw, weights = deviation_weights({"semantic": np.vstack([near, far])})
    assert weights.mean() == pytest.approx(1.0)
    assert int(np.argmax(weights)) == 3 and int(np.argmax(raw["semantic"])) == 3


# --- metric functions ---------------------------------------------------------------


def test_metric_functions_on_texts_and_embeddings(tmp_path):
    import divtune

    same = ["The cat sat on the mat."] * 3
    varied = ["The cat sat on the mat.", "A storm broke over the harbour at night.", "\"Run!\" she shouted."]
    assert divtune.semantic_diversity(same, embedder="stylometric", cache_dir=tmp_path) == pytest.approx(0.0, abs=1e-6)
    assert divtune.style_diversity(varied, cache_dir=tmp_path) > 0.05
    emb = np.eye(3)
    assert divtune.semantic_diversity(emb) == pytest.approx(1.0)
    assert divtune.vendi_score(emb) == pytest.approx(3.0)
    assert divtune.vendi_score(np.ones((3, 4))) == pytest.approx(1.0)
    assert divtune.distinct_n(same, 1) == pytest.approx(5 / 18)  # the cat sat on mat, of 3 x 6 tokens
    assert divtune.self_bleu(same) == pytest.approx(1.0)
    assert divtune.compression_ratio(same) > divtune.compression_ratio(varied)
    with pytest.raises(ValueError, match="at least 2 samples"):
        divtune.semantic_diversity(["one"], embedder="stylometric", cache_dir=tmp_path)


def test_diversity_report_ranks_systems_and_cuts_human_text(tmp_path):
    from divtune import diversity_report

    prompts = [f"prompt {i}" for i in range(4)]
    stories = [
        "The lighthouse keeper counted ships until the fog swallowed the count and the sea went quiet.",
        "\"Do you hear that?\" Mira whispered. Nobody answered; the radio hissed on and on.",
        "In the year of the long winter, the village burned its chairs, then its doors, then its songs.",
        "Robots do not dream, the manual said. Unit 7 underlined the sentence twice and waited for night.",
    ]
    systems = {
        "same": {p: [stories[0]] * 4 for p in prompts},
        "varied": {p: list(stories) for p in prompts},
    }
    human = {p: [s + " " + " ".join(["more"] * 60) for s in stories] for p in prompts}
    report = diversity_report(systems, human=human, semantic_embedder="stylometric", n_boot=50, cache_dir=tmp_path)
    assert list(report) == ["same", "varied", "human", "human-matched"]
    assert report["varied"]["style_diversity"] > report["same"]["style_diversity"]
    assert report["same"]["style_diversity"] == pytest.approx(0.0, abs=1e-6)
    low, high = report["varied"]["style_diversity_ci"]
    assert low <= report["varied"]["style_diversity"] <= high
    assert report["varied"]["n_prompts"] == 4 and report["varied"]["n_samples"] == 16
    assert "quality" not in report["varied"]
    # Matched human text is cut to the samples' median length (16 words), so its distinct-1 rises above the
    # whole stories' (whose 60 repeated words pull it down).
    assert report["human-matched"]["distinct_1"] > report["human"]["distinct_1"]


def test_a_model_given_by_path_gets_its_tokenizer_and_the_weighted_collator(tmp_path, tiny_lm_dir):
    """The README's form: no processing_class; TRL loads the tokenizer and divtune's collator still carries weights."""
    from divtune import DeviationDPOConfig, DeviationDPOTrainer
    from divtune.train.collators import WeightedPreferenceCollator

    args = DeviationDPOConfig(str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to=[],
                              save_strategy="no", disable_tqdm=True, max_length=64)
    rows = make_pairs(2, seed=4)
    trainer = DeviationDPOTrainer(model=str(tiny_lm_dir), args=args, train_dataset=_dataset(rows, [0.0, 2.0]))
    assert isinstance(trainer.data_collator, WeightedPreferenceCollator)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert batch["weight"].tolist() == [0.0, 2.0]
    trainer.train()
    assert trainer.state.global_step == 1
