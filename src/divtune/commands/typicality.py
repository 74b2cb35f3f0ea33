"""`divtune typicality` command (registered by divtune.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


EXAMPLES = """Examples:

  divtune typicality -i shipped:wp_scored -o runs/typ/b05 --term semantic -b 0.5 --opening-words 40

  divtune typicality -i shipped:wp_scored -o runs/typ/modes --term mode -b 1.0
"""


def register(app: typer.Typer) -> None:
    @app.command("typicality", epilog=EXAMPLES)
    def typicality(
        input: List[str] = typer.Option(
            None, "--input", "-i", help="Input file(s) in any layout `prepare` reads, or shipped:wp_scored. Repeatable."
        ),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder (pools.jsonl, summary.json)."),
        term: Optional[str] = typer.Option(
            None, "--term", help="Typicality term: semantic (pool centrality, default), mode (typical surface mode) or lexical (TF-IDF centrality)."
        ),
        strength: Optional[float] = typer.Option(None, "--strength", "-b", help="b in score = quality + b * typicality (default 0)."),
        opening_words: Optional[int] = typer.Option(None, "--opening-words", help="Cut every story to its first N words."),
        embedder: Optional[str] = typer.Option(None, "--embedder", help="Semantic term's embedder: minilm (default), mpnet, a folder or hub id."),
        seed: Optional[int] = typer.Option(None, "--seed", help="The seed prepare will use (for the flip report; default 0)."),
        gap: Optional[float] = typer.Option(None, "--gap", help="The gap prepare will use, in score units (default 0.1)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file with any of these settings."),
        set_: List[str] = typer.Option(None, "--set", help="Override a setting, key=value (after the YAML and flags)."),
        overwrite: bool = typer.Option(
            False, "--overwrite", show_default=False,
            help="Replace a typicality run with other settings in the output (only files divtune wrote).",
        ),
    ) -> None:
        """Real stories with a typicality bias of known strength b in their scores, as a pools-layout file
        that `divtune prepare` reads (the known-answer benchmark, docs/typicality.md).
        """
        from divtune.typicality import POOLS_FILE, TypicalityConfig, run_typicality  # heavy: loads numpy

        cfg = TypicalityConfig.load(
            config, overrides=set_ or [], inputs=list(input) if input else None,
            output=str(output) if output else None, term=term, strength=strength,
            opening_words=opening_words, embedder=embedder, seed=seed, gap=gap,
        )
        summary = run_typicality(cfg, overwrite=overwrite)
        keys = ("prompts", "responses", "modes", "order_flips", "predicted_prepare_pairs")
        typer.echo(json.dumps({k: summary[k] for k in keys}, indent=2))
        typer.echo(f"wrote {Path(cfg.output) / POOLS_FILE}: give it to `divtune prepare --input`")
