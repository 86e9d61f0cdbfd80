"""A sentence-transformers model behind the encoder contract, loaded on first use.

Backends: ``openvino`` runs the model converted once with OpenVINO (see ``_openvino``), with no
torch on later runs; ``torch`` runs it with sentence-transformers; ``auto``, the default, takes
OpenVINO on a CPU that can run the model and torch otherwise, saying why in one line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
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
        self._token_counter = None  # made once: encode asks for it to size the chunks and to split
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

    def peek(self) -> bool:
        """Read the dimension and metric from the model's files where they are on this machine (a
        local folder, the Hugging Face cache, a conversion kept for OpenVINO), loading nothing:
        what a dry run needs. False when they are not there (load() then finds out)."""
        found = declared(self.source)
        if found is None:
            return False
        self._dimension = self._dimension or found[0]
        self._metric = self._metric or found[1]
        return True

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

    def token_counter(self):
        """(count, special tokens, longest token in characters) for splitting texts into chunks the
        model reads whole: count(text) is the tokens the model makes of text, before truncation
        and without the special tokens it adds (of which there are `special tokens`)."""
        if self._token_counter is None:
            self._token_counter = self.make_token_counter()
        return self._token_counter

    def make_token_counter(self):
        model = self.load()
        if isinstance(model, _openvino.OpenVINOModel):
            backend, lowercase = model.tokenizer, model.layout.lowercase
        else:
            backend = model.tokenizer.backend_tokenizer
            lowercase = bool(getattr(model[0], "do_lower_case", False))
        return counter_of(backend.to_str(), lowercase)

    def peek_token_counter(self):
        """token_counter() from the model's files on this machine, loading no model (what a dry
        run needs to check --chunk-tokens; it also learns max_length); None when they are not here."""
        folder = model_folder(self.source)
        try:
            config = (folder / "tokenizer.json").read_text(encoding="utf-8") if folder else None
            settings = json.loads((folder / "sentence_bert_config.json").read_text()) if folder else {}
        except (OSError, ValueError):
            return None
        if not config or not settings.get("max_seq_length"):
            return None
        self._max_length = self._max_length or int(settings["max_seq_length"])
        return counter_of(config, bool(settings.get("do_lower_case")))

    def planned_backend(self) -> str:
        """The backend load() would use, with why, loading nothing: for list-models."""
        return planned_backend(self.source, self.backend)


# What BERT's tokenizers take for white space (Unicode Zs, tab, newline, return): text is split
# there before anything else, and no token ever spans it.
BERT_SPACE = re.compile("[\t\n\r \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
# Word counts remembered by a counter, at most.
WORD_CACHE = 200_000


def splits_words_alone(config: str) -> bool:
    """Whether a tokenizer (its tokenizer.json) makes the tokens of each white-space-separated
    word on its own: BERT's pre-tokenizer, after a normalizer that changes characters one by one.
    Then a text's count is the sum of its words' counts."""
    parsed = json.loads(config)
    normalizer = (parsed.get("normalizer") or {}).get("type")
    return (parsed.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer" and normalizer in (
        None,
        "BertNormalizer",
    )


def counter_of(config: str, lowercase: bool):
    """(count, special tokens, longest token in characters) of a tokenizer, from its tokenizer.json."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(config)  # a copy: truncation off, padding off
    tokenizer.no_truncation()
    tokenizer.no_padding()
    specials = len(tokenizer.encode("").ids)
    longest = max((len(token) for token in tokenizer.get_vocab()), default=None)

    def count(text: str) -> int:
        return len(tokenizer.encode(text.lower() if lowercase else text, add_special_tokens=False).ids)

    return (word_counter(count) if splits_words_alone(config) else count), specials, longest


def word_counter(count):
    """count(text), summed over its words, each counted once (splitting a long text into chunks
    counts the same words again and again: this makes it about 25 times cheaper)."""
    known: dict[str, int] = {}

    def counted(text: str) -> int:
        if len(known) > WORD_CACHE:
            known.clear()
        total = 0
        for word in BERT_SPACE.split(text):
            n = known.get(word)
            if n is None:
                n = known[word] = count(word)
            total += n
        return total

    return counted


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


