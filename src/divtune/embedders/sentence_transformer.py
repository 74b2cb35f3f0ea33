"""Sentence-transformers models (a local folder, the shipped ``minilm``, or a hub id)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from divtune.embedders.base import Embedder


class SentenceTransformerEmbedder(Embedder):
    """Wraps ``SentenceTransformer.encode``; texts longer than the model's
    ``max_seq_length`` are truncated by sentence-transformers itself."""

    def __init__(self, spec: str, cache_dir: str | Path | None = None, device: str | None = None):
        super().__init__(cache_dir)
        from divtune.models import EMBEDDER_ALIASES, check_model_spec, resolve_model_source

        check_model_spec(spec, "embedder", EMBEDDER_ALIASES)
        self.spec = spec
        self.source = resolve_model_source(spec)
        # The shipped alias keeps one cache key wherever the package is installed.
        self.name = f"st:{spec}" if spec == "minilm" else f"st:{self.source}"
        self._device = device
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            from divtune.models import EMBEDDER_ALIASES, default_device, hub_errors

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
