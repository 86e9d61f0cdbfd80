"""Bring your own vectors: import precomputed embeddings into a vector column.

The file is read once, by its format's reader (vectorize_core.formats: JSON Lines, CSV, .npy with
a keys file, Parquet), and checked as it is read: a wrong-length vector, a non-number, NaN or
infinity, a value beyond float4, a missing key column or invalid UTF-8 stops the import naming
the line (a Parquet file: the row). Keys go to one scratch table by COPY, each in its key column's
own type (so the server names the line whose key it cannot read, and keys are compared as the
table compares them); vectors go to another, by line, as float4 in the cheapest form the engine
takes (the dialect chooses: pgvector's binary form on PostgreSQL, text on CockroachDB). A .npy and
its keys are checked whole, chunk by chunk, before any COPY. The user's table is written only when
the whole file has been read and its keys found unique; any failure before that drops the scratch
tables and leaves the table as it was. The vectors are then applied in key-ordered batches of
UPDATE_BATCH rows, each its own retried transaction, and the indexes built as encode builds them.

A file written by `export-vectors` carries its column's record (vectorize_core.record): imported
with no other option it restores that record, so the column searches by text as it did where it
came from.
"""

from __future__ import annotations

import itertools
import re
import shutil
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import orjson
import psycopg
from psycopg import sql

from . import chunk_transfer, chunks, contents, tracking
from .columns import ensure_extension, extension_installed, refresh_terms, run_ddl, set_up_columns
from .contents import vector_hash
from .db import Database, Table
from .errors import BadInput, DatabaseError
from .fill_queries import FillQueries
from .formats.checks import Damage, absurd_norms, check_failures, key_check, norm_reference
from .formats.common import BadVectorFile, Block, FastPathRefused, Reading, Source, first_block, keys_row
from .formats.delimited import csv_blocks, exact_csv_blocks
from .formats.jsonl import jsonl_blocks
from .formats.npy import NpyFile, check_numbers, open_npy, read_keys
from .formats.parquet import open_parquet, parquet_source
from .indexes import build_indexes_when_done, indexes_exist
from .output import plural
from .progress import ImportProgress, Phases
from .record import recorded
from .target import (
    VectorTarget,
    check_same_fill,
    check_text_column,
    check_vector_column,
    check_vector_column_name,
    default_vector_column,
    index_names,
    resolve_contents,
    resolve_fulltext,
    watched_columns,
)

EXTERNAL = "external"


@dataclass
class ImportResult:
    target: VectorTarget
    records: int = 0
    updated: int = 0
    missing: int = 0  # keys in the file that are not in the table
    seconds: float = 0.0  # the load: everything but the index build
    column_created: bool = False
    fulltext_added: bool = False  # --fulltext made the tsvector column this run
    index_created: bool = False
    index_seconds: float = 0.0
    index_skipped: bool = False  # --index skip: build it later with `vectorize.py index`
    index_note: str = ""  # why there is no vector index, or that the build outgrew its memory
    phase_seconds: dict[str, float] = field(default_factory=dict)
    restored: chunk_transfer.ChunkRestore | None = None  # a chunked column's rows and chunks
    damaged: Damage | None = None  # the damaged rows left out (skip_damaged)
    file_rows: int = 0  # the records the file holds, damaged or not
    expected_rows: int | None = None  # what its export record says it holds
    cut: bool = False  # its last line was cut off mid-record
    unit: str = "line"  # what the file's records are counted in: lines, or a Parquet file's rows

    @property
    def partial(self) -> bool:
        return self.expected_rows is not None and self.file_rows != self.expected_rows

    @property
    def rows_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


# Rows per UPDATE from the staging table: bounded transactions, each retried on its own.
UPDATE_BATCH = 5000
# COPY data is sent in blocks of about this size.
COPY_BLOCK = 1 << 20
# The keys' COPY text is kept in memory up to this size, then in a temporary file.
KEYS_IN_MEMORY = 64 << 20

# COPY (FORMAT BINARY): the signature, flags and header extension length; the end marker.
BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
BINARY_TRAILER = b"\xff\xff"


# -- COPY rows of the vectors --------------------------------------------------------------------


def binary_row_type(dimension: int) -> np.dtype:
    """One row of COPY (FORMAT BINARY) into (line int8, vec vector): the field count, then each
    field's length and value; the vector in pgvector's binary form (int16 dimension, int16
    unused, float4s), all big-endian."""
    return np.dtype(
        [
            ("fields", ">i2"),
            ("line_size", ">i4"),
            ("line", ">i8"),
            ("vec_size", ">i4"),
            ("dimension", ">i2"),
            ("unused", ">i2"),
            ("vec", ">f4", (dimension,)),
        ]
    )


