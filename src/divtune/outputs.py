"""The output-folder rule, the same for every stage.

1. Inputs and settings are checked first: nothing is created or written before.
2. A missing or empty output folder is used.
3. A folder holding a *finished* run of the same stage with the same settings
   and the same inputs is reused: nothing is redone.
4. A folder holding a run of the same stage with other settings or inputs
   (finished or not) is refused, naming what differs; ``--overwrite`` replaces
   it: the files that run wrote (the stage's own file names) are removed first.
5. A folder holding a run of another stage is refused, naming that stage.
6. A folder holding files that divtune did not write is refused, even with
   ``--overwrite``: divtune never deletes or overwrites them.
7. An unfinished run of the same stage with the same settings is continued
   (training from its last checkpoint with ``--resume``, sampling from its last
   written sample; other stages redo their work).

A run is recognised by two markers: ``.divtune-run.json`` (stage, settings,
written when the stage starts writing) and the done marker of
:mod:`divtune.io` (written last; it records the stage and the settings hash
too). Single-file outputs (``generate``, ``reward score``) keep their settings
in ``OUT.config.yaml`` beside the file and follow the same rule.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

import yaml

from divtune.config import ConfigError
from divtune.io import DONE_MARKER, RUN_MARKER, mark_stage_done, read_run_marker, read_stage_done, run_kind, write_json
from divtune.prepared import PREPARED_FILES

#: The names each stage writes into its folder (glob patterns): what ``--overwrite`` may remove.
STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "prepare": (*PREPARED_FILES, "summary.json", "config.yaml"),
    "typicality": ("pools.jsonl", "summary.json", "config.yaml"),
    "train": (
        "adapter_config.json", "adapter_model.safetensors", "model*.safetensors", "model.safetensors.index.json",
        "config.json", "generation_config.json", "tokenizer*", "special_tokens_map.json", "chat_template.jinja",
        "vocab.json", "merges.txt", "added_tokens.json", "README.md", "training_args.bin", "divtune_base.json",
        "config.yaml", "metrics.jsonl", "data_report.json", "ref_logps.json", "prefix_cache.json", "runs",
        "checkpoint-*",
    ),
    "reward": ("config.yaml", "reward_config.json", "head.safetensors", "backbone", "model", "metrics.json"),
    "evaluate": ("metrics.json", "per_prompt.jsonl", "summary.json", "modes.json", "config.yaml"),
    "report": ("report.md", "report.html", "paired_differences.json", "interactions.json", "*.png"),
    "diagnostics": ("diagnostics.json", "diagnostics.md", "*.png"),
    "humaneval build": ("index.html", "items.csv", "study.json", "key.json", "config.yaml"),
    "humaneval analyze": (
        "results.json", "humaneval.md", "humaneval.html", "humaneval.png", "comments.jsonl", "config.yaml",
    ),
}

State = Literal["new", "reuse", "continue", "replace"]


def settings_hash(settings: Mapping[str, Any]) -> str:
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def input_stamp(path: str | Path) -> Any:
    """What identifies an input's content cheaply: a file's size and mtime; a stage folder's
    done marker (else its top-level files' sizes and mtimes); ``None`` for a missing path."""
    path = Path(path)
    if path.is_file():
        stat = path.stat()
        return [stat.st_size, stat.st_mtime_ns]
    if path.is_dir():
        done = read_stage_done(path)
        if done is not None:
            return {"done": done}
        return sorted(
            [p.name, p.stat().st_size, p.stat().st_mtime_ns]
            for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
        )
    return None


def stamped(settings: Mapping[str, Any], inputs: Iterable[str | Path | None]) -> dict[str, Any]:
    """``settings`` plus the stamps of the input paths, so changed inputs count as changed settings."""
    return {**settings, "input_stamps": {str(p): input_stamp(p) for p in inputs if p}}


@dataclass
class OutputClaim:
    """What a stage may do with its output folder, decided before it writes anything."""

    directory: Path
    stage: str
    settings: dict[str, Any]
    state: State

    @property
    def settings_hash(self) -> str:
        return settings_hash(self.settings)

    def begin(self) -> Path:
        """Create the folder (removing a replaced run's files first) and mark the run as started."""
        if self.state == "replace":
            remove_stage_outputs(self.directory, self.stage)
        self.directory.mkdir(parents=True, exist_ok=True)
        write_json(self.directory / RUN_MARKER, {"stage": self.stage, "settings_hash": self.settings_hash,
                                                 "settings": self.settings})
        return self.directory

    def finish(self, info: Mapping[str, Any] | None = None) -> None:
        """Write the done marker (last): the stage, its settings hash and the stage's own record."""
        mark_stage_done(self.directory, {"stage": self.stage, "settings_hash": self.settings_hash, **(info or {})})


def remove_stage_outputs(directory: Path, stage: str) -> None:
    """Remove what a run of ``stage`` wrote (its own file names) and its markers; nothing else."""
    patterns = STAGE_OUTPUTS.get(stage, ())
    for entry in directory.iterdir():
        if entry.name in (DONE_MARKER, RUN_MARKER) or any(fnmatch.fnmatch(entry.name, p) for p in patterns):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _differences(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    if not old:
        return "its settings were not recorded"
    changed = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            if key == "input_stamps":
                paths = sorted(k for k in set(old[key] or {}) | set(new[key] or {})
                               if (old[key] or {}).get(k) != (new[key] or {}).get(k))
                changed.append(f"inputs changed: {', '.join(paths)}" if paths else "inputs changed")
            else:
                changed.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    text = "; ".join(changed[:4])
    return f"{text}; ..." if len(changed) > 4 else text


def claim_output_dir(
    directory: str | Path, stage: str, settings: Mapping[str, Any], overwrite: bool = False
) -> OutputClaim:
    """Apply the rule to ``directory`` for a run of ``stage`` with ``settings``; writes nothing.

    Raises ConfigError (one line, naming the folder) when the rule refuses.
    """
    directory = Path(directory)
    settings = json.loads(json.dumps(dict(settings), default=str))  # as recorded: JSON types only
    claim = OutputClaim(directory, stage, settings, "new")
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory}: is a file; --output must be a folder")
    entries = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    if not entries:
        return claim
    found = run_kind(directory)
    if found is None:
        raise ConfigError(
            f"{directory}: not empty ({entries[0]}{', ...' if len(entries) > 1 else ''}) and holds no divtune run; "
            "divtune never overwrites files it did not write: choose a new or empty --output"
        )
    kind, finished = found
    state_word = "a finished" if finished else "an unfinished"
    if kind is not None and kind != stage:
        raise ConfigError(
            f"{directory}: holds {state_word} {kind} run; a {stage} run needs its own --output folder"
        )
    recorded = (read_run_marker(directory) or {}).get("settings")
    done = read_stage_done(directory) or {}
    recorded_hash = done.get("settings_hash") or (read_run_marker(directory) or {}).get("settings_hash")
    if kind is not None and recorded_hash == claim.settings_hash:
        claim.state = "reuse" if finished else "continue"
        return claim
    if not overwrite:
        raise ConfigError(
            f"{directory}: holds {state_word} {stage} run with other settings ({_differences(recorded, settings)}); "
            "pass --overwrite to replace it, or choose another --output"
        )
    claim.state = "replace"
    return claim


def adopt_folder(directory: str | Path) -> None:
    """Mark a non-empty folder without markers as divtune's, settings unknown.

    For folders an experiment made itself before divtune kept run markers:
    the stage then replaces them (with ``overwrite``) instead of refusing them
    as someone else's files.
    """
    directory = Path(directory)
    if directory.is_dir() and any(directory.iterdir()) and run_kind(directory) is None:
        write_json(directory / RUN_MARKER, {"stage": None, "settings_hash": None, "settings": None})


# --------------------------------------------------------------------------- single-file outputs


def sidecar_path(output: str | Path) -> Path:
    """``OUT.config.yaml``: the settings of the run that wrote ``OUT``."""
    output = Path(output)
    return output.with_name(output.name + ".config.yaml")


def claim_output_file(
    output: str | Path, settings: Mapping[str, Any], compare: Iterable[str], overwrite: bool = False,
    defaults: Mapping[str, Any] | None = None,
) -> State:
    """The rule for a single output file whose settings live in its sidecar; writes nothing.

    - no file: "new" (a sidecar without its file is a run that failed before writing: ignored);
    - file without sidecar: refused, divtune did not write it;
    - sidecar that agrees on ``compare``: "continue" (the stage decides if anything is left to do);
    - sidecar that differs: refused, or "replace" with ``overwrite``.

    ``defaults``: the values of settings a sidecar may lack (it was written before they existed,
    or left them out at their default); any other setting it lacks is not compared.
    """
    output = Path(output)
    sidecar = sidecar_path(output)
    if output.is_dir():
        raise ConfigError(f"{output}: is a folder; --output must be a file path")
    if not output.exists() or output.stat().st_size == 0:
        return "new"
    if not sidecar.is_file():
        raise ConfigError(
            f"{output}: exists and was not written by divtune (no {sidecar.name} beside it); "
            "divtune never overwrites it: choose another --output"
        )
    previous = yaml.safe_load(sidecar.read_text(encoding="utf-8")) or {}
    previous = {**(defaults or {}), **previous}
    changed = [k for k in compare if k in previous and previous[k] != settings.get(k)]
    if not changed:
        return "continue"
    if not overwrite:
        diff = "; ".join(f"{k}: {previous[k]!r} -> {settings.get(k)!r}" for k in changed[:4])
        raise ConfigError(
            f"{output}: was written with other settings ({diff}); pass --overwrite to replace it, "
            "or choose another --output"
        )
    return "replace"
