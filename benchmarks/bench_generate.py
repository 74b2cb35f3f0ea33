"""Sampling speed: the prompt's KV cache shared among its samples vs recomputed per sample.

``divtune generate`` samples N responses per prompt. Without sharing, every
sample's row runs the whole (chat-formatted) prompt through the model; with
``share_prompt_cache`` (the default) each distinct prompt of a batch is run once
and its cache rows are repeated. Both runs below use the same model, prompts,
seed and batches, on the shipped SmolLM2-135M-Instruct, one after the other in
this process; the script checks that the two files hold the same samples
before it prints the speed-up.

    python benchmarks/bench_generate.py [--prompts 4] [--samples 16] [--new-tokens 32] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from divtune.generation.config import GenerateConfig
from divtune.generation.run import run_generate

PROMPTS = [
    "You wake up one morning and discover that every clock in the world has stopped at the same minute.",
    "A dragon opens a bakery in a small mountain village.",
    "The last human on Earth hears a knock on the door.",
    "Aliens finally arrive, and they only want to talk to the cats.",
    "Your reflection starts moving a second before you do.",
    "Write the diary entry of a lighthouse keeper on the night the light goes out.",
    "Magic exists, but every spell costs one memory.",
    "A detective is hired to find a missing color.",
]


def timed_run(prompts: Path, output: Path, args, share: bool) -> float:
    cfg = GenerateConfig(
        model="smollm2", prompts=str(prompts), output=str(output), num_samples=args.samples,
        max_new_tokens=args.new_tokens, batch_size=args.batch, seed=0, device="cpu",
        share_prompt_cache=share, show_progress=False,
    )
    start = time.perf_counter()
    run_generate(cfg)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prompts = tmp / "prompts.txt"
        prompts.write_text("\n".join(PROMPTS[: args.prompts]) + "\n")
        timed_run(prompts, tmp / "warmup.jsonl", argparse.Namespace(**{**vars(args), "samples": 2}), True)
        seconds = {share: timed_run(prompts, tmp / f"{share}.jsonl", args, share) for share in (False, True)}
        texts = {
            share: [json.loads(line)["text"] for line in (tmp / f"{share}.jsonl").read_text().splitlines()]
            for share in (False, True)
        }
    same = sum(a == b for a, b in zip(texts[False], texts[True]))
    n = args.prompts * args.samples
    print(f"{args.prompts} prompts x {args.samples} samples x {args.new_tokens} new tokens, batch {args.batch}, SmolLM2-135M, CPU")
    print(f"identical samples: {same} of {n}")
    for share in (False, True):
        label = "shared prompt cache" if share else "prompt per sample"
        print(f"{label:<22} {seconds[share]:7.1f} s  {n / seconds[share]:6.2f} samples/s")
    print(f"speed-up: {seconds[False] / seconds[True]:.2f}x")


if __name__ == "__main__":
    main()
