"""`divtune quickstart` command (registered by divtune.cli)."""

from __future__ import annotations

from typing import List, Optional

import typer

from divtune.quickstart import run_quickstart


EXAMPLES = """Examples:

  divtune quickstart

  divtune quickstart --preset smoke --output runs/smoke --set train.training.max_steps=4
"""


def register(app: typer.Typer) -> None:
    @app.command("quickstart", epilog=EXAMPLES)
    def quickstart(
        output: str = typer.Option(
            "runs/quickstart", "--output", "-o", show_default=False,
            help="Folder for every artefact of the run (default runs/quickstart).",
        ),
        preset: str = typer.Option(
            "default", "--preset", show_default=False,
            help="Size preset: default (~5 min on 2 CPU cores) or smoke (CI) (default default).",
        ),
        fresh: bool = typer.Option(False, "--fresh", show_default=False, help="Redo every stage instead of reusing finished ones."),
        set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a field of the experiment config, e.g. train.training.max_steps=4."),
    ) -> None:
        """Run the whole pipeline offline on the shipped data and models: prepare, reward model,
        DPO and DDPO, sampling, evaluation against the human gold row, report."""
        result = run_quickstart(output, preset, set_ or [], fresh=fresh)
        typer.echo("")
        typer.echo(result["table"])
        typer.echo(f"\nwall time: {result['wall_seconds']:.0f} s")
        typer.echo(f"report: {result['report_html']}")
