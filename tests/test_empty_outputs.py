"""Issue 24.4: a stage that produces nothing stops (exit 2) with the counts of why and writes
nothing; one that produces very little warns with the numbers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from _cli_support import run_cli
from divtune.prepare import PrepareConfig, run_prepare
from divtune.stage_yield import MIN_TRAIN_PAIRS, prepare_problem, prepare_warning

FIXTURES = Path(__file__).parent / "fixtures" / "verbalized"


def _story(seed: int, words: int = 120) -> str:
    vocabulary = "the dragon knight sea robot paint light music home story door city hills dawn sailor".split()
    return " ".join(vocabulary[(seed * 7 + i * (seed + 3)) % len(vocabulary)] for i in range(words)) + f" {seed}."


def _flat(path: Path, rows: list[tuple[str, str, int]]) -> Path:
    path.write_text("".join(json.dumps({"prompt": p, "response": r, "score": s}) + "\n" for p, r, s in rows))
    return path


@pytest.mark.parametrize("rows, reasons", [
    # every response too short
    ([(f"P{i}", f"a short reply {j}", j) for i in range(3) for j in range(3)],
     ["responses dropped: 9 too_short", "3 prompts had no response left", "(lower --min-words)"]),
    # one response per prompt
    ([(f"P{i}", _story(i), 1) for i in range(4)],
     ["prompts without a pair: 4 fewer than 2 responses", "(each prompt needs 2 or more responses)"]),
    # every prompt's responses are the same text
    ([(f"P{i}", _story(i), j) for i in range(4) for j in range(3)],
     ["responses dropped: 8 duplicate_in_prompt", "fewer than 2 responses"]),
])
def test_prepare_that_yields_no_pair_stops_with_the_counts_and_writes_nothing(tmp_path, monkeypatch, capsys,
                                                                             rows, reasons):
    data = _flat(tmp_path / "votes.jsonl", rows)
    code, out = run_cli(["prepare", "--input", data, "--output", tmp_path / "out", "--embedder", "style=stylometric",
                         "--test-fraction", "0.25"], monkeypatch, capsys)
    assert code == 2, out
    error = out.strip().splitlines()[-1]
    assert error.startswith(f"error: {data}: no preference pairs to train on (0 train, ")
    for reason in reasons:
        assert reason in error, error
    assert not (tmp_path / "out").exists()


def test_prepare_with_few_pairs_warns_with_the_numbers(tmp_path, caplog):
    # 4 prompts x 3 responses, scores 10 apart: a handful of pairs, far fewer than MIN_TRAIN_PAIRS.
    rows = [(f"P{i}", _story(10 * i + j), 10 * j) for i in range(4) for j in range(3)]
    rows.append(("P9", "too short to count", 1))
    data = _flat(tmp_path / "votes.jsonl", rows)
    cfg = PrepareConfig(inputs=[str(data)], output=str(tmp_path / "out"), embedders={"style": "stylometric"},
                        test_fraction=0.25, cache_dir=str(tmp_path / "cache"), show_progress=False)
    with caplog.at_level(logging.WARNING, logger="divtune.prepare"):
        summary = run_prepare(cfg)
    train, test = summary["pairs"]["train"], summary["pairs"]["test"]
    assert 0 < train < MIN_TRAIN_PAIRS
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"only {train} train pairs ({test} test), fewer than {MIN_TRAIN_PAIRS}: ")
    assert "5 prompts and 13 responses read" in warning and "1 too_short" in warning
    assert (tmp_path / "out" / "train.jsonl").is_file()


def _summary(train: int, test: int = 0) -> dict:
    return {
        "prompts": {"read": 5, "dropped": {}},
        "responses": {"read": 20, "dropped": {}},
        "pools_without_pairs": {"train": {}, "test": {}},
        "pairs": {"train": train, "test": test},
    }


@pytest.mark.parametrize("train, problem, warning", [(0, True, False), (1, False, True),
                                                     (MIN_TRAIN_PAIRS - 1, False, True),
                                                     (MIN_TRAIN_PAIRS, False, False)])
def test_the_thresholds(train, problem, warning):
    assert (prepare_problem(_summary(train, 3)) is not None) == problem
    assert (prepare_warning(_summary(train, 3)) is not None) == warning


# ---------------------------------------------------------------- verbalized generate


PROMPTS = ["Write a story about a dragon.", "The knight rode out."]


class ProseSampler:
    """Every reply is prose without the requested structure."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls = 0

    def count_tokens(self, text):
        return len(text.split())

    def sample(self, messages, seed, max_new_tokens):
        self.calls += len(messages)
        return [((FIXTURES / "prose_only.txt").read_text(), 5) for _ in messages]


def test_verbalized_generate_whose_replies_cannot_be_parsed_stops_with_the_count(
        tmp_path, monkeypatch, capsys, tiny_tokenizer):
    import divtune.generation.run as gen

    sampler = ProseSampler(tiny_tokenizer)
    monkeypatch.setattr(gen, "HFSampler", lambda cfg: sampler)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    model = tmp_path / "model"
    model.mkdir()  # never loaded: the sampler is scripted
    output = tmp_path / "gen" / "v.jsonl"
    code, out = run_cli(["generate", "--model", model, "--prompts", prompts, "--output", output,
                         "--strategy", "verbalized", "--num-samples", "2", "--set", "verbalized.max_calls=2"],
                        monkeypatch, capsys)
    assert code == 2, out
    assert sampler.calls == 4  # 2 prompts x 2 calls, every one unparsed
    error = out.strip().splitlines()[-1]
    assert error.startswith(f"error: {output}: no sample: none of the 4 replies could be read as responses (")
    assert "4 reply held no JSON or tagged responses" in error
    assert not output.exists()
