"""Type checks for the ``training:`` pass-through keys (TrainingArguments / TRL config fields).

``TrainConfig.training`` is a free dict handed to TRL's config class only when
the trainer is built, after the model has loaded. A value of the wrong type
(``--set max_steps=abc``) would then fail seconds later with an unrelated
message from deep inside transformers. These checks run when the config is
built: each value is validated, strictly, against the type annotation of the
dataclass field of the same name, and a few fields get the range checks their
meaning needs.
"""

from __future__ import annotations

import functools
import typing
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from divtune.train.trl_field_table import field_annotations

#: Lowest value some numeric fields accept. (``max_steps`` is checked on its
#: own: -1 is the transformers meaning "no step limit, train
#: ``num_train_epochs`` epochs"; 0 and other negative values mean the same to
#: transformers, which surprises, so they are refused.)
LOWER_BOUNDS: dict[str, tuple[float, str]] = {
    "per_device_train_batch_size": (1, "at least 1"),
    "gradient_accumulation_steps": (1, "at least 1"),
    "num_train_epochs": (0, ">= 0"),
    "learning_rate": (0, ">= 0"),
}


@functools.lru_cache(maxsize=1)
def passthrough_field_types() -> dict[str, tuple[Any, ...]]:
    """Field name -> the annotations it has in TrainingArguments and TRL's DPO/ORPO/SFT/GRPO configs.

    From the shipped table (divtune.train.trl_field_table), so checking a value imports no TRL or torch.
    """
    return field_annotations()


@functools.lru_cache(maxsize=None)
def _adapter(annotation: Any):
    # Strict: "5" is not an integer here, because TrainingArguments would not convert it either.
    return TypeAdapter(annotation, config=ConfigDict(strict=True, arbitrary_types_allowed=True))


def describe_type(annotation: Any) -> str:
    """``int`` -> "an integer", ``float`` -> "a number", ``bool | None`` -> "true or false (or null)"..."""
    names = {int: "an integer", float: "a number", bool: "true or false", str: "text", dict: "a mapping", list: "a list"}
    args = typing.get_args(annotation)
    if annotation in names:
        return names[annotation]
    origin = typing.get_origin(annotation)
    if origin in (list, dict):
        return names[origin]
    if args:
        parts = [describe_type(a) for a in args if a is not type(None)]
        text = " or ".join(dict.fromkeys(parts))
        return text + (" (or null)" if type(None) in args else "")
    return getattr(annotation, "__name__", str(annotation))


def _fits(value: Any, annotation: Any) -> bool:
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return True  # YAML reads 1 as an int; an int is a fine float
    try:
        _adapter(annotation).validate_python(value)
    except ValidationError:
        return False
    return True


def checked_training_values(training: Any) -> Any:
    """``training`` with YAML's readings undone, after a type and range check of every value.

    YAML 1.1 reads ``no`` as false and ``1e-5`` as text: ``save_strategy=no``
    becomes ``"no"`` again and a float field's ``"1e-5"`` becomes 1e-5. Raises
    ValueError naming every value that still does not fit.
    """
    if not isinstance(training, dict):
        return training
    training = {name: _undo_yaml(name, value) for name, value in training.items()}
    problems = [p for p in (check_training_value(k, v) for k, v in training.items()) if p]
    if problems:
        raise ValueError("; ".join(problems))
    return training


def _undo_yaml(name: str, value: Any) -> Any:
    if name.endswith("_strategy") and value is False:
        return "no"
    if isinstance(value, str) and float in passthrough_field_types().get(name, ()):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def check_training_value(name: str, value: Any) -> str | None:
    """Why ``value`` does not fit the pass-through field ``name``, or None when it does."""
    annotations = passthrough_field_types().get(name)
    if annotations is None:
        return None  # unknown names are reported elsewhere
    if not any(_fits(value, a) for a in annotations):
        return f"{name}: expected {describe_type(annotations[0])}, got {value!r}"
    if name == "max_steps" and isinstance(value, int) and value != -1 and value < 1:
        return f"{name}: expected a positive number of steps, or -1 for 'train num_train_epochs epochs', got {value!r}"
    bound = LOWER_BOUNDS.get(name)
    if bound is not None and isinstance(value, (int, float)) and not isinstance(value, bool) and value < bound[0]:
        return f"{name}: expected {bound[1]}, got {value!r}"
    return None