def binary_rows(lines: np.ndarray, vectors: np.ndarray) -> bytes:
    dimension = vectors.shape[1]
    rows = np.empty(len(vectors), binary_row_type(dimension))
    rows["fields"] = 2
    rows["line_size"] = 8
    rows["line"] = lines
    rows["vec_size"] = 4 + 4 * dimension
    rows["dimension"] = dimension
    rows["unused"] = 0
    rows["vec"] = vectors.astype(np.float32, copy=False)  # checked to fit a float4
    return rows.tobytes()


def text_rows(lines: np.ndarray, vectors: np.ndarray) -> str:
    """COPY text rows (line, '[...]'): each number the shortest text that reads back as the same
    float4 (orjson writes a float32 so; rounded to float4 here first, so both COPY forms store
    the same values)."""
    values = np.ascontiguousarray(vectors, dtype=np.float32)
    dump = partial(orjson.dumps, option=orjson.OPT_SERIALIZE_NUMPY)
    return "".join(f"{line}\t{dump(v).decode()}\n" for line, v in zip(lines.tolist(), values, strict=True))


# -- the import ---------------------------------------------------------------------------------


@dataclass
class Staging:
    """The two scratch tables: keys in their own types by file line, and vectors by file line."""

    keys: sql.Identifier
    vectors: sql.Identifier
    key_columns: list[sql.Identifier]
    lines: array = field(default_factory=lambda: array("q"))  # the file line of each COPY row, in order
    lines_name: str = ""  # the file those lines are in
    unit: str = "line"  # what a file's records are counted in: lines, or a Parquet file's rows
    keys_form: str = "text"  # the COPY form of the keys: text, or csv (as pyarrow writes it)
    damage: Damage = field(default_factory=Damage)  # damaged records, in the tables or not
    unreadable: int = 0  # damaged records that are not in the tables (they could not be read)
    typical_norm: float | None = None  # of the file's first vectors, when they carry no check
    chunk_fields: dict[str, str] | None = None  # a chunked column's export: the chunk fields by role

    @property
    def copied_columns(self) -> list[sql.Identifier]:
        """The keys table's columns a COPY fills, in the file's order (the line last)."""
        extra = [sql.Identifier(n) for n in (self.chunk_fields or {}).values()]
        return [*self.key_columns, *extra, sql.Identifier("line")]

    @property
    def unique_columns(self) -> list[sql.Identifier]:
        """What no two records share: the key, and a chunk's number."""
        chunk = [sql.Identifier(self.chunk_fields["chunk"])] if self.chunk_fields else []
        return [*self.key_columns, *chunk]

    @property
    def matches(self) -> sql.Composed:
        """The table's row (t) of a scratch key (s): compared in the key's own type."""
        return sql.SQL(" AND ").join(sql.SQL("t.{0} = s.{0}").format(k) for k in self.key_columns)

    def create(self, db: Database, table: Table, dimension: int) -> None:
        for statement in db.dialect.staging_table(self.keys, table.ident, self.key_columns):
            run_ddl(db, statement)
        for statement in chunk_transfer.add_staging_columns(self.keys, self.chunk_fields or {}):
            run_ddl(db, statement)
        run_ddl(db, db.dialect.vector_staging_table(self.vectors, dimension))

    def drop(self, db: Database) -> None:
        for table in (self.keys, self.vectors):
            db.command(sql.SQL("DROP TABLE IF EXISTS {}").format(table))

    def clear(self, db: Database) -> None:
        """Empty both tables, to load the file again another way."""
        for table in (self.keys, self.vectors):
            db.command(sql.SQL("DELETE FROM {}").format(table))
        self.lines = array("q")
        self.damage, self.unreadable, self.typical_norm = Damage(self.unit), 0, None

    def note(self, block: Block) -> None:
        """A block's damaged records; without checks, its vectors of absurd length too."""
        self.damage.rows += block.damaged
        self.unreadable += len(block.damaged) - block.suspect
        self.note_lengths(block.vectors, block.lines, block.checked)

    def note_lengths(self, vectors: np.ndarray, lines, checked: bool) -> None:
        if checked or not len(vectors):
            return
        if self.typical_norm is None:
            self.typical_norm = norm_reference(vectors)
        for row, why in absurd_norms(vectors, self.typical_norm):
            self.damage.add(int(lines[row]), why)

    def leave_out_damaged(self, db: Database) -> int:
        """Delete the damaged records from both tables; returns how many were there."""
        lines = self.damage.lines
        for table in (self.vectors, self.keys):
            gone = db.command(sql.SQL("DELETE FROM {} WHERE line = ANY(%s)").format(table), (lines,))
        return gone

    def copy_keys(self, db: Database, spool) -> None:
        spool.seek(0)
        statement = db.dialect.copy_from(self.keys, self.copied_columns, self.keys_form)
        copy_in(db, statement, iter(lambda: spool.read(COPY_BLOCK), ""), self)

    def copy_vectors(self, db: Database, blocks, binary: bool) -> None:
        columns = [sql.Identifier("line"), sql.Identifier("vec")]
        copy_in(db, db.dialect.copy_from(self.vectors, columns, "binary" if binary else "text"), blocks, self)


