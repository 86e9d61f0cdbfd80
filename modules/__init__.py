"""Encoder plugins.

An encoder is any object (a module is fine) with:

- ``name``: short name used with ``--model``;
- ``description``: one line;
- ``dimension``: int, the length of every vector;
- ``metric``: its natural metric, ``cosine``, ``l2`` or ``ip``;
- ``encode(batch)``: a list of strings in, a float32 array ``len(batch) x dimension`` out.

Optional: ``max_length`` (tokens the model reads; longer input is truncated), ``source`` (where
it loads from), ``count_truncated(texts)`` (how many texts exceed ``max_length``), and
``configure(backend=None, dimension=None)`` returning a copy with those options.

A *family* covers many models under one prefix (``st:<name-or-path>``, ``openai:<model>``): a
module with ``family``, ``name``, ``description`` and ``create(argument)`` returning an encoder.

Encoders are found in three places: the modules of this folder (files not starting with ``_``),
packages declaring the ``vectorize.modules`` entry-point group, and objects given to
``register()`` in-process. Importing an encoder must be cheap: heavy libraries are imported on the
first ``encode``, so listing encoders never loads a model.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "vectorize.modules"
REQUIRED = ("name", "description", "dimension", "metric", "encode")
FAMILY_REQUIRED = ("family", "name", "description", "create")

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


def is_encoder(obj) -> bool:
    return all(hasattr(obj, attr) for attr in REQUIRED)


def is_family(obj) -> bool:
    return all(hasattr(obj, attr) for attr in FAMILY_REQUIRED)


@functools.cache
def _installed() -> tuple[object, ...]:
    """This folder's modules and the entry points' encoders: found once per process."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            found.append(importlib.import_module(f"{__name__}.{info.name}"))
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.append(ep.load())
    return tuple(found)


def _discovered() -> list[object]:
    return [*_installed(), *_registered.values()]


def available() -> dict[str, object]:
    """Every encoder and family by name (families as 'st:<name-or-path>'), loading no model."""
    return dict(sorted((obj.name, obj) for obj in _discovered() if is_encoder(obj) or is_family(obj)))


def get(name: str, **options):
    """The encoder called name ('minilm', 'st:all-mpnet-base-v2', ...), configured with options
    (backend, dimension) when any is not None."""
    known = available()  # one discovery for the lookup, the family and the error message
    prefix, colon, argument = name.partition(":")
    family = next((e for e in known.values() if colon and is_family(e) and e.family == prefix), None)
    if name in known and is_encoder(known[name]):
        encoder = known[name]
    elif family is not None:
        encoder = family.create(argument)
    else:
        raise UnknownEncoder(name, list(known))
    options = {key: value for key, value in options.items() if value is not None}
    if options and hasattr(encoder, "configure"):
        return encoder.configure(**options)
    if options and options != {"dimension": encoder.dimension}:
        raise ValueError(f"model {name!r} takes no options ({', '.join(options)})")
    return encoder
