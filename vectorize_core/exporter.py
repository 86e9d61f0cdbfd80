"""Take vectors out: export-vectors writes a vector column's vectors with their keys to JSON Lines,
CSV, .npy + a keys file, or Parquet, in key order, a page at a time, with the column's record
(model, dimension, metric, prefixes, source columns, label) inside the file (Parquet: its schema
metadata) or beside it (`<file>.vectorize.json`). import-vectors of that file with no other option
restores the column as it was: the same float4 values, bit for bit, and the same model record.

Pages are read by key (keyset pagination, one short statement each, retried on its own), so the
client holds one page at a time whatever the table's size. Numbers are written as the shortest
text that reads back as the same float4 (orjson writes a float32 so), or as float4 bytes (.npy,
Parquet). Files are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import csv
import io
import json
import os
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

from .db import Database
from .errors import BadInput
from .importer import ImportProgress, Phases
from .target import SearchTarget, resolve_for_search

EXPORT_VERSION = 1
# The record's key in a Parquet file's schema metadata, and the suffix of the file beside others.
PARQUET_KEY = b"vectorize"
RECORD_SUFFIX = ".vectorize.json"
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".npy": "npy", ".parquet": "parquet"}
# What of the column's metadata travels: what made the vectors and how they are searched, not
# this database's index names or column numbers.
CARRIED = ("source", "model", "dimension", "metric", "prefix", "query_prefix", "label", "external",
           "track_changes", "fulltext")  # fmt: skip
# Rows per page read from the database.
EXPORT_PAGE = 5000
INTEGER_TYPES = {"int2", "int4", "int8"}


@dataclass
class ExportResult:
    target: SearchTarget
    format: str
    files: list[Path] = field(default_factory=list)  # the vectors' file first, then keys and record
    rows: int = 0
    dimension: int = 0
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


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
    if target.metadata.get("chunks"):
        raise BadInput(f"{target.display} holds chunk vectors (encode --chunk); export-vectors writes one vector a row")
    key_columns = list(target.table.primary_key)
    keys = Path(keys_file) if keys_file else keys_path(path) if kind == "npy" else None
    record = export_record(target, key_columns, keys)  # refuses a column whose source was dropped
    phases = Phases(progress)
    started = time.monotonic()
    total = rows_to_export(db, target)
    result = ExportResult(target, kind, dimension=int(target.metadata["dimension"]))
    writer = WRITERS[kind](path, key_columns, result.dimension, keys, record)
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
    """(keys, vectors) a page at a time in key order: the keys as Python values (integers for
    integer key columns, else their text), the vectors as float32 rows."""
    info = target.table
    keys = [sql.Identifier(k) for k in key_columns]
    types = [info.columns[k].type_sql for k in key_columns]
    integer = [info.columns[k].typname in INTEGER_TYPES for k in key_columns]
    vector = sql.Identifier(target.vector_column)
    first = db.dialect.export_page(info.ident, keys, types, vector, after=False)
    later = db.dialect.export_page(info.ident, keys, types, vector, after=True)
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
        n = len(key_columns)
        if binary:
            vectors = binary_vectors([r[n] for r in rows], dimension)
        else:
            vectors = np.array([orjson.loads(r[n]) for r in rows], dtype=np.float32)
        last = tuple(rows[-1][:n])
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


# -- writers: each writes under a temporary name and renames when finished -------------------------


class Writer:
    record_inside = False  # Parquet keeps the record in its schema; the others beside the file

    def __init__(self, path: Path, key_columns: list[str], dimension: int, keys: Path | None, record: dict):
        self.path, self.key_columns, self.dimension, self.keys, self.record = path, key_columns, dimension, keys, record
        self.temps: dict[Path, Path] = {}  # final name: temporary name
        self.closed = False

    def temp(self, path: Path) -> Path:
        self.temps[path] = path.with_name(f".{path.name}.partial")
        return self.temps[path]

    def write(self, keys: list[tuple], vectors: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def finish(self, rows: int) -> list[Path]:
        """Close, write the record beside the file (Parquet: it is inside), rename into place."""
        self.close()
        self.closed = True
        if not self.record_inside:
            self.temp(record_path(self.path)).write_text(json.dumps({**self.record, "rows": rows}, indent=2) + "\n")
        for final, temp in self.temps.items():
            os.replace(temp, final)
        done = list(self.temps)
        self.temps = {}
        return done

    def discard(self) -> None:
        """Remove what an unfinished export wrote."""
        if not self.closed:
            try:
                self.close()
            except Exception:  # noqa: BLE001 - cleaning up after a failure that is being raised
                pass
        for temp in self.temps.values():
            temp.unlink(missing_ok=True)


def vector_json(vectors: np.ndarray) -> list[bytes]:
    """Each row as a JSON array of the shortest numbers that read back as the same float4."""
    return [orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY) for v in np.ascontiguousarray(vectors)]


class JsonlWriter(Writer):
    def __init__(self, *args):
        super().__init__(*args)
        self.out = open(self.temp(self.path), "wb")

    def write(self, keys, vectors):
        names = [json.dumps(k).encode() + b": " for k in self.key_columns]
        lines = []
        for key, vector in zip(keys, vector_json(vectors), strict=True):
            fields = b", ".join(n + orjson.dumps(v) for n, v in zip(names, key, strict=True))
            lines.append(b"{" + fields + b', "vector": ' + vector + b"}\n")
        self.out.write(b"".join(lines))

    def close(self):
        self.out.close()


class CsvWriter(Writer):
    """A header, then each page as pyarrow writes CSV (strings quoted, quotes doubled)."""

    def __init__(self, *args):
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        super().__init__(*args)
        self.pa, self.pa_csv = pa, pa_csv
        self.out = open(self.temp(self.path), "wb")
        header = io.StringIO()
        csv.writer(header).writerow([*self.key_columns, "vector"])
        self.out.write(header.getvalue().encode())

    def write(self, keys, vectors):
        pa = self.pa
        columns = [pa.array(list(values)) for values in zip(*keys, strict=True)]
        columns.append(pa.array(vector_json(vectors), pa.binary()).cast(pa.string()))
        table = pa.table(columns, names=[f"c{i}" for i in range(len(columns))])
        self.pa_csv.write_csv(table, self.out, self.pa_csv.WriteOptions(include_header=False))

    def close(self):
        self.out.close()


class NpyWriter(Writer):
    """The vectors as a float32 .npy (its header rewritten with the row count at the end: numpy
    pads the header so the count's digits never move the data) and the keys as JSON Lines."""

    def __init__(self, *args):
        super().__init__(*args)
        self.out = open(self.temp(self.path), "wb")
        self.key_lines = open(self.temp(self.keys), "wb")
        self.count = 0
        self.write_header()

    def write_header(self) -> None:
        header = {"descr": "<f4", "fortran_order": False, "shape": (self.count, self.dimension)}
        self.out.seek(0)
        np.lib.format.write_array_header_2_0(self.out, header)
        self.out.seek(0, os.SEEK_END)

    def write(self, keys, vectors):
        self.out.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
        names = self.key_columns
        self.key_lines.write(b"".join(orjson.dumps(dict(zip(names, k, strict=True))) + b"\n" for k in keys))
        self.count += len(vectors)

    def close(self):
        self.write_header()
        self.out.close()
        self.key_lines.close()


class ParquetWriter(Writer):
    """Record batches of the keys (int64 for integer key columns, else text) and 'vector', a
    fixed-size list of float32; the column's record in the schema metadata."""

    record_inside = True

    def __init__(self, *args):
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(*args)
        self.pa, self.pq, self.writer = pa, pq, None

    def start(self, key_types: list) -> None:
        pa = self.pa
        fields = [pa.field(k, t) for k, t in zip(self.key_columns, key_types, strict=True)]
        vector = pa.field("vector", pa.list_(pa.float32(), self.dimension), nullable=False)
        schema = pa.schema([*fields, vector], metadata={PARQUET_KEY: json.dumps(self.record).encode()})
        self.writer = self.pq.ParquetWriter(self.temp(self.path), schema)

    def write(self, keys, vectors):
        pa = self.pa
        columns = [pa.array(list(values)) for values in zip(*keys, strict=True)]
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        if self.writer is None:  # the first page's keys (int64 or text) make the schema
            self.start([c.type for c in columns])
        columns.append(pa.FixedSizeListArray.from_arrays(flat, self.dimension))
        self.writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=self.writer.schema))

    def close(self):
        if self.writer is None:  # no rows: an empty file with the record
            self.start([self.pa.string()] * len(self.key_columns))
        self.writer.close()


WRITERS = {"jsonl": JsonlWriter, "csv": CsvWriter, "npy": NpyWriter, "parquet": ParquetWriter}