def copy_in(db: Database, statement: sql.Composable, blocks, staging: Staging) -> None:
    """COPY statement FROM STDIN, block by block, on one connection. A row the server refuses
    (a key its column's type cannot read: 'abc' for an integer) is bad input naming its line."""

    def copy(conn):
        for setting in db.dialect.copy_settings():
            conn.execute(setting)
        try:
            with conn.cursor() as cur, cur.copy(statement) as copy:
                for block in blocks:
                    copy.write(block)
        except psycopg.errors.DataError as exc:
            found = re.search(r"line (\d+)", exc.diag.context or "")
            row = int(found.group(1)) if found else 0
            unit = staging.unit
            where = f"{unit} {staging.lines[row - 1]}" if 0 < row <= len(staging.lines) else f"a {unit}"
            raise BadVectorFile(f"{staging.lines_name} {where}: {exc.diag.message_primary}") from None

    db.run(copy, retry=False)  # a COPY cut short is not retried: the scratch tables are dropped


def spool_file():
    return tempfile.SpooledTemporaryFile(max_size=KEYS_IN_MEMORY, mode="w+", encoding="utf-8", newline="")


def load_npy(db: Database, staging: Staging, npy: NpyFile, keys_path: Path, reading: Reading, phases) -> int:
    """Check the .npy and its keys (numpy, a chunk at a time), then COPY both. Returns the rows."""
    staging.lines_name = keys_path.name
    with spool_file() as spool:
        with phases.phase("validating", npy.rows) as tell:
            keys = read_keys(keys_path, reading)
            for start, chunk in npy.chunks():
                crcs, written = [], []
                for line, row_keys, check in itertools.islice(keys, len(chunk)):
                    staging.lines.append(line)
                    spool.write(keys_row(row_keys, line))
                    if reading.check:
                        crcs.append(key_check(row_keys))
                        written.append(check)
                if len(staging.lines) < start + len(chunk):
                    break  # the keys ran out: said below
                check_numbers(npy, start, chunk, keys_path.name, staging.lines)
                lines = staging.lines[start : start + len(chunk)]
                if reading.check:
                    staging.damage.rows += check_failures(lines, crcs, written, chunk)
                staging.note_lengths(chunk, lines, bool(reading.check))
                tell(start + len(chunk))
            count = len(staging.lines) + sum(1 for _ in keys)
            if count != npy.rows:
                raise BadVectorFile(f"{keys_path.name} has {count} keys for {npy.rows} vectors in {npy.path.name}")
        with phases.phase("loading", npy.rows) as tell:
            staging.copy_keys(db, spool)
            lines = np.frombuffer(staging.lines, dtype=np.int64)
            binary = db.dialect.binary_vector_copy

            def blocks():
                if binary:
                    yield BINARY_HEADER
                for start, chunk in npy.chunks():
                    rows = lines[start : start + len(chunk)]
                    yield binary_rows(rows, chunk) if binary else text_rows(rows, chunk)
                    tell(start + len(chunk))
                if binary:
                    yield BINARY_TRAILER

            staging.copy_vectors(db, blocks(), binary)
    return npy.rows


def text_source(path: Path, reading: Reading, exact: bool = False) -> Source:
    """The records of a JSON Lines or CSV file; a CSV pyarrow cannot map to lines is read by the
    standard library's csv (exact)."""
    if path.suffix.lower() != ".csv":
        return first_block(path, jsonl_blocks(path, reading))
    if not exact:
        try:
            return first_block(path, csv_blocks(path, reading))
        except FastPathRefused:
            pass
    return first_block(path, exact_csv_blocks(path, reading))


def load_blocks(db: Database, staging: Staging, source: Source, phases) -> int:
    """One pass: each block is checked as it is read and its vectors copied at once; the keys
    wait in a spool and follow in a COPY of their own. Returns the records."""
    staging.lines_name, staging.unit, staging.keys_form = source.name, source.unit, source.keys_form
    staging.damage.unit = source.unit
    binary = db.dialect.binary_vector_copy
    with spool_file() as spool, phases.phase("loading") as tell:

        def data():
            read = 0
            if binary:
                yield BINARY_HEADER
            for block in source.blocks:
                read += block.size
                staging.lines.frombytes(block.lines.astype(np.int64, copy=False).tobytes())
                staging.note(block)
                spool.write(block.keys)
                yield binary_rows(block.lines, block.vectors) if binary else text_rows(block.lines, block.vectors)
                done = len(staging.lines)
                tell(done, source.estimated_total(done, read))
            if binary:
                yield BINARY_TRAILER

        staging.copy_vectors(db, data(), binary)
        staging.copy_keys(db, spool)
        tell(len(staging.lines), len(staging.lines))
    return len(staging.lines)


