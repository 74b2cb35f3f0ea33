"""`divtune prepare` command (registered by divtune.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from divtune.commands.columns import COLUMN_HELP, parse_columns
from divtune.prepared import RESPONSES_FILE, SUMMARY_FILE, TEST_FILE, TRAIN_FILE


EXAMPLES = """Examples:

  divtune prepare --input shipped:wp_scored --output runs/prep

  divtune prepare --input my_votes.csv --column prompt=title --column response=body --output runs/prep --max-prompts 50
"""


def register(app: typer.Typer) -> None:
    @app.command("prepare", epilog=EXAMPLES)
    def prepare(
        input: List[str] = typer.Option(
            None, "--input", "-i",
            help="Input file or folder (JSONL[.gz], CSV, Parquet, datasets save_to_disk folder), "
            "or shipped:wp_scored / shipped:wp_fresh. Repeatable.",
        ),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder for train/test/responses/summary."),
        format: Optional[str] = typer.Option(None, "--format", help="Input layout: auto, reddit, pools or flat (default auto)."),
        column: List[str] = typer.Option(None, "--column", help=COLUMN_HELP),
        min_words: Optional[int] = typer.Option(None, help="Drop responses with fewer words (default 100)."),
        test_fraction: Optional[float] = typer.Option(None, help="Fraction of prompts held out for test (default 0.1)."),
        seed: Optional[int] = typer.Option(None, help="Seed for the split, pair sampling and subsets (default 0)."),
        vote_transform: Optional[str] = typer.Option(
            None, help="Vote compression: exact (maps onto [-1, 1]) or released (the released code's formula) (default exact)."
        ),
        gap: Optional[float] = typer.Option(None, help="Minimum score gap preferred for a pair (default 5)."),
        pairs: Optional[str] = typer.Option(
            None, help="Pairing: gap (disjoint gap matching), all (all pairs, capped) or divpo (default gap)."
        ),
        max_pairs_per_prompt: Optional[int] = typer.Option(
            None, help="Cap on pairs per prompt (default none for gap, 100 for all, 2 for divpo)."
        ),
        rho: Optional[float] = typer.Option(None, help="DivPO: percentage of a pool in the high and low sets (default 25)."),
        embedder: List[str] = typer.Option(
            None, help="Deviation embedder NAME=SPEC (sentence-transformers folder/hub id, minilm, stylometric). "
            "Repeatable (default semantic=minilm and style=stylometric).",
        ),
        weight_floor: Optional[float] = typer.Option(None, help="Lowest pair weight, in [0, 1) (default 0)."),
        conversational: Optional[bool] = typer.Option(
            None, "--conversational/--plain", help="Write prompt/chosen/rejected as chat message lists (TRL conversational)."
        ),
        skip_invalid: Optional[bool] = typer.Option(
            None, "--skip-invalid/--strict", help="Drop and count bad rows instead of stopping at the first one."
        ),
        max_prompts: Optional[int] = typer.Option(None, help="Keep only K prompts (seeded) to run small."),
        max_responses_per_prompt: Optional[int] = typer.Option(
            None, help="Keep only the top-scored K responses of each prompt before pairing."
        ),
        cache_dir: Optional[Path] = typer.Option(None, help="Embedding cache folder (default embeddings/ in the divtune cache)."),
        embed_batch_size: Optional[int] = typer.Option(None, help="Texts per embedding batch (default 64)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file with any of these settings."),
        set_: List[str] = typer.Option(None, "--set", help="Override a setting, key=value (after the YAML and flags)."),
        overwrite: bool = typer.Option(
            False, "--overwrite", show_default=False,
            help="Replace a run of this stage with other settings in the output (only files divtune wrote).",
        ),
    ) -> None:
        """Turn prompt/response/score data into weighted preference pairs (train.jsonl, test.jsonl,
        responses.jsonl, summary.json, config.yaml)."""
        _run(config, set_ or [], overwrite, embedder, column, inputs=list(input) if input else None,
             output=str(output) if output else None, format=format, min_words=min_words,
             test_fraction=test_fraction, seed=seed, vote_transform=vote_transform, gap=gap, pairs=pairs,
             max_pairs_per_prompt=max_pairs_per_prompt, rho=rho, weight_floor=weight_floor,
             conversational=conversational, skip_invalid=skip_invalid, max_prompts=max_prompts,
             max_responses_per_prompt=max_responses_per_prompt, cache_dir=str(cache_dir) if cache_dir else None,
             embed_batch_size=embed_batch_size)


def _run(config: Optional[Path], overrides: List[str], overwrite: bool, embedder: List[str], column: List[str],
         **settings) -> None:
    """Build the config from the YAML file, the flags and ``--set``, run the stage and print what it made."""
    from divtune.embedders import parse_embedder_specs  # heavy: loads numpy
    from divtune.prepare import PrepareConfig, run_prepare  # heavy: loads numpy

    try:
        embedders = parse_embedder_specs(embedder) if embedder else None
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--embedder") from None
    cfg = PrepareConfig.load(config, overrides=overrides, columns=parse_columns(column), embedders=embedders,
                             **settings)
    summary = run_prepare(cfg, overwrite=overwrite)
    typer.echo(json.dumps({k: summary[k] for k in ("prompts", "responses", "pairs", "pools_without_pairs")}, indent=2))
    typer.echo(f"wrote {cfg.output}/{TRAIN_FILE}, {TEST_FILE}, {RESPONSES_FILE}, {SUMMARY_FILE}, config.yaml")
