"""Bring your own vectors: import precomputed embeddings into a vector column.

The whole file is validated first (a wrong-length vector, a non-number, NaN or infinity, a
missing key column, a duplicate key or invalid UTF-8 stops the import naming the line, with
nothing written). Then the vectors are streamed with COPY (text format, which CockroachDB
accepts for VECTOR on every version) into a scratch table and applied with one set-based UPDATE.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
import shutil
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from .db import Database, Table
from .errors import BadInput
from .pipeline import ensure_extension, run_ddl
from .target import (
    VectorTarget,
    check_same_fill,
    check_text_column,
    check_vector_column,
    check_vector_column_name,
    default_vector_column,
)

EXTERNAL = "external"


class BadVectorFile(BadInput):
    pass


@dataclass
class ImportResult:
    target: VectorTarget
    records: int = 0
    updated: int = 0
    missing: int = 0  # keys in the file that are not in the table
    seconds: float = 0.0
    column_created: bool = False
    index_created: bool = False


@dataclass
class Record:
    line: int
    keys: list[str]
    vector: str  # text form '[..]', parsed by the server


NUMBER_TYPES = {int, float}
# Vectors are stored as float4: a larger value is refused up front, naming its line.
FLOAT32_MAX = 3.4028234663852886e38
# Rows per UPDATE from the staging table: bounded transactions, each retried on its own.
UPDATE_BATCH = 5000


def parse_vector(value, where: str, dimension: int | None) -> list:
    if not isinstance(value, list):
        raise BadVectorFile(f"{where}: 'vector' must be an array of numbers")
    if not value:
        raise BadVectorFile(f"{where}: empty vector")
    if not set(map(type, value)) <= NUMBER_TYPES:  # bool is not a number here, though Python says so
        item = next(v for v in value if type(v) not in NUMBER_TYPES)
        raise BadVectorFile(f"{where}: vector holds {json.dumps(item)}, not a number")
    if not math.isfinite(math.fsum(value)):  # one pass in C: NaN or infinity anywhere spoils the sum
        bad = next((v for v in value if not math.isfinite(v)), None)
        if bad is not None:
            raise BadVectorFile(f"{where}: vector holds {bad}, not a finite number")
        raise BadVectorFile(f"{where}: vector values are too large")
    if max(map(abs, value)) > FLOAT32_MAX:
        raise BadVectorFile(f"{where}: vector holds {max(value, key=abs)}, beyond what a float4 holds")
    if dimension is not None and len(value) != dimension:
        raise BadVectorFile(f"{where}: vector has {len(value)} numbers; the first had {dimension}")
    return value


# The array after a top-level "vector" key: a quote inside a JSON string is always escaped, so an
# unescaped "vector" is a key. Used to hand the server the numbers as written, not re-formatted.
VECTOR_TEXT = re.compile(r'(?<!\\)"vector"\s*:\s*(\[[^\]]*\])')


def vector_text(line: str, vector: list) -> str:
    found = VECTOR_TEXT.findall(line)
    if len(found) == 1 and found[0].count(",") == len(vector) - 1:
        return found[0]
    return json.dumps(vector, separators=(",", ":"))


def key_text(value, where: str, column: str) -> str:
    if value is None:
        raise BadVectorFile(f"{where}: key column {column!r} is null")
    if isinstance(value, bool):
        return "true" if value else "false"  # a boolean key column reads these
    if not isinstance(value, (str, int, float)):
        raise BadVectorFile(f"{where}: key column {column!r} must be a string, a number or a boolean")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 1.0 for an integer key is 1 (an integer type cannot read '1.0')
    return str(value)


def decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                # utf-8-sig on the first line: spreadsheets ("CSV UTF-8") start files with a BOM.
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise BadVectorFile(f"{path.name} line {number}: not valid UTF-8") from None


def csv_reader(path: Path) -> csv.DictReader:
    """A reader for the file's own delimiter: ',' or, as spreadsheets in many locales write, ';'
    or a tab, told by the header line."""
    lines = (line for _, line in decoded_lines(path))
    first = next(lines, "")
    delimiter = max(",;\t", key=first.count) if first else ","
    return csv.DictReader(itertools.chain([first], lines), delimiter=delimiter)


def json_objects(path: Path) -> Iterator[tuple[int, str, dict, str]]:
    """(line number, 'file line N', object, line) for each non-blank line of a JSON Lines file."""
    for number, line in decoded_lines(path):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise BadVectorFile(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise BadVectorFile(f"{where}: expected a JSON object")
        yield number, where, obj, line


def object_keys(obj: dict, where: str, key_columns: list[str]) -> list[str]:
    return [key_text(obj[c], where, c) if c in obj else missing_key(where, c) for c in key_columns]


def read_jsonl(path: Path, key_columns: list[str]) -> Iterator[Record]:
    dimension = None
    for number, where, obj, line in json_objects(path):
        keys = object_keys(obj, where, key_columns)
        vector = parse_vector(obj.get("vector"), where, dimension)
        dimension = len(vector)
        yield Record(number, keys, vector_text(line, vector))


def missing_key(where: str, column: str):
    raise BadVectorFile(f"{where}: missing key column {column!r}")


def read_csv(path: Path, key_columns: list[str]) -> Iterator[Record]:
    reader = csv_reader(path)
    header = reader.fieldnames or []
    for column in [*key_columns, "vector"]:
        if column not in header:
            raise BadVectorFile(f"{path.name} line 1: the header has no column {column!r}")
    dimension = None
    for row in reader:
        where = f"{path.name} line {reader.line_num}"
        keys = [
            key_text(row[c], where, c) if row.get(c) not in (None, "") else missing_key(where, c) for c in key_columns
        ]
        try:
            vector = parse_vector(json.loads(row["vector"] or "null"), where, dimension)
        except ValueError as exc:
            raise BadVectorFile(f"{where}: 'vector' is not a JSON array ({exc})") from None
        dimension = len(vector)
        yield Record(reader.line_num, keys, row["vector"].strip())


def read_npy(path: Path, keys_path: Path | None, key_columns: list[str]) -> Iterator[Record]:
    import numpy as np

    if keys_path is None:
        raise BadInput(f"{path.name}: a .npy file needs --keys FILE (JSON Lines or CSV of the key columns)")
    vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    if vectors.ndim != 2 or vectors.dtype.kind not in "fiu":
        raise BadVectorFile(f"{path.name}: expected a 2-D array of numbers, got shape {vectors.shape} {vectors.dtype}")
    keys = list(read_keys(keys_path, key_columns))
    if len(keys) != len(vectors):
        raise BadVectorFile(f"{keys_path.name} has {len(keys)} keys for {len(vectors)} vectors in {path.name}")
    for index, (line, key) in enumerate(keys):
        row = np.asarray(vectors[index], dtype=np.float64)
        if not np.isfinite(row).all():
            raise BadVectorFile(f"{path.name} row {index + 1} ({keys_path.name} line {line}): NaN or infinity")
        if np.abs(row).max() > FLOAT32_MAX:
            raise BadVectorFile(f"{path.name} row {index + 1} ({keys_path.name} line {line}): beyond a float4")
        yield Record(line, key, json.dumps(row.tolist(), separators=(",", ":")))


def read_keys(path: Path, key_columns: list[str]) -> Iterator[tuple[int, list[str]]]:
    if path.suffix.lower() == ".csv":
        reader = csv_reader(path)
        for row in reader:
            where = f"{path.name} line {reader.line_num}"
            yield (
                reader.line_num,
                [key_text(row.get(c), where, c) if row.get(c) else missing_key(where, c) for c in key_columns],
            )
        return
    for number, where, obj, _ in json_objects(path):
        yield number, object_keys(obj, where, key_columns)


def records(path: Path, key_columns: list[str], keys_path: Path | None) -> Iterator[Record]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return read_npy(path, keys_path, key_columns)
    if suffix == ".csv":
        return read_csv(path, key_columns)
    return read_jsonl(path, key_columns)


def validate(path: Path, key_columns: list[str], keys_path: Path | None) -> tuple[int, int]:
    """(records, dimension) of a file that is entirely valid; raises naming the first bad line."""
    seen: dict[tuple[str, ...], int] = {}
    count, dimension = 0, None
    for record in records(path, key_columns, keys_path):
        key = tuple(record.keys)
        if key in seen:
            raise BadVectorFile(f"{path.name} line {record.line}: key {', '.join(key)} repeats line {seen[key]}")
        seen[key] = record.line
        if dimension is None:
            dimension = record.vector.count(",") + 1
        count += 1
    if not count:
        raise BadVectorFile(f"{path.name}: no vectors in the file")
    return count, dimension


def import_vectors(
    db: Database,
    *,
    table: str,
    column: str,
    file: str,
    schema: str | None = None,
    vector_column: str | None = None,
    metric: str | None = None,
    model_name: str | None = None,
    keys_file: str | None = None,
    strict: bool = False,
) -> ImportResult:
    """Store the vectors of file (JSON Lines, CSV or .npy + keys) in table's vector column for
    column, creating and indexing it as encode does. Returns what was done."""
    with spooled(file) as path:
        keys_path = Path(keys_file) if keys_file else None
        info = db.find_table(table, schema)
        check_text_column(info, column)
        key_columns = list(info.primary_key)
        count, dimension = validate(path, key_columns, keys_path)
        target = import_target(db, info, column, vector_column, metric, model_name, dimension)
        return apply(db, target, path, keys_path, count, strict)


class spooled:
    """The file to read twice: a path as given, or standard input ('-') copied to a temp file."""

    def __init__(self, file: str):
        self.file = file
        self.temp = None

    def __enter__(self) -> Path:
        if self.file != "-":
            path = Path(self.file)
            if not path.is_file():
                raise BadInput(f"no such file: {self.file}")
            return path
        self.temp = tempfile.NamedTemporaryFile(prefix="vectorize-stdin-", suffix=".jsonl", delete=False)
        with self.temp as out:
            shutil.copyfileobj(sys.stdin.buffer, out)
        return Path(self.temp.name)

    def __exit__(self, *exc):
        if self.temp is not None:
            Path(self.temp.name).unlink(missing_ok=True)


def import_target(db, info: Table, column, vector_column, metric, model_name, dimension) -> VectorTarget:
    vector_column = vector_column or default_vector_column(column)
    check_vector_column_name(info, vector_column, (column,))
    existing = info.columns.get(vector_column)
    meta = existing.metadata if existing else None
    if meta is not None:
        check_same_fill(meta, info.display, vector_column, (column,), EXTERNAL, metric, None)
        metric = meta.get("metric")
        model_name = model_name or meta.get("label")
    if existing is not None:
        check_vector_column(existing, info.display, dimension, "the file's vectors have")
    metric = metric or "cosine"
    db.dialect.check_metric(metric)
    return VectorTarget(
        table=info,
        sources=(column,),
        vector_column=vector_column,
        model=EXTERNAL,
        dimension=dimension,
        metric=metric,
        column_exists=existing is not None,
        existing_metadata=meta,
        label=model_name or "",
    )


def apply(db: Database, target: VectorTarget, path: Path, keys_path, count: int, strict: bool) -> ImportResult:
    from .pipeline import FillQueries, column_statements, create_indexes

    result = ImportResult(target, records=count)
    started = time.monotonic()
    ensure_extension(db)
    info = target.table
    staging = sql.Identifier(info.schema, f"vectorize_import_{uuid.uuid4().hex[:12]}")
    keys = [sql.Identifier(k) for k in info.primary_key]
    has_index = target.column_exists and db.index_exists(info, target.index_name)
    try:
        for statement in db.dialect.staging_table(staging, info.ident, keys, target.dimension):
            run_ddl(db, statement)
        run_ddl(db, sql.SQL("ALTER TABLE {} ADD COLUMN line INT8").format(staging))
        copy_records(db, staging, keys, path, keys_path, info.primary_key)
        check_keys_unique_in_their_type(db, staging, keys, path)
        matches = sql.SQL(" AND ").join(sql.SQL("t.{0} = s.{0}").format(k) for k in keys)
        result.missing = db.fetchone(
            sql.SQL("SELECT count(*) FROM {} AS s WHERE NOT EXISTS (SELECT 1 FROM {} AS t WHERE {})").format(
                staging, info.ident, matches
            )
        )[0]
        if strict and result.missing:
            raise BadInput(
                f"{result.missing} keys of {path.name} are not in {info.display} (--strict); nothing written"
            )
        for statement in column_statements(db, target):
            run_ddl(db, statement)
        result.column_created = not target.column_exists
        result.updated = update_in_batches(db, target, staging, keys, matches)
    finally:
        db.command(sql.SQL("DROP TABLE IF EXISTS {}").format(staging))
    if not has_index:
        create_indexes(db, target, FillQueries(target, db.dialect))
        result.index_created = True
    result.seconds = time.monotonic() - started
    return result


def copy_records(db: Database, staging, keys, path: Path, keys_path, key_columns) -> None:
    """COPY the records into the staging table, with their file line. A key the key column's type
    cannot read ('abc' for an integer) is bad input naming its line."""
    statement = sql.SQL("COPY {} ({}, vec, line) FROM STDIN").format(staging, sql.SQL(", ").join(keys))
    lines = array("q")  # the file line of each COPY line, to name the one the server refuses

    def copy(conn):
        for setting in db.dialect.copy_settings():
            conn.execute(setting)
        try:
            with conn.cursor() as cur, cur.copy(statement) as copy:
                buffer = io.StringIO()
                for record in records(path, key_columns, keys_path):
                    lines.append(record.line)
                    buffer.write("\t".join([*map(escape_copy, record.keys), record.vector, str(record.line)]) + "\n")
                    if buffer.tell() > 1 << 20:
                        copy.write(buffer.getvalue())
                        buffer = io.StringIO()
                copy.write(buffer.getvalue())
        except psycopg.errors.DataError as exc:
            found = re.search(r"line (\d+)", exc.diag.context or "")
            where = (
                f"line {lines[int(found.group(1)) - 1]}" if found and int(found.group(1)) <= len(lines) else "a line"
            )
            raise BadVectorFile(f"{path.name} {where}: {exc.diag.message_primary}") from None

    db.run(copy, retry=False)


def check_keys_unique_in_their_type(db: Database, staging, keys, path: Path) -> None:
    """Keys that differ as text but not as values ("01" and 1 for an integer key) are one key."""
    row = db.fetchone(
        sql.SQL("SELECT min(line), max(line) FROM {} GROUP BY {} HAVING count(*) > 1 LIMIT 1").format(
            staging, sql.SQL(", ").join(keys)
        )
    )
    if row is not None:
        raise BadVectorFile(
            f"{path.name} line {row[1]}: its key is the key of line {row[0]} (compared as the key column's type)"
        )


def update_in_batches(db: Database, target: VectorTarget, staging, keys, matches) -> int:
    """UPDATE from the staging table in key order, UPDATE_BATCH rows per statement and
    transaction, each retried on its own (it is idempotent): a crash leaves whole batches, and a
    rerun writes the rest. Batch bounds travel as text, compared in the key's own type."""
    info = target.table
    s_keys = sql.SQL(", ").join(sql.SQL("s.{}").format(k) for k in keys)
    typed = sql.SQL(", ").join(
        sql.SQL("CAST(%s AS {})").format(sql.SQL(info.columns[k].type_sql)) for k in info.primary_key
    )
    as_text = sql.SQL(", ").join(sql.SQL("CAST(s.{} AS text)").format(k) for k in keys)
    write = sql.SQL("UPDATE {} AS t SET {} = s.vec FROM {} AS s WHERE {}").format(
        info.ident, sql.Identifier(target.vector_column), staging, matches
    )
    updated, last = 0, ()
    while True:
        after = sql.SQL(" AND ({}) > ({})").format(s_keys, typed) if last else sql.SQL("")
        end = db.fetchone(
            sql.SQL("SELECT {} FROM {} AS s WHERE TRUE{} ORDER BY {} LIMIT 1 OFFSET %s").format(
                as_text, staging, after, s_keys
            ),
            (*last, UPDATE_BATCH - 1),
        )
        if end is None:  # the last batch: whatever is left
            return updated + db.command(write + after, last, retry=True)
        upto = sql.SQL(" AND ({}) <= ({})").format(s_keys, typed)
        updated += db.command(write + after + upto, (*last, *end), retry=True)
        last = tuple(end)


def escape_copy(value: str) -> str:
    """COPY text format: backslash, tab, newline and carriage return are escaped."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