def load_text(db: Database, staging: Staging, source: Source, path: Path, reading: Reading, phases) -> int:
    """load_blocks; a CSV that turns out (past its first block) to need the standard library's
    reader is loaded again by it."""
    try:
        return load_blocks(db, staging, source, phases)
    except FastPathRefused:
        staging.clear(db)
        return load_blocks(db, staging, text_source(path, reading, exact=True), phases)


def import_vectors(
    db: Database,
    *,
    file: str,
    table: str | None = None,
    column: str | None = None,
    schema: str | None = None,
    vector_column: str | None = None,
    metric: str | None = None,
    model_name: str | None = None,
    keys_file: str | None = None,
    strict: bool = False,
    skip_damaged: bool = False,
    partial: bool = False,
    fulltext: bool = False,
    language: str | None = None,
    index: str = "after",
    index_memory: int | None = None,
    progress: Callable[[ImportProgress], None] | None = None,
    on_index=None,
) -> ImportResult:
    """Store the vectors of file (JSON Lines, CSV, Parquet, or .npy + keys) in table's vector
    column for column, creating and indexing it as encode does. Returns what was done.

    A file written by export-vectors carries its column's record: table, column, vector column,
    keys file, metric and the model record (model, prefixes, label, change tracking, full text)
    then default to what it says, so the column is restored as it was exported.

    ``fulltext`` also adds a generated tsvector of the text (``language``: its configuration) and
    its index, for hybrid search, as encode does. ``index``: 'after' builds the indexes once the
    vectors are in, 'now' before, 'skip' not at all (`vectorize.py index` builds them later);
    ``index_memory`` bytes for the build. ``progress(ImportProgress)`` hears each phase of the
    load; ``on_index(IndexProgress)`` the index builds.

    A damaged record (one that cannot be read, holds no float4 vector, fails its check or, in a
    file without checks, has an absurd length) is refused, naming the damaged records, unless
    ``skip_damaged``: then they are left out and named in the result. A file holding fewer records
    than its export record says (cut short) is refused unless ``partial``.
    """
    if index not in ("after", "now", "skip"):
        raise BadInput(f"index must be 'after', 'now' or 'skip', not {index!r}")

    phases = Phases(progress)
    with spooled(file) as path:
        if path.suffix.lower() == ".parquet":
            open_parquet(path)  # a file cut short or damaged is named as such, before its record is sought
        record = recorded(path) if file != "-" else None
        restored = Restored.of(record, column, vector_column, keys_file, path)
        table = table or (record or {}).get("table")
        if not table:
            raise BadInput("Missing option '--table' (the file carries no export record naming its table)")
        if not restored.sources:
            raise BadInput("Missing option '--column' (the file carries no export record naming its column)")
        info = db.find_table(table, schema)
        for source in restored.sources:
            check_text_column(info, source)
        key_columns = list(info.primary_key)
        fields = (record or {}).get("chunk_fields")  # a chunked column's export: a record a chunk
        reading, cut = file_reading(path, record, [*key_columns, *(fields or {}).values()], skip_damaged)
        dimension, load = file_loader(path, restored.keys_file, reading, phases)
        target = import_target(
            db, info, restored, vector_column, metric, model_name, dimension, fulltext, language,
            (record or {}).get("chunks") if fields else None,
        )  # fmt: skip
        has_index = target.column_exists and indexes_exist(db, target)
        started = time.monotonic()
        had_extension = extension_installed(db) or not db.dialect.undo_setup_statements()
        ensure_extension(db)
        name = f"vectorize_import_{uuid.uuid4().hex[:12]}"
        staging = Staging(
            sql.Identifier(info.schema, f"{name}_keys"),
            sql.Identifier(info.schema, f"{name}_vectors"),
            [sql.Identifier(k) for k in key_columns],
            chunk_fields=fields,
        )
        result = ImportResult(target, phase_seconds=phases.seconds, cut=cut)
        writing = refused = False
        try:
            staging.create(db, info, dimension)
            result.records = load(db, staging)
            check_whole(record, staging, result, partial)
            check_damage(db, staging, result, skip_damaged)
            restorer = None
            if fields:
                restorer = chunk_transfer.Restorer(target, staging.keys, staging.vectors, fields)
                check_chunk_rows(db, restorer, staging, result, strict, phases, path.name)
            else:
                check_keys(db, target, staging, result, strict, phases, path.name)
            writing = True
            with phases.phase("writing", result.records - result.missing) as tell:
                write_columns(db, target, result)
                if target.track_changes:
                    tracking.install(db, target)
                if index == "now" and not has_index:  # then the UPDATE maintains them
                    build_indexes(db, target, result, index_memory, on_index)
                if restorer is not None:
                    ranges = key_ranges(
                        db, staging, restorer.key_types, chunk_transfer.RESTORE_BATCH, restorer.opening()
                    )
                    restorer.restore(db, result.restored, tell, ranges)
                    result.updated = result.restored.rows
                else:
                    result.updated = update_in_batches(db, target, staging, tell)
                add_contents(db, target)
        except BadInput:
            refused = not writing
            raise
        finally:
            staging.drop(db)
            if refused and not had_extension:
                undo_extension(db)  # a refused file leaves the database as it found it
        # Building the indexes once over the filled column is far cheaper than maintaining them.
        if index == "after" and not has_index:
            build_indexes(db, target, result, index_memory, on_index)
        result.index_skipped = index == "skip" and not has_index
        refresh_terms(db, target)  # the full text's BM25 statistics, when it has them
        result.seconds = time.monotonic() - started - result.index_seconds
        return result


