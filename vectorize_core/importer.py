"""Bring your own vectors: import precomputed embeddings into a vector column.

The file is read once and checked as it is read: a wrong-length vector, a non-number, NaN or
infinity, a value beyond float4, a missing key column or invalid UTF-8 stops the import naming
the line (a Parquet file: the row). JSON Lines and CSV are parsed a block at a time (by worker
processes for a large file) by simdjson, each vector read as doubles in C with no Python number
made, and checked with numpy; a line it refuses is read again by the standard library's json to
say what is wrong with it. CSV is split into fields by pyarrow; Parquet is read in record
batches by pyarrow and checked with numpy, with no Python per row. Keys go to one scratch table by COPY, each in its key column's own type (so the server
names the line whose key it cannot read, and keys are compared as the table compares them);
vectors go to another, by line, as float4 in the cheapest form the engine takes (the dialect
chooses: pgvector's binary form on PostgreSQL, text on CockroachDB). A .npy is checked with
numpy, chunk by chunk, before any COPY. The user's table is written only when the whole file has
been read and its keys found unique; any failure before that drops the scratch tables and leaves
the table as it was. The vectors are then applied in key-ordered batches of UPDATE_BATCH rows,
each its own retried transaction, and the indexes built as encode builds them.

A file written by `export-vectors` carries its column's record (model, metric, prefixes, source
columns, label): imported with no other option it restores that record, so the column searches
by text as it did where it came from.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import orjson
import psycopg
import simdjson
from psycopg import sql

from . import contents, tracking
from .contents import vector_hash
from .db import Database, Table
from .errors import BadInput, DatabaseError
from .pipeline import (
    FillQueries,
    build_indexes_when_done,
    ensure_extension,
    indexes_exist,
    run_ddl,
    set_up_columns,
)
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


class BadVectorFile(BadInput):
    pass


@dataclass
class ImportProgress:
    """What progress(p) hears: each phase starts (done 0), advances, and ends (finished).

    Phases: 'validating' (a .npy and its keys, with numpy, before any COPY), 'loading' (COPY into
    the scratch tables; JSON Lines and CSV are checked here, as they stream), 'checking' (keys
    unique in their own type, and found in the table), 'writing' (the UPDATE batches). For JSON
    Lines and CSV the total while loading is estimated from the bytes read.
    """

    phase: str
    done: int = 0
    total: int = 0
    seconds: float = 0.0
    finished: bool = False


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

    @property
    def rows_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Block:
    """Records checked and ready to COPY: their file lines (or rows), their keys as COPY rows,
    and their vectors as float4."""

    lines: np.ndarray  # int64
    keys: str
    vectors: np.ndarray  # float32, rows x dimension
    size: int = 0  # how much of the file it took: bytes, or a Parquet file's rows


NUMBER_TYPES = {int, float}
# Vectors are stored as float4: a value that would round to infinity is refused up front, naming
# its line. The bound is halfway between float4's largest value and the next power of two, so
# 3.4028235e38 (float4's largest, as its shortest text says it) is in, as the server's strtof has it.
FLOAT4_BOUND = 2.0**128 - 2.0**103
# Rows per UPDATE from the staging table: bounded transactions, each retried on its own.
UPDATE_BATCH = 5000
# A .npy is read (and checked, and sent) this many bytes of vectors at a time.
NPY_CHUNK_BYTES = 4 << 20
# COPY data is sent in blocks of about this size.
COPY_BLOCK = 1 << 20
# JSON Lines and CSV are parsed this many bytes of lines at a time; Parquet this many rows.
TEXT_BLOCK = 4 << 20
PARQUET_BATCH = 4096
# The keys' COPY text is kept in memory up to this size, then in a temporary file.
KEYS_IN_MEMORY = 64 << 20

# COPY (FORMAT BINARY): the signature, flags and header extension length; the end marker.
BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
BINARY_TRAILER = b"\xff\xff"


def parse_vector(value, where: str, dimension: int | None) -> list:
    if not isinstance(value, list):
        raise BadVectorFile(f"{where}: 'vector' must be an array of numbers")
    if not value:
        raise BadVectorFile(f"{where}: empty vector")
    if not set(map(type, value)) <= NUMBER_TYPES:  # bool is not a number here, though Python says so
        item = next(v for v in value if type(v) not in NUMBER_TYPES)
        raise BadVectorFile(f"{where}: vector holds {json.dumps(item)}, not a number")
    try:
        total = math.fsum(value)
    except OverflowError:  # an integer beyond any float
        raise BadVectorFile(f"{where}: vector values are too large") from None
    if not math.isfinite(total):  # one pass in C: NaN or infinity anywhere spoils the sum
        bad = next((v for v in value if not math.isfinite(v)), None)
        if bad is not None:
            raise BadVectorFile(f"{where}: vector holds {bad}, not a finite number")
        raise BadVectorFile(f"{where}: vector values are too large")
    if max(value) >= FLOAT4_BOUND or min(value) <= -FLOAT4_BOUND:  # two C loops, no abs() per number
        raise BadVectorFile(f"{where}: vector holds {max(value, key=abs)}, beyond what a float4 holds")
    if dimension is not None and len(value) != dimension:
        raise BadVectorFile(f"{where}: vector has {len(value)} numbers; the first had {dimension}")
    return value


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


class FileLines:
    """The decoded lines of a file with their numbers, counting the bytes read (for progress)."""

    def __init__(self, path: Path):
        self.path = path
        self.bytes_read = 0

    def __iter__(self) -> Iterator[tuple[int, str]]:
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, 1):
                self.bytes_read += len(raw)
                try:
                    # utf-8-sig on the first line: spreadsheets ("CSV UTF-8") start files with a BOM.
                    yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError:
                    raise BadVectorFile(f"{self.path.name} line {number}: not valid UTF-8") from None


def csv_reader(lines: FileLines) -> csv.DictReader:
    """A reader for the file's own delimiter: ',' or, as spreadsheets in many locales write, ';'
    or a tab, told by the header line."""
    texts = (line for _, line in lines)
    first = next(texts, "")
    delimiter = max(",;\t", key=first.count) if first else ","
    return csv.DictReader(itertools.chain([first], texts), delimiter=delimiter)


def json_objects(lines: FileLines) -> Iterator[tuple[int, str, dict, str]]:
    """(line number, 'file line N', object, line) for each non-blank line of a JSON Lines file."""
    for number, line in lines:
        if not line.strip():
            continue
        where = f"{lines.path.name} line {number}"
        yield number, where, json_object(line, where), line


def json_object(line: str | bytes, where: str) -> dict:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise BadVectorFile(f"{where}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(obj, dict):
        raise BadVectorFile(f"{where}: expected a JSON object")
    return obj


def object_keys(obj: dict, where: str, key_columns: list[str]) -> list[str]:
    return [key_text(obj[c], where, c) if c in obj else missing_key(where, c) for c in key_columns]


def missing_key(where: str, column: str):
    raise BadVectorFile(f"{where}: missing key column {column!r}")


# -- JSON Lines and CSV: parsed a block at a time -----------------------------------------------

UTF8_BOM = b"\xef\xbb\xbf"
# What simdjson raises for a record it cannot read as we want it (not JSON, not an object, a key
# or 'vector' missing, not numbers, a number beyond a double or an integer beyond 64 bits): the
# exact reader then says what is wrong.
NOT_FAST = (ValueError, TypeError, KeyError, RuntimeError, AttributeError)


def fast_vector(value) -> np.ndarray:
    """A simdjson array of numbers as doubles, read in C with no Python number made; nested arrays
    (which simdjson would flatten) are refused."""
    numbers = np.frombuffer(value.as_buffer(of_type="d"), dtype=np.float64)
    if len(numbers) != len(value):
        raise ValueError("nested arrays")
    return numbers


def fast_record(parser, raw: bytes, key_columns: list[str]) -> tuple[list, np.ndarray]:
    """The key values and vector of a JSON Lines record, by simdjson. Its proxies live only in
    this frame: a parser is reused only once they are gone."""
    doc = parser.parse(raw)
    return [doc[c] for c in key_columns], fast_vector(doc["vector"])


class Blocks:
    """Gathers checked records into Blocks; the first record sets the dimension. ``again(raw,
    where)`` reads a record the exact way, to say what is wrong with it (it raises)."""

    def __init__(self, name: str, dimension: int | None, again: Callable):
        self.name, self.dimension, self.again = name, dimension, again
        self.lines, self.keys, self.vectors, self.raws = array("q"), [], [], []

    def add(self, line: int, keys: list[str], vector: list, raw) -> None:
        self.lines.append(line)
        self.keys.append(keys_row(keys, line))
        self.vectors.append(vector)
        self.raws.append(raw)

    def vector(self, parser, text: str, where: str):
        """The vector of a CSV field: simdjson when it reads it, else json says what is wrong."""
        try:
            vector = fast_vector(parser.parse(text))
            if len(vector) == self.dimension:
                return vector
        except NOT_FAST:
            pass
        return self.exact_vector(text, where)

    def exact_vector(self, text: str | bytes, where: str) -> list:
        """The vector of a CSV field as json and parse_vector read it: what is wrong with it."""
        try:
            value = json.loads(text or "null")
        except ValueError as exc:
            raise BadVectorFile(f"{where}: 'vector' is not a JSON array ({exc})") from None
        vector = parse_vector(value, where, self.dimension)
        self.dimension = len(vector)
        return vector

    def take(self, size: int) -> Block | None:
        """The records gathered since the last take, which read `size` bytes of the file; a
        number that rounds to infinity as a float4 is refused naming its line."""
        if not self.lines:
            return None
        with np.errstate(over="ignore"):
            vectors = np.array(self.vectors, dtype=np.float32).reshape(len(self.lines), self.dimension)
        finite = np.isfinite(vectors).all(axis=1)
        if not finite.all():
            row = int(np.argmin(finite))
            where = f"{self.name} line {self.lines[row]}"
            self.again(self.raws[row], where)
            raise BadVectorFile(f"{where}: vector holds a value beyond what a float4 holds")
        block = Block(np.frombuffer(self.lines, dtype=np.int64).copy(), "".join(self.keys), vectors, size)
        self.lines, self.keys, self.vectors, self.raws = array("q"), [], [], []
        return block


def jsonl_blocks(path: Path, key_columns: list[str]) -> Iterator[Block]:
    """The records of a JSON Lines file, about TEXT_BLOCK bytes of lines at a time, parsed in
    worker processes when the file is large (see parsed)."""
    chunks = line_chunks(path)
    return parsed(chunks, partial(jsonl_block, path=path, key_columns=key_columns), workers_for(path))


def line_chunks(path: Path, offset: int = 0, number: int = 1, quoted: bool = False) -> Iterator[tuple[int, ...]]:
    """(number of the first line, offset, bytes, lines) of the file's lines from offset, about
    TEXT_BLOCK bytes at a time: a chunk travels as where it is, and each worker reads its own. With
    quoted (CSV), a chunk whose double quotes do not pair up, a quoted value running past its
    end, raises FastPathRefused."""
    buffer = bytearray(TEXT_BLOCK)
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        while size := f.readinto(buffer):
            end = buffer.rfind(b"\n", 0, size) + 1
            if end == 0 and size == len(buffer):  # a line longer than the buffer
                buffer = bytearray(2 * len(buffer))
                f.seek(offset)
                continue
            end = end or size  # the last line, with no line break after it
            if quoted and buffer.count(b'"', 0, end) % 2:
                raise FastPathRefused("a quoted value runs past the end of a chunk")
            lines = buffer.count(b"\n", 0, end) + (buffer[end - 1] != 10)  # 10: a line break
            yield number, offset, end, lines
            number += lines
            offset += end
            f.seek(offset)


def read_chunk(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def jsonl_block(chunk: tuple[int, ...], dimension: int | None, path: Path, key_columns: list[str]) -> Block | None:
    """The records of some lines of a JSON Lines file, a chunk of line_chunks. A
    line simdjson refuses is read again by json and parse_vector, which name what is wrong (or
    accept it: an integer beyond 64 bits is a number too)."""
    first, offset, size, _ = chunk
    data = read_chunk(path, offset, size)
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    parser = simdjson.Parser()
    blocks = Blocks(path.name, dimension, partial(exact_jsonl_record, key_columns=key_columns))
    for number, raw in enumerate(lines, first):
        where = f"{path.name} line {number}"
        if number == 1 and raw.startswith(UTF8_BOM):
            raw = raw[3:]  # spreadsheets and some tools start files with a BOM
        if not raw.isascii():
            check_utf8(raw, where)
        try:
            values, vector = fast_record(parser, raw, key_columns)
            if len(vector) != blocks.dimension:
                raise ValueError("another dimension")
        except NOT_FAST:
            if not raw.strip():
                continue
            values, vector = exact_jsonl_record(raw, where, key_columns, blocks)
        blocks.add(number, [key_text(v, where, c) for v, c in zip(values, key_columns, strict=True)], vector, raw)
    return blocks.take(size)


# Files this large are parsed by worker processes (parsing is the cost of JSON Lines and CSV: a
# line of 384 numbers takes about 14 us of one core, 20 us as CSV); smaller ones are not worth
# starting them.
PARALLEL_BYTES = 64 << 20
MAX_WORKERS = 4


def workers_for(path: Path) -> int:
    """Worker processes for a file: forked (a spawned one would run the caller's main module
    again, which a script calling import_vectors need not guard), so on Linux only."""
    if sys.platform != "linux" or path.stat().st_size < PARALLEL_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def parsed(chunks: Iterator, parse: Callable, workers: int) -> Iterator[Block]:
    """parse(chunk, dimension) of each chunk, in order: in this process until a first record has
    set the dimension, then in `workers` processes with a few chunks in flight (memory stays
    bounded). A worker's BadVectorFile is raised here, as the first bad chunk's."""
    chunks = iter(chunks)
    dimension = None
    for chunk in chunks:
        if block := parse(chunk, dimension):
            dimension = block.vectors.shape[1]
            yield block
            break
    if workers <= 1:
        yield from filter(None, (parse(chunk, dimension) for chunk in chunks))
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=leave_interrupts)
    try:
        window = deque()
        for chunk in chunks:
            with warnings.catch_warnings():
                # Python 3.12+ warns of fork in a process with threads (a progress bar's, the
                # pool's own): the workers only parse, taking no lock those threads hold.
                warnings.simplefilter("ignore", DeprecationWarning)
                window.append(pool.submit(parse, chunk, dimension))
            if len(window) > 2 * workers and (block := window.popleft().result()):
                yield block
        while window:
            if block := window.popleft().result():
                yield block
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def leave_interrupts() -> None:
    """In a parsing worker: Ctrl-C is the importing process's to handle (it stops the pool)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def check_utf8(raw: bytes, where: str) -> None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadVectorFile(f"{where}: not valid UTF-8") from None


