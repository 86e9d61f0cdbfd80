"""A sentence-transformers model behind the encoder contract, loaded on first use.

Backends: ``openvino`` runs the model converted once with OpenVINO (see ``_openvino``), with no
torch on later runs; ``torch`` runs it with sentence-transformers; ``auto``, the default, takes
OpenVINO on a CPU that can run the model and torch otherwise, saying why in one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

from . import _openvino

BACKENDS = ("auto", "openvino", "torch")
log = logging.getLogger("vectorize.modules")


class SentenceTransformerEncoder:
    """Any sentence-transformers model, by hub name or local folder.

    ``dimension``, ``max_length`` and ``metric`` are read from the model when not given, which
    loads it; the built-in encoders give them so that listing encoders loads nothing.
    """

    def __init__(
        self,
        name,
        description,
        source,
        dimension=None,
        metric=None,
        max_length=None,
        batch_size=32,
        backend="auto",
    ):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.name = name
        self.description = description
        self.batch_size = batch_size
        self.backend = backend
        self._source = source  # a hub name, a local folder, or a callable returning either
        self._dimension = dimension
        self._metric = metric
        self._max_length = max_length
        self._model = None
        self._lock = threading.Lock()

    def configure(self, backend=None, dimension=None):
        """A copy with other options (the encoder contract's optional hook)."""
        if dimension is not None and self._dimension is not None and dimension != self._dimension:
            raise ValueError(f"{self.name} makes {self._dimension}-dimensional vectors, not {dimension}")
        if backend in (None, self.backend) and (dimension is None or dimension == self._dimension):
            return self
        return SentenceTransformerEncoder(
            self.name,
            self.description,
            self._source,
            dimension=self._dimension or dimension,
            metric=self._metric,
            max_length=self._max_length,
            batch_size=self.batch_size,
            backend=backend or self.backend,
        )

    @property
    def source(self) -> str:
        return str(self._source() if callable(self._source) else self._source)

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            model = self.load()
            self._dimension = int(model.get_embedding_dimension())
        return self._dimension

    @property
    def max_length(self) -> int | None:
        if self._max_length is None and self._model is not None:
            self._max_length = self._model.max_seq_length
        return self._max_length

    @property
    def metric(self) -> str:
        if self._metric is None:
            name = getattr(self.load(), "similarity_fn_name", None) or "cosine"
            self._metric = {"cosine": "cosine", "dot": "ip", "euclidean": "l2"}.get(str(name), "cosine")
        return self._metric

    def load(self):
        """The model, on the backend asked for: a SentenceTransformer, or an OpenVINOModel that
        answers the same calls."""
        with self._lock:
            if self._model is None:
                self._model = open_model(self.name, self.source, self.backend)
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

    def count_truncated(self, texts) -> int:
        """How many texts are longer than the model reads (it silently truncates them)."""
        model = self.load()
        if isinstance(model, _openvino.OpenVINOModel):
            return model.count_truncated(texts)
        limit = model.max_seq_length
        lengths = model.tokenizer(list(texts), add_special_tokens=True, truncation=False, return_length=True)["length"]
        return sum(1 for n in lengths if n > limit)

    def planned_backend(self) -> str:
        """The backend load() would use, with why, loading nothing: for list-models."""
        return planned_backend(self.source, self.backend)


def quiet_hub() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no 'Loading weights' bar on every command
    hf_logging.set_verbosity_error()


_loaded: dict[tuple[str, str], object] = {}
_loading = threading.Lock()


def load_model(source: str, backend: str):
    """The model for (source, backend), loaded once per process: encoders made for the same
    model (each `search`, each st:<name> lookup) share it."""
    with _loading:
        if (source, backend) not in _loaded:
            _loaded[source, backend] = read_model(source, backend)
        return _loaded[source, backend]


def read_model(source: str, backend: str = "torch"):
    """The SentenceTransformer for source (a hub name or a local folder), on torch."""
    if Path(source).is_dir():
        # A local model needs no hub; without this, transformers may still try to reach it.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_hub()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(source)


def open_model(name: str, source: str, backend: str):
    """The model for source on its backend: an OpenVINOModel, or a SentenceTransformer on torch.
    auto falls back to torch with one line saying why; openvino asked for by name fails instead."""
    if backend == "torch":
        return load_model(source, "torch")
    folder = _openvino.cache_dir(source)
    reason = openvino_unusable(folder)
    if reason is None:
        try:
            if not _openvino.is_cached(folder):
                log.info("%s: converting the model for OpenVINO (once; kept in %s)", name, folder)
            return _openvino.load(source, folder)
        except _openvino.Unconvertible as exc:
            reason = f"OpenVINO cannot run it: {exc}"
            with contextlib.suppress(OSError):  # remembered when the cache can be written
                _openvino.remember_unconvertible(folder, str(exc))
        except OSError as exc:  # a cache that cannot be written: torch needs none
            reason = f"the converted model cannot be kept in {folder}: {exc.strerror or exc}"
    if backend == "openvino":
        raise RuntimeError(f"--backend openvino: {reason}")
    if reason != CUDA:
        log.warning("%s: encoding with torch (%s)", name, reason)
    return load_model(source, "torch")


CUDA = "a CUDA device is present"


def openvino_unusable(folder: Path) -> str | None:
    """Why auto would not use OpenVINO for the model whose cache folder this is, or None."""
    if cuda_device_present():
        return CUDA
    if not _openvino.runtime_available():
        return "the OpenVINO runtime is not installed or has no CPU device"
    return _openvino.known_unconvertible(folder)


def planned_backend(source: str, backend: str) -> str:
    if backend == "torch":
        return "torch"
    folder = _openvino.cache_dir(source)
    reason = openvino_unusable(folder)
    if reason is not None:
        return f"torch ({reason})" if backend == "auto" else f"openvino, unusable here: {reason}"
    state = "converted, cached" if _openvino.is_cached(folder) else "converted on first use"
    return f"openvino ({state})"


def cuda_device_present() -> bool:
    """An NVIDIA GPU, told without importing torch: torch on it beats OpenVINO on the CPU."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())