@dataclass
class Restored:
    """What an export record says of the column, under what the options say instead."""

    sources: tuple[str, ...]
    vector_column: str | None = None
    keys_file: str | None = None
    column: dict | None = None  # the exported column's record (model, metric, prefixes, ...)

    @classmethod
    def of(cls, record: dict | None, column, vector_column, keys_file, path: Path) -> Restored:
        if record is None:
            return cls((column,) if column else (), vector_column, keys_file)
        recorded = record["column"]
        keys = record.get("keys")
        return cls(
            (column,) if column else tuple(recorded.get("source") or ()),
            vector_column or record.get("vector_column"),
            keys_file or (str(path.parent / keys) if keys else None),
            recorded,
        )


def undo_extension(db: Database) -> None:
    """Remove the vector extension this import installed, unless something uses it by now."""
    for statement in db.dialect.undo_setup_statements():
        try:
            db.command(statement)
        except DatabaseError:
            pass  # another process made a vector column meanwhile: the extension stays
    db.forget_catalog()


def file_reading(path: Path, record: dict | None, key_columns: list[str], skip_damaged: bool) -> tuple[Reading, bool]:
    """How to read the file, and whether its last line is cut off: a file export-vectors wrote
    carries each row's check and ends with a line break, so one that does not was cut short
    mid-record, and is read up to its last whole line."""
    record = record or {}
    check = (record.get("check") or {}).get("field")
    end = None
    if record and path.suffix.lower() in (".jsonl", ".ndjson", ".csv"):
        end = whole_lines_end(path)
    reading = Reading(
        tuple(key_columns), check, skip_damaged, (record.get("column") or {}).get("dimension"), end
    )  # fmt: skip
    return reading, end is not None and end < path.stat().st_size


def whole_lines_end(path: Path) -> int:
    """Where the file's last line break ends it (0 if it has none)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        position = size
        while position > 0:
            start = max(0, position - (1 << 16))
            f.seek(start)
            found = f.read(position - start).rfind(b"\n")
            if found >= 0:
                return start + found + 1
            position = start
    return 0


def check_whole(record: dict | None, staging: Staging, result: ImportResult, partial: bool) -> None:
    """Refuse a file that holds another count of records than its export record says (unless it
    holds fewer and partial says that is meant)."""
    result.file_rows, result.unit = len(staging.lines) + staging.unreadable, staging.unit
    expected = (record or {}).get("rows")
    if not isinstance(expected, int) or isinstance(expected, bool):
        return
    result.expected_rows = expected
    held, name = result.file_rows, staging.lines_name
    if held > expected:
        raise BadVectorFile(
            f"{name} holds {held} {staging.unit}s; its export record says {expected}: it is not the file that was "
            "exported; nothing changed"
        )
    if held < expected and not partial:
        cut = ", and its last line is cut off" if result.cut else ""
        raise BadVectorFile(
            f"{name} holds {held} of the {expected} {staging.unit}s its export record says{cut}: the file is cut "
            f"short or rows were removed; nothing changed (--partial imports the {held})"
        )


def check_damage(db: Database, staging: Staging, result: ImportResult, skip_damaged: bool) -> None:
    """Refuse a file with damaged records, naming them; or (skip_damaged) leave them out."""
    damage = staging.damage
    if not damage.rows:
        return
    count = len(damage.rows)
    if not skip_damaged:
        raise BadVectorFile(
            f"{staging.lines_name}: {plural(count, f'damaged {damage.unit}')} ({damage.describe()}); "
            "nothing changed (--skip-damaged imports the others)"
        )
    result.records -= staging.leave_out_damaged(db)
    result.damaged = damage


def file_loader(path: Path, keys_file: str | None, reading: Reading, phases) -> tuple[int, Callable]:
    """The vectors' dimension (from the .npy header, or the first record) and load(db, staging),
    which checks and copies the file into the scratch tables and returns its records."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        source = parquet_source(path, reading)
        return source.dimension, partial(load_blocks, source=source, phases=phases)
    if suffix != ".npy":
        source = text_source(path, reading)
        return source.dimension, partial(load_text, source=source, path=path, reading=reading, phases=phases)
    if keys_file is None:
        raise BadInput(f"{path.name}: a .npy file needs --keys FILE (JSON Lines or CSV of the key columns)")
    if not Path(keys_file).is_file():
        raise BadInput(f"no such file: {keys_file}")
    npy = open_npy(path)
    return npy.dimension, partial(load_npy, npy=npy, keys_path=Path(keys_file), reading=reading, phases=phases)