def exact_jsonl_record(raw: bytes, where: str, key_columns: list[str], blocks: Blocks | None = None):
    """A line read by the standard library's json: (key values, vector), or the message for what
    simdjson refused (or for a number beyond float4)."""
    obj = json_object(raw, where)
    keys = [obj[c] if c in obj else missing_key(where, c) for c in key_columns]
    vector = parse_vector(obj.get("vector"), where, blocks.dimension if blocks else None)
    if blocks:
        blocks.dimension = len(vector)
    return keys, vector


class FastPathRefused(Exception):
    """A CSV whose records do not map one to a line (a quoted value spanning lines) or that
    pyarrow cannot split: the standard library's csv reads it instead."""


def csv_delimiter(path: Path) -> str:
    """The file's own delimiter: ',' or, as spreadsheets in many locales write, ';' or a tab,
    told by the header line."""
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8-sig", errors="replace")
    return max(",;\t", key=first.count) if first else ","


def csv_header(path: Path, key_columns: list[str]) -> list[str]:
    lines = FileLines(path)
    header = csv_reader(lines).fieldnames or []
    for column in [*key_columns, "vector"]:
        if column not in header:
            raise BadVectorFile(f"{path.name} line 1: the header has no column {column!r}")
    return header


def csv_rows_block(chunk: tuple[int, list[tuple]], dimension: int | None, name: str, key_columns: list[str]):
    """The records of some rows of a CSV file, (bytes, [(line, key values..., vector text)]); rows
    of nothing but empty values are blank lines."""
    size, rows = chunk
    blocks = Blocks(name, dimension, None)
    blocks.again = blocks.exact_vector
    parser = simdjson.Parser()
    for number, *key_values, vector_text in rows:
        if not (vector_text or any(key_values)):
            continue
        where = f"{name} line {number}"
        keys = [
            key_text(v, where, c) if v else missing_key(where, c) for v, c in zip(key_values, key_columns, strict=True)
        ]
        blocks.add(number, keys, blocks.vector(parser, vector_text, where), vector_text)
    return blocks.take(size)


