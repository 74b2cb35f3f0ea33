"""`divtune evaluate --gold FILE`: a raw human file (any layout prepare reads) as the gold row,
and generation files from other tools (only prompt_id or prompt, and text)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import write_jsonl
from divtune.evaluation.config import EvaluateConfig
from divtune.evaluation.gold_file import read_gold_file
from divtune.evaluation.run import run_evaluate
from divtune.evaluation.systems import read_generations
from divtune.io import InputError

CHEAP = {"semantic": "stylometric", "style": "stylometric"}
PROMPTS = {
    "w1": "A dragon who is afraid of fire.",
    "w2": "The last lighthouse keeper on Earth.",
    "w3": "A robot learns to paint.",
    "w4": "Two strangers share an umbrella.",
}
STORY_WORDS = "the sea was dark and a light rose slowly while the keeper counted ships one by one until dawn".split()


def _story(seed: int, n: int = 30) -> str:
    return " ".join(STORY_WORDS[(seed * 7 + i * (seed % 5 + 1)) % len(STORY_WORDS)] for i in range(n)) + f" ({seed})"


def _human_csv(path: Path, with_ids: bool = True) -> Path:
    rows = []
    for n, (pid, prompt) in enumerate(PROMPTS.items()):
        count = {"w1": 4, "w2": 3, "w3": 2, "w4": 5}[pid]
        for i in range(count):
            rows.append({"prompt_id": pid, "prompt": prompt, "response": _story(10 * n + i), "score": i})
    rows.append({"prompt_id": "w3", "prompt": PROMPTS["w3"], "response": "[deleted]", "score": 0})
    duplicate = next(r["response"] for r in rows if r["prompt_id"] == "w3")
    rows.append({"prompt_id": "w3", "prompt": PROMPTS["w3"], "response": duplicate, "score": 9})
    with open(path, "w", newline="") as handle:
        fields = ["prompt_id", "prompt", "response", "score"] if with_ids else ["prompt", "response", "score"]
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _other_tool_files(tmp_path: Path) -> tuple[Path, Path]:
    # Tool A: prompt ids only (no prompt text), no sample_index, no model field; "zz" is not in the human file.
    a = write_jsonl(tmp_path / "tool_a.jsonl", [
        {"prompt_id": pid, "text": _story(100 + 3 * j + i)} for j, pid in enumerate(["w1", "w2", "w3", "zz"])
        for i in range(3)
    ])
    # Tool B: prompt text only, its own model name; one prompt that the human file lacks.
    b = write_jsonl(tmp_path / "tool_b.jsonl", [
        {"prompt": prompt, "text": _story(200 + 3 * j + i), "model": "tool-b"}
        for j, prompt in enumerate([PROMPTS["w1"], PROMPTS["w2"], "An unknown prompt."]) for i in range(3)
    ])
    return a, b


def test_two_foreign_systems_and_a_flat_human_file(tmp_path):
    from typer.testing import CliRunner

    from divtune.cli import app

    a, b = _other_tool_files(tmp_path)
    human = _human_csv(tmp_path / "human.csv")
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, [
        "evaluate", "--generations", str(a), str(b), "--gold", str(human), "--output", str(out),
        "--bootstrap", "20", "--embedder", "semantic=stylometric",
    ])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"tool_a", "tool-b", "gold"}
    summary = json.loads((out / "summary.json").read_text())
    matching = summary["gold_matching"]
    assert (matching["matched_by_id"], matching["matched_by_text"], matching["unmatched"]) == (3, 2, 2)
    assert matching["gold_prompts"] == 4 and matching["layout"] == "flat"
    # w3 keeps 2 of its human responses after cleaning ([deleted] and the duplicate dropped): fewer than 3.
    assert summary["skipped"]["gold: responses dropped by cleaning (removed_or_deleted)"] == 1
    assert summary["skipped"]["gold: responses dropped by cleaning (duplicate_in_prompt)"] == 1
    assert summary["skipped"]["gold: prompts with fewer than 3 human responses"] == 1
    assert summary["skipped"]["gold: prompts of the file without generations"] == 1  # w4
    assert metrics["gold"]["n_prompts"] == 2 and metrics["gold"]["n_samples"] == 6

    rows = [json.loads(line) for line in (out / "per_prompt.jsonl").read_text().splitlines()]
    prompts_of = {name: {str(r["prompt_id"]) for r in rows if r["system"] == name} for name in metrics}
    # Tool B named its prompts by text; matched by text, they take tool A's ids, so all three share w1 and w2.
    assert prompts_of["gold"] == {"w1", "w2"}
    assert prompts_of["tool-b"] == {"w1", "w2", "An unknown prompt."}
    assert prompts_of["tool_a"] == {"w1", "w2", "w3", "zz"}


def test_gold_file_without_ids_matches_by_text_and_draws_with_the_seed(tmp_path):
    a, b = _other_tool_files(tmp_path)
    human = _human_csv(tmp_path / "human.csv", with_ids=False)

    def gold_texts(seed):
        systems = [read_generations(a), read_generations(b)]
        gold, report = read_gold_file(human, systems, 3, seed, skipped=__import__("collections").Counter())
        return gold, report, systems

    gold, report, systems = gold_texts(0)
    # Tool A gives no prompt text, so nothing of it can match a file without ids.
    assert (report["matched_by_id"], report["matched_by_text"]) == (0, 2)
    assert set(gold.texts) == {PROMPTS["w1"], PROMPTS["w2"]}  # keyed by tool B's own keys
    assert len(gold.texts[PROMPTS["w1"]]) == 3 and set(gold.texts[PROMPTS["w1"]]) < {_story(i) for i in range(4)}
    assert gold_texts(0)[0].texts == gold.texts
    assert gold_texts(1)[0].texts != gold.texts  # w1 has 4 responses: another seed draws another 3


def test_foreign_generation_lines_need_text_and_a_prompt_key(tmp_path):
    ok = write_jsonl(tmp_path / "ok.jsonl", [{"prompt": "p", "text": "one"}, {"prompt": "p", "text": "two"}])
    system = read_generations(ok)
    assert system.texts == {"p": ["one", "two"]} and system.keyed_by == "prompt" and system.name == "ok"
    cases = [
        ([{"text": "no prompt at all"}], 1, "prompt_id"),
        ([{"prompt_id": 1, "text": "a"}, {"prompt": "p", "text": "b"}], 2, "prompt_id"),
        ([{"prompt_id": 1, "text": "a", "sample_index": 0}, {"prompt_id": 1, "text": "b"}], 2, "sample_index"),
        ([{"prompt_id": 1, "prompt": 5, "text": "a"}], 1, "prompt"),
    ]
    for rows, line, field in cases:
        path = write_jsonl(tmp_path / "bad.jsonl", rows)
        with pytest.raises(InputError) as err:
            read_generations(path)
        assert (err.value.line, err.value.field) == (line, field), rows
        assert "bad.jsonl" in str(err.value)


def test_bad_gold_files_name_file_line_and_field(tmp_path):
    a, _ = _other_tool_files(tmp_path)
    bad = tmp_path / "human.csv"
    bad.write_text("prompt_id,prompt,response,score\nw1,P,a story,3\nw1,P,another,lots\n")
    with pytest.raises(InputError) as err:
        run_evaluate(EvaluateConfig(generations=[str(a)], gold=str(bad), output=str(tmp_path / "e"), embedders=CHEAP))
    assert err.value.line == 3 and err.value.field == "score" and "human.csv" in str(err.value)
    assert not (tmp_path / "e" / "metrics.json").exists()

    unrelated = write_jsonl(tmp_path / "h.jsonl", [{"prompt": "Something else", "response": _story(i), "score": 1}
                                                 for i in range(4)])
    with pytest.raises(InputError, match="0 generation prompts matched by id and 0 by prompt text"):
        run_evaluate(EvaluateConfig(generations=[str(a)], gold=str(unrelated), output=str(tmp_path / "e2"),
                                    embedders=CHEAP))
    with pytest.raises(InputError, match="divtune prepare"):
        run_evaluate(EvaluateConfig(generations=[str(a)], gold=str(tmp_path), output=str(tmp_path / "e3"),
                                    embedders=CHEAP))


def test_reward_scoring_needs_prompt_texts(tmp_path):
    only_ids = write_jsonl(tmp_path / "ids.jsonl", [{"prompt_id": "q", "text": t} for t in ("a b c", "d e f")])
    with pytest.raises(InputError, match="no prompt text"):
        run_evaluate(EvaluateConfig(generations=[str(only_ids)], output=str(tmp_path / "e"), embedders=CHEAP,
                                    reward=str(tmp_path / "no-reward-model-needed-before-this-check")))