def build_indexes(db: Database, target: VectorTarget, result: ImportResult, memory, on_index) -> None:
    """The pending-rows, full-text and vector indexes, as encode builds them (result says how long)."""
    build_indexes_when_done(db, target, FillQueries(target, db.dialect), result, None, on_index, memory)


def write_columns(db: Database, target: VectorTarget, result: ImportResult) -> None:
    """The vector column (and the full-text column) with their metadata, as encode makes them."""
    set_up_columns(db, target)
    result.column_created = not target.column_exists
    result.fulltext_added = bool(target.fulltext) and target.fulltext["column"] not in target.table.columns


def check_chunk_rows(db: Database, restorer, staging: Staging, result: ImportResult, strict, phases,
                     file_name: str) -> None:  # fmt: skip
    """A chunked column's records: each (key, chunk) once; the rows not in the table counted (an
    error with strict); rows whose chunks did not all arrive, or whose text is not the text that
    was split, left out (their text changed: an error with strict)."""
    result.restored = restore = chunk_transfer.ChunkRestore()
    with phases.phase("checking", result.records) as tell:
        check_keys_unique_in_their_type(db, staging)
        result.missing = db.fetchone(
            sql.SQL("SELECT count(*) FROM {} AS s WHERE {} AND NOT EXISTS (SELECT 1 FROM {} AS t WHERE {})").format(
                staging.keys, restorer.opening(), restorer.table.ident, staging.matches
            )
        )[0]
        if strict and result.missing:
            raise BadInput(
                f"{plural(result.missing, 'row')} of {file_name} are not in {restorer.table.display} (--strict); "
                "nothing written"
            )
        restore.incomplete = restorer.drop_incomplete(db)
        restorer.drop_changed(db, restore)
        tell(result.records)
    if strict and restore.changed:
        raise BadInput(
            f"the text of {plural(restore.changed, 'row')} of {restorer.table.display} changed since the export, so "
            "their chunks' spans no longer hold (--strict); nothing written"
        )


def check_keys(db: Database, target: VectorTarget, staging: Staging, result: ImportResult, strict, phases,
               file_name: str) -> None:  # fmt: skip
    """Keys unique in their own type; counts those not in the table (an error with strict)."""
    info = target.table
    with phases.phase("checking", result.records) as tell:
        check_keys_unique_in_their_type(db, staging)
        result.missing = db.fetchone(
            sql.SQL("SELECT count(*) FROM {} AS s WHERE NOT EXISTS (SELECT 1 FROM {} AS t WHERE {})").format(
                staging.keys, info.ident, staging.matches
            )
        )[0]
        tell(result.records)
    if strict and result.missing:
        raise BadInput(f"{result.missing} keys of {file_name} are not in {info.display} (--strict); nothing written")


class spooled:
    """The file to read: a path as given, or standard input ('-') copied to a temp file."""

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


