"""`divtune reward train|score` commands (registered by divtune.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from divtune.prepared import TEST_FILE, TRAIN_FILE
from divtune.reward.config import RewardTrainConfig


TRAIN_EXAMPLES = """Examples:

  divtune reward train --data runs/prep --output runs/rm

  divtune reward train --data runs/prep --output runs/rm --max-epochs 8 --patience 2
"""

SCORE_EXAMPLES = """Example:

  divtune reward score --reward runs/rm --generations runs/gen/ddpo.jsonl --output runs/gen/ddpo.scored.jsonl
"""


def register(app: typer.Typer) -> None:
    reward_app = typer.Typer(help="Quality reward model: train on prepared data, score generations.",
                             no_args_is_help=True)
    app.add_typer(reward_app, name="reward")

    @reward_app.command("train", epilog=TRAIN_EXAMPLES)
    def train(
        data: Optional[Path] = typer.Option(None, "--data", help=f"Prepared folder ({TRAIN_FILE}, {TEST_FILE})."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Reward model folder to write."),
        backbone: Optional[str] = typer.Option(None, "--backbone", help="'minilm', a folder or a hub id (default minilm)."),
        backbone_kind: Optional[str] = typer.Option(
            None, "--backbone-kind", help="auto, encoder or sequence_classification (default auto)."
        ),
        freeze_backbone: Optional[bool] = typer.Option(None, "--freeze-backbone/--train-backbone",
                                                       help="Train only the head, or the backbone too (default head only)."),
        lora: Optional[bool] = typer.Option(
            None, "--lora/--no-lora", help="LoRA on a sequence-classification backbone (default no)."
        ),
        objective: Optional[str] = typer.Option(
            None, "--objective", help="l1 (regress the vote, default) or pairwise (Bradley-Terry)."
        ),
        max_length: Optional[int] = typer.Option(
            None, "--max-length", help="Tokens of prompt + response the backbone reads (default 256)."
        ),
        max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="Epochs at most (default 30)."),
        patience: Optional[int] = typer.Option(
            None, "--patience", help="Stop after this many epochs without a better validation L1 (default 3)."
        ),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Responses per batch (default 32)."),
        device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default cuda when available)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the validation split and the head init (default 0)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file."),
        overrides: List[str] = typer.Option([], "--set", help="key=value override, repeatable."),
        overwrite: bool = typer.Option(
            False, "--overwrite", show_default=False,
            help="Replace a reward run with other settings in --output (only files divtune wrote).",
        ),
    ) -> None:
        """Train the reward model (vote regression or pairwise, early stopping) and report test metrics."""
        from divtune.reward.fit import train_reward_model  # heavy: loads numpy

        cfg = RewardTrainConfig.load(
            config, overrides, data=str(data) if data else None, output=str(output) if output else None,
            backbone=backbone, backbone_kind=backbone_kind, freeze_backbone=freeze_backbone, lora=lora,
            objective=objective, max_length=max_length, max_epochs=max_epochs, patience=patience, batch_size=batch_size,
            device=device, seed=seed,
        )
        metrics = train_reward_model(cfg, overwrite=overwrite)
        summary = {k: metrics[k] for k in ("pairwise_accuracy", "pairwise_accuracy_ci", "spearman",
                                           "n_test_pairs", "best_epoch", "train_seconds", "length_baseline")}
        typer.echo(json.dumps(summary, indent=2))

    @reward_app.command("score", epilog=SCORE_EXAMPLES)
    def score(
        reward: Path = typer.Option(..., "--reward", help="Reward model folder from `divtune reward train`."),
        generations: Path = typer.Option(..., "--generations", help="Generations JSONL."),
        output: Path = typer.Option(..., "--output", "-o", help="Copy of the generations with a 'quality' field."),
        batch_size: int = typer.Option(64, "--batch-size", show_default=False, help="Texts per scoring batch (default 64)."),
        overwrite: bool = typer.Option(
            False, "--overwrite", show_default=False,
            help="Replace an --output file written with other settings (only files divtune wrote).",
        ),
    ) -> None:
        """Add the reward model's quality score to every line of a generations file."""
        from divtune.reward.score import score_generations  # heavy: loads numpy

        typer.echo(str(score_generations(reward, generations, output, batch_size=batch_size, overwrite=overwrite)))
