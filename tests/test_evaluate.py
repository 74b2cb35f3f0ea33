"""divtune evaluate: metrics.json layout, gold row, embedding reuse, bad input, real data."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from divtune.evaluation.config import DISTINCT_K_THRESHOLD, EvaluateConfig
from divtune.evaluation.gold import length_matched_gold, read_gold
from divtune.evaluation.keys import METRIC_KEYS, NEWER_METRIC_KEYS, OPTIONAL_METRIC_KEYS
from divtune.evaluation.run import run_evaluate
from divtune.evaluation.scores import distinct_k_per_prompt
from divtune.evaluation.systems import read_generations
from divtune.io import InputError
from conftest import write_jsonl

WORDS = "dragon ship night sea storm castle girl robot moon star river old ran sang wept laughed forest king".split()
CHEAP = {"semantic": "stylometric", "style": "stylometric"}


def _generations(path: Path, model: str | None, n_prompts: int, diverse: bool, seed: int = 0, quality: bool = False):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        base = " ".join(rng.choice(WORDS, size=25))
        for i in range(4):
            text = " ".join(rng.choice(WORDS, size=25)) if diverse else base
            row = {"prompt_id": f"p{p}", "prompt": f"Write about {p}.", "sample_index": i, "text": text, "seed": 0}
            if model is not None:
                row["model"] = model
            if quality:
                row["quality"] = float(rng.uniform(-1, 1))
            rows.append(row)
    write_jsonl(path, rows)
    return path


class OneHotEmbedder:
    """Each distinct text gets its own axis: distinct texts are orthogonal (distance exactly 1)."""

    calls: list[list[str]] = []

    def __init__(self, dim: int = 64):
        self.name = "onehot"
        self.axes: dict[str, int] = {}
        self.dim = dim

    def embed(self, texts, batch_size=32, show_progress=True):
        OneHotEmbedder.calls.append(list(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row, self.axes.setdefault(text, len(self.axes))] = 1.0
        return out


@pytest.fixture
def onehot(monkeypatch):
    OneHotEmbedder.calls = []
    monkeypatch.setattr("divtune.embedders.load_embedder", lambda spec, cache_dir=None: OneHotEmbedder())
    return OneHotEmbedder


def test_end_to_end_metrics_json_has_every_key_and_interval(tmp_path):
    copies = _generations(tmp_path / "copies.jsonl", "copies", 10, diverse=False)
    varied = _generations(tmp_path / "varied.jsonl", None, 10, diverse=True, seed=1)
    cfg = EvaluateConfig(generations=[str(copies), str(varied)], output=str(tmp_path / "eval"), embedders=CHEAP, bootstrap=200)
    results = run_evaluate(cfg)

    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert on_disk == results
    assert set(results) == {"copies", "varied"}  # model field, else the file stem
    always = [*METRIC_KEYS, *NEWER_METRIC_KEYS]  # the newer keys are always computed, only not required of old folders
    expected_keys = {*always, *(f"{k}_ci" for k in always), "n_prompts", "n_samples"}
    for name, row in results.items():
        assert set(row) == expected_keys, name
        assert row["quality"] is None and row["quality_ci"] is None  # no reward, no quality field
        assert row["n_prompts"] == 10 and row["n_samples"] == 40
        for key in METRIC_KEYS:
            if row[key] is None:
                continue
            low, high = row[f"{key}_ci"]
            assert low <= row[key] + 1e-12 and row[key] <= high + 1e-12, (name, key)
    assert results["copies"]["semantic_diversity"] == pytest.approx(0.0, abs=1e-6)
    assert results["copies"]["vendi_semantic"] == pytest.approx(1.0, abs=1e-4)
    assert results["copies"]["distinct_k"] == 1.0  # identical samples: one class
    assert results["varied"]["semantic_diversity"] > 0.01
    assert results["copies"]["self_bleu"] == pytest.approx(1.0)
    assert results["varied"]["distinct_2"] > results["copies"]["distinct_2"]
    assert results["copies"]["compression_ratio"] > results["varied"]["compression_ratio"]

    lines = [json.loads(l) for l in (tmp_path / "eval" / "per_prompt.jsonl").read_text().splitlines()]
    assert len(lines) == 20
    assert {(l["system"], l["prompt_id"]) for l in lines} == {(s, f"p{p}") for s in results for p in range(10)}
    assert (tmp_path / "eval" / "config.yaml").is_file()
    assert EvaluateConfig.load(tmp_path / "eval" / "config.yaml").generations == cfg.generations


def test_each_text_is_embedded_once_across_systems(tmp_path, onehot):
    a = _generations(tmp_path / "a.jsonl", "a", 5, diverse=True, seed=3)
    b = _generations(tmp_path / "b.jsonl", "b", 5, diverse=True, seed=3)  # same texts as a
    run_evaluate(EvaluateConfig(generations=[str(a), str(b)], output=str(tmp_path / "e"),
                                embedders={"semantic": "x", "style": "y"}, bootstrap=50))
    assert len(onehot.calls) == 2  # one batched call per embedder
    for call in onehot.calls:
        assert len(call) == len(set(call)) == 20


def test_effective_diversity_rule_and_threshold(tmp_path, onehot):
    rows = []
    # prompt A: two passing, distinct samples -> 1.0; prompt B: one passing -> counted as 0.
    for pid, qualities in (("A", [0.9, 0.8, 0.1, 0.1]), ("B", [0.9, 0.1, 0.1, 0.2])):
        for i, q in enumerate(qualities):
            rows.append({"prompt_id": pid, "prompt": "p", "sample_index": i, "text": f"{pid} story {i}", "quality": q})
    path = write_jsonl(tmp_path / "g.jsonl", rows)
    out = run_evaluate(EvaluateConfig(generations=[str(path)], output=str(tmp_path / "e"), embedders=CHEAP,
                                      quality_threshold=0.5, bootstrap=50))["g"]
    assert out["semantic_diversity"] == pytest.approx(1.0)
    assert out["effective_semantic_diversity"] == pytest.approx(0.5)
    assert out["quality"] == pytest.approx(np.mean([0.475, 0.325]))


def _prepared_folder(root: Path, n_pools: int = 6, per_pool: int = 7) -> Path:
    test_rows, responses = [], []
    for p in range(n_pools):
        test_rows.append({"pool_id": p, "prompt": f"prompt {p}", "chosen": "c", "rejected": "r"})
        for i in range(per_pool):
            responses.append({"pool_id": p, "split": "test", "index": i, "text": f"human story {p}-{i}", "quality": 0.0})
    responses.append({"pool_id": 100, "split": "train", "index": 0, "text": "train only"})
    responses.append({"pool_id": 0, "split": "test", "index": 99, "text": "short pool"})
    write_jsonl(root / "test.jsonl", test_rows)
    write_jsonl(root / "responses.jsonl", responses)
    return root


def test_gold_row_uses_as_many_human_responses_as_samples(tmp_path, onehot):
    prepared = _prepared_folder(tmp_path / "prep")
    rows = [
        {"prompt_id": p, "prompt": f"prompt {p}", "sample_index": i, "text": f"model {p}", "model": "m"}
        for p in range(4) for i in range(3)
    ]
    gens = write_jsonl(tmp_path / "m.jsonl", rows)
    out = run_evaluate(EvaluateConfig(generations=[str(gens)], gold=str(prepared), output=str(tmp_path / "e"),
                                      embedders=CHEAP, bootstrap=50, seed=5))
    assert out["gold"]["n_prompts"] == 4  # only prompts that have generations
    assert out["gold"]["n_samples"] == 12  # 3 per prompt, like the model
    assert out["gold"]["semantic_diversity"] == pytest.approx(1.0)  # distinct human stories, one-hot
    assert out["m"]["semantic_diversity"] == pytest.approx(0.0)
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert summary["skipped"]["gold: train-split responses (not evaluated)"] == 1
    assert summary["skipped"]["gold: test responses of prompts without generations"] == 2 * 7
    # pool 0 has 8 test responses, pools 1-3 have 7; 3 drawn from each: every other one is counted.
    assert summary["skipped"]["gold: test responses not drawn (only 3 per prompt)"] == (8 - 3) + 3 * (7 - 3)

    chosen = read_gold(prepared, {"0", "1"}, 3, seed=5, skipped=Counter())
    again = read_gold(prepared, {"0", "1"}, 3, seed=5, skipped=Counter())
    other = read_gold(prepared, {"0", "1"}, 3, seed=6, skipped=Counter())
    assert chosen.texts == again.texts
    assert chosen.texts != other.texts


@pytest.mark.parametrize(
    "bad_line, field",
    [
        ({"prompt_id": 1, "prompt": "p", "sample_index": 0}, "text"),
        ({"prompt": "p", "sample_index": 0, "text": "t"}, "prompt_id"),
        ({"prompt_id": 1, "prompt": "p", "sample_index": "0", "text": "t"}, "sample_index"),
        ({"prompt_id": 1, "prompt": "p", "sample_index": 1, "text": "t", "quality": "high"}, "quality"),
        ({"prompt_id": 1, "prompt": "p", "sample_index": 0, "text": "dup"}, "sample_index"),
    ],
)
def test_bad_generation_line_names_file_line_and_field(tmp_path, bad_line, field):
    good = {"prompt_id": 1, "prompt": "p", "sample_index": 0, "text": "t", "model": "m"}
    path = write_jsonl(tmp_path / "g.jsonl", [good, bad_line])
    with pytest.raises(InputError) as err:
        read_generations(path)
    assert err.value.line == 2 and err.value.field == field
    assert "g.jsonl" in str(err.value)


def test_malformed_json_line_is_reported(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text('{"prompt_id": 1, "prompt": "p", "sample_index": 0, "text": "t"}\n{not json\n')
    with pytest.raises(InputError, match="line 2"):
        read_generations(path)


def test_cli_accepts_several_files_after_one_flag(tmp_path, onehot):
    from typer.testing import CliRunner

    from divtune.cli import app

    a = _generations(tmp_path / "a.jsonl", "a", 3, diverse=True)
    b = _generations(tmp_path / "b.jsonl", "b", 3, diverse=False)
    result = CliRunner().invoke(
        app, ["evaluate", "--generations", str(a), str(b), "--output", str(tmp_path / "e"), "--bootstrap", "20"]
    )
    assert result.exit_code == 0, result.output
    assert set(json.loads((tmp_path / "e" / "metrics.json").read_text())) == {"a", "b"}


@pytest.mark.slow
def test_real_data_gold_is_more_diverse_than_four_copies(tmp_path, minilm_path):
    """Shipped wp_scored, prepared by divtune prepare, real MiniLM embeddings."""
    from divtune.prepare import PrepareConfig, run_prepare

    prepared = tmp_path / "prep"
    # prepare's own deviation embedder is irrelevant here: the cheap one keeps the test fast.
    run_prepare(PrepareConfig(
        inputs=["shipped:wp_scored"], output=str(prepared), max_prompts=20, test_fraction=0.5,
        max_responses_per_prompt=6, embedders={"style": "stylometric"}, cache_dir=str(tmp_path / "cache"),
        show_progress=False,
    ))
    test_pools = {}
    for line in (prepared / "responses.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["split"] == "test":
            test_pools.setdefault(row["pool_id"], []).append(row["text"])
    # A few prompts suffice and keep MiniLM's work small (gold follows the prompts that have generations).
    usable = [pid for pid, texts in test_pools.items() if len(texts) >= 4][:4]
    assert len(usable) >= 2, "the prepared test split should have pools with 4+ responses"
    copies = [
        {"prompt_id": pid, "prompt": f"prompt of {pid}", "sample_index": i, "text": test_pools[pid][0], "model": "copies"}
        for pid in usable for i in range(4)
    ]
    gens = write_jsonl(tmp_path / "copies.jsonl", copies)
    out = run_evaluate(EvaluateConfig(generations=[str(gens)], gold=str(prepared), output=str(tmp_path / "e"),
                                      embedders={"semantic": str(minilm_path), "style": "stylometric"}, bootstrap=200,
                                      embed_cache_dir=str(tmp_path / "cache")))
    assert out["gold"]["n_prompts"] == len(usable)
    assert out["gold"]["semantic_diversity"] > out["copies"]["semantic_diversity"]
    assert out["gold"]["semantic_diversity"] > 0.2  # different human stories are far apart in MiniLM space
    assert out["copies"]["semantic_diversity"] == pytest.approx(0.0, abs=1e-5)
    assert out["gold"]["semantic_diversity_ci"][0] > out["copies"]["semantic_diversity_ci"][1]


def test_reward_model_scores_every_system_and_gold_in_one_call(tmp_path, onehot, monkeypatch):
    """Wiring of --reward: one batched score call; missing qualities filled; threshold = median gold quality."""
    calls = []

    class LengthReward:
        def score(self, prompts, responses, batch_size=64, show_progress=False):
            calls.append(len(responses))
            assert len(prompts) == len(responses)
            return np.array([len(r) / 100.0 for r in responses])

    monkeypatch.setattr("divtune.reward.model.RewardModel.load", classmethod(lambda cls, d, device=None: LengthReward()))
    prepared = _prepared_folder(tmp_path / "prep")
    rows = [
        # pools 1..3: every human text there is "human story P-I", 15 characters
        {"prompt_id": p, "prompt": f"prompt {p}", "sample_index": i, "text": "x" * (10 + 20 * i), "model": "m"}
        for p in range(1, 4) for i in range(4)
    ]
    gens = write_jsonl(tmp_path / "m.jsonl", rows)
    out = run_evaluate(EvaluateConfig(generations=[str(gens)], gold=str(prepared), reward=str(tmp_path / "rm"),
                                      output=str(tmp_path / "e"), embedders=CHEAP, bootstrap=50))
    assert calls == [12 + 12]  # 3 prompts x 4 samples, for the model and the gold row
    assert out["m"]["quality"] == pytest.approx(np.mean([0.1, 0.3, 0.5, 0.7]))
    gold_quality = len("human story 1-0") / 100.0
    assert out["gold"]["quality"] == pytest.approx(gold_quality)
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert summary["quality_threshold"] == pytest.approx(gold_quality)
    # Samples of length 50 and 70 pass the 0.15 threshold: two distinct texts per prompt -> diversity 1.
    assert out["m"]["effective_semantic_diversity"] == pytest.approx(1.0)


class CrowdEmbedder:
    """Texts with 'crowd' share one direction (a little spread apart); every other text is its own axis."""

    def __init__(self):
        self.name = "crowd"
        self.axes: dict[str, int] = {}

    def embed(self, texts, batch_size=32, show_progress=True):
        out = np.zeros((len(texts), 96), dtype=np.float32)
        for row, text in enumerate(texts):
            if "crowd" in text:
                out[row, 0] = 1.0
                out[row, 1 + sum(map(ord, text)) % 7] = 0.3
            else:
                out[row, 10 + self.axes.setdefault(text, len(self.axes))] = 1.0
        return out


def test_centrality_and_modes_of_typical_and_atypical_systems(tmp_path, monkeypatch):
    monkeypatch.setattr("divtune.embedders.load_embedder", lambda spec, cache_dir=None: CrowdEmbedder())
    responses = []
    for p in range(3):
        for i in range(6):
            responses.append({"pool_id": p, "split": "test", "index": i, "text": f"The crowd story {p} {i}"})
        responses.append({"pool_id": p, "split": "test", "index": 6, "text": f"I am a loner {p}"})
        responses.append({"pool_id": p, "split": "test", "index": 7, "text": f'"Odd one" {p}'})
    write_jsonl(tmp_path / "prep" / "responses.jsonl", responses)
    write_jsonl(tmp_path / "prep" / "test.jsonl", [{"pool_id": p, "prompt": f"prompt {p}", "chosen": "c", "rejected": "r"} for p in range(3)])

    def system(name, texts):
        rows = [{"prompt_id": p, "prompt": f"prompt {p}", "sample_index": i, "text": t.format(p=p, i=i), "model": name}
                for p in range(3) for i, t in enumerate(texts)]
        return str(write_jsonl(tmp_path / f"{name}.jsonl", rows))

    typical = system("typical", ["The crowd again {p} {i}"] * 4)
    odd = system("odd", ['"Hello" {p} {i}', '"Bye" {p} {i}', "You again {p} {i}", '"Hm" {p} {i}'])
    out = run_evaluate(EvaluateConfig(
        generations=[typical, odd], gold=str(tmp_path / "prep"), output=str(tmp_path / "e"),
        embedders=CHEAP, bootstrap=50, centrality=True, modes=True,
    ))
    assert out["typical"]["centrality"] > 0.5 > -0.5 > out["odd"]["centrality"]
    assert -1.5 < out["gold"]["centrality"] < 1.5  # human responses sit around their own mean
    assert out["typical"]["typical_mode_share"] == 1.0 and out["odd"]["typical_mode_share"] == 0.0
    assert out["typical"]["mode_entropy"] == 0.0 and out["odd"]["mode_entropy"] == pytest.approx(0.8112781)
    assert out["typical"]["modes_seen"] == 1.0 and out["odd"]["modes_seen"] == 2.0
    modes = json.loads((tmp_path / "e" / "modes.json").read_text())
    assert modes["typical_mode"] == "other"
    assert modes["counts"]["odd"] == {"dialogue": 9, "first_person": 0, "second_person": 3, "other": 0}
    lines = [json.loads(line) for line in (tmp_path / "e" / "per_prompt.jsonl").read_text().splitlines()]
    assert all("centrality" in line and "modes_seen" in line for line in lines)

    from divtune.reporting.run import run_report

    run_report([tmp_path / "e"], tmp_path / "r", baseline="typical")
    report = (tmp_path / "r" / "report.md").read_text()
    assert "## Surface modes of the samples" in report and "| odd | 75.0% | 0.0% | 25.0% | 0.0% | 12 |" in report
    assert "centrality ↓" in report and (tmp_path / "r" / "modes.png").is_file()


def test_without_the_options_no_optional_metric_appears(tmp_path, onehot):
    gens = _generations(tmp_path / "a.jsonl", "a", 3, diverse=True)
    out = run_evaluate(EvaluateConfig(generations=[str(gens)], output=str(tmp_path / "e"), embedders=CHEAP, bootstrap=20))
    assert not set(OPTIONAL_METRIC_KEYS) & set(out["a"])
    assert not (tmp_path / "e" / "modes.json").exists()


def test_length_matched_gold_cuts_human_texts_to_the_samples_token_count(tmp_path, onehot, tiny_tokenizer):
    prepared = _prepared_folder(tmp_path / "prep")
    long_human = " ".join(["dragon"] * 40)
    responses = [json.loads(line) for line in (prepared / "responses.jsonl").read_text().splitlines()]
    for row in responses:
        if row["split"] == "test":
            row["text"] = f"{long_human} {row['pool_id']}-{row['index']}"
    write_jsonl(prepared / "responses.jsonl", responses)
    lengths = {0: 5, 1: 9}
    rows = [{"prompt_id": p, "prompt": f"prompt {p}", "sample_index": i, "model": "m",
             "text": " ".join(["sea"] * (lengths[p] + (i - 1)))}  # token counts around the target, median = target
            for p in (0, 1) for i in range(3)]
    gens = write_jsonl(tmp_path / "m.jsonl", rows)
    sample_lengths = {p: sorted(len(tiny_tokenizer(r["text"], add_special_tokens=False)["input_ids"])
                                for r in rows if r["prompt_id"] == p) for p in (0, 1)}
    matched = length_matched_gold(
        read_gold(prepared, {"0", "1"}, 3, seed=0, skipped=Counter()), [read_generations(gens)], tiny_tokenizer
    )
    assert matched.name == "gold-matched" and matched.is_gold
    for p in (0, 1):
        target = sample_lengths[p][1]
        for text, origin in zip(matched.texts[str(p)], matched.origins[str(p)]):
            assert origin.startswith(text.split()[0])
            assert len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"]) <= target
            assert len(tiny_tokenizer(origin, add_special_tokens=False)["input_ids"]) > target
    with pytest.raises(Exception, match="gold_matched needs"):
        run_evaluate(EvaluateConfig(generations=[str(gens)], output=str(tmp_path / "e"), embedders=CHEAP,
                                    gold_matched="smollm2"))


# ---------------------------------------------------------------- distinct-k, chatbot share, extra spaces


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_distinct_k_counts_the_classes_of_darlings_partition():
    angle = lambda deg: _unit([np.cos(np.radians(deg)), np.sin(np.radians(deg)), 0.0])  # noqa: E731
    table = {
        "a1": angle(0), "a2": angle(5), "a3": angle(10),   # one class: cosines >= 0.98
        "b1": angle(80), "b2": angle(84),                  # a second class, far from the first
        "c": _unit([0.0, 0.0, 1.0]),                       # alone
        # a chain: x~y (20 deg, cos 0.94) and y~z (20 deg), x and z 40 deg apart (cos 0.77): one class
        "x": angle(180), "y": angle(200), "z": angle(220),
    }
    groups = [["a1", "a2", "a3", "b1", "b2", "c"], ["x", "y", "z"], ["x", "z"], ["a1", "a1"], []]
    values = distinct_k_per_prompt(groups, table, 0.9)
    assert values[:4].tolist() == [3.0, 1.0, 2.0, 1.0]
    assert np.isnan(values[4])
    # The threshold is DARLING's: at 0.999 every distinct vector is its own class; at -1 all are one.
    assert distinct_k_per_prompt(groups[:1], table, 0.999).tolist() == [6.0]
    assert distinct_k_per_prompt(groups[:1], table, -1.0).tolist() == [1.0]
    assert DISTINCT_K_THRESHOLD == 0.9


class _ConstantEmbedder:
    name = "constant"

    def embed(self, texts, batch_size=32, show_progress=True):
        return np.ones((len(texts), 4), dtype=np.float32)


def test_evaluate_reports_distinct_k_chatbot_share_and_extra_spaces(tmp_path, monkeypatch):
    embedders = {"onehot": OneHotEmbedder(), "flat": _ConstantEmbedder()}
    monkeypatch.setattr("divtune.embedders.load_embedder", lambda spec, cache_dir=None: embedders[spec])
    story = ["The sea rose at night.", "A robot sang to the moon.", "The king wept.", "The king wept."]
    replies = ["Sure! Here's a story about the sea.", "The sea rose at night.", '"Sure," she said.', "As an AI, I can help."]
    rows = [{"prompt_id": "p0", "text": t, "model": "stories"} for t in story]
    rows += [{"prompt_id": "p0", "text": t, "model": "chatty"} for t in replies]
    write_jsonl(tmp_path / "stories.jsonl", rows[:4])
    write_jsonl(tmp_path / "chatty.jsonl", rows[4:])
    out = run_evaluate(EvaluateConfig(
        generations=[str(tmp_path / "stories.jsonl"), str(tmp_path / "chatty.jsonl")], output=str(tmp_path / "e"),
        embedders={"semantic": "onehot", "style": "onehot"}, extra_semantic={"flat": "flat"}, bootstrap=20,
    ))
    assert out["stories"]["distinct_k"] == 3.0 and out["chatty"]["distinct_k"] == 4.0  # one-hot: distinct texts differ
    assert out["stories"]["chatbot_share"] == 0.0 and out["chatty"]["chatbot_share"] == 0.5
    assert out["stories"]["semantic_diversity"] > 0.5
    assert out["stories"]["semantic_diversity_flat"] == pytest.approx(0.0, abs=1e-9)
    assert out["stories"]["vendi_semantic_flat"] == pytest.approx(1.0, abs=1e-6)
    assert "centrality_flat" not in out["stories"]  # centrality only when asked for
    line = json.loads((tmp_path / "e" / "per_prompt.jsonl").read_text().splitlines()[0])
    assert {"distinct_k", "chatbot_share", "semantic_diversity_flat"} <= set(line)

    from divtune.reporting.run import run_report

    run_report([tmp_path / "e"], tmp_path / "r", baseline="stories", n_boot=20)
    report = (tmp_path / "r" / "report.md").read_text()
    assert "| distinct_k ↑ |" in report and "| chatbot_share |" in report and "| semantic_diversity_flat ↑ |" in report
    with pytest.raises(ValueError, match="extra_semantic name"):
        EvaluateConfig(generations=[], output="x", extra_semantic={"Bad Name": "minilm"})


def test_a_report_reads_evaluation_folders_older_than_the_newer_metrics(tmp_path, onehot):
    """A folder written before distinct_k and chatbot_share (its metrics.json and lines lack them) still reports."""
    gens = _generations(tmp_path / "a.jsonl", "a", 3, diverse=True)
    gens_b = _generations(tmp_path / "b.jsonl", "b", 3, diverse=False)
    run_evaluate(EvaluateConfig(generations=[str(gens), str(gens_b)], output=str(tmp_path / "e"), embedders=CHEAP,
                                bootstrap=20))
    table = json.loads((tmp_path / "e" / "metrics.json").read_text())
    old = {name: {k: v for k, v in row.items() if not k.startswith(tuple(NEWER_METRIC_KEYS))}
           for name, row in table.items()}
    (tmp_path / "e" / "metrics.json").write_text(json.dumps(old))
    lines = [json.loads(l) for l in (tmp_path / "e" / "per_prompt.jsonl").read_text().splitlines()]
    (tmp_path / "e" / "per_prompt.jsonl").write_text("".join(
        json.dumps({k: v for k, v in l.items() if k not in NEWER_METRIC_KEYS}) + "\n" for l in lines))
    from divtune.reporting.run import run_report

    run_report([tmp_path / "e"], tmp_path / "r", baseline="b", n_boot=20)
    report = (tmp_path / "r" / "report.md").read_text()
    assert "semantic_diversity ↑" in report and "distinct_k" not in report.split("## Notes")[0]
