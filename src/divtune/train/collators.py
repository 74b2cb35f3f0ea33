"""The weight column of the preference trainers: collators that put each pair's weight in the
batch, and the checks that every weight is there, finite and >= 0 (one-line errors).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from trl.trainer.dpo_trainer import DataCollatorForPreference

from divtune.train.trainer_configs import checked_weight
from divtune.train.trl_orpo import import_orpo

import_orpo()  # trl.experimental, imported with its warning silenced, before the line below
from trl.experimental.utils import DPODataCollatorWithPadding  # noqa: E402

#: The batch key the collators put the weights under, whatever the dataset column is called.
WEIGHT = "weight"


@dataclass
class WeightedPreferenceCollator(DataCollatorForPreference):
    """TRL's DPO collator plus a float ``weight`` tensor (all 1 when ``weight_column`` is None)."""

    weight_column: str | None = WEIGHT

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        batch[WEIGHT] = weights_of(examples, self.weight_column)
        return batch


@dataclass
class WeightedORPOCollator(DPODataCollatorWithPadding):
    """TRL's ORPO collator with the weights as a float tensor under ``weight`` instead of a list."""

    weight_column: str | None = WEIGHT

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().__call__(features)
        if self.weight_column is not None:
            batch.pop(self.weight_column, None)
        batch[WEIGHT] = weights_of(features, self.weight_column)
        return batch


def weights_of(examples: list[dict[str, Any]], column: str | None) -> torch.Tensor:
    """The weights of one batch; a missing, non-finite or negative weight is a one-line error."""
    if column is None:
        return torch.ones(len(examples), dtype=torch.float32)
    values = []
    for index, example in enumerate(examples):
        if column not in example:
            raise ValueError(f"batch example {index} has no column {column!r} (weight_column); it has {', '.join(example)}")
        values.append(checked_weight(example[column], column, index, "batch example"))
    return torch.tensor(values, dtype=torch.float32)


def check_weight_column(column: str | None, train_dataset, eval_dataset) -> None:
    """Every dataset the trainer was given has ``column`` with finite weights >= 0 (one-line error otherwise).

    Streaming datasets, whose rows cannot be read ahead, are checked batch by batch in the collator.
    """
    if column is None:
        return
    named = [("train_dataset", train_dataset)]
    if isinstance(eval_dataset, dict):
        named += [(f"eval_dataset[{name!r}]", dataset) for name, dataset in eval_dataset.items()]
    else:
        named.append(("eval_dataset", eval_dataset))
    for where, dataset in named:
        names = getattr(dataset, "column_names", None)
        if dataset is None or names is None:
            continue
        if column not in names:
            raise ValueError(
                f"{where} has no column {column!r} (weight_column); its columns are {', '.join(names)}. "
                "Add one with divtune.add_deviation_weights, or set weight_column=None to train unweighted"
            )
        if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
            for row, value in enumerate(dataset[column]):
                checked_weight(value, column, row, where)


def with_weight_column(collator, collator_class, column: str | None):
    """TRL's collator as ``collator_class`` (same settings) with the weight column."""
    settings = {f.name: getattr(collator, f.name) for f in dataclasses.fields(collator) if f.init}
    return collator_class(**settings, weight_column=column)
