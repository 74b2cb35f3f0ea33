"""`divtune report` command (registered by divtune.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        eval_dirs: list[Path] = typer.Argument(..., help="Evaluation folder(s) written by `divtune evaluate`."),
        output: Path = typer.Option(..., "--output", help="Folder for report.md, report.html and the PNG plots."),
        baseline: Optional[str] = typer.Option(
            None, "--baseline", help="System to compare against (default: one named like `dpo`, else the first)."
        ),
        bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for paired differences."),
        seed: int = typer.Option(0, "--seed", help="Seed of the paired bootstrap."),
    ) -> None:
        """Tables, plots and a self-contained HTML report from evaluation folders."""
        from divtune.report import run_report

        html_path = run_report(eval_dirs, output, baseline=baseline, n_boot=bootstrap, seed=seed)
        typer.echo(f"wrote {html_path} and {Path(output) / 'report.md'}")
