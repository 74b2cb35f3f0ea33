"""divtune humaneval build: blinding, seeded sides, self-contained page, CSV, bad input."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from _humaneval_support import SYSTEMS, write_generations
from divtune.config import ConfigError
from divtune.humaneval.page import render_page
from divtune.humaneval.study import BuildConfig, run_build
from divtune.io import InputError

SRC = Path(__file__).resolve().parents[1] / "src"


def _build(tmp_path: Path, name: str = "study", **kwargs) -> Path:
    paths = write_generations(tmp_path / "gen", n_prompts=kwargs.pop("n_prompts", 4))
    pairs = kwargs.pop("pairs", [(SYSTEMS[0], SYSTEMS[1]), (SYSTEMS[2], SYSTEMS[1])])
    cfg = BuildConfig(generations=[str(p) for p in paths], pairs=pairs, output=str(tmp_path / name), **kwargs)
    run_build(cfg)
    return tmp_path / name


def _load(folder: Path):
    return (json.loads((folder / "study.json").read_text()), json.loads((folder / "key.json").read_text()))


def test_no_system_name_in_anything_annotators_see(tmp_path):
    folder = _build(tmp_path)
    for shown in ("index.html", "items.csv", "study.json"):
        text = (folder / shown).read_text().lower()
        for name in SYSTEMS:
            for part in {name, *name.split("-")}:  # "zorblax-ddpo", "zorblax", "ddpo", ...
                assert part.lower() not in text, f"{part!r} appears in {shown}"
    key_text = (folder / "key.json").read_text()
    assert all(name in key_text for name in SYSTEMS)
    # The page never links the key (nor anything else).
    page = (folder / "index.html").read_text()
    assert "key.json" not in page
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", page, re.I), "page refers to a remote resource"
    assert not re.search(r"<(link|img|iframe)\b|<script[^>]+src=", page, re.I), "page loads an external file"


def test_key_unblinds_every_item_and_sides_are_balanced_per_pair(tmp_path):
    folder = _build(tmp_path, n_prompts=5)
    study, key = _load(folder)
    gen = {name: [json.loads(l) for l in (tmp_path / "gen" / f"gen_{i}.jsonl").read_text().splitlines()]
           for i, name in enumerate(SYSTEMS)}
    assert [it["item_id"] for it in study["items"]] == sorted(key["items"])
    assert len(study["items"]) == 2 * 5
    for item in study["items"]:
        entry = key["items"][item["item_id"]]
        assert {entry["A"], entry["B"]} == {entry["system"], entry["baseline"]}
        for side in ("A", "B"):
            expected = [r["text"] for r in gen[entry[side]] if r["prompt_id"] == entry["prompt_id"]]
            assert item[side] == expected  # the set shown as A is that system's stories, in sample order
    for system, baseline in key["pairs"]:
        sides = Counter(e["A"] == e["system"] for e in key["items"].values() if e["system"] == system)
        assert abs(sides[True] - sides[False]) <= 1, sides  # 5 items: 3 / 2


def test_seeded_and_reproducible(tmp_path):
    a = _build(tmp_path, "a", seed=1, n_prompts=5)
    b = _build(tmp_path, "b", seed=1, n_prompts=5)
    c = _build(tmp_path, "c", seed=2, n_prompts=5)
    assert (a / "index.html").read_text() == (b / "index.html").read_text()
    assert _load(a)[0]["build_id"] == _load(b)[0]["build_id"] != _load(c)[0]["build_id"]
    layout = lambda f: [(e["prompt_id"], e["system"], e["A"]) for _, e in sorted(_load(f)[1]["items"].items())]
    assert layout(a) != layout(c)


def test_items_csv_matches_study(tmp_path):
    folder = _build(tmp_path, stories_per_set=2)
    study, _ = _load(folder)
    with open(folder / "items.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["item_id"] for r in rows] == [it["item_id"] for it in study["items"]]
    for row, item in zip(rows, study["items"]):
        assert row["build_id"] == study["build_id"] and row["prompt"] == item["prompt"]
        assert [row["a_1"], row["a_2"]] == item["A"] and [row["b_1"], row["b_2"]] == item["B"]
        assert row["n_stories"] == "2"


def test_max_items_and_too_few_stories_are_counted(tmp_path):
    paths = write_generations(tmp_path / "gen", n_prompts=5)
    # The baseline lost one sample of prompt p3: with 3 stories per set that prompt cannot be shown.
    lines = [l for l in paths[1].read_text().splitlines() if not ('"p3"' in l and '"sample_index": 2' in l)]
    paths[1].write_text("\n".join(lines) + "\n")
    cfg = BuildConfig(generations=[str(p) for p in paths], pairs=[(SYSTEMS[0], SYSTEMS[1])], output=str(tmp_path / "s"),
                      stories_per_set=3, max_items_per_pair=2)
    run_build(cfg)
    study, key = _load(tmp_path / "s")
    summary = key["summary"][f"{SYSTEMS[0]} vs {SYSTEMS[1]}"]
    assert summary == {"items": 2, "prompts_only_in_system": 0, "prompts_only_in_baseline": 0,
                       "too_few_stories": 1, "not_selected": 2}
    assert len(study["items"]) == 2 and "p3" not in {e["prompt_id"] for e in key["items"].values()}


def test_story_cannot_break_out_of_the_page(tmp_path):
    study = {"title": "T <b>", "build_id": "x", "items": [{"item_id": "item-001", "prompt": "p", "A": ["</script><script>alert(1)</script> {{JS}}"], "B": ["b"]}],
             "questions": [], "choice_labels": {}, "comment": True, "instructions": ""}
    page = render_page(study)
    assert page.count("</script>") == 2  # the JSON block's and the script's own
    assert "<title>T &lt;b&gt;</title>" in page
    block = re.search(r'<script type="application/json" id="study">(.*?)</script>', page, re.S).group(1)
    assert json.loads(block)["items"][0]["A"][0].startswith("</script><script>")


def test_custom_questions_from_yaml(tmp_path):
    paths = write_generations(tmp_path / "gen")
    config = tmp_path / "q.yaml"
    config.write_text("questions:\n  - {id: funny, text: \"Which set is funnier?\"}\nchoice_labels: {A: Left, B: Right, tie: Same}\n")
    cfg = BuildConfig.load(config, [f"seed=3"], generations=[str(p) for p in paths], pairs=[(SYSTEMS[0], SYSTEMS[1])],
                           output=str(tmp_path / "s"))
    run_build(cfg)
    study, _ = _load(tmp_path / "s")
    assert study["questions"] == [{"id": "funny", "text": "Which set is funnier?"}]
    assert "Which set is funnier?" in (tmp_path / "s" / "index.html").read_text()
    assert (tmp_path / "s" / "config.yaml").is_file()


@pytest.mark.parametrize("override, fragment", [
    ("questions=[]", "at least one question"),
    ("questions=[{id: Bad Id, text: x}]", "question id"),
    ("choice_labels={A: a, B: b}", "choice_labels"),
])
def test_bad_question_config(tmp_path, override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        BuildConfig.load(None, [override], output=str(tmp_path))


def test_bad_pairs_and_inputs_write_nothing(tmp_path):
    paths = [str(p) for p in write_generations(tmp_path / "gen")]
    out = tmp_path / "s"
    with pytest.raises(ConfigError, match="not among the systems"):
        run_build(BuildConfig(generations=paths, pairs=[(SYSTEMS[0], "nosuch")], output=str(out)))
    with pytest.raises(ConfigError, match="both system"):
        run_build(BuildConfig(generations=[paths[0], paths[0]], pairs=[(SYSTEMS[0], SYSTEMS[1])], output=str(out)))
    with pytest.raises(ConfigError, match="itself"):
        BuildConfig.from_dict({"generations": paths, "pairs": [(SYSTEMS[0], SYSTEMS[0])], "output": str(out)})
    # Same prompt id, different prompt text: the systems were not sampled on the same prompts.
    other = Path(paths[1])
    other.write_text(other.read_text().replace("Every night the city", "Every day the city"))
    with pytest.raises(InputError) as info:
        run_build(BuildConfig(generations=paths, pairs=[(SYSTEMS[0], SYSTEMS[1])], output=str(out)))
    assert str(other) in str(info.value) and info.value.field == "prompt"
    assert not out.exists()


def test_refuses_to_overwrite_another_study(tmp_path):
    paths = [str(p) for p in write_generations(tmp_path / "gen")]  # written once: a rewrite is a changed input
    folder = tmp_path / "study"
    build = lambda seed: run_build(BuildConfig(generations=paths, pairs=[(SYSTEMS[0], SYSTEMS[1])], output=str(folder),
                                               seed=seed))
    build(0)
    build_id = _load(folder)[0]["build_id"]
    build(0)  # the same build again is reused
    with pytest.raises(ConfigError, match=r"holds a finished humaneval build run with other settings \(seed: 0 -> 5\)"):
        build(5)
    assert _load(folder)[0]["build_id"] == _load(folder)[1]["build_id"] == build_id


def test_cli_build_and_bad_answers_exit_2(tmp_path):
    paths = [str(p) for p in write_generations(tmp_path / "gen")]
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    run = lambda *args: subprocess.run([sys.executable, "-m", "divtune", "humaneval", *args], capture_output=True, text=True, env=env)
    built = run("build", *paths, "--pair", f"{SYSTEMS[0]}={SYSTEMS[1]}", "--output", str(tmp_path / "s"), "--stories-per-set", "2")
    assert built.returncode == 0, built.stderr
    assert "key.json" in built.stdout and (tmp_path / "s" / "index.html").is_file()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    analyzed = run("analyze", str(tmp_path / "s"), str(bad), "--output", str(tmp_path / "out"))
    assert analyzed.returncode == 2
    assert analyzed.stderr.strip().splitlines()[-1].startswith(f"error: {bad}, line 1: malformed JSON")
    assert not (tmp_path / "out").exists()
    wrong_pair = run("build", *paths, "--pair", "a-b", "--output", str(tmp_path / "t"))
    assert wrong_pair.returncode == 2 and "SYSTEM=BASELINE" in wrong_pair.stderr


def test_every_cli_option_is_documented():
    import typer

    from divtune.cli import app

    group = typer.main.get_command(app).commands["humaneval"]
    docs = (Path(__file__).resolve().parents[1] / "docs" / "humaneval.md").read_text()
    assert set(group.commands) == {"build", "analyze"}
    for name, command in group.commands.items():
        for param in command.params:
            for flag in param.opts:
                if flag.startswith("--") and flag != "--help":
                    assert f"`{flag}" in docs, f"humaneval {name} {flag} is not in docs/humaneval.md"