def load_torch_model(source: str):
    return load_model(source, "torch")


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
    locate(source)
    if backend == "torch":
        return load_model(source, "torch")
    folder = _openvino.cache_dir(source)
    reason = openvino_unusable(folder)
    if reason is None:
        try:
            if not _openvino.is_cached(folder):
                log.info("%s: converting the model for OpenVINO (once; kept in %s)", name, folder)
            return _openvino.load(source, folder, load_torch_model)
        except _openvino.Unconvertible as exc:
            reason = f"OpenVINO cannot run it: {exc}"
            with contextlib.suppress(OSError):  # remembered when the cache can be written
                _openvino.remember_unconvertible(folder, str(exc))
        except OSError as exc:  # a cache that cannot be written: torch needs none
            if not str(getattr(exc, "filename", None) or "").startswith(str(folder.parent)):
                raise  # the model's own files (a download cut short): not the cache's fault
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


class ModelNotFound(LookupError):
    """The model is neither a local folder nor a model this machine has or can fetch."""


def locate(source: str) -> None:
    """Raise ModelNotFound, in one line and at once, when source is not a local folder and not a
    model in the Hugging Face cache that the hub can still be asked for: loading would find out
    after minutes of retried requests. A model the hub has is left to load (and download)."""
    if Path(source).expanduser().is_dir():
        return
    if source.startswith(("/", "./", "../", "~")) or source.count("/") > 1:  # a path; hub names have one /
        raise ModelNotFound(f"no model folder {source}")
    from huggingface_hub import constants, model_info, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        if isinstance(try_to_load_from_cache(source, "config.json"), str):
            return  # cached here: loading needs no hub
    except ValueError:  # HFValidationError: not a repository name
        raise ModelNotFound(f"{source!r} is neither a folder nor a Hugging Face model name") from None
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelNotFound(f"{source} is not a local folder nor in the Hugging Face cache, and HF_HUB_OFFLINE is set")
    try:
        model_info(source, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except GatedRepoError:
        return  # it exists; loading says what access it needs
    except RepositoryNotFoundError:
        raise ModelNotFound(f"no model {source} on the Hugging Face hub, nor a local folder of that name") from None
    except Exception as exc:  # noqa: BLE001 - no network, DNS, proxy, timeout: httpx and the hub fail in many ways
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFound(
            f"{source} is not a local folder nor in the Hugging Face cache, and the hub cannot be reached ({reason})"
        ) from None


def declared(source: str) -> tuple[int, str] | None:
    """(dimension, metric) from a model's files on this machine, loading nothing: a local folder or
    the Hugging Face cache (modules.json, the Pooling and Dense configs), else the layout of its
    OpenVINO conversion; None when neither is here or the layout is not one read here."""
    folder = model_folder(source)
    if folder is not None:
        found = declared_in(folder)
        if found is not None:
            return found
    layout = _openvino.cache_dir(source) / _openvino.LAYOUT_FILE
    if layout.exists() and _openvino.is_cached(layout.parent):
        data = json.loads(layout.read_text())
        return int(data["dimension"]), METRICS.get(str(data.get("similarity")), "cosine")
    return None


METRICS = {"cosine": "cosine", "dot": "ip", "euclidean": "l2"}


def model_folder(source: str) -> Path | None:
    """The folder of a model's files on this machine: a local folder, or its Hugging Face cache."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        return folder
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "modules.json")
    except ValueError:
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def declared_in(folder: Path) -> tuple[int, str] | None:
    """(dimension, metric) of the sentence-transformers model in folder, from its files: the
    Pooling module's width (one pooling mode), or the last Dense module's out_features."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
        dimension = None
        for module in modules:
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            config = folder / module.get("path", "") / "config.json"
            if kind == "Pooling":
                pooling = json.loads(config.read_text())
                if _openvino.pooling_mode(pooling) not in _openvino.POOLINGS:
                    return None  # several modes are concatenated: let the model say
                dimension = int(pooling["word_embedding_dimension"])
            elif kind == "Dense":
                dimension = int(json.loads(config.read_text())["out_features"])
            elif kind not in ("Transformer", "Normalize"):
                return None
        settings = folder / "config_sentence_transformers.json"
        similarity = json.loads(settings.read_text()).get("similarity_fn_name") if settings.exists() else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return (dimension, METRICS.get(str(similarity), "cosine")) if dimension else None
