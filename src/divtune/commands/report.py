"""`divtune report` command (registered by divtune.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from divtune.config import ConfigError

EXAMPLES = """Examples:

  divtune report runs/eval --output runs/report --baseline dpo

  divtune report runs/eval --output runs/report --pool ddpo=ddpo-s0,ddpo-s1 --pool dpo=dpo-s0,dpo-s1 --compare ddpo=dpo

  divtune report runs/eval --output runs/report ... --interaction ddpo-x-b=ddpo-b1,dpo-b1,ddpo-b0,dpo-b0
"""


def register(app: typer.Typer) -> None:
    @app.command("report", epilog=EXAMPLES)
    def report(
        eval_dirs: list[Path] = typer.Argument(..., help="Evaluation folder(s) written by `divtune evaluate`."),
        output: Path = typer.Option(..., "--output", help="Folder for report.md, report.html and the PNG plots."),
        baseline: Optional[str] = typer.Option(
            None, "--baseline", help="System to compare against (default: one named like `dpo`, else the first)."
        ),
        bootstrap: int = typer.Option(
            1000, "--bootstrap", show_default=False, help="Bootstrap resamples for paired differences (default 1000)."
        ),
        seed: int = typer.Option(0, "--seed", show_default=False, help="Seed of the paired bootstrap (default 0)."),
        compare: Optional[list[str]] = typer.Option(
            None, "--compare", help="SYSTEM=BASELINE: compare exactly these pairs (repeatable) instead of all against --baseline."
        ),
        pool: Optional[list[str]] = typer.Option(
            None, "--pool", help="NAME=RUN1,RUN2,...: add NAME, the per-prompt mean of these runs (e.g. seeds); repeatable."
        ),
        interaction: Optional[list[str]] = typer.Option(
            None, "--interaction",
            help="NAME=A,B,A0,B0: the interaction (A − B) − (A0 − B0), seeds paired (pooled names) (repeatable).",
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", show_default=False,
            help="Replace a report with other settings in --output (only files divtune wrote).",
        ),
    ) -> None:
        """Tables, plots and a self-contained HTML report from evaluation folders."""
        from divtune.reporting.run import run_report  # heavy: loads numpy

        comparisons = parse_assignments(compare, "--compare") if compare else None
        seed_groups = {k: v.split(",") for k, v in parse_assignments(pool, "--pool").items()} if pool else None
        interactions = None
        if interaction:
            from divtune.reporting.comparisons import INTERACTION_TERMS  # heavy: loads numpy

            interactions = {}
            for name, value in parse_assignments(interaction, "--interaction").items():
                parts = [v.strip() for v in value.split(",")]
                if len(parts) != 4 or not all(parts):
                    raise ConfigError(f"--interaction {name}={value}: expected four systems A,B,A0,B0")
                interactions[name] = dict(zip(INTERACTION_TERMS, parts))
        html_path = run_report(
            eval_dirs, output, baseline=baseline, n_boot=bootstrap, seed=seed,
            comparisons=comparisons, seed_groups=seed_groups, overwrite=overwrite, interactions=interactions,
        )
        typer.echo(f"wrote {html_path} and {Path(output) / 'report.md'}")


def parse_assignments(items: list[str], option: str) -> dict[str, str]:
    """``["a=b", ...]`` → ``{"a": "b"}``, with an error naming the option for a malformed item."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{option} {item!r}: expected NAME=VALUE")
        if key.strip() in out:
            raise ConfigError(f"{option} {item!r}: {key.strip()!r} given twice")
        out[key.strip()] = value.strip()
    return out
