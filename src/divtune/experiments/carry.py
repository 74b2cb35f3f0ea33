"""Carry an unfinished experiment to another machine: pack its finished stages, unpack them there.

A long experiment (hours on a CPU) may have to finish over several sittings on
machines that do not keep the run folder. The runner resumes stage by stage from
done markers (divtune.experiments), so what another machine needs is each
finished stage's folder with its marker. Most of a run's bytes are model
weights, and most of those are needed by no stage still to run:

- ``checkpoint-*`` folders of a finished training (optimizer state for resuming
  a killed run) are never packed;
- a finished training's final weights are packed only while a stage that reads
  them (its generation, or a training that starts from it) is still to run;
- its logs, probes, config and marker are always packed: diagnostics read them;
- an unfinished stage is not packed at all: it is redone there.

The archive is a ``.tar.gz`` of paths relative to the experiment's output
folder. Unpacking refuses members that would land outside it, and refuses to
replace a finished stage's folder that is already there.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Iterable

from divtune.config import ConfigError

#: Files of a training folder that are model weights (the bulk of its bytes).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
#: Written into the archive: what was packed and why.
MANIFEST = "divtune-carry.json"


def stages_reading_weights(stages) -> dict[str, list]:
    """For each training stage, the stages that load its weights: its generation and trainings started from it."""
    readers: dict[str, list] = {s.name: [] for s in stages if s.name.startswith("train ")}
    for stage in stages:
        if not stage.name.startswith(("generate ", "train ")):
            continue
        for name in stage.after:
            if name in readers:
                readers[name].append(stage)
    return readers


def _is_weight(path: Path) -> bool:
    return path.suffix in WEIGHT_SUFFIXES


def files_to_pack(stages, root: Path) -> tuple[list[Path], dict[str, dict]]:
    """The files (relative to ``root``) of every finished stage, and per stage what was left out and why."""
    readers = stages_reading_weights(stages)
    chosen: list[Path] = []
    record: dict[str, dict] = {}
    for stage in stages:
        if not stage.is_done():
            record[stage.name] = {"packed": False, "why": "unfinished: redone after unpacking"}
            continue
        keep_weights = True
        if stage.name in readers:
            pending = [s.name for s in readers[stage.name] if not s.is_done()]
            keep_weights = bool(pending)
        dropped = 0
        for path in sorted(p for p in stage.directory.rglob("*") if p.is_file()):
            relative = path.relative_to(stage.directory)
            if stage.name.startswith("train ") and (
                relative.parts[0].startswith("checkpoint-") or (_is_weight(path) and not keep_weights)
            ):
                dropped += 1
                continue
            chosen.append(path.relative_to(root))
        record[stage.name] = {
            "packed": True,
            "files_left_out": dropped,
            **({"weights": "kept: a stage still to run loads them" if keep_weights else "left out: every stage that loads them is done"}
               if stage.name.startswith("train ") else {}),
        }
    return chosen, record


def pack(stages, root: Path, archive: Path, extra_files: Iterable[str] = ("config.yaml", "run.json", ".divtune-run.json")) -> dict:
    """Write ``archive`` (.tar.gz) with the finished stages of the experiment at ``root``; returns the manifest."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: no experiment folder to pack")
    files, record = files_to_pack(stages, root)
    files = [Path(name) for name in extra_files if (root / name).is_file()] + files
    manifest = {
        "packed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "root": str(root),
        "stages": record,
        "files": len(files),
    }
    archive = Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for relative in files:
            tar.add(root / relative, arcname=str(relative), recursive=False)
        blob = json.dumps(manifest, indent=1).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime = len(blob), int(time.time())
        tar.addfile(info, io.BytesIO(blob))
    tmp.replace(archive)
    return manifest


def unpack(stages, root: Path, archive: Path) -> list[str]:
    """Restore the finished stages of ``archive`` into ``root``; returns the names of the stages restored.

    A stage already finished in ``root`` is kept as it is (its members are skipped); members
    outside ``root`` or that are not plain files or folders are refused.
    """
    root, archive = Path(root), Path(archive)
    if not archive.is_file():
        raise ConfigError(f"{archive}: no such archive")
    try:
        tar = tarfile.open(archive, "r:gz")
    except (tarfile.TarError, OSError) as err:
        raise ConfigError(f"{archive}: not a .tar.gz archive ({err})") from None
    with tar:
        members = tar.getmembers()
        names = {m.name for m in members}
        if MANIFEST not in names:
            raise ConfigError(f"{archive}: holds no {MANIFEST}; not made by divtune experiment --pack")
        for member in members:
            target = (root / member.name).resolve()
            if not (member.isfile() or member.isdir()) or not target.is_relative_to(root.resolve()):
                raise ConfigError(f"{archive}: member {member.name!r} is not a plain file inside the experiment folder")
        done_here = {s.name: s for s in stages if s.is_done()}
        skip_prefixes = [str(s.directory.relative_to(root)) + "/" for s in done_here.values()]
        restored = []
        for stage in stages:
            prefix = str(stage.directory.relative_to(root)) + "/"
            if stage.name not in done_here and any(n.startswith(prefix) for n in names):
                restored.append(stage.name)
        root.mkdir(parents=True, exist_ok=True)
        for member in members:
            if member.name == MANIFEST or any(member.name.startswith(p) for p in skip_prefixes):
                continue
            if member.name in ("run.json", "config.yaml", ".divtune-run.json") and (root / member.name).exists():
                continue
            tar.extract(member, root, filter="data")
    return restored
