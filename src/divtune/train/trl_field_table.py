"""The fields of TRL's configs (and of ``TrainingArguments``) without importing TRL.

``--set`` keys are checked against these fields' names and types when the
settings are read. Learning them from the classes means importing TRL, and so
torch and transformers: 5 s before a bad ``--set max_steps=abc`` could be
refused. divtune therefore ships the table for the pinned versions, generated
from the installed libraries into :mod:`divtune.train.trl_fields`:

    python -m divtune.train.trl_field_table      # rewrites trl_fields.py

``tests/test_trl_field_table.py`` regenerates it and compares, so it cannot
drift from the installed TRL. Where the installed versions differ from the
table's (another TRL patch release), the classes are read as before: slower,
never wrong.

An annotation is stored as plain data: ``"int"``, ``"float"``, ``"bool"``,
``"str"``, ``"dict"``, ``"list"``, ``"None"``, ``"Any"``, or a list
``["union", ...]``, ``["list", item]``, ``["dict", key, value]``,
``["literal", values...]``, ``["class", "module.Name"]``. A class of the
libraries (an enum such as ``IntervalStrategy``) becomes a stand-in class of
the same name: the check is strict, so a YAML value is never an instance of
either, and the messages name the same type.
"""

from __future__ import annotations

import functools
import sys
import types
import typing
from pathlib import Path
from typing import Any

#: The config classes, by the name divtune reports them under, and where they live.
CONFIG_CLASSES = {
    "TrainingArguments": "transformers",
    "DPOConfig": "trl",
    "ORPOConfig": "trl.experimental.orpo",
    "SFTConfig": "trl",
    "GRPOConfig": "trl",
}
LIBRARIES = ("transformers", "trl")
GENERATED = Path(__file__).with_name("trl_fields.py")

_BUILTINS = {"int": int, "float": float, "bool": bool, "str": str, "dict": dict, "list": list}


# --------------------------------------------------------------------------- reading the table


def installed_versions() -> dict[str, str | None]:
    """The installed versions of transformers and TRL, from their metadata (no import)."""
    import importlib.metadata as md

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.lru_cache(maxsize=1)
def current_table() -> dict[str, Any]:
    """The shipped table when it was generated from the installed versions; else read from the classes."""
    from divtune.train import trl_fields

    if trl_fields.VERSIONS == installed_versions():
        return {"versions": trl_fields.VERSIONS, "fields": trl_fields.CONFIG_FIELDS, "types": trl_fields.FIELD_TYPES}
    return build_table()


def config_field_names(config_name: str) -> frozenset[str]:
    """The init fields of one config class (TrainingArguments' included)."""
    return frozenset(current_table()["fields"][config_name])


def field_annotations() -> dict[str, tuple[Any, ...]]:
    """Field name -> its annotations in the config classes, rebuilt as types, in class order."""
    return {name: tuple(annotation_of(spec) for spec in specs) for name, specs in current_table()["types"].items()}


def annotation_of(spec: Any) -> Any:
    """The type a stored annotation stands for (see the module docstring)."""
    if isinstance(spec, str):
        if spec == "None":
            return type(None)
        if spec == "Any":
            return typing.Any
        return _BUILTINS[spec]
    kind, *args = spec
    if kind == "union":
        return typing.Union[tuple(annotation_of(a) for a in args)]
    if kind == "list":
        return list[annotation_of(args[0])]
    if kind == "dict":
        return dict[annotation_of(args[0]), annotation_of(args[1])]
    if kind == "literal":
        return typing.Literal[tuple(args)]
    if kind == "class":
        return _stand_in(args[0])
    raise ValueError(f"unknown annotation spec {spec!r}")


@functools.lru_cache(maxsize=None)
def _stand_in(qualified: str) -> type:
    module, _, name = qualified.rpartition(".")
    return type(name, (), {"__module__": module})


# --------------------------------------------------------------------------- building it from the classes


def spec_of(annotation: Any) -> Any:
    """A type annotation as plain data (the inverse of :func:`annotation_of`)."""
    if annotation is type(None) or annotation is None:
        return "None"
    if annotation is typing.Any:
        return "Any"
    for name, builtin in _BUILTINS.items():
        if annotation is builtin:
            return name
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return ["union", *(spec_of(a) for a in args)]
    if origin is list:
        return ["list", spec_of(args[0])] if args else "list"
    if origin is dict:
        return ["dict", spec_of(args[0]), spec_of(args[1])] if args else "dict"
    if origin is typing.Literal:
        return ["literal", *args]
    if isinstance(annotation, type):
        return ["class", f"{annotation.__module__}.{annotation.__qualname__}"]
    raise ValueError(f"cannot store the annotation {annotation!r}")


def _config_class(name: str) -> type:
    import importlib
    import warnings

    with warnings.catch_warnings():
        # trl.experimental announces itself on import; divtune pins the TRL it subclasses.
        warnings.filterwarnings("ignore", message=".*trl.experimental.*")
        module = importlib.import_module(CONFIG_CLASSES[name])
    return getattr(module, name)


def build_table() -> dict[str, Any]:
    """Names and annotations of every init field of the config classes, read from the installed libraries."""
    import dataclasses

    fields: dict[str, list[str]] = {}
    annotations: dict[str, list[Any]] = {}
    for name in CONFIG_CLASSES:
        config_class = _config_class(name)
        hints = typing.get_type_hints(config_class)
        fields[name] = sorted(f.name for f in dataclasses.fields(config_class) if f.init)
        for f in dataclasses.fields(config_class):
            if f.init:
                spec = spec_of(hints[f.name])
                if spec not in annotations.setdefault(f.name, []):
                    annotations[f.name].append(spec)
    return {"versions": installed_versions(), "fields": fields, "types": annotations}


def render(table: dict[str, Any]) -> str:
    """The source of :mod:`divtune.train.trl_fields` for ``table`` (stable: one entry a line)."""
    lines = [
        '"""Generated by `python -m divtune.train.trl_field_table` from the installed libraries: do not edit.',
        "",
        "The init fields of TRL's DPO/ORPO/SFT/GRPO configs and of TrainingArguments, and each field's",
        "annotations (divtune.train.trl_field_table explains the form), so that `--set` values are",
        'checked without importing TRL, transformers or torch."""',
        "",
        f"VERSIONS = {table['versions']!r}",
        "",
        "CONFIG_FIELDS = {",
    ]
    for name, names in table["fields"].items():
        lines.append(f"    {name!r}: (")
        lines += [f"        {field!r}," for field in names]
        lines.append("    ),")
    lines += ["}", "", "FIELD_TYPES = {"]
    for name in sorted(table["types"]):
        lines.append(f"    {name!r}: {tuple(table['types'][name])!r},")
    lines += ["}", ""]
    return "\n".join(lines)


def main() -> None:
    GENERATED.write_text(render(build_table()), encoding="utf-8")
    print(f"wrote {GENERATED}", file=sys.stderr)


if __name__ == "__main__":
    main()
