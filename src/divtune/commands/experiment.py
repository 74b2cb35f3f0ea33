"""`divtune experiment` command (registered by divtune.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from divtune.config import ConfigError
from divtune.experiments import (
    ExperimentConfig,
    build_stages,
    carry,
    check_config,
    publish_results,
    run_experiment,
    run_one_stage,
)
from divtune.reporting.tables import summary_table

EXAMPLES = """Examples:

  divtune experiment configs/experiments/wp_smollm2.yaml

  divtune experiment configs/experiments/wp_smollm2_levers.yaml --set seeds=[0,1,2] --publish docs/results/wp_smollm2_levers

  divtune experiment configs/experiments/typicality.yaml --check    # every stage at a tiny size, minutes: settings that fail show now

  divtune experiment configs/experiments/typicality.yaml --pack carry/typicality.tar.gz     # on the first machine

  divtune experiment configs/experiments/typicality.yaml --unpack carry/typicality.tar.gz   # resume on another
"""


def register(app: typer.Typer) -> None:
    @app.command("experiment", epilog=EXAMPLES)
    def experiment(
        config: str = typer.Argument(..., help="Experiment YAML, e.g. configs/experiments/wp_smollm2.yaml."),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="Override the config's output folder."),
        device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda (default: the config's device)."),
        fresh: bool = typer.Option(False, "--fresh", show_default=False, help="Redo every stage instead of reusing finished ones."),
        set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config field, e.g. seeds=[0,1]."),
        publish: Optional[str] = typer.Option(None, "--publish", help="Copy report, metrics and run record to this folder (e.g. docs/results/wp_smollm2)."),
        jobs: Optional[int] = typer.Option(
            None, "--jobs", "-j", min=1,
            help=(
                "Stages run at once, each in its own process with cores/jobs threads and, on GPUs, an equal "
                "share of the GPUs of its own (default: the config's, 1)."
            ),
        ),
        pack: Optional[str] = typer.Option(
            None, "--pack",
            help="Write the finished stages to this .tar.gz (without the weights no stage still needs) and stop.",
        ),
        unpack: Optional[str] = typer.Option(
            None, "--unpack", help="Restore the finished stages of a --pack archive, then resume the experiment.",
        ),
        check: bool = typer.Option(
            False, "--check", show_default=False,
            help="Run every stage at a tiny size (first seed, 2 steps, 2 short samples) into OUTPUT-check, "
            "to find a setting that fails before the full run; nothing there is a result.",
        ),
        stage: Optional[str] = typer.Option(
            None, "--stage", help="Run only this stage (by name, e.g. 'train dpo-s0'); used by the --jobs workers."
        ),
    ) -> None:
        """Run (or resume, stage by stage) a fixed comparison of systems and write its report.

        Example: divtune experiment configs/experiments/typicality.yaml --set 'seeds=[0]' --jobs 2
        """
        cfg = ExperimentConfig.load(config, overrides=set_ or [], output=output, device=device, jobs=jobs)
        if check:
            clashing = [flag for flag, value in (("--publish", publish), ("--pack", pack), ("--unpack", unpack)) if value]
            if clashing:
                raise ConfigError(f"--check runs a throwaway copy of the experiment; it does not go with {clashing[0]}")
            cfg = check_config(cfg, output=output)
        if pack is not None or unpack is not None:
            stages, _ = build_stages(cfg)
            if pack is not None:
                manifest = carry.pack(stages, Path(cfg.output), Path(pack))
                finished = sum(1 for s in manifest["stages"].values() if s["packed"])
                typer.echo(f"packed {finished} of {len(stages)} stages ({manifest['files']} files) into {pack}")
                return
            restored = carry.unpack(stages, Path(cfg.output), Path(unpack))
            typer.echo(f"restored {len(restored)} finished stages from {unpack}")
        if stage is not None:
            seconds = run_one_stage(cfg, stage)
            typer.echo(f"{stage}: {seconds:.0f} s")
            return
        result = run_experiment(cfg, fresh=fresh)
        if check:
            typer.echo(
                f"check passed: every stage ran at check size in {result['wall_seconds']:.0f} s "
                f"(folder {cfg.output}; its numbers are not results)"
            )
            return
        typer.echo(summary_table(result["metrics"]))
        typer.echo(f"wall time: {result['wall_seconds']:.0f} s; report: {result['paths']['report']}/report.html")
        if publish:
            typer.echo(f"published to {publish_results(cfg, publish)}")
