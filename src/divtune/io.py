"""Small file helpers shared by all stages: JSONL with line-numbered errors,
atomic writes, and "stage finished" markers so a killed stage is never taken
for a finished one.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

DONE_MARKER = ".divtune-done.json"
#: Written when a stage starts writing into its folder (its stage and settings): see divtune.outputs.
RUN_MARKER = ".divtune-run.json"


class InputError(ValueError):
    """Bad user input; the message names the file, the line/row and the field."""

    def __init__(self, path: str | Path, message: str, line: int | None = None, field: str | None = None):
        self.path = str(path)
        self.line = line
        self.field = field
        where = self.path
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")


#: What reading a damaged ``.gz`` file raises: cut short (EOFError), not gzip at
#: all (BadGzipFile) or corrupt inside (zlib.error).
GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def gzip_input_error(path: str | Path, err: BaseException, lines_read: int) -> InputError:
    """One clear line for a damaged ``.gz`` input (click would print a bare "Aborted." for EOFError)."""
    if isinstance(err, EOFError):
        return InputError(path, "the gzip data ends early: the file was cut short", line=lines_read + 1)
    if isinstance(err, gzip.BadGzipFile):
        return InputError(path, "not gzip data, though the name ends in .gz (rename it, or compress it with gzip)")
    return InputError(path, f"corrupt gzip data ({err})", line=lines_read + 1)


def undecodable_location(data: bytes) -> tuple[int, int, int] | None:
    """(line, column, byte) of the first byte of ``data`` that is not UTF-8, or None.

    Lines and columns count from 1; the column is in characters, as an editor shows it.
    A byte-order mark at the start is not counted (readers drop it).
    """
    try:
        data.decode("utf-8")
        return None
    except UnicodeDecodeError as err:
        bad = err.start
    line_start = data.rfind(b"\n", 0, bad) + 1
    prefix = data[line_start:bad]
    if line_start == 0 and prefix.startswith(b"\xef\xbb\xbf"):
        prefix = prefix[3:]
    return data.count(b"\n", 0, bad) + 1, len(prefix.decode("utf-8")) + 1, data[bad]


def undecodable_error(path: str | Path) -> "InputError":
    """One line locating the first non-UTF-8 byte of ``path`` by line and column (gzip read through)."""
    path = Path(path)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        found = undecodable_location(handle.read())
    if found is None:  # decoded since: say what we know
        return InputError(path, "undecodable bytes (not UTF-8); save the file as UTF-8")
    line, column, byte = found
    return InputError(path, f"undecodable byte 0x{byte:02x} at column {column} (not UTF-8; save the file as UTF-8)",
                      line=line)


def open_text(path: str | Path, mode: str = "rt"):
    """Open a text file, transparently gunzipping ``*.gz``; strict UTF-8.

    Reading uses ``utf-8-sig``: a leading byte-order mark (Excel writes one) is dropped.
    """
    path = Path(path)
    encoding = "utf-8-sig" if "r" in mode else "utf-8"
    if path.suffix == ".gz":
        return gzip.open(path, mode, encoding=encoding, errors="strict")
    return open(path, mode, encoding=encoding, errors="strict")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, object)``; blank lines are skipped, bad lines raise InputError."""
    path = Path(path)
    lineno = 0
    try:
        with open_text(path) as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as err:
                    raise InputError(path, f"malformed JSON ({err.msg} at column {err.colno})", line=lineno) from None
    except UnicodeDecodeError:
        raise undecodable_error(path) from None
    except GZIP_ERRORS as err:
        raise gzip_input_error(path, err, lineno) from None


def read_jsonl(path: str | Path) -> list[Any]:
    return [obj for _, obj in iter_jsonl(path)]


def read_json(path: str | Path, missing: str) -> Any:
    """A JSON file's content; InputError with ``missing`` when there is no such file, or naming the
    line of a syntax error."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, missing)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(path, f"malformed JSON ({err.msg})", line=err.lineno) from None


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    """Write rows as JSONL atomically (a reader never sees a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the usual umask-based mode.
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_stage_done(directory: str | Path) -> bool:
    return (Path(directory) / DONE_MARKER).is_file()


def read_stage_done(directory: str | Path) -> dict[str, Any] | None:
    """What ``mark_stage_done`` recorded, or ``None`` when the stage is not done."""
    marker = Path(directory) / DONE_MARKER
    return json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None


def mark_stage_done(directory: str | Path, info: dict[str, Any] | None = None) -> None:
    """Write the marker last: its presence means every output of the stage is complete."""
    write_json(Path(directory) / DONE_MARKER, info or {})


def clear_stage_done(directory: str | Path) -> None:
    marker = Path(directory) / DONE_MARKER
    if marker.exists():
        marker.unlink()


def read_run_marker(directory: str | Path) -> dict[str, Any] | None:
    marker = Path(directory) / RUN_MARKER
    try:
        return json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None
    except json.JSONDecodeError:
        return {}


def run_kind(directory: str | Path) -> tuple[str | None, bool] | None:
    """``(stage, finished)`` of the divtune run in ``directory``, or None when it holds none."""
    done = read_stage_done(directory)
    started = read_run_marker(directory)
    if done is None and started is None:
        return None
    stage = (done or {}).get("stage") or (started or {}).get("stage")
    return stage, done is not None
