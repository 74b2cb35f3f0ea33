"""`divtune quickstart` command (registered by divtune.cli)."""

from __future__ import annotations

from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("quickstart")
    def quickstart(
        output: str = typer.Option("runs/quickstart", "--output", "-o", help="Folder for every artefact of the run."),
        preset: str = typer.Option("default", "--preset", help="Size preset: default (~5 min on 2 CPU cores) or smoke (CI)."),
        fresh: bool = typer.Option(False, "--fresh", help="Redo every stage instead of reusing finished ones."),
        set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a field of the experiment config, e.g. train.training.max_steps=4."),
    ) -> None:
        """Run the whole pipeline offline on the shipped data and models: prepare, reward model,
        DPO and DDPO, sampling, evaluation against the human gold row, report."""
        from divtune.quickstart import run_quickstart

        result = run_quickstart(output, preset, set_ or [], fresh=fresh)
        typer.echo("")
        typer.echo(result["table"])
        typer.echo(f"\nwall time: {result['wall_seconds']:.0f} s")
        typer.echo(f"report: {result['report_html']}")