def csv_block(chunk: tuple[int, ...], dimension: int | None, path: Path, key_columns: list[str], header: list[str],
              delimiter: str) -> Block | None:  # fmt: skip
    """The records of some lines of a CSV file, a chunk of line_chunks, split into
    fields by pyarrow, one row a line (blank lines kept as rows of empty values). A value with a
    line break, or lines pyarrow cannot split, raise FastPathRefused."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    first, offset, size, lines = chunk
    data = read_chunk(path, offset, size)
    try:
        table = pa_csv.read_csv(
            io.BytesIO(data),
            read_options=pa_csv.ReadOptions(column_names=header, use_threads=False),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, newlines_in_values=False, ignore_empty_lines=False),
            # The vectors as bytes: simdjson reads them with no copy to a str and back.
            convert_options=pa_csv.ConvertOptions(
                column_types={c: pa.binary() if c == "vector" else pa.string() for c in header},
                include_columns=[*key_columns, "vector"],
            ),
        )
    except pa.ArrowInvalid as exc:
        raise FastPathRefused(str(exc)) from None
    if table.num_rows != lines:
        raise FastPathRefused("a value spans lines")
    columns = [table.column(c).to_pylist() for c in [*key_columns, "vector"]]
    if any(b"\r" in v for v in columns[-1]) or any("\r" in v for values in columns[:-1] for v in values):
        raise FastPathRefused("a value holds a carriage return")
    rows = list(zip(range(first, first + table.num_rows), *columns, strict=True))
    return csv_rows_block((size, rows), dimension, path.name, key_columns)


def csv_blocks(path: Path, key_columns: list[str]) -> Iterator[Block]:
    """The records of a CSV file, about TEXT_BLOCK bytes of lines at a time, split by pyarrow and
    parsed in worker processes when the file is large. Anything pyarrow does not read one row a
    line raises FastPathRefused: the standard library's csv reads such a file."""
    header = csv_header(path, key_columns)
    with open(path, "rb") as f:
        start = len(f.readline())
    chunks = line_chunks(path, start, 2, quoted=True)
    parse = partial(csv_block, path=path, key_columns=key_columns, header=header, delimiter=csv_delimiter(path))
    return parsed(chunks, parse, workers_for(path))


