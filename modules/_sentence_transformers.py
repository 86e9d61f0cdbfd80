"""A sentence-transformers model behind the encoder contract, loaded on first use."""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from pathlib import Path

BACKENDS = ("torch", "onnx", "onnx-int8", "openvino")


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
        backend="torch",
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
        with self._lock:
            if self._model is None:
                self._model = load_model(self.source, self.backend)
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
        limit = model.max_seq_length
        lengths = model.tokenizer(list(texts), add_special_tokens=True, truncation=False, return_length=True)["length"]
        return sum(1 for n in lengths if n > limit)


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


def read_model(source: str, backend: str):
    if Path(source).is_dir():
        # A local model needs no hub; without this, transformers may still try to reach it.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_hub()
    from sentence_transformers import SentenceTransformer

    if backend == "torch":
        return SentenceTransformer(source)
    if backend == "openvino":
        return load_exported(source, "openvino", "openvino/openvino_model.xml", "vectorize[openvino]")
    return load_onnx(source, quantized=backend == "onnx-int8")


def onnx_cache_dir(source: str, quantized: bool, kind: str = "onnx") -> Path:
    import platformdirs

    key = hashlib.sha1(f"{Path(source).resolve() if Path(source).is_dir() else source}".encode()).hexdigest()[:12]
    base = Path(os.environ.get("VECTORIZE_CACHE") or platformdirs.user_cache_dir("vectorize"))
    return base / kind / f"{Path(source).name}-{key}{'-int8' if quantized else ''}"


def load_exported(source: str, backend: str, file_name: str, extra: str):
    """A model exported for another runtime, made once and kept in the user cache."""
    import logging

    from sentence_transformers import SentenceTransformer

    cache = onnx_cache_dir(source, False, backend)
    if (cache / file_name).exists():
        return SentenceTransformer(str(cache), backend=backend, model_kwargs={"file_name": file_name})
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = SentenceTransformer(source, backend=backend)
    except Exception as exc:  # noqa: BLE001 - a missing runtime surfaces as many types
        raise RuntimeError(f"the {backend} backend needs its runtime (pip install '{extra}'): {exc}") from exc
    cache.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(cache))
    return model


def load_onnx(source: str, quantized: bool):
    """The ONNX export of a model, made once and kept in the user cache (export takes seconds)."""
    from sentence_transformers import SentenceTransformer

    cache = onnx_cache_dir(source, quantized)
    file_name = "onnx/model_quint8_avx2.onnx" if quantized else "onnx/model.onnx"
    if (cache / file_name).exists():
        return SentenceTransformer(str(cache), backend="onnx", model_kwargs={"file_name": file_name})
    import logging

    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)  # "Exporting the model to ONNX" chatter
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not the user's business
            model = SentenceTransformer(source, backend="onnx")
    except Exception as exc:  # noqa: BLE001 - missing optimum/onnxruntime surfaces as many types
        raise RuntimeError(
            f"the onnx backend needs optimum and onnxruntime (pip install 'vectorize[onnx]'): {exc}"
        ) from exc
    cache.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(cache))
    if not quantized:
        return model
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_dynamic_quantized_onnx_model(model, "avx2", str(cache))
    return SentenceTransformer(str(cache), backend="onnx", model_kwargs={"file_name": file_name})
