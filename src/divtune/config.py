"""Typed configs shared by every stage: YAML in, ``--set key=value`` overrides,
resolved config written beside the outputs.

Each stage defines its own config as a subclass of :class:`StageConfig` in its
own module (``PrepareConfig`` in ``divtune.prepare`` and so on); this module
only holds the machinery they share.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

C = TypeVar("C", bound="StageConfig")


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message says where."""


class StageConfig(BaseModel):
    """Base for all stage configs: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    #: Settings added after runs were recorded with this config: left out of ``to_dict`` (so of the
    #: settings a finished run and an experiment stage are recognised by) while at their default, so
    #: that a run finished before they existed is still recognised as the same run. ``save`` writes
    #: them all the same: the config beside a run is complete.
    LATE_SETTINGS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def load(
        cls: type[C],
        yaml_path: str | Path | None = None,
        overrides: Iterable[str] = (),
        **explicit: Any,
    ) -> C:
        """Build a config: defaults < YAML file < explicit CLI values < ``--set`` overrides.

        ``explicit`` values that are ``None`` are treated as "not given", so a CLI
        can pass every option straight through.
        """
        data: dict[str, Any] = {}
        if yaml_path is not None:
            data = deep_merge(data, read_yaml(yaml_path))
        data = deep_merge(data, {k: v for k, v in explicit.items() if v is not None})
        data = deep_merge(data, parse_overrides(overrides))
        return cls.from_dict(data, source=str(yaml_path) if yaml_path else "<cli>")

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], source: str = "<dict>") -> C:
        try:
            return cls.model_validate(dict(data))
        except ValidationError as err:
            problems = "; ".join(describe_validation_error(e, cls.settings_at(e["loc"][:-1])) for e in err.errors())
            # From the command line the field names say enough; a file or a composed config is named.
            where = "" if source == "<cli>" else f"{source}: " if source != "<dict>" else f"{cls.__name__}: "
            raise ConfigError(f"{where}{problems}") from None

    @classmethod
    def setting_names(cls) -> Iterable[str]:
        """The keys this config accepts: what a misspelt key is matched against."""
        return cls.model_fields

    @classmethod
    def settings_at(cls, path: tuple) -> Iterable[str]:
        """The keys accepted at ``path`` (``("lora",)`` -> the LoRA settings); none past a free mapping."""
        model: Any = cls
        for part in path:
            field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, StageConfig) else None
            model = field.annotation if field is not None else None
        return model.setting_names() if isinstance(model, type) and issubclass(model, StageConfig) else ()

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        for name in self.LATE_SETTINGS:
            field = type(self).model_fields[name]
            if data.get(name) == field.get_default(call_default_factory=True):
                data.pop(name, None)
        return data

    def save(self, path: str | Path) -> Path:
        """Write the resolved config as YAML (the file every run leaves beside its outputs)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
        tmp.replace(path)
        return path


#: What a value of the wrong type should have been, by pydantic error type.
_EXPECTED = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "a mapping",
}


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'max_steps'?"`` for the closest candidate, or "" when none is close."""
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.7)
    return f"; did you mean {close[0]!r}?" if close else ""


def describe_validation_error(error: Mapping[str, Any], settings: Iterable[str] = ()) -> str:
    """One pydantic error as ``field: expected an integer, got 'abc'``; an unknown key with the
    closest of ``settings`` (the keys accepted where it stands)."""
    field = ".".join(str(p) for p in error["loc"])
    kind = error["type"]
    got = error.get("input")
    if kind in _EXPECTED:
        text = f"expected {_EXPECTED[kind]}, got {got!r}"
    elif kind == "extra_forbidden":
        text = "not a setting of this stage" + did_you_mean(str(error["loc"][-1]), settings)
    elif kind == "missing":
        text = "required, but not given"
    elif kind == "value_error":
        text = str(error["msg"]).removeprefix("Value error, ")
    else:
        message = str(error["msg"]).removeprefix("Input should be ")
        text = f"expected {message}, got {got!r}"
    return f"{field}: {text}" if field else text


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
    return loaded


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """``["a.b=3", "name=x"]`` -> ``{"a": {"b": 3}, "name": "x"}``.

    Values are parsed as YAML scalars/lists (``3`` -> int, ``1e-5`` -> float,
    ``[q,v]`` -> list, ``null`` -> None), so types match what a YAML file gives.
    """
    result: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        value = _parse_scalar(raw)
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {part!r}")
        node[parts[-1]] = value
    return result


def _parse_scalar(raw: str) -> Any:
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    # YAML 1.1 reads "1e-5" as a string; users mean a float.
    if isinstance(value, str):
        try:
            return float(value) if any(c in value.lower() for c in ".e") and value.strip() else value
        except ValueError:
            return value
    return value


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base`` (mappings merge, other values replace)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
