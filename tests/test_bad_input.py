"""Every malformed input gets one clear error naming file, line/row and field;
--skip-invalid counts bad rows instead."""

from __future__ import annotations

import gzip
import json

import pytest

from divtune.data import load_pools
from divtune.io import InputError

GOOD = {"post_title": "[WP] T", "post_text": "", "comment_texts": ["a", "b"], "comment_scores": [1, 2]}


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _error(path, **kwargs) -> InputError:
    with pytest.raises(InputError) as info:
        load_pools([path], **kwargs)
    return info.value


def test_malformed_line(tmp_path):
    path = _write(tmp_path / "d.jsonl", [GOOD, '{"post_title": "x", ', GOOD])
    err = _error(path)
    assert err.line == 2 and str(path) in str(err) and "malformed JSON" in str(err)


def test_missing_column(tmp_path):
    row = dict(GOOD)
    del row["comment_scores"]
    path = _write(tmp_path / "d.jsonl", [GOOD, row])
    err = _error(path, layout="reddit")
    assert (err.line, err.field) == (2, "comment_scores") and "missing column" in str(err)


def test_unknown_layout_names_expected_columns(tmp_path):
    path = _write(tmp_path / "d.jsonl", [{"title": "x", "body": "y"}])
    err = _error(path)
    assert err.line == 1 and "cannot tell the layout" in str(err) and "comment_texts" in str(err)


@pytest.mark.parametrize(
    "score, message",
    [("lots", "is not a number"), (None, "is not a number"), (True, "is not a number"), (float("nan"), "NaN")],
)
def test_bad_scores(tmp_path, score, message):
    row = dict(GOOD, comment_scores=[1, score])
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(row) + "\n")  # json writes NaN as NaN
    err = _error(path)
    assert err.line == 2 and err.field == "comment_scores[1]" and message in str(err)


def test_nan_score_in_csv(tmp_path):
    path = tmp_path / "flat.csv"
    path.write_text("prompt,response,score\nP,text,3\nP,other,nan\n")
    err = _error(path)
    assert (err.line, err.field) == (3, "score") and "NaN" in str(err)


def test_length_mismatch(tmp_path):
    path = _write(tmp_path / "d.jsonl", [dict(GOOD, comment_scores=[1, 2, 3])])
    err = _error(path)
    assert (err.line, err.field) == (1, "comment_scores") and "3 scores for 2 texts" in str(err)


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.csv", "blank.jsonl"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_text("prompt,response,score\n" if name.endswith(".csv") else ("\n\n" if name.startswith("blank") else ""))
    err = _error(path)
    assert "file is empty" in str(err) and str(path) in str(err)


def test_undecodable_bytes(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wb") as handle:
        handle.write((json.dumps(GOOD) + "\n").encode())
        handle.write(b'{"post_title": "caf\xe9"}\n')
    err = _error(path)
    assert err.line == 2 and "undecodable byte 0xe9 at column 20" in str(err)


def test_non_text_response(tmp_path):
    path = _write(tmp_path / "d.jsonl", [dict(GOOD, comment_texts=["a", 7])])
    err = _error(path)
    assert err.field == "comment_texts[1]" and "expected text" in str(err)


def test_skip_invalid_counts_each_reason(tmp_path):
    rows = [
        GOOD,
        dict(GOOD, post_title="[WP] U", comment_scores=[1, "x"]),
        dict(GOOD, post_title="[WP] V", comment_scores=[1]),
        {k: v for k, v in GOOD.items() if k != "comment_texts"},
        dict(GOOD, post_title="[WP] W"),
    ]
    path = _write(tmp_path / "d.jsonl", rows)
    pools, report = load_pools([path], skip_invalid=True)
    assert [p.prompt for p in pools] == ["T", "W"]
    assert report.rows_read == 5
    assert dict(report.rows_invalid) == {"non_numeric_score": 1, "length_mismatch": 1, "missing_column": 1}
    # malformed JSON is a broken file, not a bad row: still an error
    broken = _write(tmp_path / "e.jsonl", [GOOD, "{oops"])
    with pytest.raises(InputError, match="malformed JSON"):
        load_pools([broken], skip_invalid=True)


def test_cli_prints_one_clear_line(tmp_path):
    import subprocess
    import sys

    path = _write(tmp_path / "d.jsonl", [dict(GOOD, comment_scores=[1, 2, 3])])
    result = subprocess.run(
        [sys.executable, "-m", "divtune", "prepare", "--input", str(path), "--output", str(tmp_path / "out")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {path}, line 1, field 'comment_scores': 3 scores for 2 texts in 'comment_texts'"
