"""Readers for every file format and layout, column remaps, cleaning and split."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from divtune.data import clean_responses, load_pools, reddit_prompt, split_by_prompt

STORY = "word " * 120


def _pools_rows():
    return [
        {"prompt": "P1", "responses": ["a " + STORY, "b " + STORY], "scores": [3, 9]},
        {"prompt": "P2", "responses": ["c " + STORY], "scores": [1.5]},
    ]


def _check_pools(pools):
    assert [p.prompt for p in pools] == ["P1", "P2"]
    assert pools[0].scores == [3.0, 9.0] and pools[1].texts == ["c " + STORY]


def test_jsonl_pools(tmp_path):
    path = tmp_path / "pools.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _pools_rows()) + "\n")
    pools, report = load_pools([path])
    _check_pools(pools)
    assert report.files == {str(path): "pools"} and report.responses_read == 3


def test_csv_pools_with_json_list_cells(tmp_path):
    path = tmp_path / "pools.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["prompt", "responses", "scores"])
        writer.writeheader()
        for row in _pools_rows():
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    _check_pools(load_pools([path])[0])


def test_parquet_and_datasets_folder(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(_pools_rows())
    ds.to_parquet(str(tmp_path / "pools.parquet"))
    ds.save_to_disk(str(tmp_path / "pools_ds"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "pools_dd"))
    _check_pools(load_pools([tmp_path / "pools.parquet"])[0])
    _check_pools(load_pools([tmp_path / "pools_ds"])[0])
    _check_pools(load_pools([tmp_path / "pools_dd"])[0])


def test_pool_ids_from_id_column_or_prompt_hash(tmp_path):
    path = tmp_path / "flat.jsonl"
    rows = [{"prompt": "P", "response": "a", "score": 1, "prompt_id": "q7"}, {"prompt": "Q", "response": "b", "score": 2}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pools, _ = load_pools([path])
    assert pools[0].pool_id == "q7"
    assert pools[1].pool_id.startswith("p-") and pools[1].pool_id == load_pools([path])[0][1].pool_id


def test_flat_layout_groups_by_exact_prompt_and_remaps_columns(tmp_path):
    path = tmp_path / "flat.csv"
    path.write_text("title,body,votes\nP1,x1,3\nP2,y1,4\nP1,x2,5\np1,z,1\n")
    pools, report = load_pools([path], columns={"prompt": "title", "response": "body", "score": "votes"})
    assert [(p.prompt, p.texts, p.scores) for p in pools] == [
        ("P1", ["x1", "x2"], [3.0, 5.0]),
        ("P2", ["y1"], [4.0]),
        ("p1", ["z"], [1.0]),  # exact prompt match only
    ]
    assert report.files[str(path)] == "flat"


def test_reddit_prompt_tag_and_text():
    assert reddit_prompt("[WP] A dragon ", "  Its lair.\n") == "A dragon\nIts lair."
    assert reddit_prompt("[WP][EU] A dragon", "") == "A dragon"
    assert reddit_prompt("[ OT ] Chat", None) == "Chat"
    assert reddit_prompt("No tag [here]", "") == "No tag [here]"


def test_same_prompt_in_two_files_is_one_pool(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps({"prompt": "P", "response": "one", "score": 1}) + "\n")
    b.write_text(json.dumps({"prompt": "P", "response": "two", "score": 2}) + "\n")
    pools, _ = load_pools([a, b])
    assert len(pools) == 1 and pools[0].texts == ["one", "two"]


def test_cleaning_reasons_on_real_variants():
    texts = [
        "\n**Off-Topic Discussion**: Reply here for non-story comments.\n",
        "**Welcome to the Prompt!** All top-level comments must be a story or poem. " + STORY,
        "I'm a bot, *bleep*, *bloop*. Someone has linked to this thread " + STORY,
        "[removed]",
        " [deleted] ",
        "too short story",
        STORY,
        STORY + "  ",  # same text after stripping
        "",
    ]
    dropped = Counter()
    kept = clean_responses(texts, "reddit", 100, dropped)
    assert kept == [6]
    assert dropped == Counter(
        moderator_sticky=2, bot_comment=1, removed_or_deleted=2, too_short=1, duplicate_in_prompt=1, empty_text=1
    )
    # stickies only mean something on Reddit; elsewhere only the generic rules apply
    other = Counter()
    assert clean_responses(texts[:2], "pools", 0, other) == [0, 1]


@settings(max_examples=100, deadline=None)
@given(
    ids=st.lists(st.text(min_size=1, max_size=6), min_size=0, max_size=50, unique=True),
    fraction=st.sampled_from([0.0, 0.1, 0.5, 0.9]),
    seed=st.integers(0, 1000),
)
def test_split_disjoint_by_prompt(ids, fraction, seed):
    test = split_by_prompt(ids, fraction, seed)
    train = set(ids) - test
    assert test <= set(ids) and not (train & test)
    if len(ids) >= 2 and fraction > 0:
        assert 1 <= len(test) <= len(ids) - 1
    assert test == split_by_prompt(list(reversed(ids)), fraction, seed)  # order-free
