"""divtune humaneval analyze: counts, Wilson intervals and sign tests against values
computed by hand, agreement, duplicates, and every kind of bad answer file."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from _humaneval_support import SYSTEMS, write_answers, write_generations
from divtune.humaneval.analyze import AnalyzeConfig, run_analyze
from divtune.humaneval.stats import krippendorff_alpha
from divtune.humaneval.study import BuildConfig, run_build
from divtune.io import InputError

Z95 = 1.959963984540054  # the 97.5% normal quantile
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def wilson_by_hand(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def sign_test_by_hand(wins: int, losses: int) -> float:
    n = wins + losses
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


@pytest.fixture()
def study(tmp_path):
    paths = write_generations(tmp_path / "gen", n_prompts=5)
    folder = tmp_path / "study"
    run_build(BuildConfig(generations=[str(p) for p in paths], pairs=[(SYSTEMS[0], SYSTEMS[1]), (SYSTEMS[2], SYSTEMS[1])],
                          output=str(folder)))
    key = json.loads((folder / "key.json").read_text())
    return folder, key


def side_for(entry: dict, outcome: str) -> str:
    """The answer an annotator gives for an intended outcome (win = the pair's first system chosen)."""
    if outcome == "tie":
        return "tie"
    wanted = entry["system"] if outcome == "win" else entry["baseline"]
    return "A" if entry["A"] == wanted else "B"


def items_of(key: dict, system: str) -> list[str]:
    return sorted(i for i, e in key["items"].items() if e["system"] == system)


def records(key: dict, plan: dict[str, dict[str, str]], stamp: str = "2026-03-01T10:00:00Z") -> list[dict]:
    """``plan``: item → {question: outcome}; answers in the page's format."""
    return [{"item_id": item, "answers": {q: side_for(key["items"][item], o) for q, o in outcomes.items()},
             "timestamp": stamp} for item, outcomes in plan.items()]


def _analyze(folder: Path, files: list[Path], out: Path) -> dict:
    run_analyze(AnalyzeConfig(study=str(folder), answers=[str(f) for f in files], output=str(out)))
    return json.loads((out / "results.json").read_text())


def _row(result: dict, question: str, system: str) -> dict:
    (row,) = [r for r in result["results"] if r["question"] == question and r["system"] == system]
    return row


def test_counts_intervals_and_p_values_against_hand_computation(study, tmp_path):
    folder, key = study
    build_id = key["build_id"]
    first, second = items_of(key, SYSTEMS[0]), items_of(key, SYSTEMS[2])
    # Pair 1, "diverse": 3 annotators x 5 items = 15 judgments: 10 wins, 2 ties, 3 losses.
    diverse = {
        "ann1": ["win", "win", "win", "win", "loss"],
        "ann2": ["win", "win", "tie", "win", "loss"],
        "ann3": ["win", "win", "win", "tie", "loss"],
    }
    files = []
    for who, outcomes in diverse.items():
        plan = {item: {"diverse": o, "interesting": "loss"} for item, o in zip(first, outcomes)}
        plan.update({item: {"diverse": "tie"} for item in second[:2]})  # pair 2: ties only, no "interesting" answer
        files.append(write_answers(tmp_path / f"{who}.json", build_id, who, records(key, plan)))
    result = _analyze(folder, files, tmp_path / "out")

    row = _row(result, "diverse", SYSTEMS[0])
    assert (row["wins"], row["ties"], row["losses"], row["n"], row["decided"]) == (10, 2, 3, 15, 13)
    assert row["win_rate"] == pytest.approx(10 / 15) and row["tie_rate"] == pytest.approx(2 / 15)
    for name, k in (("win_rate", 10), ("tie_rate", 2), ("loss_rate", 3)):
        assert row[f"{name}_ci"] == pytest.approx(wilson_by_hand(k, 15), abs=1e-12)
    assert row["win_share"] == pytest.approx(10 / 13)
    assert row["win_share_ci"] == pytest.approx(wilson_by_hand(10, 13), abs=1e-12)
    assert row["sign_test_p"] == pytest.approx(sign_test_by_hand(10, 3), rel=1e-12)  # ties excluded: 10 vs 3
    assert row["sign_test_p"] == pytest.approx(0.0923, abs=1e-4)

    interesting = _row(result, "interesting", SYSTEMS[0])
    assert (interesting["wins"], interesting["ties"], interesting["losses"]) == (0, 0, 15)
    assert interesting["sign_test_p"] == pytest.approx(2 / 2**15)
    ties_only = _row(result, "diverse", SYSTEMS[2])
    assert (ties_only["ties"], ties_only["decided"], ties_only["sign_test_p"], ties_only["win_share"]) == (6, 0, None, None)
    assert _row(result, "interesting", SYSTEMS[2])["n"] == 0

    counts = result["counts"]
    assert counts["answers_read"] == counts["answers_kept"] == 21 and counts["duplicates_dropped"] == 0
    assert counts["unanswered_questions"] == {"diverse": 0, "interesting": 6}
    assert counts["items_never_answered"] == 10 - 7
    # Per annotator: ann2's "diverse" answers in pair 1.
    (ann2,) = [r for r in result["per_annotator"] if r["annotator"] == "ann2" and r["question"] == "diverse" and r["system"] == SYSTEMS[0]]
    assert (ann2["wins"], ann2["ties"], ann2["losses"]) == (3, 1, 1)

    out = tmp_path / "out"
    md = (out / "humaneval.md").read_text()
    assert "10 / 2 / 3" in md and f"{SYSTEMS[0]} vs {SYSTEMS[1]}" in md and "0.092" in md
    assert (out / "humaneval.png").read_bytes().startswith(PNG_MAGIC)
    assert "data:image/png;base64," in (out / "humaneval.html").read_text()
    assert (out / "config.yaml").is_file() and not (out / "comments.jsonl").exists()


def kripp_by_hand(units: list[list[int]]) -> float:
    """Nominal Krippendorff's alpha from its coincidence matrix (units with >= 2 values)."""
    values = sorted({v for u in units for v in u})
    o = {(c, k): 0.0 for c in values for k in values}
    for u in units:
        m = len(u)
        for i, c in enumerate(u):
            for j, k in enumerate(u):
                if i != j:
                    o[(c, k)] += 1 / (m - 1)
    n_c = {c: sum(o[(c, k)] for k in values) for c in values}
    n = sum(n_c.values())
    observed = sum(v for (c, k), v in o.items() if c != k)
    expected = sum(n_c[c] * n_c[k] for c in values for k in values if c != k)
    return 1 - (n - 1) * observed / expected


def test_agreement_is_krippendorffs_alpha(study, tmp_path):
    folder, key = study
    first = items_of(key, SYSTEMS[0])
    plans = {
        "ann1": ["win", "win", "loss", "tie", "win"],
        "ann2": ["win", "loss", "loss", "tie"],
        "ann3": ["win", "win", "loss"],
    }
    files = [write_answers(tmp_path / f"{w}.json", key["build_id"], w,
                           records(key, {item: {"diverse": o} for item, o in zip(first, outs)})) for w, outs in plans.items()]
    result = _analyze(folder, files, tmp_path / "out")
    code = {"win": 0, "tie": 1, "loss": 2}
    units = [[code[plans[w][i]] for w in plans if i < len(plans[w])] for i in range(5)]
    units = [u for u in units if len(u) >= 2]
    agreement = result["agreement"]["diverse"]
    assert agreement["items_with_2plus"] == 4 and agreement["annotators"] == 3
    assert agreement["alpha"] == pytest.approx(kripp_by_hand(units), abs=1e-9)
    # 10 annotator pairs on the same item; 8 agree (the second item, win / loss / win: 1 of its 3 pairs).
    assert agreement["pairwise_agreement"] == pytest.approx(8 / 10)
    assert result["agreement"]["interesting"]["alpha"] is None


def test_alpha_undefined_cases():
    assert krippendorff_alpha({"i1": {"a": "win"}})["note"].startswith("no item")
    same = krippendorff_alpha({"i1": {"a": "win", "b": "win"}, "i2": {"a": "win", "b": "win"}})
    assert same["alpha"] is None and "undefined" in same["note"] and same["pairwise_agreement"] == 1.0
    opposite = krippendorff_alpha({"i1": {"a": "win", "b": "loss"}, "i2": {"a": "loss", "b": "win"}})
    assert opposite["alpha"] < 0


def test_last_answer_counts_and_drops_are_reported(study, tmp_path):
    folder, key = study
    item = items_of(key, SYSTEMS[0])[0]
    other = items_of(key, SYSTEMS[0])[1]
    # The later download (by timestamp) changed the answer; it is given FIRST on the command line.
    late = write_answers(tmp_path / "late.json", key["build_id"], "ann", records(key, {item: {"diverse": "loss"}}, "2026-03-02T09:00:00Z"))
    early = write_answers(tmp_path / "early.json", key["build_id"], "ann",
                          records(key, {item: {"diverse": "win"}, other: {"diverse": "win"}}, "2026-03-01T09:00:00+00:00"))
    result = _analyze(folder, [late, early], tmp_path / "out")
    row = _row(result, "diverse", SYSTEMS[0])
    assert (row["wins"], row["losses"]) == (1, 1)  # item: loss (later answer), other: win
    assert result["counts"]["duplicates_dropped"] == 1
    (drop,) = result["dropped"]
    assert (drop["annotator"], drop["item_id"], drop["file"]) == ("ann", item, str(early))
    assert "Dropped answers" in (tmp_path / "out" / "humaneval.md").read_text()

    # The same file given twice counts once; every second copy is reported as dropped.
    twice = _analyze(folder, [early, early], tmp_path / "out2")
    assert _row(twice, "diverse", SYSTEMS[0])["wins"] == 2 and twice["counts"]["duplicates_dropped"] == 2


def test_csv_answers_give_the_same_counts(study, tmp_path):
    folder, key = study
    first = items_of(key, SYSTEMS[0])
    plan = {item: {"diverse": o, "interesting": "win"} for item, o in zip(first, ["win", "loss", "tie", "win", "win"])}
    json_file = write_answers(tmp_path / "a.json", key["build_id"], "ann", records(key, plan))
    csv_file = tmp_path / "crowd.csv"
    with open(csv_file, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["WorkerId", "build_id", "annotator", "item_id", "timestamp", "diverse", "interesting", "comment"])
        for rec in records(key, plan):
            writer.writerow(["W1", key["build_id"], "ann", rec["item_id"], rec["timestamp"], rec["answers"]["diverse"],
                             rec["answers"]["interesting"], "too similar,\nall of them" if rec["item_id"] == first[0] else ""])
    from_json = _analyze(folder, [json_file], tmp_path / "o1")
    from_csv = _analyze(folder, [csv_file], tmp_path / "o2")
    assert from_json["results"] == from_csv["results"]
    assert from_csv["files"][0]["ignored_columns"] == ["WorkerId"]
    comments = [json.loads(l) for l in (tmp_path / "o2" / "comments.jsonl").read_text().splitlines()]
    assert comments == [{"annotator": "ann", "item_id": first[0], "system_on_A": key["items"][first[0]]["A"],
                         "system_on_B": key["items"][first[0]]["B"], "comment": "too similar,\nall of them"}]


def _good(key: dict) -> dict:
    return {"format": "divtune-humaneval-answers", "version": 1, "build_id": key["build_id"], "annotator": "ann",
            "answers": records(key, {items_of(key, SYSTEMS[0])[0]: {"diverse": "win"}})}


def _mutate(doc: dict, path: str, value) -> dict:
    doc = json.loads(json.dumps(doc))
    node, parts = doc, path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[parts[-1]] = value
    return doc


@pytest.mark.parametrize("content, field, fragment, line", [
    ("", None, "empty answer file", None),
    ("   \n", None, "empty answer file", None),
    ('{"format": "divtune-humaneval-answers",\n "build_id": ', None, "malformed JSON", 2),
    ("[1, 2]", None, "expected a JSON object", None),
    (lambda k: _mutate(_good(k), "format", "other"), "format", "not an answer file", None),
    (lambda k: _mutate(_good(k), "build_id", "0123456789ab"), "build_id", "another build", None),
    (lambda k: _mutate(_good(k), "annotator", " "), "annotator", "empty annotator", None),
    (lambda k: _mutate(_good(k), "answers", []), "answers", "no answers", None),
    (lambda k: _mutate(_good(k), "answers.0.item_id", "item-999"), "answers[0].item_id", "unknown item id", None),
    (lambda k: _mutate(_good(k), "answers.0.answers", {"diverse": "C"}), "answers[0].answers.diverse", "not one of", None),
    (lambda k: _mutate(_good(k), "answers.0.answers", {"funny": "A"}), "answers[0].answers.funny", "unknown question", None),
    (lambda k: _mutate(_good(k), "answers.0.timestamp", "yesterday"), "answers[0].timestamp", "ISO 8601", None),
])
def test_bad_answer_files_name_file_and_field_and_write_nothing(study, tmp_path, content, field, fragment, line):
    folder, key = study
    path = tmp_path / "answers.json"
    if callable(content):
        content = json.dumps(content(key))
    path.write_text(content)
    good = write_answers(tmp_path / "good.json", key["build_id"], "other", _good(key)["answers"])
    with pytest.raises(InputError) as info:
        run_analyze(AnalyzeConfig(study=str(folder), answers=[str(good), str(path)], output=str(tmp_path / "out")))
    err = info.value
    assert err.path == str(path) and err.field == field and err.line == line and fragment in str(err), str(err)
    assert not (tmp_path / "out").exists()


def test_bad_csv_rows_and_missing_answer_file(study, tmp_path):
    folder, key = study
    item = items_of(key, SYSTEMS[0])[0]
    path = tmp_path / "a.csv"
    path.write_text(f"build_id,annotator,item_id,timestamp,diverse\n{key['build_id']},a,{item},2026-01-01T00:00:00,A\n"
                    f"{key['build_id']},a,nope,2026-01-01T00:00:00,A\n")
    with pytest.raises(InputError) as info:
        run_analyze(AnalyzeConfig(study=str(folder), answers=[str(path)], output=str(tmp_path / "out")))
    assert (info.value.line, info.value.field) == (3, "item_id")
    path.write_text("build_id,annotator,item_id,diverse\n")
    with pytest.raises(InputError, match="missing column") as info:
        run_analyze(AnalyzeConfig(study=str(folder), answers=[str(path)], output=str(tmp_path / "out")))
    assert info.value.field == "timestamp"
    with pytest.raises(InputError, match="not found"):
        run_analyze(AnalyzeConfig(study=str(folder), answers=[str(tmp_path / "missing.json")], output=str(tmp_path / "out")))
    with pytest.raises(InputError, match="study.json"):
        run_analyze(AnalyzeConfig(study=str(tmp_path), answers=[str(path)], output=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()
