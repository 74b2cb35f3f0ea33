"""Training speed on the shipped SmolLM2-135M, before and after each speed-up, measured in one run.

The same DPO run (shipped r/WritingPrompts openings, 4 pairs x max_length 128 per
step, LoRA r 16, fixed seed) is timed with:

- ``all layers, reference on the fly``: LoRA on all 30 layers, the reference
  forward pass at every step (divtune's defaults before these changes);
- ``all layers, reference cached``: ``precompute_ref`` with the on-disk cache
  already filled (a hit): no reference forward per step;
- ``last 8 layers, reference on the fly`` / ``... cached``: ``lora.last_layers=8``,
  so the backward pass stops below the adapted layers;
- ``last 8 layers, cached, torch.compile``: the same with TrainingArguments'
  ``torch_compile`` (its compile time is part of the first steps);
- ``last 8 layers, cached, prefix cache``: ``prefix_cache`` with its on-disk
  cache already filled (a hit): the frozen embedding and first 22 layers are not
  run at all, the cached hidden states entering layer 22 are fed instead
  (train/prefix_cache.py). Every other row runs with ``prefix_cache=false``.

Printed: seconds per optimizer step (TRL's ``train_runtime`` over the steps,
so model loading and the one-off reference pass are excluded), steps/s, the
speed-up against the first row, and the one-off costs of filling the caches.

    python benchmarks/bench_train_speed.py [--steps 12] [--skip-compile] [--only TEXT ...]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def prepared_data(root: Path) -> Path:
    from divtune.prepare import PrepareConfig, run_prepare
    from divtune.typicality import TypicalityConfig, run_typicality

    run_typicality(TypicalityConfig(inputs=["shipped:wp_scored"], output=str(root / "typ"), opening_words=32,
                                    embedder="stylometric", show_progress=False))
    run_prepare(PrepareConfig(inputs=[str(root / "typ" / "pools.jsonl")], output=str(root / "prep"), min_words=0,
                              gap=0.1, test_fraction=0.2, embedders={"style": "stylometric"}, show_progress=False))
    return root / "prep"


def timed_train(data: Path, output: Path, steps: int, cache: Path, **settings) -> dict:
    from divtune.train import TrainConfig, run_train

    last_layers = settings.pop("last_layers", None)
    precompute = settings.pop("precompute", False)
    compile_ = settings.pop("compile", False)
    prefix = settings.pop("prefix", False)
    cfg = TrainConfig.from_dict({
        "method": "dpo", "data": str(data), "model": "smollm2", "output": str(output), "device": "cpu", "seed": 0,
        "max_length": 128, "precompute_ref": precompute, "ref_cache_dir": str(cache),
        "prefix_cache": prefix, "prefix_cache_dir": str(cache.parent / "prefix_cache"),
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "last_layers": last_layers},
        "training": {"max_steps": steps, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
                     "learning_rate": 5e-4, "save_strategy": "no", "report_to": [], "disable_tqdm": True,
                     "logging_steps": 1, "torch_compile": compile_, "precompute_ref_batch_size": 16},
    })
    start = time.perf_counter()
    run_train(cfg)
    wall = time.perf_counter() - start
    lines = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    runtime = next(line["train_runtime"] for line in lines if "train_runtime" in line)
    result = {"wall": wall, "seconds_per_step": runtime / steps}
    if prefix:  # a silent fallback would time the normal path under the prefix cache's name
        record = json.loads((output / "prefix_cache.json").read_text())
        result["note"] = (
            f"prefix cache hit: {record['datasets']['train']['hit']}, passes {record['forward_passes']}"
            if record["used"] else f"prefix cache NOT used: {record['reason']}"
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="time only the settings whose label contains TEXT (repeatable); "
                             "the speed-up column is then against the first of them")
    args = parser.parse_args()
    rows = [
        ("all layers, reference on the fly", {}),
        ("all layers, reference cached", {"precompute": True}),
        ("last 8 layers, reference on the fly", {"last_layers": 8}),
        ("last 8 layers, reference cached", {"last_layers": 8, "precompute": True}),
    ]
    if not args.skip_compile:
        rows.append(("last 8 layers, cached, torch.compile", {"last_layers": 8, "precompute": True, "compile": True}))
    rows.append(("last 8 layers, cached, prefix cache", {"last_layers": 8, "precompute": True, "prefix": True}))
    if args.only:
        rows = [row for row in rows if any(text in row[0] for text in args.only)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = prepared_data(tmp)
        cache = tmp / "ref_cache"
        # Fill the cache once (a miss), timed: the one-off cost every later run on these pairs saves.
        miss = timed_train(data, tmp / "fill", 1, cache, precompute=True)
        fill_seconds = miss["wall"] - timed_train(data, tmp / "fill-hit", 1, cache, precompute=True)["wall"]
        # The same for the frozen-prefix cache (the reference cache is now a hit in both runs).
        prefix = dict(last_layers=8, precompute=True, prefix=True)
        prefix_miss = timed_train(data, tmp / "fill-prefix", 1, cache, **prefix)
        prefix_fill_seconds = prefix_miss["wall"] - timed_train(data, tmp / "fill-prefix-hit", 1, cache, **prefix)["wall"]
        results = {}
        for i, (label, settings) in enumerate(rows):
            try:
                results[label] = timed_train(data, tmp / f"run{i}", args.steps, cache, **dict(settings))
            except Exception as err:  # e.g. torch.compile without a working compiler toolchain
                results[label] = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
    first = results[rows[0][0]]["seconds_per_step"]
    print(f"DPO on SmolLM2-135M, {args.steps} steps of 4 pairs x max_length 128, LoRA r 16, CPU threads: {os.cpu_count()}")
    print(f"{'setting':<40} {'s/step':>7} {'steps/s':>8} {'speed-up':>9}")
    for label, _ in rows:
        if "error" in results[label]:
            print(f"{label:<40} failed: {results[label]['error']}")
            continue
        per_step = results[label]["seconds_per_step"]
        note = f"  ({results[label]['note']})" if "note" in results[label] else ""
        print(f"{label:<40} {per_step:7.2f} {1 / per_step:8.3f} {first / per_step:8.2f}x{note}")
    print(f"one-off cost of filling the reference cache for these pairs: {fill_seconds:.0f} s "
          "(every later DPO/DDPO/DivPO run and seed on the same pairs reads it)")
    print(f"one-off cost of filling the frozen-prefix cache (last 8 layers) for these pairs: {prefix_fill_seconds:.0f} s")


if __name__ == "__main__":
    main()
