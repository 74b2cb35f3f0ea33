"""The embedder interface: ``embed(texts)`` returns L2-normalised float32 rows and
goes through the on-disk cache, so subclasses only implement ``_embed_batch``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from divtune.embedders.cache import EmbeddingCache, text_key


def l2_normalise(matrix: np.ndarray) -> np.ndarray:
    """Unit rows; an all-zero row stays zero instead of becoming NaN."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)


class Embedder:
    """Base class. ``name`` is the stable id used as cache key: change it whenever
    the vectors for the same text would change."""

    name: str = "embedder"

    def __init__(self, cache_dir: str | Path | None = None):
        self.cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
        #: how many texts the last ``embed`` call actually computed (not served by the cache)
        self.last_computed = 0

    def _embed_batch(self, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        raise NotImplementedError

    def embed(self, texts: list[str], batch_size: int = 64, show_progress: bool = True) -> np.ndarray:
        """Embeddings of ``texts`` (n, d), float32, unit rows. Identical texts are
        embedded once; with a cache, only texts never seen by this embedder are."""
        texts = list(texts)
        if not texts:
            self.last_computed = 0
            return np.zeros((0, 0), dtype=np.float32)
        # Without a cache the text itself is the dedupe key (no hashing cost).
        keys = [text_key(t) for t in texts] if self.cache is not None else texts
        unique: dict[str, str] = {}
        for key, text in zip(keys, texts):
            unique.setdefault(key, text)
        known = self.cache.get(self.name, unique) if self.cache is not None else {}
        missing = [key for key in unique if key not in known]
        if missing:
            computed = l2_normalise(self._embed_batch([unique[k] for k in missing], batch_size, show_progress))
            if self.cache is not None:
                self.cache.put(self.name, missing, computed)
            known.update(zip(missing, computed))
        self.last_computed = len(missing)
        return np.stack([known[key] for key in keys]).astype(np.float32, copy=False)
