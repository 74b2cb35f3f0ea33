"""Row readers for each file format: JSONL (optionally .gz), CSV, Parquet, and a
``datasets`` folder written by ``save_to_disk``. Each yields ``(row_number, dict)``
where the row number is the JSONL line, the CSV file line (header = line 1), or the
1-based row of a Parquet file / dataset, so errors can point at it."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any, Iterator

from divtune.io import GZIP_ERRORS, InputError, gzip_input_error, undecodable_error

FILE_FORMATS = ("jsonl", "csv", "parquet", "datasets")


def detect_file_format(path: Path) -> str:
    if path.is_dir():
        if any((path / marker).is_file() for marker in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return "datasets"
        raise InputError(path, "folder is not a `datasets` save_to_disk folder (no dataset_info.json / dataset_dict.json)")
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise InputError(path, "unknown file type; expected .jsonl/.json(.gz), .csv(.gz), .parquet or a datasets folder")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def iter_jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Decode line by line so undecodable bytes and bad JSON both name their line."""
    lineno = 0
    try:
        with _open_binary(path) as handle:
            for lineno, raw in enumerate(handle, start=1):
                obj = _jsonl_object(path, lineno, raw)
                if obj is not None:  # blank line
                    yield lineno, obj
    except GZIP_ERRORS as err:
        raise gzip_input_error(path, err, lineno) from None


def _jsonl_object(path: Path, lineno: int, raw: bytes) -> dict[str, Any] | None:
    try:
        # utf-8-sig on the first line drops a byte-order mark (Excel and Notepad write one).
        line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError:
        raise undecodable_error(path) from None
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(path, f"malformed JSON ({err.msg} at column {err.colno})", line=lineno) from None
    if not isinstance(obj, dict):
        raise InputError(path, f"expected a JSON object per line, got {type(obj).__name__}", line=lineno)
    return obj


def _csv_cell(value: str) -> Any:
    """CSV cells are strings; list columns are written as JSON arrays."""
    stripped = value.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return value
    return value


def iter_csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    delimiter = "\t" if path.name.lower().removesuffix(".gz").endswith(".tsv") else ","
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    line = 0
    try:
        # utf-8-sig: a leading byte-order mark (Excel's default) must not stick to the first column name.
        with opener(path, "rt", encoding="utf-8-sig", errors="strict", newline="") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            for row in reader:
                line = reader.line_num
                if None in row:
                    raise InputError(path, "row has more cells than the header has columns", line=line)
                yield line, {k: (_csv_cell(v) if v is not None else None) for k, v in row.items()}
    except UnicodeDecodeError:
        raise undecodable_error(path) from None
    except csv.Error as err:
        raise InputError(path, f"malformed CSV: {err}") from None
    except GZIP_ERRORS as err:
        raise gzip_input_error(path, err, line) from None


def iter_parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq  # heavy

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise InputError(path, f"not a readable Parquet file ({err})") from None
    row = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            row += 1
            yield row, record


def iter_dataset_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    from datasets import DatasetDict, load_from_disk  # heavy

    try:
        dataset = load_from_disk(str(path))
    except Exception as err:
        raise InputError(path, f"cannot load the datasets folder ({err})") from None
    if isinstance(dataset, DatasetDict):
        if len(dataset) != 1:
            raise InputError(path, f"folder holds several splits {list(dataset)}; pass one split's folder")
        dataset = next(iter(dataset.values()))
    for row, record in enumerate(dataset, start=1):
        yield row, record


def iter_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of any supported file; an input without a single row is an error."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "input file not found")
    readers = {
        "jsonl": iter_jsonl_rows,
        "csv": iter_csv_rows,
        "parquet": iter_parquet_rows,
        "datasets": iter_dataset_rows,
    }
    empty = True
    for item in readers[detect_file_format(path)](path):
        empty = False
        yield item
    if empty:
        raise InputError(path, "file is empty (no rows)")

