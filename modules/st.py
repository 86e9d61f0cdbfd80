"""st:<name-or-path> — any sentence-transformers model, by Hugging Face hub name or local folder.

Its dimension, metric and input length are read from the model itself. The name is recorded in
the column metadata exactly as given, so `search` loads the same model again.
"""

from __future__ import annotations

from ._sentence_transformers import SentenceTransformerEncoder

family = "st"
name = "st:<name-or-path>"
description = "any sentence-transformers model, by hub name or local folder (dimension read from the model)"


def create(argument: str) -> SentenceTransformerEncoder:
    if not argument:
        raise ValueError("st: needs a model name or folder, e.g. st:sentence-transformers/all-mpnet-base-v2")
    return SentenceTransformerEncoder(
        name=f"{family}:{argument}",
        description=f"sentence-transformers model {argument}",
        source=argument,
    )
