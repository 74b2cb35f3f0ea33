"""`divtune humaneval build|analyze` commands (registered by divtune.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


BUILD_EXAMPLES = """Examples:

  divtune humaneval build --generations runs/gen/ddpo.jsonl runs/gen/dpo.jsonl --pair ddpo=dpo --output runs/study

  divtune humaneval build --generations runs/gen/*.jsonl --pair ddpo=dpo --pair dorpo=orpo --max-items 40 --output runs/study

  divtune humaneval build --generations runs/gen/ddpo.jsonl runs/gen/dpo.jsonl --pair ddpo=dpo --seed 1 --output runs/study --overwrite
"""

ANALYZE_EXAMPLES = """Examples:

  divtune humaneval analyze runs/study answers/*.json --output runs/study-results

  divtune humaneval analyze runs/study answers/*.json answers/late/*.json --output runs/study-results --overwrite
"""


def register(app: typer.Typer) -> None:
    humaneval_app = typer.Typer(help="Human evaluation: a blinded comparison page, and the analysis of its answers.",
                                no_args_is_help=True)
    app.add_typer(humaneval_app, name="humaneval")

    # Extra positional arguments are more generation files, as for `divtune evaluate`.
    @humaneval_app.command("build", context_settings={"allow_extra_args": True}, epilog=BUILD_EXAMPLES)
    def build(
        ctx: typer.Context,
        generations: Optional[List[Path]] = typer.Option(
            None, "--generations", help="Generations JSONL file(s) from `divtune generate`, one system each."
        ),
        pair: Optional[List[str]] = typer.Option(
            None, "--pair",
            help="SYSTEM=BASELINE: compare these two systems (repeatable; default with two files: the first "
                 "against the second)."
        ),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Study folder to write."),
        max_items: Optional[int] = typer.Option(None, "--max-items", help="Prompts per pair (seeded choice; default all)."),
        stories_per_set: Optional[int] = typer.Option(
            None, "--stories-per-set", help="Stories shown per set (default: as many as both systems have)."
        ),
        title: Optional[str] = typer.Option(None, "--title", help="Page title."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the item choice, sides and order (default 0)."),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML config file (e.g. custom questions)."),
        overrides: Optional[List[str]] = typer.Option(None, "--set", help="key=value override (repeatable)."),
        overwrite: bool = typer.Option(
            False, "--overwrite", show_default=False,
            help="Replace a study built with other settings in --output (only files divtune wrote); "
            "answers collected with the old study no longer match.",
        ),
    ) -> None:
        """A blinded side-by-side study: index.html, items.csv, study.json and the key (key.json)."""
        from divtune.humaneval.study import BuildConfig, parse_pairs, run_build  # heavy: loads numpy

        files = [str(p) for p in (generations or [])] + list(ctx.args)
        cfg = BuildConfig.load(
            config,
            overrides or [],
            generations=files or None,
            pairs=parse_pairs(pair) if pair else None,
            output=str(output) if output else None,
            max_items_per_pair=max_items,
            stories_per_set=stories_per_set,
            title=title,
            seed=seed,
        )
        page = run_build(cfg, overwrite=overwrite)
        typer.echo(f"wrote {page} (give this to annotators), {page.parent / 'items.csv'}; keep {page.parent / 'key.json'} private")

    @humaneval_app.command("analyze", epilog=ANALYZE_EXAMPLES)
    def analyze(
        study: Path = typer.Argument(..., help="Study folder written by `divtune humaneval build`."),
        answers: List[Path] = typer.Argument(..., help="Answer files: JSON downloaded from the page, or CSV."),
        output: Path = typer.Option(..., "--output", "-o", help="Folder for humaneval.md/.html/.png and results.json."),
        confidence: Optional[float] = typer.Option(None, "--confidence", help="Level of the Wilson intervals (default 0.95)."),
        overwrite: bool = typer.Option(
            False, "--overwrite", show_default=False,
            help="Replace an analysis of other answers or settings in --output (only files divtune wrote).",
        ),
    ) -> None:
        """Win / tie / loss per question and pair with Wilson intervals, sign tests and agreement."""
        from divtune.humaneval.analyze import AnalyzeConfig, run_analyze  # heavy: loads numpy

        cfg = AnalyzeConfig.load(None, [], study=str(study), answers=[str(a) for a in answers],
                                 output=str(output), confidence=confidence)
        page = run_analyze(cfg, overwrite=overwrite)
        typer.echo(f"wrote {page} and {page.parent / 'humaneval.md'}")
