"""Quality reward model: pure metrics, early stopping, training on a learnable toy task,
save/load/score round trip, and (slow) training on the shipped r/WritingPrompts data."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from conftest import build_tiny_tokenizer, write_jsonl
from divtune.io import InputError
from divtune.reward.config import RewardTrainConfig
from divtune.reward.data import read_scored_responses, split_by_pool
from divtune.reward.fit import EarlyStopping, train_reward_model
from divtune.reward.model import RewardModel
from divtune.reward.pairs import pairwise_accuracy
from divtune.reward.score import bootstrap_pair_accuracy, score_generations

# ---------------------------------------------------------------- pure parts


def test_pairwise_accuracy_counts_ties_as_half():
    assert pairwise_accuracy([2, 1, 3], [1, 2, 3]).tolist() == [1.0, 0.0, 0.5]


def test_bootstrap_accuracy_weights_pairs_and_interval_contains_estimate():
    correct = np.array([1, 1, 1, 0, 1, 0])
    pools = ["a", "a", "a", "b", "c", "c"]
    accuracy, (low, high) = bootstrap_pair_accuracy(correct, pools, n_boot=500, seed=1)
    assert accuracy == pytest.approx(4 / 6)
    assert 0.0 <= low <= accuracy <= high <= 1.0 and high > low
    # One pool only: every resample is that pool, so the interval collapses on it.
    assert bootstrap_pair_accuracy([1, 0, 1, 1], ["p"] * 4, n_boot=50) == (0.75, [0.75, 0.75])


def test_split_by_pool_keeps_pools_whole():
    pools = ["a", "a", "b", "c", "c", "c", "d", "e"]
    train, val = split_by_pool(pools, val_fraction=0.4, seed=3)
    assert (train ^ val).all()
    val_pools = {p for p, v in zip(pools, val) if v}
    train_pools = {p for p, t in zip(pools, train) if t}
    assert len(val_pools) == 2 and not val_pools & train_pools


def test_early_stopping_stops_after_patience_without_improvement():
    stopper = EarlyStopping(patience=2)
    results = [stopper.update(e, loss) for e, loss in enumerate([1.0, 0.8, 0.9, 0.7, 0.75, 0.71])]
    assert results == [(True, False), (True, False), (False, False), (True, False), (False, False), (False, True)]
    assert stopper.best_epoch == 3 and stopper.best == 0.7


# ---------------------------------------------------------------- toy task: quality is learnable


GOOD, BAD = "dragon light music", "sea hills door"


def _toy_prepared(directory, n_pools=24, per_pool=6, seed=0):
    """Responses whose quality is the share of 'good' words: learnable from mean-pooled tokens."""
    rng = random.Random(seed)
    good, bad = GOOD.split(), BAD.split()

    def response():
        k = rng.randint(0, 6)
        words = [rng.choice(good) for _ in range(k)] + [rng.choice(bad) for _ in range(6 - k)]
        rng.shuffle(words)
        return " ".join(words), 2 * k / 6 - 1, k

    for split, pools in (("train", range(n_pools)), ("test", range(n_pools, n_pools + 8))):
        rows = []
        for pool in pools:
            items = [response() for _ in range(per_pool)]
            items.sort(key=lambda item: -item[2])
            for (chosen, qc, kc), (rejected, qr, kr) in zip(items[: per_pool // 2], items[per_pool // 2 :]):
                rows.append({"pool_id": f"p{pool}", "prompt": "Write a story.", "chosen": chosen,
                             "rejected": rejected, "score_chosen": kc, "score_rejected": kr,
                             "quality_chosen": qc, "quality_rejected": qr, "weight": 1.0})
        write_jsonl(directory / f"{split}.jsonl", rows)
    return directory


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    directory = tmp_path_factory.mktemp("tiny_bert")
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def _toy_cfg(data, output, backbone, **kw):
    values = dict(data=str(data), output=str(output), backbone=str(backbone), max_length=32, head_hidden=32,
                  learning_rate=3e-3, batch_size=16, max_epochs=60, patience=4, bootstrap_samples=200,
                  device="cpu", show_progress=False)
    values.update(kw)
    return RewardTrainConfig(**values)


def test_frozen_encoder_learns_toy_quality_and_stops_early(tmp_path, tiny_bert_dir):
    data = _toy_prepared(tmp_path / "data")
    metrics = train_reward_model(_toy_cfg(data, tmp_path / "rm", tiny_bert_dir))
    history = metrics["history"]
    # The L1 loss falls well below where it starts and below predicting the median quality.
    train_targets = [r.quality for r in read_scored_responses(data, "train")]
    median_l1 = float(np.mean(np.abs(np.array(train_targets) - np.median(train_targets))))
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    assert metrics["best_val_l1"] < 0.7 * median_l1
    # Early stopping: the run ended `patience` epochs after its best validation epoch.
    assert metrics["stopped_early"] and metrics["epochs_run"] == metrics["best_epoch"] + 1 + 4
    assert metrics["pairwise_accuracy"] > 0.8
    low, high = metrics["pairwise_accuracy_ci"]
    assert low <= metrics["pairwise_accuracy"] <= high
    assert metrics["spearman"] > 0.5
    saved = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    assert saved["pairwise_accuracy"] == metrics["pairwise_accuracy"]
    assert (tmp_path / "rm" / "config.yaml").is_file()
    assert not list((tmp_path / "rm").rglob("*.bin")) and not list((tmp_path / "rm").rglob("*.pt"))


def test_pairwise_objective_learns_toy_quality_and_stops_on_validation_accuracy(tmp_path, tiny_bert_dir):
    data = _toy_prepared(tmp_path / "data")
    metrics = train_reward_model(_toy_cfg(data, tmp_path / "rm", tiny_bert_dir, objective="pairwise"))
    history = metrics["history"]
    assert metrics["objective"] == "pairwise" and metrics["early_stopping"] == "val_pairwise_accuracy"
    assert history[-1]["train_loss"] < 0.7 * math.log(2)  # well below a coin's Bradley-Terry loss
    # Stopping and the kept weights follow the validation accuracy, the highest epoch.
    accuracies = [h["val_pairwise_accuracy"] for h in history]
    assert metrics["best_val_pairwise_accuracy"] == max(accuracies)
    assert metrics["best_epoch"] == accuracies.index(max(accuracies))
    if metrics["stopped_early"]:
        assert metrics["epochs_run"] == metrics["best_epoch"] + 1 + 4
    assert metrics["pairwise_accuracy"] > 0.8 and metrics["spearman"] > 0.5
    # Every within-prompt pair with different votes of the training prompts is trained on.
    assert metrics["train_pairs"] == "all" and metrics["n_train_pairs"] > 3 * 24 * 0.9 * 2


def test_pairwise_scores_are_calibrated_onto_the_vote_scale_without_reordering(tmp_path, tiny_bert_dir):
    data = _toy_prepared(tmp_path / "data")
    train_reward_model(_toy_cfg(data, tmp_path / "rm", tiny_bert_dir, objective="pairwise", max_epochs=15))
    model = RewardModel.load(tmp_path / "rm", device="cpu")
    scale, shift = model.spec["output_scale"], model.spec["output_shift"]
    assert scale > 0
    rows = read_scored_responses(data, "test")
    prompts, texts = [r.prompt for r in rows], [r.text for r in rows]
    raw = model._batched(prompts, texts, 16, model.forward, False, "raw")
    calibrated = model.score(prompts, texts)
    np.testing.assert_allclose(calibrated, raw * scale + shift, rtol=1e-5, atol=1e-5)
    # On the vote scale: mean and spread near the held-out votes' (the raw scores are unitless).
    quality = np.array([r.quality for r in rows])
    assert abs(calibrated.mean() - quality.mean()) < 0.3 and 0.3 < calibrated.std() / quality.std() < 3


def test_gap_pairs_train_on_train_jsonl_pairs_only(tmp_path, tiny_bert_dir):
    data = _toy_prepared(tmp_path / "data", n_pools=10)
    metrics = train_reward_model(_toy_cfg(data, tmp_path / "rm", tiny_bert_dir, objective="pairwise",
                                          train_pairs="gap", max_epochs=2, val_fraction=0.2))
    # 3 listed pairs per prompt (toy pools of 6); 2 of the 10 prompts are validation.
    assert metrics["n_train_pairs"] == 3 * 8
    assert metrics["n_val_pairs"] > 3 * 2  # validation always uses every pair with different votes


def test_fine_tuned_encoder_with_pairwise_objective_saves_its_backbone(tmp_path, tiny_bert_dir):
    from safetensors.torch import load_file

    data = _toy_prepared(tmp_path / "data", n_pools=8)
    metrics = train_reward_model(_toy_cfg(data, tmp_path / "rm", tiny_bert_dir, objective="pairwise",
                                          freeze_backbone=False, max_epochs=3, backbone_learning_rate=1e-3))
    assert metrics["freeze_backbone"] is False and metrics["epochs_run"] <= 3
    before = load_file(tiny_bert_dir / "model.safetensors")
    after = load_file(tmp_path / "rm" / "backbone" / "model.safetensors")
    assert any(not torch_equal(before[k], after[k]) for k in before if k in after)  # the encoder itself trained
    model = RewardModel.load(tmp_path / "rm", device="cpu")
    scores = model.score(["Write a story."] * 2, ["dragon light music", "sea door hills"])
    assert np.isfinite(scores).all()


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_early_stopping_cuts_a_long_run(tmp_path, tiny_bert_dir):
    data = _toy_prepared(tmp_path / "data", n_pools=8)
    metrics = train_reward_model(_toy_cfg(data, tmp_path / "rm", tiny_bert_dir, max_epochs=400, patience=2,
                                          learning_rate=3e-2))
    assert metrics["stopped_early"] and metrics["epochs_run"] < 400
    assert metrics["epochs_run"] == metrics["best_epoch"] + 1 + 2
    assert metrics["best_val_l1"] == min(h["val_l1"] for h in metrics["history"])


def test_saved_model_scores_like_the_trained_one_and_scores_generations(tmp_path, tiny_bert_dir):
    data = _toy_prepared(tmp_path / "data", n_pools=8)
    train_reward_model(_toy_cfg(data, tmp_path / "rm", tiny_bert_dir, max_epochs=30))
    model = RewardModel.load(tmp_path / "rm", device="cpu")
    prompts = ["Write a story."] * 3
    responses = ["dragon dragon light music dragon light", "sea sea door hills door sea", "dragon sea"]
    scores = model.score(prompts, responses, batch_size=2)
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert scores[0] > scores[1]  # the all-good response beats the all-bad one
    # Batching and length sorting do not change a response's score.
    np.testing.assert_allclose(model.score(prompts[:1], responses[:1]), scores[:1], rtol=1e-4, atol=1e-5)

    gens = write_jsonl(tmp_path / "gen.jsonl", [
        {"prompt_id": 1, "prompt": p, "sample_index": i, "text": r, "model": "m", "seed": 0}
        for i, (p, r) in enumerate(zip(prompts, responses))
    ])
    out = score_generations(tmp_path / "rm", gens, tmp_path / "scored.jsonl")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["sample_index"] for r in rows] == [0, 1, 2]
    np.testing.assert_allclose([r["quality"] for r in rows], scores, rtol=1e-4, atol=1e-5)


def test_score_generations_names_line_of_a_missing_text(tmp_path, tiny_bert_dir):
    gens = write_jsonl(tmp_path / "gen.jsonl", [{"prompt": "p", "text": "t"}, {"prompt": "p"}])
    with pytest.raises(InputError) as info:
        score_generations(tmp_path / "nowhere", gens, tmp_path / "out.jsonl")
    assert info.value.line == 2 and info.value.field == "text"


def test_sequence_classification_backbone_with_lora_trains_saves_and_loads(tmp_path, tiny_lm_dir):
    pytest.importorskip("peft")
    data = _toy_prepared(tmp_path / "data", n_pools=6)
    metrics = train_reward_model(_toy_cfg(data, tmp_path / "rm", tiny_lm_dir, lora=True, lora_r=4, max_epochs=2,
                                          backbone_learning_rate=1e-3, batch_size=8))
    assert metrics["kind"] == "sequence_classification" and metrics["epochs_run"] == 2
    assert (tmp_path / "rm" / "model" / "adapter_model.safetensors").is_file()
    model = RewardModel.load(tmp_path / "rm", device="cpu")
    scores = model.score(["Write a story."] * 2, ["dragon light", "sea door"])
    assert scores.shape == (2,) and np.isfinite(scores).all()


# ---------------------------------------------------------------- shipped data (slow)


def _prepare_shipped(directory, max_prompts, test_fraction):
    """Prepared folder from the shipped data via `divtune prepare` (stylometric weights only:
    the reward model reads pairs and votes, not weights, so MiniLM embedding is skipped)."""
    from divtune.prepare import PrepareConfig, run_prepare

    run_prepare(PrepareConfig(inputs=["shipped:wp_scored"], output=str(directory), max_prompts=max_prompts,
                              test_fraction=test_fraction, embedders={"style": "stylometric"},
                              cache_dir=str(directory / "cache"), show_progress=False))
    return directory


@pytest.mark.slow
def test_minilm_reward_model_on_shipped_data(tmp_path, minilm_path):
    data = _prepare_shipped(tmp_path / "data", max_prompts=40, test_fraction=0.25)
    cfg = RewardTrainConfig(data=str(data), output=str(tmp_path / "rm"), backbone="minilm", max_length=96,
                            max_train_responses=300, max_epochs=40, patience=5, device="cpu",
                            bootstrap_samples=500, show_progress=False)
    metrics = train_reward_model(cfg)
    low, high = metrics["pairwise_accuracy_ci"]
    assert 0.0 <= low <= metrics["pairwise_accuracy"] <= high <= 1.0
    assert -1.0 <= metrics["spearman"] <= 1.0
    assert metrics["n_test_pairs"] >= 20 and metrics["n_train_responses"] > 100
    print("shipped-data reward model:", {k: metrics[k] for k in
          ("pairwise_accuracy", "pairwise_accuracy_ci", "spearman", "n_test_pairs", "train_seconds")})


@pytest.mark.slow
def test_cli_pairwise_fine_tuned_minilm_on_a_few_shipped_prompts(tmp_path, minilm_path):
    """`reward train --objective pairwise --train-backbone` end to end on the shipped MiniLM and data."""
    from typer.testing import CliRunner

    from divtune.cli import app
    from divtune.prepare import PrepareConfig, run_prepare

    data = tmp_path / "data"
    run_prepare(PrepareConfig(inputs=["shipped:wp_scored"], output=str(data), max_prompts=10, test_fraction=0.3,
                              max_responses_per_prompt=6, embedders={"style": "stylometric"},
                              cache_dir=str(tmp_path / "cache"), show_progress=False))
    result = CliRunner().invoke(app, [
        "reward", "train", "--data", str(data), "--output", str(tmp_path / "rm"), "--backbone", "minilm",
        "--objective", "pairwise", "--train-backbone", "--max-length", "64", "--max-epochs", "2",
        "--batch-size", "12", "--device", "cpu", "--set", "val_fraction=0.3", "--set", "show_progress=false",
        "--set", "bootstrap_samples=200"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    assert metrics["objective"] == "pairwise" and metrics["freeze_backbone"] is False
    assert metrics["early_stopping"] == "val_pairwise_accuracy" and 1 <= metrics["epochs_run"] <= 2
    assert metrics["n_train_pairs"] > 0 and metrics["n_val_pairs"] > 0
    assert all(np.isfinite(h["train_loss"]) and 0 <= h["val_pairwise_accuracy"] <= 1 for h in metrics["history"])
    for key in ("length_baseline", "openings"):
        low, high = metrics[key]["pairwise_accuracy_ci"]
        assert 0 <= low <= metrics[key]["pairwise_accuracy"] <= high <= 1
    assert (tmp_path / "rm" / "backbone" / "model.safetensors").is_file()
    model = RewardModel.load(tmp_path / "rm", device="cpu")
    scores = model.score(["[WP] A dragon opens a bakery."] * 2, ["It was a quiet morning.", "Flour everywhere."])
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_cli_reward_train_and_score(tmp_path, tiny_bert_dir):
    from typer.testing import CliRunner

    from divtune.cli import app

    data = _toy_prepared(tmp_path / "data", n_pools=8)
    runner = CliRunner()
    result = runner.invoke(app, ["reward", "train", "--data", str(data), "--output", str(tmp_path / "rm"),
                                 "--backbone", str(tiny_bert_dir), "--max-epochs", "3", "--device", "cpu",
                                 "--set", "show_progress=false", "--set", "max_length=32"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "rm" / "metrics.json").read_text())["epochs_run"] <= 3
    gens = write_jsonl(tmp_path / "g.jsonl", [{"prompt": "Write a story.", "text": "dragon light"}])
    result = runner.invoke(app, ["reward", "score", "--reward", str(tmp_path / "rm"), "--generations", str(gens),
                                 "--output", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 0, result.output
    assert isinstance(json.loads((tmp_path / "s.jsonl").read_text())["quality"], float)


def test_training_rows_come_from_responses_jsonl_when_present(tmp_path, caplog):
    pair = {"pool_id": "a", "prompt": "P-a", "chosen": "x", "rejected": "y", "score_chosen": 5,
            "score_rejected": 1, "quality_chosen": 0.5, "quality_rejected": -0.5, "weight": 1.0}
    write_jsonl(tmp_path / "train.jsonl", [pair])
    from_pairs = read_scored_responses(tmp_path, "train")
    assert sorted((r.text, r.quality, r.score) for r in from_pairs) == [("x", 0.5, 5.0), ("y", -0.5, 1.0)]

    def response(pool, split, text, score, quality):
        return {"pool_id": pool, "split": split, "index": 0, "text": text, "score": score, "quality": quality,
                "in_pairs": False, "deviation": {"semantic": 0.1}, "weight": None}

    write_jsonl(tmp_path / "responses.jsonl", [
        response("a", "train", "x", 5, 0.5), response("a", "train", "z", 3, 0.1),
        response("b", "train", "w", 1, -1.0), response("t", "test", "v", 2, 0.0),
    ])
    rows = read_scored_responses(tmp_path, "train")
    assert [(r.prompt, r.text, r.quality) for r in rows] == [("P-a", "x", 0.5), ("P-a", "z", 0.1)]
    assert "1 train responses skipped" in caplog.text  # pool b has no prompt text: counted, not silently lost