def import_target(
    db,
    info: Table,
    restored: Restored,
    vector_column,
    metric,
    model_name,
    dimension,
    fulltext=False,
    language=None,
    chunking: dict | None = None,
) -> VectorTarget:
    """The column to fill: a new or imported one's record, or the exported column's restored
    (``chunking``: a chunked column's, whose chunks the file holds)."""
    sources, recorded = restored.sources, restored.column or {}
    if recorded and recorded.get("dimension") not in (None, dimension):
        raise BadVectorFile(
            f"the file's vectors have {dimension} dimensions; its export record says {recorded['dimension']}"
        )
    model = EXTERNAL if not recorded or recorded.get("external") else recorded["model"]
    prefix = recorded.get("prefix", "") if recorded else None
    vector_column = restored.vector_column or default_vector_column(sources[0])
    check_vector_column_name(info, vector_column, sources)
    existing = info.columns.get(vector_column)
    meta = existing.metadata if existing else None
    metric = metric or recorded.get("metric")
    if chunking is not None:
        chunk_transfer.check_chunking(f"{info.display}.{vector_column}", meta, chunking)
    elif meta is not None and meta.get("chunks"):
        raise BadInput(
            f"{info.display}.{vector_column} is chunked (encode --chunk): search ranks its rows by their chunks' "
            "vectors, which a file of one vector a row cannot give; import into another --vector-column, or "
            f"`vectorize.py drop -t {info.display} --vector-column {vector_column}` first"
        )
    if meta is not None:
        check_same_fill(
            meta, info.display, vector_column, sources, model, metric, prefix,
            replace=f"or `vectorize.py drop -t {info.display} --vector-column {vector_column}` first",
        )  # fmt: skip
        metric = meta.get("metric")
        model_name = model_name or meta.get("label")
    if existing is not None:
        check_vector_column(existing, info.display, dimension, "the file's vectors have")
    metric = metric or "cosine"
    db.dialect.check_metric(metric)
    if recorded.get("fulltext") and not fulltext:
        fulltext, language = True, language or recorded["fulltext"]["language"]
    track_changes = bool(recorded.get("track_changes") or (meta or {}).get("track_changes"))
    pending_index_name = index_names(db, info, vector_column, meta)[1]
    contents_record, hash_record, index_name = resolve_contents(db, info, vector_column, meta, ())
    return VectorTarget(
        table=info,
        sources=sources,
        vector_column=vector_column,
        model=model,
        dimension=dimension,
        metric=metric,
        column_exists=existing is not None,
        existing_metadata=meta,
        prefix=prefix or "",
        query_prefix=recorded.get("query_prefix", ""),
        track_changes=track_changes,
        label=model_name or recorded.get("label") or "",
        index_name=index_name,
        pending_index_name=pending_index_name,
        index_type=db.dialect.index_type(dimension),
        watched=watched_columns(info, sources) if track_changes else (),
        fulltext=resolve_fulltext(db, info, sources, meta, fulltext, language),
        contents=contents_record,
        hash=hash_record,
        chunks=import_chunking(db, info, vector_column, meta, chunking),
    )


def import_chunking(db, info: Table, vector_column: str, meta: dict | None, chunking: dict | None) -> dict | None:
    """The chunk table's record of a column whose chunks are imported: the column's own (brought
    up to date), or a new one made as the exported column was."""
    if chunking is None:
        return None
    if meta is not None:
        return chunks.upgraded_record(db, info, meta["chunks"])
    record = chunks.new_record(
        db, info, vector_column, chunking.get("tokens"), chunking.get("overlap"), chunking.get("counting"), ()
    )  # fmt: skip
    return {**record, "opening_weight": chunking.get("opening_weight", chunks.OPENING_WEIGHT)}


def add_contents(db: Database, target: VectorTarget) -> None:
    """The contents of the rows the import wrote (each distinct vector once) that the contents
    table lacks."""
    queries = FillQueries(target, db.dialect)
    db.command(contents.upsert(queries.contents, queries.holders, contents.missing(queries.contents, queries.holders)))


def check_keys_unique_in_their_type(db: Database, staging: Staging) -> None:
    """Keys that differ as text but not as values ("01" and 1 for an integer key) are one key.
    The unique index that proves it also orders the batches of the UPDATE."""
    keys = sql.SQL(", ").join(staging.unique_columns)
    try:
        db.command(sql.SQL("CREATE UNIQUE INDEX ON {} ({})").format(staging.keys, keys))
    except DatabaseError:
        repeated = first_repeated_key(db, staging)
        if repeated is None:
            raise
        line, first, key = repeated
        unit = staging.unit
        raise BadVectorFile(f"{staging.lines_name} {unit} {line}: key {key} repeats {unit} {first}") from None


def first_repeated_key(db: Database, staging: Staging) -> tuple[int, int, str] | None:
    """(line, line of its first occurrence, the key as its column prints it) of the earliest line
    whose key came before, or None."""
    keys = sql.SQL(", ").join(staging.unique_columns)
    as_text = sql.SQL(" || ', ' || ").join(sql.SQL("CAST({} AS text)").format(k) for k in staging.unique_columns)
    return db.fetchone(
        sql.SQL(
            "SELECT line, first, key FROM (SELECT line, min(line) OVER (PARTITION BY {}) AS first, {} AS key FROM {}) AS d"
            " WHERE line > first ORDER BY line LIMIT 1"
        ).format(keys, as_text, staging.keys)
    )


