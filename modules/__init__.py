"""Encoder plugins.

An encoder is any object (a module is fine) with:

- ``name``: short name used with ``--model``;
- ``description``: one line;
- ``dimension``: int, the length of every vector;
- ``metric``: its natural metric, ``cosine``, ``l2`` or ``ip``;
- ``encode(batch)``: a list of strings in, a float32 array ``len(batch) x dimension`` out.

Optional: ``max_length`` (tokens the model reads; longer input is truncated).

Encoders are found in three places: the modules of this folder (files not starting with ``_``),
packages declaring the ``vectorize.modules`` entry-point group, and objects given to
``register()`` in-process. Importing an encoder must be cheap: heavy libraries are imported on the
first ``encode``, so listing encoders never loads a model.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "vectorize.modules"
REQUIRED = ("name", "description", "dimension", "metric", "encode")

_registered: dict[str, object] = {}


class UnknownEncoder(LookupError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(name)
        self.name = name
        self.known = known


def register(encoder) -> None:
    """Make an encoder available by its name in this process (tests, embedding applications)."""
    missing = [attr for attr in REQUIRED if not hasattr(encoder, attr)]
    if missing:
        raise TypeError(f"encoder {encoder!r} lacks {', '.join(missing)}")
    _registered[encoder.name] = encoder


def unregister(name: str) -> None:
    _registered.pop(name, None)


def _folder_encoders() -> dict[str, object]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if all(hasattr(module, attr) for attr in REQUIRED):
            found[module.name] = module
    return found


def _entry_point_encoders() -> dict[str, object]:
    found = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        encoder = ep.load()
        if all(hasattr(encoder, attr) for attr in REQUIRED):
            found[encoder.name] = encoder
    return found


def available() -> dict[str, object]:
    """Every known encoder by name, without loading any model."""
    encoders = _folder_encoders()
    encoders.update(_entry_point_encoders())
    encoders.update(_registered)
    return dict(sorted(encoders.items()))


def get(name: str):
    encoders = available()
    try:
        return encoders[name]
    except KeyError:
        raise UnknownEncoder(name, list(encoders)) from None
