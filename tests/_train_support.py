"""Shared helpers for the train tests and the worker scripts they launch
(pairs built in the test, tiny configs, reading adapters back)."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = (
    "the dragon knight sea robot paint light music home story door city hills dawn sailor tale "
    "room smile read lost calm old loved looking"
).split()


def make_pairs(n: int, seed: int = 0, weights: list[float] | None = None) -> list[dict]:
    """Pairs with prompts/completions of varied lengths (so token-count normalisation matters)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        rows.append(
            {
                "pool_id": f"p{i}",
                "prompt": "Write a story about " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))),
                "chosen": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))),
                "rejected": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12))),
                "score_chosen": 10,
                "score_rejected": 1,
                "weight": weights[i] if weights is not None else round(rng.uniform(0.0, 2.0), 3),
            }
        )
    return rows


def write_pairs(directory: Path, rows: list[dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "train.jsonl", "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return directory


def tiny_overrides(**extra) -> list[str]:
    """Small LoRA, no dropout, CPU, log every step, no TensorBoard (speed)."""
    settings = {
        "lora.r": 4,
        "lora.alpha": 8,
        "lora.dropout": 0.0,
        "device": "cpu",
        "max_length": 128,
        "report_to": "[]",
        "save_strategy": "no",
        "disable_tqdm": "true",
    }
    settings.update(extra)
    return [f"{key}={value}" for key, value in settings.items()]


def load_adapter_tensors(folder: str | Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "adapter_model.safetensors"))


def read_metrics(folder: str | Path) -> list[dict]:
    path = Path(folder) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def step_losses(folder: str | Path) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in read_metrics(folder) if "loss" in m}