def exact_csv_blocks(path: Path, key_columns: list[str]) -> Iterator[Block]:
    """The records of a CSV file as the standard library's csv reads it (quoted line breaks and
    all), a block of rows at a time."""
    csv_header(path, key_columns)
    lines = FileLines(path)
    reader = csv_reader(lines)

    def chunks():
        rows, taken = [], 0
        for row in reader:
            rows.append((reader.line_num, *[row.get(c) or "" for c in key_columns], row.get("vector") or ""))
            if lines.bytes_read - taken >= TEXT_BLOCK:
                yield lines.bytes_read - taken, rows
                rows, taken = [], lines.bytes_read
        yield lines.bytes_read - taken, rows

    return parsed(chunks(), partial(csv_rows_block, name=path.name, key_columns=key_columns), 1)


def read_keys(path: Path, key_columns: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(line, keys) of each row of a .npy's keys file, JSON Lines or CSV."""
    lines = FileLines(path)
    if path.suffix.lower() == ".csv":
        reader = csv_reader(lines)
        for row in reader:
            where = f"{path.name} line {reader.line_num}"
            yield (
                reader.line_num,
                [key_text(row.get(c), where, c) if row.get(c) else missing_key(where, c) for c in key_columns],
            )
        return
    for number, where, obj, _ in json_objects(lines):
        yield number, object_keys(obj, where, key_columns)


def escape_copy(value: str) -> str:
    """COPY text format: backslash, tab, newline and carriage return are escaped."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def keys_row(keys: list[str], line: int) -> str:
    return "\t".join([*map(escape_copy, keys), str(line)]) + "\n"


# -- .npy ---------------------------------------------------------------------------------------


@dataclass
class NpyFile:
    path: Path
    rows: int
    dimension: int
    dtype: np.dtype
    offset: int  # where the data starts
    fortran_order: bool

    @property
    def chunk_rows(self) -> int:
        return max(1, NPY_CHUNK_BYTES // (self.dimension * self.dtype.itemsize))

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, rows) through the file, a chunk at a time, with plain reads: a memory map
        would count every page it touched in the process's memory, the whole file in the end."""
        if self.fortran_order:  # column after column on disk: rows can only be gathered
            mapped = np.memmap(self.path, self.dtype, "r", self.offset, (self.rows, self.dimension), order="F")
            for start in range(0, self.rows, self.chunk_rows):
                yield start, np.ascontiguousarray(mapped[start : start + self.chunk_rows])
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for start in range(0, self.rows, self.chunk_rows):
                count = min(self.chunk_rows, self.rows - start)
                yield start, np.fromfile(f, self.dtype, count * self.dimension).reshape(count, self.dimension)


NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def open_npy(path: Path) -> NpyFile:
    """The array's shape and type from its header; refuses anything but a 2-D array of numbers."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in NPY_HEADER_READERS:
                raise ValueError(f"format version {version[0]}.{version[1]}")
            shape, fortran_order, dtype = NPY_HEADER_READERS[version](f)
            offset = f.tell()
    except (ValueError, OSError, EOFError) as exc:
        raise BadVectorFile(f"{path.name}: not a .npy array ({exc})") from None
    if len(shape) != 2 or dtype.kind not in "fiu" or shape[1] == 0:
        raise BadVectorFile(f"{path.name}: expected a 2-D array of numbers, got shape {shape} {dtype}")
    if shape[0] == 0:
        raise BadVectorFile(f"{path.name}: no vectors in the file")
    if path.stat().st_size < offset + shape[0] * shape[1] * dtype.itemsize:
        raise BadVectorFile(f"{path.name}: the file ends before the {shape[0]} rows its header announces")
    return NpyFile(path, shape[0], shape[1], dtype, offset, fortran_order)


def bad_number(chunk: np.ndarray) -> tuple[int, str] | None:
    """(row, what) of the first row holding NaN or infinity, or a value beyond float4; or None."""
    if chunk.dtype.kind != "f":
        return None  # integers: finite, and within float4 even at 64 bits
    finite = np.isfinite(chunk).all(axis=1)
    if not finite.all():
        return int(np.argmin(finite)), "NaN or infinity"
    if chunk.dtype.itemsize > 4:
        fits = (np.abs(chunk) < FLOAT4_BOUND).all(axis=1)
        if not fits.all():
            return int(np.argmin(fits)), "beyond a float4"
    return None


def check_numbers(npy: NpyFile, start: int, chunk: np.ndarray, keys_name: str, lines: array) -> None:
    """Every value finite and within float4, or bad input naming the first row that is not."""
    if found := bad_number(chunk):
        row = start + found[0]
        raise BadVectorFile(f"{npy.path.name} row {row + 1} ({keys_name} line {lines[row]}): {found[1]}")


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


class Phases:
    """Tells progress(ImportProgress) as each phase starts, advances and ends; keeps the times."""

    def __init__(self, progress: Callable[[ImportProgress], None] | None):
        self.progress = progress
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str, total: int = 0):
        """Yields tell(done, total=None); a phase that raises does not end."""
        started = time.monotonic()
        state = {"done": 0, "total": total}

        def tell(done: int, total: int | None = None) -> None:
            state["done"] = done
            if total is not None:
                state["total"] = total
            if self.progress is not None:
                self.progress(ImportProgress(name, done, state["total"], time.monotonic() - started))

        tell(0)
        yield tell
        self.seconds[name] = time.monotonic() - started
        if self.progress is not None:
            self.progress(ImportProgress(name, state["done"], state["total"], self.seconds[name], finished=True))


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

    @property
    def matches(self) -> sql.Composed:
        """The table's row (t) of a scratch key (s): compared in the key's own type."""
        return sql.SQL(" AND ").join(sql.SQL("t.{0} = s.{0}").format(k) for k in self.key_columns)

    def create(self, db: Database, table: Table, dimension: int) -> None:
        for statement in db.dialect.staging_table(self.keys, table.ident, self.key_columns):
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

    def copy_keys(self, db: Database, spool) -> None:
        spool.seek(0)
        statement = db.dialect.copy_from(self.keys, [*self.key_columns, sql.Identifier("line")], self.keys_form)
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


def load_npy(db: Database, staging: Staging, npy: NpyFile, keys_path: Path, key_columns, phases) -> int:
    """Check the .npy and its keys (numpy, a chunk at a time), then COPY both. Returns the rows."""
    staging.lines_name = keys_path.name
    with spool_file() as spool:
        with phases.phase("validating", npy.rows) as tell:
            keys = read_keys(keys_path, key_columns)
            for start, chunk in npy.chunks():
                for line, row_keys in itertools.islice(keys, len(chunk)):
                    staging.lines.append(line)
                    spool.write(keys_row(row_keys, line))
                if len(staging.lines) < start + len(chunk):
                    break  # the keys ran out: said below
                check_numbers(npy, start, chunk, keys_path.name, staging.lines)
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


@dataclass
class Source:
    """A file's records, a Block at a time (the first already read, for the dimension)."""

    name: str
    blocks: Iterator[Block]
    dimension: int
    size: int  # the file's bytes, or a Parquet file's rows
    unit: str = "line"
    keys_form: str = "text"

    def estimated_total(self, done: int, read: int) -> int:
        """Records in the whole file, judged by the share of it that held `done`."""
        return max(done, round(done * self.size / read)) if read else 0


def first_block(path: Path, blocks: Iterator[Block], size: int | None = None, **kwargs) -> Source:
    first = next(blocks, None)
    if first is None:
        raise BadVectorFile(f"{path.name}: no vectors in the file")
    size = size or path.stat().st_size
    return Source(path.name, itertools.chain([first], blocks), first.vectors.shape[1], size, **kwargs)


def text_source(path: Path, key_columns: list[str], exact: bool = False) -> Source:
    """The records of a JSON Lines or CSV file; a CSV pyarrow cannot map to lines is read by the
    standard library's csv (exact)."""
    if path.suffix.lower() != ".csv":
        return first_block(path, jsonl_blocks(path, key_columns))
    if not exact:
        try:
            return first_block(path, csv_blocks(path, key_columns))
        except FastPathRefused:
            pass
    return first_block(path, exact_csv_blocks(path, key_columns))


def load_blocks(db: Database, staging: Staging, source: Source, phases) -> int:
    """One pass: each block is checked as it is read and its vectors copied at once; the keys
    wait in a spool and follow in a COPY of their own. Returns the records."""
    staging.lines_name, staging.unit, staging.keys_form = source.name, source.unit, source.keys_form
    binary = db.dialect.binary_vector_copy
    with spool_file() as spool, phases.phase("loading") as tell:

        def data():
            read = 0
            if binary:
                yield BINARY_HEADER
            for block in source.blocks:
                read += block.size
                staging.lines.frombytes(block.lines.astype(np.int64, copy=False).tobytes())
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


def load_text(db: Database, staging: Staging, source: Source, path: Path, key_columns: list[str], phases) -> int:
    """load_blocks; a CSV that turns out (past its first block) to need the standard library's
    reader is loaded again by it."""
    try:
        return load_blocks(db, staging, source, phases)
    except FastPathRefused:
        staging.clear(db)
        return load_blocks(db, staging, text_source(path, key_columns, exact=True), phases)


# -- Parquet ------------------------------------------------------------------------------------


def parquet_source(path: Path, key_columns: list[str]) -> Source:
    """The records of a Parquet file: key columns by name and 'vector', a list (or fixed-size
    list) of float32 or float64, read PARQUET_BATCH rows at a time and checked with numpy."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path, pre_buffer=False, buffer_size=TEXT_BLOCK)
    except (pa.ArrowException, OSError) as exc:
        raise BadVectorFile(f"{path.name}: not a Parquet file ({exc})") from None
    schema = parquet.schema_arrow
    for column in [*key_columns, "vector"]:
        if schema.get_field_index(column) < 0:
            raise BadVectorFile(f"{path.name}: no column {column!r} (it has {', '.join(schema.names)})")
    kind = schema.field("vector").type
    is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    if not is_list:
        raise BadVectorFile(f"{path.name} row 1: 'vector' is {kind}, not a list of float32 or float64")
    if kind.value_type not in (pa.float32(), pa.float64()):
        raise BadVectorFile(f"{path.name} row 1: 'vector' is a list of {kind.value_type}, not of float32 or float64")
    rows = parquet.metadata.num_rows
    batches = parquet.iter_batches(batch_size=PARQUET_BATCH, columns=[*key_columns, "vector"])
    dimension = kind.list_size if pa.types.is_fixed_size_list(kind) else None
    blocks = parquet_blocks(path.name, batches, key_columns, dimension)
    return first_block(path, blocks, size=max(rows, 1), unit="row", keys_form="csv")


def parquet_blocks(name: str, batches, key_columns: list[str], dimension: int | None) -> Iterator[Block]:
    start = 0
    for batch in batches:
        if dimension is None and len(batch):
            dimension = first_length(name, batch.column(len(key_columns)))
        if len(batch):
            yield parquet_block(name, batch, start, key_columns, dimension)
        start += len(batch)


def first_length(name: str, vectors) -> int:
    if not vectors[0].is_valid:
        raise BadVectorFile(f"{name} row 1: vector is null")
    if not len(vectors[0]):
        raise BadVectorFile(f"{name} row 1: empty vector")
    return len(vectors[0])


def first_true(mask) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def parquet_block(name: str, batch, start: int, key_columns: list[str], dimension: int) -> Block:
    """One record batch checked (null, wrong-length and non-finite vectors, null keys, naming the
    row) and made into a Block: the vectors as float4, the keys as CSV that pyarrow writes."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv

    vectors, rows = batch.column(len(key_columns)), len(batch)
    if vectors.null_count:
        raise BadVectorFile(f"{name} row {start + first_true(vectors.is_null()) + 1}: vector is null")
    lengths = pc.list_value_length(vectors).to_numpy(zero_copy_only=False)
    if (lengths != dimension).any():
        row = first_true(lengths != dimension)
        raise BadVectorFile(
            f"{name} row {start + row + 1}: vector has {lengths[row]} numbers; the first had {dimension}"
        )
    flat = pc.list_flatten(vectors)
    if flat.null_count:
        row = pc.list_parent_indices(vectors)[first_true(flat.is_null())].as_py()
        raise BadVectorFile(f"{name} row {start + row + 1}: vector holds null")
    values = flat.to_numpy(zero_copy_only=False).reshape(rows, dimension)
    if found := bad_number(values):
        raise BadVectorFile(f"{name} row {start + found[0] + 1}: {found[1]}")
    keys = []
    for i, column in enumerate(key_columns):
        value = batch.column(i)
        if value.null_count:
            raise BadVectorFile(f"{name} row {start + first_true(value.is_null()) + 1}: key column {column!r} is null")
        try:
            keys.append(pc.cast(value, pa.string()))
        except pa.ArrowException:
            raise BadVectorFile(f"{name}: key column {column!r} holds {value.type}, which has no text form") from None
    lines = np.arange(start + 1, start + rows + 1, dtype=np.int64)
    text = io.BytesIO()
    table = pa.table([*keys, pa.array(lines)], names=[f"k{i}" for i in range(len(keys))] + ["line"])
    pa_csv.write_csv(table, text, pa_csv.WriteOptions(include_header=False))
    return Block(lines, text.getvalue().decode("utf-8"), values.astype(np.float32, copy=False), rows)


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
    """
    if index not in ("after", "now", "skip"):
        raise BadInput(f"index must be 'after', 'now' or 'skip', not {index!r}")
    from .exporter import recorded  # the exporter reads this module's progress classes

    phases = Phases(progress)
    with spooled(file) as path:
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
        dimension, load = file_loader(path, restored.keys_file, key_columns, phases)
        target = import_target(
            db, info, restored, vector_column, metric, model_name, dimension, fulltext, language
        )  # fmt: skip
        has_index = target.column_exists and indexes_exist(db, target)
        started = time.monotonic()
        ensure_extension(db)
        name = f"vectorize_import_{uuid.uuid4().hex[:12]}"
        staging = Staging(
            sql.Identifier(info.schema, f"{name}_keys"),
            sql.Identifier(info.schema, f"{name}_vectors"),
            [sql.Identifier(k) for k in key_columns],
        )
        result = ImportResult(target, phase_seconds=phases.seconds)
        try:
            staging.create(db, info, dimension)
            result.records = load(db, staging)
            check_keys(db, target, staging, result, strict, phases, path.name)
            with phases.phase("writing", result.records - result.missing) as tell:
                write_columns(db, target, result)
                if target.track_changes:
                    tracking.install(db, target)
                if index == "now" and not has_index:  # then the UPDATE maintains them
                    build_indexes(db, target, result, index_memory, on_index)
                result.updated = update_in_batches(db, target, staging, tell)
                add_contents(db, target)
        finally:
            staging.drop(db)
        # Building the indexes once over the filled column is far cheaper than maintaining them.
        if index == "after" and not has_index:
            build_indexes(db, target, result, index_memory, on_index)
        result.index_skipped = index == "skip" and not has_index
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


def file_loader(path: Path, keys_file: str | None, key_columns: list[str], phases) -> tuple[int, Callable]:
    """The vectors' dimension (from the .npy header, or the first record) and load(db, staging),
    which checks and copies the file into the scratch tables and returns its records."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        source = parquet_source(path, key_columns)
        return source.dimension, partial(load_blocks, source=source, phases=phases)
    if suffix != ".npy":
        source = text_source(path, key_columns)
        return source.dimension, partial(load_text, source=source, path=path, key_columns=key_columns, phases=phases)
    if keys_file is None:
        raise BadInput(f"{path.name}: a .npy file needs --keys FILE (JSON Lines or CSV of the key columns)")
    if not Path(keys_file).is_file():
        raise BadInput(f"no such file: {keys_file}")
    npy = open_npy(path)
    return npy.dimension, partial(load_npy, npy=npy, keys_path=Path(keys_file), key_columns=key_columns, phases=phases)


def build_indexes(db: Database, target: VectorTarget, result: ImportResult, memory, on_index) -> None:
    """The pending-rows, full-text and vector indexes, as encode builds them (result says how long)."""
    build_indexes_when_done(db, target, FillQueries(target, db.dialect), result, None, on_index, memory)


def write_columns(db: Database, target: VectorTarget, result: ImportResult) -> None:
    """The vector column (and the full-text column) with their metadata, as encode makes them."""
    set_up_columns(db, target)
    result.column_created = not target.column_exists
    result.fulltext_added = bool(target.fulltext) and target.fulltext["column"] not in target.table.columns


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
    db, info: Table, restored: Restored, vector_column, metric, model_name, dimension, fulltext=False, language=None
) -> VectorTarget:
    """The column to fill: a new or imported one's record, or the exported column's restored."""
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
    if meta is not None and meta.get("chunks"):
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
    )


