"""Take vectors out: export-vectors writes a vector column's vectors with their keys to JSON Lines,
CSV, .npy + a keys file, or Parquet, in key order, a page at a time, with the column's record
(model, dimension, metric, prefixes, source columns, label) inside the file (Parquet: its schema
metadata) or beside it (`<file>.vectorize.json`). import-vectors of that file with no other option
restores the column as it was: the same float4 values, bit for bit, and the same model record.

Pages are read by key (keyset pagination, one short statement each, retried on its own), so the
client holds one page at a time whatever the table's size. Numbers are written as the shortest
text that reads back as the same float4 (orjson writes a float32 so), or as float4 bytes (.npy,
Parquet). Files are written under a temporary name and renamed when complete.
This module reads the pages and hands them to the format's writer (vectorize_core.formats); the
record's format is vectorize_core.record's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import orjson
from psycopg import sql
from psycopg.adapt import Loader
from psycopg.pq import Format

from . import chunk_transfer
from .db import Database
from .errors import BadInput
from .formats import WRITERS
from .formats.checks import CHECK_ALGORITHM, check_field
from .progress import ImportProgress, Phases
from .record import FORMATS, export_record, keys_path
from .target import SearchTarget, resolve_for_search

# Rows per page read from the database.
EXPORT_PAGE = 5000
INTEGER_TYPES = {"int2", "int4", "int8"}


@dataclass
class ExportResult:
    target: SearchTarget
    format: str
    files: list[Path] = field(default_factory=list)  # the vectors' file first, then keys and record
    rows: int = 0  # records written: rows, or a chunked column's chunks (openings included)
    dimension: int = 0
    seconds: float = 0.0
    chunked: bool = False

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def export_vectors(
    db: Database,
    *,
    table: str | None,
    file: str,
    column: str | None = None,
    schema: str | None = None,
    vector_column: str | None = None,
    keys_file: str | None = None,
    progress: Callable[[ImportProgress], None] | None = None,
) -> ExportResult:
    """Write the vectors of a vectorized column (with their keys, in key order) to file, in the
    format its suffix names (.jsonl, .csv, .npy with a keys file, .parquet), with the column's
    record. ``keys_file`` (.npy only): where the keys go  [default: <stem>.keys.jsonl].
    ``progress(ImportProgress)`` hears the 'exporting' phase."""
    path = Path(file)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise BadInput(f"{path.name}: the file's suffix names its format: .jsonl, .csv, .npy or .parquet")
    if keys_file and kind != "npy":
        raise BadInput("--keys goes with a .npy file")
    if not path.parent.is_dir():
        raise BadInput(f"no such folder: {path.parent}")
    target = resolve_for_search(db, table=table, schema=schema, column=column, vector_column=vector_column)
    key_columns = list(target.table.primary_key)
    keys = Path(keys_file) if keys_file else keys_path(path) if kind == "npy" else None
    record = export_record(target, key_columns, keys)  # refuses a column whose source was dropped
    fields, chunked = key_columns, bool(target.metadata.get("chunks"))
    if chunked:  # one record a chunk: the chunk fields follow the keys
        record.update(chunk_transfer.export_record_part(target, key_columns))
        fields = [*key_columns, *record["chunk_fields"].values()]
    record["check"] = {"field": check_field(fields), "algorithm": CHECK_ALGORITHM}
    phases = Phases(progress)
    started = time.monotonic()
    total = chunk_transfer.chunk_rows_estimate(db, target) if chunked else rows_to_export(db, target)
    result = ExportResult(target, kind, dimension=int(target.metadata["dimension"]), chunked=chunked)
    writer = WRITERS[kind](path, fields, result.dimension, keys, record)
    with phases.phase("exporting", total) as tell:
        try:
            for keys_page, vectors in pages(db, target, key_columns):
                writer.write(keys_page, vectors)
                result.rows += len(vectors)
                tell(result.rows, max(total, result.rows))
            result.files = writer.finish(result.rows)
            tell(result.rows, result.rows)
        finally:
            writer.discard()
    result.seconds = time.monotonic() - started
    return result


def rows_to_export(db: Database, target: SearchTarget) -> int:
    """The rows to export, for progress: the planner's estimate of the table's rows when it has
    one (counting the vectors reads the whole table: 3 s of 24 at a million rows), else a count."""
    estimate = db.fetchone("SELECT reltuples FROM pg_catalog.pg_class WHERE oid = %s", (target.table.oid,))
    if estimate and (estimate[0] or 0) > 0:
        return int(estimate[0])
    count = sql.SQL("SELECT count({}) FROM {}").format(sql.Identifier(target.vector_column), target.table.ident)
    return db.fetchone(count)[0]


def pages(db: Database, target: SearchTarget, key_columns: list[str]) -> Iterator[tuple[list[tuple], np.ndarray]]:
    """(fields, vectors) a page at a time in key order: the keys as Python values (integers for
    integer key columns, else their text), then a chunked column's chunk fields; the vectors as
    float32 rows."""
    info = target.table
    keys = [sql.Identifier(k) for k in key_columns]
    types = [info.columns[k].type_sql for k in key_columns]
    integer = [info.columns[k].typname in INTEGER_TYPES for k in key_columns]
    if target.metadata.get("chunks"):
        first, later, bound = chunk_transfer.export_pages(db, target)
        integer += [False] * len(chunk_transfer.FIELD_ROLES)  # they come as what they are
    else:
        vector = sql.Identifier(target.vector_column)
        first = db.dialect.export_page(info.ident, keys, types, vector, after=False)
        later = db.dialect.export_page(info.ident, keys, types, vector, after=True)
        bound = len(key_columns)
    binary = db.dialect.binary_vector_read
    dimension = int(target.metadata["dimension"])

    def fetch(conn, statement, params) -> list[tuple]:
        cursor = conn.cursor(binary=binary)
        if binary:  # the vectors' bytes as they come, decoded a page at a time below
            cursor.adapters.register_loader(conn.adapters.types["vector"].oid, RawBinary)
        return cursor.execute(statement, params).fetchall()

    last: tuple = ()
    while True:
        statement, params = (later, (*last, EXPORT_PAGE)) if last else (first, (EXPORT_PAGE,))
        rows = db.run(partial(fetch, statement=statement, params=params))
        if not rows:
            return
        n = len(integer)
        if binary:
            vectors = binary_vectors([r[n] for r in rows], dimension)
        else:
            vectors = np.array([orjson.loads(r[n]) for r in rows], dtype=np.float32)
        last = tuple(rows[-1][:bound])
        yield [tuple(int(v) if i else v for v, i in zip(r[:n], integer, strict=True)) for r in rows], vectors
        if len(rows) < EXPORT_PAGE:
            return


class RawBinary(Loader):
    format = Format.BINARY

    def load(self, data) -> bytes:
        return bytes(data)


def binary_vectors(raws: list[bytes], dimension: int) -> np.ndarray:
    """Rows of pgvector's binary form (int16 dimension, int16 unused, float4s, big-endian) as
    float32 rows, all at once."""
    form = np.dtype([("dimension", ">i2"), ("unused", ">i2"), ("vec", ">f4", (dimension,))])
    return np.frombuffer(b"".join(raws), form)["vec"].astype(np.float32)
