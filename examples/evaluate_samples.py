"""Compare the diversity of your own samples with human text, from Python.

    python examples/evaluate_samples.py --samples mine.jsonl baseline.jsonl --human human.jsonl

Each file holds one text a line as JSON: ``{"prompt": ..., "text": ...}``.
Every samples file is one system (named after the file); the human file gives
the reference rows ``human`` (whole texts) and ``human-matched`` (cut to the
samples' length, which is the fair comparison). Prints one row per system:
each metric's mean over prompts with its 95% bootstrap interval.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from divtune import diversity_report

COLUMNS = ("semantic_diversity", "style_diversity", "vendi_semantic", "distinct_2", "self_bleu", "compression_ratio")


def read_groups(path: str) -> dict[str, list[str]]:
    """{prompt: [texts]} from a JSONL file of {"prompt", "text"} rows."""
    groups: dict[str, list[str]] = defaultdict(list)
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "prompt" not in row or "text" not in row:
                raise SystemExit(f"{path}:{number}: a row needs 'prompt' and 'text', got {sorted(row)}")
            groups[row["prompt"]].append(row["text"])
    return dict(groups)


def cell(row: dict, key: str) -> str:
    """``mean [low, high]``; n/a where a metric is undefined (e.g. a single sample per prompt)."""
    mean, (low, high) = row[key], row[f"{key}_ci"]
    return "n/a" if mean is None else f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", nargs="+", required=True, help="JSONL files, one system each")
    parser.add_argument("--human", help="JSONL file of human texts for the same prompts")
    parser.add_argument("--semantic-embedder", default="minilm")
    parser.add_argument("--style-embedder", default="stylometric")
    args = parser.parse_args(argv)

    systems = {Path(path).stem: read_groups(path) for path in args.samples}
    human = read_groups(args.human) if args.human else None
    report = diversity_report(
        systems, human=human, semantic_embedder=args.semantic_embedder, style_embedder=args.style_embedder
    )
    print("| system | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, row in report.items():
        print(f"| {name} | " + " | ".join(cell(row, key) for key in COLUMNS) + " |")


if __name__ == "__main__":
    main()
