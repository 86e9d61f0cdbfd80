"""sentence-transformers models run by OpenVINO, with no torch once converted.

The first run converts the model's transformer straight from its torch module
(``openvino.convert_model``), checks the result against sentence-transformers on probe texts, and
saves it with the model's fast tokenizer in the user cache. Later runs load only the tokenizer
(``tokenizers``) and the OpenVINO runtime: no torch, no transformers, no sentence-transformers.

Only models whose pipeline is Transformer -> Pooling (cls, mean or max) -> optional Normalize are
converted; anything else raises ``Unconvertible`` with the reason, and the caller uses torch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# The agreement a converted model must show with sentence-transformers on the probe texts, so
# that its vectors can share a column with torch's.
MIN_COSINE = 0.9999
POOLINGS = ("cls", "mean", "max")
LAYOUT_FILE = "vectorize-openvino.json"
MODEL_FILE = "model.xml"
TOKENIZER_FILE = "tokenizer.json"
# Texts the converted model must encode like sentence-transformers does: short, padded,
# non-ASCII, and one longer than any model reads (truncation).
PROBES = [
    "a",
    "The quick brown fox jumps over the lazy dog.",
    "Überraschung: naïve café owners' résumés, 東京 and Zürich!",
    "vectors " * 600,
]


class Unconvertible(Exception):
    """This model cannot run on OpenVINO here; the message says why."""


@dataclass
class Layout:
    """What runs around the transformer, as sentence-transformers would run it."""

    max_length: int
    pooling: str
    normalize: bool
    lowercase: bool
    dimension: int
    inputs: list[str]
    similarity: str = "cosine"


def cache_dir(source: str) -> Path:
    """The folder of source's converted model, keyed by the model and the library versions
    that made it: an upgrade of any of them converts again."""
    import platformdirs

    path = Path(source)
    identity = f"{path.resolve()}:{model_stamp(path)}" if path.is_dir() else source
    libraries = ",".join(f"{name}={package_version(name)}" for name in ("openvino", "torch", "transformers"))
    key = hashlib.sha1(f"{identity}|{libraries}".encode()).hexdigest()[:16]
    base = Path(os.environ.get("VECTORIZE_CACHE") or platformdirs.user_cache_dir("vectorize"))
    return base / "openvino" / f"{path.name}-{key}"


def model_stamp(folder: Path) -> str:
    """Size and time of the folder's weights, so replaced weights are converted again."""
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    return ";".join(f"{w.name}:{w.stat().st_size}:{int(w.stat().st_mtime)}" for w in weights)


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "none"


def is_cached(folder: Path) -> bool:
    """Whether folder (cache_dir's) holds a whole conversion."""
    return all((folder / name).exists() for name in (LAYOUT_FILE, MODEL_FILE, TOKENIZER_FILE))


UNCONVERTIBLE_FILE = "unconvertible.txt"


