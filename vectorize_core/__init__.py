"""vectorize_core: the machinery behind vectorize.py, importable without click.

    from vectorize_core import connect, encode
    from vectorize_core.search import search
    db = connect("postgresql://...")          # or connect(None) for the embedded database
    encode(db, table="passage", column="passage", model="minilm")
    search(db, "a sentence", k=5).rows

Names are imported on first use, so ``import vectorize_core.errors`` stays cheap.
"""

from importlib import import_module

_EXPORTS = {
    "Database": "db",
    "connect": "db",
    "mask_url": "db",
    "BadInput": "errors",
    "VectorizeError": "errors",
    "EncodeResult": "result",
    "encode": "pipeline",
    "EncodeRequest": "request",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
