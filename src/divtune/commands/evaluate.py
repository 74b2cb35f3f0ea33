"""`divtune evaluate` command (registered by divtune.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from divtune.commands.columns import COLUMN_HELP, FORMAT_HELP, parse_columns
from divtune.config import ConfigError
from divtune.evaluation.config import EvaluateConfig
from divtune.quality_status import quality_status
from divtune.reporting.tables import summary_table

EXAMPLES = """Examples:

  divtune evaluate --generations runs/gen/*.jsonl --gold runs/prep --reward runs/rm --output runs/eval

  divtune evaluate --generations runs/gen/dpo.jsonl runs/gen/ddpo.jsonl --output runs/eval --bootstrap 500

  divtune evaluate --generations runs/gen/*.jsonl --gold stories.csv --column prompt=title --column response=body --output runs/eval
"""


def evaluate_table(results: dict, output: str) -> str:
    """The headline metrics per system; quality marked † with the report's footnote when the report
    would grey it out (a reward model not shown to beat chance: divtune.quality_status)."""
    keys = ("semantic_diversity", "style_diversity", "quality", "n_prompts")
    return summary_table(results, keys=keys, quality=quality_status([output]))


def register(app: typer.Typer) -> None:
    # Extra positional arguments are more generation files, so `--generations a.jsonl b.jsonl` works.
    @app.command("evaluate", context_settings={"allow_extra_args": True}, epilog=EXAMPLES)
    def evaluate(
        ctx: typer.Context,
        generations: Optional[list[Path]] = typer.Option(
            None, "--generations", help="Generations JSONL file(s); repeat or list several after one flag."
        ),
        output: Path = typer.Option(..., "--output", help="Folder for metrics.json, per_prompt.jsonl, config.yaml."),
        gold: Optional[Path] = typer.Option(
            None, "--gold",
            help="Human responses for the `gold` row: a prepared folder (its test split), or a raw data file in any "
                 "layout `prepare` reads (every prompt; matched by id, else by prompt text).",
        ),
        column: Optional[list[str]] = typer.Option(None, "--column", help=f"Raw --gold file: {COLUMN_HELP}"),
        format: Optional[str] = typer.Option(None, "--format", help=f"Raw --gold file: {FORMAT_HELP}"),
        reward: Optional[Path] = typer.Option(None, "--reward", help="Reward-model folder for quality (else the lines' `quality` field)."),
        embedder: Optional[list[str]] = typer.Option(
            None, "--embedder", help="NAME=SPEC for `semantic` and/or `style` (default semantic=minilm, style=stylometric)."
        ),
        embed_cache_dir: Optional[Path] = typer.Option(None, "--embed-cache-dir", help="On-disk embedding cache (default embeddings/ in the divtune cache)."),
        num_gold: Optional[int] = typer.Option(None, "--num-gold", help="Human responses per gold prompt (default: the samples' N)."),
        quality_threshold: Optional[float] = typer.Option(
            None, "--quality-threshold", help="Effective diversity keeps samples with quality >= X (default: median gold quality)."
        ),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed for gold sampling and the bootstrap (default 0)."),
        bootstrap: Optional[int] = typer.Option(None, "--bootstrap", help="Bootstrap resamples (default 1000)."),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML config file."),
        overrides: Optional[list[str]] = typer.Option(None, "--set", help="key=value override (repeatable)."),
        overwrite: bool = typer.Option(
            False, "--overwrite", show_default=False,
            help="Replace an evaluate run with other settings in --output (only files divtune wrote).",
        ),
    ) -> None:
        """Diversity and quality metrics of generation files, with bootstrap intervals."""
        from divtune.embedders import DEFAULT_EMBEDDERS, parse_embedder_specs  # heavy: loads numpy
        from divtune.evaluation.run import run_evaluate  # heavy: loads numpy

        files = [str(p) for p in (generations or [])] + list(ctx.args)
        embedders = None
        if embedder:
            try:
                embedders = {**DEFAULT_EMBEDDERS, **parse_embedder_specs(embedder)}
            except ValueError as err:
                raise ConfigError(f"--embedder: {err}") from None
        cfg = EvaluateConfig.load(
            config,
            overrides or [],
            generations=files or None,
            output=str(output),
            gold=str(gold) if gold else None,
            gold_columns=parse_columns(column),
            gold_format=format,
            reward=str(reward) if reward else None,
            embedders=embedders,
            embed_cache_dir=str(embed_cache_dir) if embed_cache_dir else None,
            num_gold=num_gold,
            quality_threshold=quality_threshold,
            seed=seed,
            bootstrap=bootstrap,
        )
        results = run_evaluate(cfg, overwrite=overwrite)
        typer.echo(evaluate_table(results, cfg.output))
        typer.echo(f"wrote {Path(cfg.output) / 'metrics.json'}")