def add_contents(db: Database, target: VectorTarget) -> None:
    """The contents of the rows the import wrote (each distinct vector once) that the contents
    table lacks."""
    queries = FillQueries(target, db.dialect)
    db.command(contents.upsert(queries.contents, queries.holders, contents.missing(queries.contents, queries.holders)))


def check_keys_unique_in_their_type(db: Database, staging: Staging) -> None:
    """Keys that differ as text but not as values ("01" and 1 for an integer key) are one key.
    The unique index that proves it also orders the batches of the UPDATE."""
    keys = sql.SQL(", ").join(staging.key_columns)
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
    keys = sql.SQL(", ").join(staging.key_columns)
    as_text = sql.SQL(" || ', ' || ").join(sql.SQL("CAST({} AS text)").format(k) for k in staging.key_columns)
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
    typed = sql.SQL(", ").join(
        sql.SQL("CAST(%s AS {})").format(sql.SQL(info.columns[k].type_sql)) for k in info.primary_key
    )
    as_text = sql.SQL(", ").join(sql.SQL("CAST(s.{} AS text)").format(k) for k in staging.key_columns)
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
    s_after = sql.SQL(" AND ({}) > ({})").format(s_keys, typed)
    next_end = sql.SQL("SELECT {} FROM {} AS s WHERE TRUE{} ORDER BY {} LIMIT 1 OFFSET %s")

    def batches():
        """(statement, parameters) of each batch, in key order."""
        last = ()
        while True:
            # The unique index on the scratch keys makes this a short index scan.
            end = db.fetchone(
                next_end.format(as_text, staging.keys, s_after if last else sql.SQL(""), s_keys),
                (*last, UPDATE_BATCH - 1),
            )
            since = (after, (*last, *last)) if last else (sql.SQL(""), ())
            if end is None:  # the last batch: whatever is left
                yield write + since[0], since[1]
                return
            yield write + since[0] + upto, (*since[1], *end, *end)
            last = tuple(end)

    return run_batches(db, batches(), tell)


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
