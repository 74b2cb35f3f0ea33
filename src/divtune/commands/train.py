"""`divtune train` command (registered by divtune.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from divtune.methods import names
from divtune.prepared import TRAIN_FILE
from divtune.train.config import TrainConfig
from divtune.train.runner import run_train

EXAMPLES = """Examples:

  divtune train --method ddpo --data runs/prep --model smollm2 --output runs/ddpo --set max_steps=50

  divtune train --method sft --data runs/prep --output runs/sft --set per_device_train_batch_size=1
"""

HELP = (
    "Tune a model on prepared preference pairs (paper defaults per method).\n\n"
    "On CPU the defaults are the quickstart's sizes: max_length 128 and a batch of 2 per device "
    "(1024 and 4 on a GPU). Before the model loads, the peak memory is estimated from the model size, "
    "batch and length; a CPU run that would not fit the available memory is refused, with --set values that fit."
)


def register(app: typer.Typer) -> None:
    @app.command("train", help=HELP, epilog=EXAMPLES)
    def train(
        method: Optional[str] = typer.Option(
            None, "--method", "-m",
            help=f"{', '.join(names(online=False))}, or online: {', '.join(names(online=True))} (default ddpo).",
        ),
        data: Optional[str] = typer.Option(None, "--data", help=f"Prepared folder (its {TRAIN_FILE}) or a pairs JSONL."),
        model: Optional[str] = typer.Option(
            None, "--model", help="Hub id, model folder, .gguf file or 'smollm2' (default smollm2, the shipped SmolLM2-135M-Instruct)."
        ),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Folder for the adapter/model and logs."),
        init: Optional[str] = typer.Option(None, "--init", help="Start from this SFT adapter or model folder."),
        precompute_ref: Optional[bool] = typer.Option(
            None, "--precompute-ref/--no-precompute-ref", help="Reference log-probs once, before training (default no)."
        ),
        resume: Optional[bool] = typer.Option(
            None, "--resume/--no-resume", help="Continue from the last checkpoint in --output (default no)."
        ),
        reward: Optional[str] = typer.Option(
            None, "--reward", help="Reward-model folder (divtune reward train) for grpo, dqo, darling."
        ),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the data order, LoRA init and dropout (default 42)."),
        device: Optional[str] = typer.Option(
            None, "--device", help="auto, cpu or cuda (default auto: cuda when available)."
        ),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file."),
        overrides: List[str] = typer.Option(
            [], "--set", help="key=value, repeatable; TrainingArguments names work as they are (max_steps=5)."
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", show_default=False,
            help="Replace a train run with other settings in --output (only files divtune wrote).",
        ),
        memory_check: bool = typer.Option(
            True, "--memory-check/--no-memory-check", show_default=False,
            help="Refuse a CPU run whose estimated peak memory exceeds the available memory (default on).",
        ),
    ) -> None:
        cfg = TrainConfig.load(
            config, overrides, method=method, data=data, model=model,
            output=str(output) if output is not None else None, init=init,
            precompute_ref=precompute_ref, resume=resume, seed=seed, device=device, reward=reward,
        )
        path = run_train(cfg, overwrite=overwrite, memory_check=memory_check)
        typer.echo(str(path))