def remember_unconvertible(folder: Path, reason: str) -> None:
    """Keep why the model cannot be converted, so later runs go to torch without trying again."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / UNCONVERTIBLE_FILE).write_text(reason)


def known_unconvertible(folder: Path) -> str | None:
    marker = folder / UNCONVERTIBLE_FILE
    return f"OpenVINO cannot run it: {marker.read_text()}" if marker.exists() else None


@functools.cache
def runtime_available() -> bool:
    """OpenVINO is installed and offers a CPU device (imports the runtime only)."""
    try:
        import openvino
    except ImportError:
        return False
    return "CPU" in openvino.Core().available_devices


class OpenVINOModel:
    """A converted model: texts in, float32 vectors out, as sentence-transformers computes them.
    It answers the calls the encoder makes of a SentenceTransformer."""

    def __init__(self, folder: Path):
        import openvino
        from tokenizers import Tokenizer

        self.layout = Layout(**json.loads((folder / LAYOUT_FILE).read_text()))
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self.tokenizer.no_padding()  # batches are padded here, to their own longest text
        self.tokenizer.enable_truncation(self.layout.max_length)
        core = openvino.Core()
        # LATENCY: one request uses every core on a batch, the way the fill loop calls it.
        self.compiled = core.compile_model(str(folder / MODEL_FILE), "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: one batch at a time

    @property
    def max_seq_length(self) -> int:
        return self.layout.max_length

    @property
    def similarity_fn_name(self) -> str:
        return self.layout.similarity

    def get_embedding_dimension(self) -> int:
        return self.layout.dimension

    def tokens(self, texts: list[str]) -> list:
        if self.layout.lowercase:
            texts = [t.lower() for t in texts]
        return self.tokenizer.encode_batch(texts)

    def count_truncated(self, texts) -> int:
        return sum(1 for e in self.tokens(list(texts)) if e.overflowing)

    def encode(self, texts: list[str], batch_size: int = 32, **_):
        """Like SentenceTransformer.encode (its other options, numpy output and no progress bar,
        are what this always does)."""
        import numpy as np

        encodings = self.tokens(list(texts))
        out = np.empty((len(encodings), self.layout.dimension), dtype=np.float32)
        # Texts of like length batched together: less padding, the way sentence-transformers sorts.
        order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            out[chosen] = self.encode_batch([encodings[i] for i in chosen])
        return out

    def encode_batch(self, encodings):
        import numpy as np

        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n] = e.ids
            mask[row, :n] = 1
            types[row, :n] = e.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        with self._lock:
            hidden = self.request.infer({name: feeds[name] for name in self.layout.inputs})[0]
        return pool(hidden, mask, self.layout)


def pool(hidden, mask, layout: Layout):
    import numpy as np

    if layout.pooling == "cls":
        vectors = hidden[:, 0]
    elif layout.pooling == "mean":
        weights = mask[:, :, None].astype(np.float32)
        vectors = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
    else:  # max, over real tokens only
        vectors = np.where(mask[:, :, None] > 0, hidden, -1e9).max(axis=1)
    if layout.normalize:
        vectors = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
    return np.ascontiguousarray(vectors, dtype=np.float32)


_loaded: dict[Path, OpenVINOModel] = {}
_loading = threading.Lock()


def load(source: str, folder: Path, load_torch: Callable[[str], object]) -> OpenVINOModel:
    """source's converted model from folder (its cache_dir), converting it first when the folder
    lacks it (``load_torch(source)``: the SentenceTransformer to convert); once per process."""
    with _loading:
        if folder not in _loaded:
            if not is_cached(folder):
                convert(load_torch(source), folder)
            _loaded[folder] = OpenVINOModel(folder)
        return _loaded[folder]


def convert(model, folder: Path) -> None:
    """Convert a SentenceTransformer's transformer with OpenVINO and save it, with its tokenizer
    and layout, in folder. Raises Unconvertible when the model does not fit or does not agree
    with torch."""
    import numpy as np

    layout = layout_of(model)
    ov_model = convert_transformer(model, layout)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
    partial.mkdir(parents=True, exist_ok=True)
    import openvino

    # fp32 weights: the default fp16 compression would cost agreement with torch.
    openvino.save_model(ov_model, str(partial / MODEL_FILE), compress_to_fp16=False)
    model.tokenizer.backend_tokenizer.save(str(partial / TOKENIZER_FILE))
    (partial / LAYOUT_FILE).write_text(json.dumps(asdict(layout)))
    converted = OpenVINOModel(partial)
    expected = model.encode(PROBES, convert_to_numpy=True, show_progress_bar=False)
    got = converted.encode(PROBES)
    cosine = (expected * got).sum(axis=1) / (np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1))
    if not cosine.min() >= MIN_COSINE:
        remove(partial)
        raise Unconvertible(f"its OpenVINO vectors differ from torch's (cosine {cosine.min():.6f})")
    # The layout file last: is_cached() reads it as the mark of a whole conversion.
    for item in sorted(partial.iterdir(), key=lambda item: item.name == LAYOUT_FILE):
        item.replace(folder / item.name)
    remove(partial)


def remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def layout_of(model) -> Layout:
    """The Transformer -> Pooling -> Normalize layout of a SentenceTransformer, or Unconvertible."""
    parts = [type(m).__name__ for m in model]
    if parts not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise Unconvertible(f"its modules are {' -> '.join(parts)}, not Transformer -> Pooling [-> Normalize]")
    transformer, pooling = model[0], model[1]
    mode = pooling_mode(pooling.get_config_dict())
    if mode not in POOLINGS:
        raise Unconvertible(f"its pooling is {mode}, not one of {', '.join(POOLINGS)}")
    if not hasattr(model.tokenizer, "backend_tokenizer"):
        raise Unconvertible("it has no fast tokenizer")
    inputs = ["input_ids", "attention_mask"]
    if "token_type_ids" in model.tokenizer.model_input_names:
        inputs.append("token_type_ids")
    return Layout(
        max_length=int(model.max_seq_length),
        pooling=mode,
        normalize=len(parts) == 3,
        lowercase=bool(getattr(transformer, "do_lower_case", False)),
        dimension=int(model.get_embedding_dimension()),
        inputs=inputs,
        similarity=str(getattr(model, "similarity_fn_name", None) or "cosine"),
    )


def pooling_mode(config: dict) -> str:
    """'mean', 'cls', ... from a Pooling config: sentence-transformers 5 names the mode;
    earlier releases set one pooling_mode_<mode>_tokens flag."""
    if isinstance(config.get("pooling_mode"), str):
        return config["pooling_mode"]
    flags = [k.removeprefix("pooling_mode_") for k, v in config.items() if k.startswith("pooling_mode_") and v is True]
    flags = [f.removesuffix("_tokens") for f in flags]
    return flags[0] if len(flags) == 1 else "+".join(flags) or "none"


def convert_transformer(model, layout: Layout):
    """The transformer's torch module as an OpenVINO model with dynamic batch and length."""
    import warnings

    import openvino
    import torch

    auto_model = model[0].auto_model.eval()
    example = model.tokenizer(
        ["a short example", "and a somewhat longer example text"], padding=True, return_tensors="pt"
    )
    example = {name: example[name] for name in layout.inputs}

    class LastHiddenState(torch.nn.Module):
        """The transformer called by keyword, returning only what pooling reads."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            return self.inner(**kwargs, return_dict=True).last_hidden_state

    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer chatter about the model's Python branches
            return openvino.convert_model(LastHiddenState(auto_model), example_input=example)
    except Exception as exc:  # noqa: BLE001 - a model the converter cannot trace fails in many ways
        raise Unconvertible(f"OpenVINO could not convert it ({type(exc).__name__}: {exc})") from exc
