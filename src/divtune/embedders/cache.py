"""On-disk embedding cache: one SQLite file, rows keyed by (embedder name, sha256(text)).

SQLite gives atomic commits (a killed run never leaves a half-written shard) and
cheap look-ups of a few thousand keys at a time, so a second run over the same
texts embeds nothing.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Iterable

import numpy as np

_LOOKUP_CHUNK = 900  # stays under SQLite's default limit on bound parameters


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Float32 vectors stored as blobs; ``get`` returns only the keys that are present."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "embeddings.sqlite"
        self._conn = sqlite3.connect(self.path, timeout=60)
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS emb (model TEXT NOT NULL, key TEXT NOT NULL, dim INTEGER NOT NULL,"
            " vec BLOB NOT NULL, PRIMARY KEY (model, key))"
        )
        self._conn.commit()

    def get(self, model: str, keys: Iterable[str]) -> dict[str, np.ndarray]:
        keys = list(keys)
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT key, vec FROM emb WHERE model = ? AND key IN ({marks})", [model, *chunk]
            )
            for key, blob in rows:
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put(self, model: str, keys: list[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = [(model, key, int(vec.shape[0]), vec.tobytes()) for key, vec in zip(keys, vectors)]
        with self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?, ?)", rows)

    def count(self, model: str | None = None) -> int:
        if model is None:
            return self._conn.execute("SELECT COUNT(*) FROM emb").fetchone()[0]
        return self._conn.execute("SELECT COUNT(*) FROM emb WHERE model = ?", [model]).fetchone()[0]

    def close(self) -> None:
        self._conn.close()
