"""Peak memory of real CPU training steps on the shipped SmolLM2-135M, and the
constants of divtune.train.memory fitted to it.

Each setting (per-device batch B, max_length L) runs `divtune train --method
ddpo --model smollm2 --set max_steps=1` in a fresh process on pairs whose
prompt + response are longer than L, so every sequence of the batch is exactly
L tokens (the estimate's worst case), and records that process's peak RSS.
Then it fits

    peak = process + weights + trainable state + A x (B x 2 x L) x 4 x (V + n(h + i))

by least squares over the settings (A: floats kept per token and activation
unit; process: the intercept less the model's own bytes) and prints, per
setting, the measured peak, the estimate with divtune's current constants and
the estimate with the fitted ones. Last, it measures the CPU defaults
(no --set of batch or length) the same way.

    python benchmarks/bench_train_memory.py [--grid 1x128,2x128,2x256,4x256,2x512,4x512]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORDS = "the dragon knight sea robot paint light music home story door city hills dawn sailor tale".split()

CHILD = """
import resource, sys
from divtune.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    print("PEAK_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
"""


def write_long_pairs(directory: Path, n: int = 16) -> Path:
    """Pairs whose prompt + response exceed any max_length measured here (cut to exactly L tokens)."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "train.jsonl", "w", encoding="utf-8") as handle:
        for i in range(n):
            def text(k: int) -> str:
                return " ".join(rng.choice(WORDS, size=k))
            row = {"pool_id": f"p{i}", "prompt": "Write a story. " + text(20), "chosen": text(1500),
                   "rejected": text(1500), "weight": 1.0}
            handle.write(json.dumps(row) + "\n")
    return directory


def peak_of_one_step(data: Path, out: Path, sets: list[str]) -> int:
    """Peak RSS (bytes) of one DDPO step on the shipped SmolLM2 in a fresh process."""
    args = ["train", "--method", "ddpo", "--model", "smollm2", "--data", str(data), "--output", str(out),
            "--device", "cpu", "--no-memory-check", "--set", "max_steps=1", "--set", "save_strategy=no",
            "--set", "report_to=[]", "--set", "gradient_accumulation_steps=1"]
    for item in sets:
        args += ["--set", item]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    result = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env)
    peaks = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("PEAK_KIB")]
    if result.returncode != 0 or not peaks:
        raise RuntimeError(f"train failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return int(peaks[-1]) * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grid", default="1x128,2x128,2x256,4x256,2x512,4x512")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO / "src"))
    from divtune.models import resolve_model_source
    from divtune.train import TrainConfig
    from divtune.train.memory import GIB, estimate_options, estimate_peak, model_shape

    shape = model_shape(resolve_model_source("smollm2"))
    grid = [tuple(int(x) for x in item.split("x")) for item in args.grid.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_long_pairs(Path(tmp) / "data")
        for k, (batch, length) in enumerate(grid):
            peak = peak_of_one_step(data, Path(tmp) / f"out{k}",
                                    [f"per_device_train_batch_size={batch}", f"max_length={length}"])
            cfg = TrainConfig(method="ddpo", max_length=length)
            estimate = estimate_peak(shape, batch=batch, max_length=length, **estimate_options(cfg))
            rows.append((batch, length, peak, estimate))
            print(f"batch {batch} x max_length {length}: peak {peak / GIB:.2f} GiB, estimate {estimate.total / GIB:.2f} GiB",
                  flush=True)
        defaults_peak = peak_of_one_step(data, Path(tmp) / "defaults", [])

    units = shape.vocab + shape.layers * (shape.hidden + shape.intermediate)
    tokens = np.array([2 * b * length for b, length, _, _ in rows], dtype=float)
    peaks = np.array([p for _, _, p, _ in rows], dtype=float)
    slope, intercept = np.polyfit(tokens, peaks, 1)
    fixed = rows[0][3].weights + rows[0][3].trainable_state
    fitted_a = slope / (4 * units)
    print(f"\nSmolLM2-135M: {shape.parameters / 1e6:.1f}M parameters, activation units V + n(h + i) = {units}")
    print(f"fit: {slope / 1024:.1f} KiB per token -> A = {fitted_a:.2f} floats per unit; "
          f"process = intercept - weights - state = {(intercept - fixed) / GIB:.2f} GiB")
    print("\n| batch | max_length | measured peak | estimate (divtune) | estimate (fitted) |")
    print("|---|---|---|---|---|")
    for (batch, length, peak, estimate), t in zip(rows, tokens):
        refit = intercept + slope * t
        print(f"| {batch} | {length} | {peak / GIB:.2f} GiB | {estimate.total / GIB:.2f} GiB | {refit / GIB:.2f} GiB |")
    print(f"\nCPU defaults (batch 2, max_length 128, LoRA r 128): one step peaks at {defaults_peak / GIB:.2f} GiB")


if __name__ == "__main__":
    main()
