"""Every script in examples/ runs end to end, as a user would run it, on a tiny
model and tiny data built here (no hub)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

STORIES = [
    "The dragon read every book in the city and then wrote one of its own.",
    "\"Where are you going?\" he asked. \"Home,\" she said, and the door closed.",
    "The old sailor told his tale again while the sea was calm and grey.",
    "A robot learns to paint light on the hills at dawn, badly at first.",
    "The knight lost the city, found a smile, and kept looking for music.",
    "Once upon a time the room was full of light and nobody loved it.",
]


def test_every_example_has_a_test():
    tested = {"train_ddpo.py", "train_dorpo.py", "evaluate_samples.py"}
    assert {path.name for path in EXAMPLES.glob("*.py")} == tested


def _pairs_file(tmp_path: Path) -> Path:
    """Three prompts, each a pool of 4 stories in 2 pairs."""
    rows = []
    for p in range(3):
        pool = STORIES[p:] + STORIES[:p]
        for chosen, rejected in ((pool[0], pool[1]), (pool[2], pool[3])):
            rows.append({"prompt": f"Write a story about thing {p}.", "chosen": chosen, "rejected": rejected})
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _run(script: str, *args: str, tmp_path: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "datasets"),
           "DIVTUNE_CACHE": str(tmp_path / "cache"), "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("script, extra", [("train_ddpo.py", []), ("train_dorpo.py", ["--dorpo-mode", "released"])])
def test_training_example_saves_an_adapter(tmp_path, tiny_lm_dir, minilm_path, script, extra):
    from safetensors.torch import load_file

    out = tmp_path / "out"
    stdout = _run(script, "--data", str(_pairs_file(tmp_path)), "--model", str(tiny_lm_dir), "--output", str(out),
                  "--embedders", str(minilm_path), "stylometric", "--max-steps", "2", *extra, tmp_path=tmp_path)
    assert f"adapter to {out}" in stdout
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert any("lora_B" in name and adapter[name].abs().sum() > 0 for name in adapter)  # it trained


def test_evaluate_example_prints_every_system_with_intervals(tmp_path):
    def write(name: str, groups: dict[str, list[str]]) -> str:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"prompt": p, "text": t}) + "\n" for p, ts in groups.items() for t in ts))
        return str(path)

    prompts = [f"prompt {i}" for i in range(3)]
    mine = write("mine", {p: STORIES[:4] for p in prompts})
    same = write("collapsed", {p: [STORIES[0]] * 4 for p in prompts})
    human = write("human", {p: [s + " and then the story went on for a long while" for s in STORIES] for p in prompts})
    stdout = _run("evaluate_samples.py", "--samples", mine, same, "--human", human,
                  "--semantic-embedder", "stylometric", tmp_path=tmp_path)
    rows = {line.split("|")[1].strip(): line for line in stdout.splitlines() if line.startswith("| ") and "---" not in line}
    assert set(rows) == {"system", "mine", "collapsed", "human", "human-matched"}
    number = r"(-?\d+\.\d{3}) \[(-?\d+\.\d{3}), (-?\d+\.\d{3})\]"
    semantic = {name: float(re.search(number, line).group(1)) for name, line in rows.items() if name != "system"}
    assert semantic["collapsed"] == pytest.approx(0.0, abs=1e-3)
    assert semantic["mine"] > 0.01