def update_in_batches(db: Database, target: VectorTarget, staging: Staging, tell) -> int:
    """UPDATE from the scratch tables in key order, UPDATE_BATCH rows per statement and
    transaction, each retried on its own (it is idempotent): a crash leaves whole batches, and a
    rerun writes the rest. Batch bounds travel as text, compared in the key's own type; the
    batches (disjoint key ranges) are written by WRITERS connections at once, as the server's
    work, not this process's, is what a batch costs."""
    info = target.table
    s_keys = sql.SQL(", ").join(sql.SQL("s.{}").format(k) for k in staging.key_columns)
    t_keys = sql.SQL(", ").join(sql.SQL("t.{}").format(k) for k in staging.key_columns)
    key_types = [info.columns[k].type_sql for k in info.primary_key]
    typed = sql.SQL(", ").join(sql.SQL("CAST(%s AS {})").format(sql.SQL(t)) for t in key_types)
    # A vector that came without a model is keyed by its own hash in the contents the index holds.
    write = sql.SQL(
        "UPDATE {} AS t SET {} = v.vec, {} = {} FROM {} AS s JOIN {} AS v ON v.line = s.line WHERE {}"
    ).format(
        info.ident,
        sql.Identifier(target.vector_column),
        sql.Identifier(target.hash["column"]),
        vector_hash(sql.SQL("v.vec")),
        staging.keys,
        staging.vectors,
        staging.matches,
    )
    # The bounds on the table's own key too: its primary key then finds the batch's rows, however
    # little the planner knows of the scratch tables.
    after = sql.SQL(" AND ({0}) > ({2}) AND ({1}) > ({2})").format(s_keys, t_keys, typed)
    upto = sql.SQL(" AND ({0}) <= ({2}) AND ({1}) <= ({2})").format(s_keys, t_keys, typed)

    def batches():
        """(statement, parameters) of each batch, in key order."""
        for last, end in key_ranges(db, staging, key_types, UPDATE_BATCH):
            statement, params = write, ()
            if last:
                statement, params = statement + after, (*last, *last)
            if end:
                statement, params = statement + upto, (*params, *end, *end)
            yield statement, params

    return run_batches(db, batches(), tell)


def key_ranges(db: Database, staging: Staging, key_types: list[str], size: int, where=None) -> Iterator[tuple]:
    """(after, up to) of each range of `size` scratch keys in key order (of the rows matching
    where), as text; () for no bound: the first range has no after, the last no up to."""
    s_keys = sql.SQL(", ").join(sql.SQL("s.{}").format(k) for k in staging.key_columns)
    typed = sql.SQL(", ").join(sql.SQL("CAST(%s AS {})").format(sql.SQL(t)) for t in key_types)
    as_text = sql.SQL(", ").join(sql.SQL("CAST(s.{} AS text)").format(k) for k in staging.key_columns)
    condition = where if where is not None else sql.SQL("TRUE")
    next_end = sql.SQL("SELECT {} FROM {} AS s WHERE {}{} ORDER BY {} LIMIT 1 OFFSET %s")
    last: tuple = ()
    while True:
        # The unique index on the scratch keys makes this a short index scan.
        after = sql.SQL(" AND ({}) > ({})").format(s_keys, typed) if last else sql.SQL("")
        end = db.fetchone(next_end.format(as_text, staging.keys, condition, after, s_keys), (*last, size - 1))
        yield last, tuple(end) if end else ()
        if end is None:  # the last range: whatever is left
            return
        last = tuple(end)


# Connections writing batches at once: the server does an UPDATE batch's work, so a second
# connection keeps a second core busy (PostgreSQL 18, 2 cores: 25% less time for the writes).
WRITERS = 2


def run_batches(db: Database, batches: Iterator[tuple], tell) -> int:
    """Run each (statement, parameters), retried on its own, on WRITERS connections of their own;
    returns the rows updated, telling the count as batches finish."""
    import threading
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    local, clones, lock = threading.local(), [], threading.Lock()

    def run(batch) -> int:
        if not hasattr(local, "db"):
            local.db = db.clone()
            with lock:
                clones.append(local.db)
        return local.db.command(*batch, retry=True)

    updated = 0
    try:
        with ThreadPoolExecutor(WRITERS, "vectorize-import-write") as pool:
            pending: deque = deque()
            for batch in batches:
                pending.append(pool.submit(run, batch))
                while len(pending) > WRITERS or (pending and pending[0].done()):
                    updated += pending.popleft().result()
                    tell(updated)
            while pending:
                updated += pending.popleft().result()
                tell(updated)
    finally:
        for clone in clones:
            clone.close()
    return updated
