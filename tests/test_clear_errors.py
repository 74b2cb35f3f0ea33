"""Issue 24.7: the errors a new user meets name what is wrong where they can see it:
the misspelt column (with the columns present), the CSV header line, the line and
column of a non-UTF-8 byte, the closest setting name, and the kind of folder given."""

from __future__ import annotations

import json

import pytest

from _cli_support import run_cli
from divtune.io import undecodable_location

STORY = "word " * 120


def _csv(path, header: str, rows: list[str]):
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_a_misspelt_column_mapping_is_named_with_the_columns_present(tmp_path, monkeypatch, capsys):
    data = _csv(tmp_path / "stories.csv", "title,story,votes", [f'"Prompt {i}","{STORY}",{i}' for i in range(4)])
    code, out = run_cli(["prepare", "--input", data, "--output", tmp_path / "out", "--column", "prompt=title",
                         "--column", "response=stroy", "--column", "score=votes"], monkeypatch, capsys)
    assert code == 2
    assert out == (f"error: {data}, line 1, field 'stroy': no column 'stroy' (from --column response=stroy); "
                   "the columns are ['story', 'title', 'votes']; did you mean 'story'?\n")
    assert not (tmp_path / "out").exists()


def test_a_column_missing_from_a_csv_is_located_at_its_header(tmp_path, monkeypatch, capsys):
    # The first record spans three lines: the header, not the record's last line, lacks the column.
    data = _csv(tmp_path / "flat.csv", "prompt,text,score", ['"P","first line\nsecond\nthird",3', '"P","x",1'])
    code, out = run_cli(["prepare", "--input", data, "--output", tmp_path / "out", "--format", "flat"],
                        monkeypatch, capsys)
    assert code == 2
    assert out.startswith(f"error: {data}, line 1, field 'response': missing column; the columns are "
                          "['prompt', 'score', 'text']")
    assert "--column response=" in out


def test_a_layout_that_lacks_one_column_says_which(tmp_path, monkeypatch, capsys):
    data = _csv(tmp_path / "flat.csv", "prompt,respons,score", ['"P","first\nsecond",3'])
    code, out = run_cli(["prepare", "--input", data, "--output", tmp_path / "out"], monkeypatch, capsys)
    assert code == 2
    assert out.startswith(f"error: {data}, line 1: cannot tell the layout")
    assert out.rstrip().endswith("closest: flat, which lacks 'response'; did you mean 'respons'?")


@pytest.mark.parametrize("name, content, line, column", [
    ("votes.csv", b"prompt,response,score\nP,ok,1\nP,\"caf\xe9 au lait\",2\n", 3, 7),
    ("votes.jsonl", b'{"prompt": "P", "response": "ok", "score": 1}\n{"prompt": "P", "response": "caf\xe9", "score": 2}\n',
     2, 33),
])
def test_non_utf8_input_is_located_by_line_and_column(tmp_path, monkeypatch, capsys, name, content, line, column):
    data = tmp_path / name
    data.write_bytes(content)
    code, out = run_cli(["prepare", "--input", data, "--output", tmp_path / "out"], monkeypatch, capsys)
    assert code == 2
    assert out == f"error: {data}, line {line}: undecodable byte 0xe9 at column {column} (not UTF-8; save the file as UTF-8)\n"


def test_undecodable_location_counts_characters_not_bytes():
    # "é" is two bytes in UTF-8 but one column; a byte-order mark is no column at all.
    assert undecodable_location("é\nxé".encode() + b"\xff") == (2, 3, 0xFF)
    assert undecodable_location(b"\xef\xbb\xbfab\xfe") == (1, 3, 0xFE)
    assert undecodable_location("fine".encode()) is None


@pytest.mark.parametrize("command, setting, suggestion", [
    (["train", "--data", "d", "--output", "o"], "max_step=1", "max_step: not a setting of this stage; did you mean 'max_steps'?"),
    (["train", "--data", "d", "--output", "o"], "lora.alhpa=8", "lora.alhpa: not a setting of this stage; did you mean 'alpha'?"),
    (["train", "--data", "d", "--output", "o"], "training.learning_rat=1",
     "training: not TrainingArguments/TRL config fields: learning_rat; did you mean 'learning_rate'?"),
    (["prepare", "--input", "x.jsonl", "--output", "o"], "min_word=3", "min_word: not a setting of this stage; did you mean 'min_words'?"),
])
def test_a_misspelt_setting_gets_the_closest_name(tmp_path, monkeypatch, capsys, command, setting, suggestion):
    monkeypatch.chdir(tmp_path)
    code, out = run_cli([*command, "--set", setting], monkeypatch, capsys)
    assert code == 2
    assert out == f"error: {suggestion}\n"


def test_a_setting_with_no_close_name_gets_no_guess(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["prepare", "--input", "x.jsonl", "--output", "o", "--set", "zzz=1"], monkeypatch, capsys)
    assert (code, out) == (2, "error: zzz: not a setting of this stage\n")


def _marked(folder, stage: str, finished: bool = True):
    folder.mkdir(parents=True)
    marker = ".divtune-done.json" if finished else ".divtune-run.json"
    (folder / marker).write_text(json.dumps({"stage": stage, "settings_hash": "x"}))
    return folder


@pytest.mark.parametrize("stage, finished", [("prepare", True), ("evaluate", True), ("reward", False)])
def test_export_names_the_kind_of_folder_it_was_given(tmp_path, monkeypatch, capsys, stage, finished):
    folder = _marked(tmp_path / "run", stage, finished)
    code, out = run_cli(["export", folder, "--output", tmp_path / "exported"], monkeypatch, capsys)
    assert code == 2
    state = "a finished" if finished else "an unfinished"
    assert out == (f"error: {folder}: holds {state} `divtune {stage}` run, not a training run; "
                   "export takes the output folder of a finished `divtune train` run\n")
    assert not (tmp_path / "exported").exists()


def test_export_of_an_experiment_points_at_its_models(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "exp"
    (folder / "models" / "ddpo").mkdir(parents=True)
    (folder / "models" / "dpo").mkdir()
    (folder / ".divtune-run.json").write_text(json.dumps({"stage": "experiment"}))
    code, out = run_cli(["export", folder, "--output", tmp_path / "exported"], monkeypatch, capsys)
    assert code == 2
    assert out.rstrip().endswith(f"its trained models are in {folder / 'models'}/NAME (ddpo, dpo)")
