"""`divtune train` command (registered by divtune.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        method: Optional[str] = typer.Option(
            None, "--method", "-m", help="sft, dpo, ddpo, orpo, dorpo, divpo (or online: grpo, dqo, darling)."
        ),
        data: Optional[str] = typer.Option(None, "--data", help="Prepared folder (its train.jsonl) or a pairs JSONL."),
        model: Optional[str] = typer.Option(None, "--model", help="Hub id, model folder, .gguf file or 'smollm2'."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Folder for the adapter/model and logs."),
        init: Optional[str] = typer.Option(None, "--init", help="Start from this SFT adapter or model folder."),
        precompute_ref: Optional[bool] = typer.Option(
            None, "--precompute-ref/--no-precompute-ref", help="Reference log-probs once, before training."
        ),
        resume: Optional[bool] = typer.Option(
            None, "--resume/--no-resume", help="Continue from the last checkpoint in --output."
        ),
        reward: Optional[str] = typer.Option(
            None, "--reward", help="Reward-model folder (divtune reward train) for grpo, dqo, darling."
        ),
        seed: Optional[int] = typer.Option(None, "--seed"),
        device: Optional[str] = typer.Option(None, "--device", help="auto (default), cpu or cuda."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file."),
        overrides: List[str] = typer.Option(
            [], "--set", help="key=value, repeatable; TrainingArguments names work as they are (max_steps=5)."
        ),
    ) -> None:
        """Tune a model on prepared preference pairs (paper defaults per method)."""
        from divtune.train import TrainConfig, run_train

        cfg = TrainConfig.load(
            config, overrides, method=method, data=data, model=model,
            output=str(output) if output is not None else None, init=init,
            precompute_ref=precompute_ref, resume=resume, seed=seed, device=device, reward=reward,
        )
        path = run_train(cfg)
        typer.echo(str(path))
