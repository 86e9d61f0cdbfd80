"""The export record: what export-vectors writes of a column (model, dimension, metric, prefixes,
source columns, label), inside a Parquet file's schema metadata or beside any other file
(`<file>.vectorize.json`), and import-vectors reads back to restore the column as it was. The
writers, the export and the import all read its format here.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import BadInput
from .target import SearchTarget

EXPORT_VERSION = 1
# The record's key in a Parquet file's schema metadata, and the suffix of the file beside others.
PARQUET_KEY = b"vectorize"
RECORD_SUFFIX = ".vectorize.json"
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".npy": "npy", ".parquet": "parquet"}
# What of the column's metadata travels: what made the vectors and how they are searched, not
# this database's index names or column numbers.
CARRIED = ("source", "model", "dimension", "metric", "prefix", "query_prefix", "label", "external",
           "track_changes", "fulltext")  # fmt: skip


def record_path(path: Path) -> Path:
    return path.with_name(path.name + RECORD_SUFFIX)


def keys_path(path: Path) -> Path:
    return path.with_name(path.stem + ".keys.jsonl")


def recorded(path: Path) -> dict | None:
    """The export record a file carries (Parquet: in its schema metadata; others: beside it), or
    None for a file export-vectors did not write."""
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            metadata = pq.read_schema(path).metadata or {}
        except (pa.ArrowException, OSError):
            return None  # not Parquet: the import says so
        text = metadata.get(PARQUET_KEY)
    else:
        beside = record_path(path)
        text = beside.read_bytes() if beside.is_file() else None
    if text is None:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        raise BadInput(f"{path.name}: its export record is not valid JSON") from None
    if not isinstance(record, dict) or record.get("vectorize_export") != EXPORT_VERSION:
        raise BadInput(f"{path.name}: not an export record of this version (vectorize_export {EXPORT_VERSION})")
    if not isinstance(record.get("column"), dict):
        raise BadInput(f"{path.name}: its export record has no column record")
    return record


def export_record(target: SearchTarget, key_columns: list[str], keys_file: Path | None) -> dict:
    record = {
        "vectorize_export": EXPORT_VERSION,
        "table": target.table.name,
        "schema": target.table.schema,
        "vector_column": target.vector_column,
        "key_columns": key_columns,
        "column": {k: target.metadata[k] for k in CARRIED if k in target.metadata},
    }
    record["column"]["source"] = target.sources  # by their names now (a renamed source followed)
    if keys_file is not None:
        record["keys"] = keys_file.name
    return record
