"""`divtune export` command (registered by divtune.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from divtune.export import ExportConfig, run_export


EXAMPLES = """Examples:

  divtune export runs/ddpo --output exports/smollm2-ddpo --eval runs/eval

  divtune export runs/ddpo --output exports/smollm2-ddpo-merged --merge
"""


def register(app: typer.Typer) -> None:
    @app.command("export", epilog=EXAMPLES)
    def export(
        run_dir: Path = typer.Argument(..., help="A finished `divtune train` output folder."),
        output: Path = typer.Option(..., "--output", "-o", help="Folder to write (must not exist, or be empty)."),
        merge: bool = typer.Option(False, "--merge", help="Fold the LoRA adapter into the base: a standalone model."),
        eval_dir: Optional[Path] = typer.Option(None, "--eval", help="A `divtune evaluate` folder: its metrics go on the card."),
        system: Optional[str] = typer.Option(None, "--system", help="Which system of --eval is this model (default: found from the generations' configs)."),
        name: Optional[str] = typer.Option(None, "--name", help="Model card title (default: the output folder's name)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file."),
        overrides: List[str] = typer.Option([], "--set", help="key=value override, repeatable."),
    ) -> None:
        """A trained run as a portable folder: safetensors, tokenizer, generation config and a model card."""
        cfg = ExportConfig.load(
            config, overrides, run=str(run_dir), output=str(output), merge=merge or None,
            eval=str(eval_dir) if eval_dir else None, system=system, name=name,
        )
        typer.echo(str(run_export(cfg)))
