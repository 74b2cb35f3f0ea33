"""`divtune diagnostics` command (registered by divtune.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


EXAMPLES = """Examples:

  divtune diagnostics runs/wp_smollm2

  divtune diagnostics runs/quickstart --output runs/quickstart-diagnostics --window 2
"""


def register(app: typer.Typer) -> None:
    @app.command("diagnostics", epilog=EXAMPLES)
    def diagnostics(
        run_dir: Path = typer.Argument(..., help="Experiment or quickstart folder (with models/ and data/)."),
        output: Optional[Path] = typer.Option(None, "--output", help="Folder for the files (default RUN_DIR/diagnostics)."),
        window: int = typer.Option(
            4, "--window", min=1, show_default=False, help="Steps in the running mean and in the start/end means (default 4)."
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", show_default=False,
            help="Replace diagnostics with other settings in --output (only files divtune wrote).",
        ),
    ) -> None:
        """Training curves and pair-weight distributions: did each run move, and how were pairs weighted?"""
        from divtune.reporting.diagnostics import run_diagnostics  # heavy: loads numpy

        path = run_diagnostics(run_dir, output or run_dir / "diagnostics", window=window, overwrite=overwrite)
        typer.echo(f"wrote {path}")
