"""`divtune generate` command (registered by divtune.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from divtune.commands.columns import COLUMN_HELP, FORMAT_HELP, parse_columns
from divtune.generation.config import GenerateConfig
from divtune.generation.run import run_generate
from divtune.prepared import RESPONSES_FILE, TEST_FILE


EXAMPLES = """Examples:

  divtune generate --model runs/ddpo --prompts runs/prep --num-samples 4 --output runs/gen/ddpo.jsonl

  divtune generate --model smollm2 --prompts prompts.txt --max-new-tokens 64 --output runs/gen/base.jsonl

  divtune generate --model runs/ddpo --prompts stories.csv --column prompt=title --output runs/gen/ddpo.jsonl
"""


def register(app: typer.Typer) -> None:
    @app.command("generate", epilog=EXAMPLES)
    def generate(
        model: str = typer.Option(..., "--model", help="Model folder, adapter folder, .gguf file, hub id or 'smollm2'."),
        prompts: str = typer.Option(
            ..., "--prompts",
            help=f"Prepared folder/{TEST_FILE}/{RESPONSES_FILE}, JSONL with 'prompt', a data file `prepare` reads "
                 "(CSV, Parquet, JSONL; each distinct prompt once), or a text file (one prompt per line).",
        ),
        column: Optional[List[str]] = typer.Option(None, "--column", help=f"Prompts data file: {COLUMN_HELP}"),
        format: Optional[str] = typer.Option(None, "--format", help=f"Prompts data file: {FORMAT_HELP}"),
        output: Path = typer.Option(..., "--output", "-o", help="Generations JSONL (appended to when resuming)."),
        num_samples: Optional[int] = typer.Option(None, "--num-samples", help="Samples per prompt (default 4)."),
        name: Optional[str] = typer.Option(None, "--name", help="System name written in the 'model' field."),
        max_prompts: Optional[int] = typer.Option(None, "--max-prompts", help="Use only the first K prompts."),
        max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="New tokens per sample at most (default 256)."),
        temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature, 0 = greedy (default 1.0)."),
        top_p: Optional[float] = typer.Option(None, "--top-p", help="Nucleus sampling mass (default 0.95)."),
        top_k: Optional[int] = typer.Option(None, "--top-k", help="Top-k sampling, 0 = off (default 50)."),
        repetition_penalty: Optional[float] = typer.Option(None, "--repetition-penalty", help="Repetition penalty (default 1.1)."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Sequences per batch (default 16)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the sampling; batch k uses a seed derived from it (default 0)."),
        backend: Optional[str] = typer.Option(None, "--backend", help="hf or vllm (default hf)."),
        strategy: Optional[str] = typer.Option(
            None, "--strategy",
            help="independent, iterative (sample k sees samples 1..k-1) or verbalized "
                 "(one call asks for N responses with probabilities; topped up) (default independent).",
        ),
        device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default cuda when available)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file."),
        overrides: List[str] = typer.Option([], "--set", help="key=value override, repeatable."),
        overwrite: bool = typer.Option(
            False, "--overwrite", show_default=False,
            help="Replace an --output file written with other settings (only files divtune wrote).",
        ),
    ) -> None:
        """Sample responses per prompt into a resumable generations JSONL."""
        cfg = GenerateConfig.load(
            config, overrides, model=model, prompts=prompts, output=str(output), num_samples=num_samples,
            name=name, max_prompts=max_prompts, max_new_tokens=max_new_tokens, temperature=temperature,
            top_p=top_p, top_k=top_k, repetition_penalty=repetition_penalty, batch_size=batch_size,
            seed=seed, backend=backend, device=device, strategy=strategy,
            prompts_format=format, prompts_columns=parse_columns(column),
        )
        path = run_generate(cfg, overwrite=overwrite)
        typer.echo(str(path))
