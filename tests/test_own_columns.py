"""Issue 24.5: a user's own column names work past `prepare`: `generate --prompts` and
`evaluate --gold` read the same files, layouts and `--column` mappings through prepare's readers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from _cli_support import run_cli
from conftest import write_jsonl
from divtune.data import load_pools
from divtune.generation.prompts import read_prompts

TITLES = ["[WP] A dragon who is afraid of fire.", "The last lighthouse keeper.", "A robot learns to paint."]
WORDS = "the sea was dark and a light rose slowly while the keeper counted ships one by one until dawn".split()
COLUMNS = {"prompt": "title", "response": "story", "score": "votes"}


def _story(seed: int, n: int = 30) -> str:
    return " ".join(WORDS[(seed * 7 + i * (seed % 5 + 1)) % len(WORDS)] for i in range(n)) + f" ({seed})"


def _stories_csv(path: Path) -> Path:
    """The user's file: one row per story, their own column names, 3 stories per title."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["title", "story", "votes"])
        for t, title in enumerate(TITLES):
            for i in range(3):
                writer.writerow([title, _story(10 * t + i), i])
    return path


def _mapping_args(columns: dict[str, str]) -> list[str]:
    return [arg for name, source in columns.items() for arg in ("--column", f"{name}={source}")]


def test_generate_reads_each_prompt_of_a_csv_once_with_prepares_pool_id(tmp_path):
    data = _stories_csv(tmp_path / "stories.csv")
    prompts = read_prompts(data, columns=COLUMNS)
    assert [p.prompt for p in prompts] == TITLES  # the header is no prompt, and each title comes once
    pools, _ = load_pools([data], columns=COLUMNS)
    assert [p.prompt_id for p in prompts] == [pool.pool_id for pool in pools]


def test_a_prompt_table_needs_only_a_prompt_column(tmp_path):
    data = tmp_path / "prompts.csv"
    data.write_text("prompt_id,headline\nq1,A storm at sea.\nq2,A quiet morning.\n")
    prompts = read_prompts(data, columns={"prompt": "headline"})
    assert [(p.prompt_id, p.prompt) for p in prompts] == [("q1", "A storm at sea."), ("q2", "A quiet morning.")]
    assert read_prompts(data, columns={"prompt": "headline"}, max_prompts=1)[0].prompt_id == "q1"


def test_a_reddit_jsonl_gives_prepares_prompts(tmp_path):
    data = write_jsonl(tmp_path / "posts.jsonl", [
        {"post_id": "a1", "post_title": "[WP] A dragon.", "post_text": "Be brief.", "comment_texts": ["x"],
         "comment_scores": [1]},
        {"post_id": "a2", "post_title": "[EU] A knight.", "post_text": "", "comment_texts": ["y"], "comment_scores": [2]},
    ])
    assert [(p.prompt_id, p.prompt) for p in read_prompts(data)] == [("a1", "A dragon.\nBe brief."), ("a2", "A knight.")]


def test_generate_on_a_csv_without_a_prompt_column_names_the_mapping_to_give(tmp_path, monkeypatch, capsys):
    data = _stories_csv(tmp_path / "stories.csv")
    output = tmp_path / "gen.jsonl"
    code, out = run_cli(["generate", "--model", "smollm2", "--prompts", data, "--output", output],
                        monkeypatch, capsys)
    assert code == 2
    assert out == (f"error: {data}, line 1, field 'prompt': missing column; the columns are ['story', 'title', 'votes']; "
                   "map one with --column prompt=SOURCE\n")
    assert not output.exists()


def test_generate_names_a_misspelt_mapping(tmp_path, monkeypatch, capsys):
    data = _stories_csv(tmp_path / "stories.csv")
    code, out = run_cli(["generate", "--model", "smollm2", "--prompts", data, "--output", tmp_path / "gen.jsonl",
                         "--column", "prompt=titel"], monkeypatch, capsys)
    assert code == 2
    assert out.endswith("no column 'titel' (from --column prompt=titel); the columns are ['story', 'title', 'votes']; "
                        "did you mean 'title'?\n")


def test_generate_runs_on_the_users_csv(tmp_path, monkeypatch, capsys, tiny_lm_dir):
    data = _stories_csv(tmp_path / "stories.csv")
    output = tmp_path / "gen.jsonl"
    code, out = run_cli(["generate", "--model", tiny_lm_dir, "--prompts", data, "--output", output, "--num-samples", "2",
                         "--max-new-tokens", "3", "--device", "cpu", "--column", "prompt=title"], monkeypatch, capsys)
    assert code == 0, out
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted({line["prompt"] for line in lines}) == sorted(TITLES) and len(lines) == 6


def test_evaluate_gold_takes_the_users_columns(tmp_path, monkeypatch, capsys):
    data = _stories_csv(tmp_path / "stories.csv")
    pools, _ = load_pools([data], columns=COLUMNS)
    generations = write_jsonl(tmp_path / "sys.jsonl", [
        {"prompt_id": pool.pool_id, "prompt": pool.prompt, "text": _story(100 + 3 * n + i), "model": "sys"}
        for n, pool in enumerate(pools) for i in range(3)
    ])
    out = tmp_path / "eval"
    code, text = run_cli(["evaluate", "--generations", generations, "--gold", data, "--output", out, "--bootstrap", "20",
                          "--embedder", "semantic=stylometric", *_mapping_args(COLUMNS)], monkeypatch, capsys)
    assert code == 0, text
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"sys", "gold"} and metrics["gold"]["n_prompts"] == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gold_matching"]["matched_by_id"] == 3 and summary["gold_matching"]["layout"] == "flat"


def test_evaluate_gold_without_the_mapping_says_which_to_give(tmp_path, monkeypatch, capsys):
    data = _stories_csv(tmp_path / "stories.csv")
    generations = write_jsonl(tmp_path / "sys.jsonl", [{"prompt": TITLES[0], "text": _story(i)} for i in range(2)])
    code, text = run_cli(["evaluate", "--generations", generations, "--gold", data, "--output", tmp_path / "eval",
                          "--column", "prompt=title", "--column", "response=stroy"], monkeypatch, capsys)
    assert code == 2
    assert "no column 'stroy' (from --column response=stroy)" in text and "did you mean 'story'?" in text
    assert not (tmp_path / "eval").exists()


def test_evaluate_refuses_a_mapping_for_a_prepared_folder(tmp_path, monkeypatch, capsys):
    prepared = tmp_path / "prep"
    prepared.mkdir()
    (prepared / "responses.jsonl").write_text("")
    generations = write_jsonl(tmp_path / "sys.jsonl", [{"prompt": "P", "text": _story(i)} for i in range(2)])
    code, text = run_cli(["evaluate", "--generations", generations, "--gold", prepared, "--output", tmp_path / "eval",
                          "--column", "prompt=title"], monkeypatch, capsys)
    assert code == 2
    assert text == f"error: --column and --format describe a raw --gold data file; {prepared} is a prepared folder\n"


@pytest.mark.parametrize("command", ["generate", "evaluate"])
def test_the_commands_have_column_and_format(command):
    import typer

    from divtune.cli import app

    options = {o for p in typer.main.get_command(app).commands[command].params for o in p.opts}
    assert {"--column", "--format"} <= options
