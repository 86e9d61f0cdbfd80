"""A sentence-transformers model behind the encoder contract, loaded on first use."""

from __future__ import annotations

import os
import threading
from pathlib import Path


class SentenceTransformerEncoder:
    def __init__(self, name, description, dimension, metric, source, max_length=None, batch_size=32):
        self.name = name
        self.description = description
        self.dimension = dimension
        self.metric = metric
        self.max_length = max_length
        self.batch_size = batch_size
        self._source = source  # a hub name, a local folder, or a callable returning either
        self._model = None
        self._lock = threading.Lock()

    @property
    def source(self) -> str:
        return str(self._source() if callable(self._source) else self._source)

    def load(self):
        with self._lock:
            if self._model is None:
                source = self.source
                if Path(source).is_dir():
                    # A local model needs no hub; without this, transformers may still try to reach it.
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # no 'Loading weights' bar on every command
                hf_logging.set_verbosity_error()
                self._model = SentenceTransformer(source)
            return self._model

    def encode(self, batch):
        import numpy as np

        vectors = self.load().encode(
            list(batch),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)
