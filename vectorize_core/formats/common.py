"""What the formats share: the Block a reader yields (records checked and ready to COPY) and the
Source of them, the checks of a vector and a key, a file read a chunk of lines at a time and the
chunks parsed in worker processes, and the Writer every format's writer is (it writes under a
temporary name and renames when finished).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import warnings
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from ..errors import BadInput
from ..record import record_path
from .checks import check_failures, key_check


class BadVectorFile(BadInput):
    pass


@dataclass(frozen=True)
class Reading:
    """How a file is read: its key columns; the field holding each row's check (a file
    export-vectors wrote: see checks); whether a damaged row is left out and named (tolerant)
    rather than refused at once; the dimension its record gives; and where its whole lines end
    (a file cut mid-line is read up to its last line break)."""

    key_columns: tuple[str, ...]
    check: str | None = None
    tolerant: bool = False
    dimension: int | None = None
    end: int | None = None

    @property
    def columns(self) -> list[str]:
        """The key columns, then the check's field when the file has one."""
        return [*self.key_columns, *([self.check] if self.check else [])]


@dataclass
class Block:
    """Records checked and ready to COPY: their file lines (or rows), their keys as COPY rows,
    and their vectors as float4. ``damaged``: (line, why) of the block's rows that are damaged;
    ``suspect``: those of them that are in it all the same (their check failed), to be left out
    of the table or refused; ``checked``: every row carried a check (no length check needed)."""

    lines: np.ndarray  # int64
    keys: str
    vectors: np.ndarray  # float32, rows x dimension
    size: int = 0  # how much of the file it took: bytes, or a Parquet file's rows
    damaged: list[tuple[int, str]] = field(default_factory=list)
    suspect: int = 0
    checked: bool = False


NUMBER_TYPES = {int, float}
# Vectors are stored as float4: a value that would round to infinity is refused up front, naming
# its line. The bound is halfway between float4's largest value and the next power of two, so
# 3.4028235e38 (float4's largest, as its shortest text says it) is in, as the server's strtof has it.
FLOAT4_BOUND = 2.0**128 - 2.0**103
# JSON Lines and CSV are parsed this many bytes of lines at a time (Parquet: read in buffers of it).
TEXT_BLOCK = 4 << 20
# What simdjson raises for a record it cannot read as we want it (not JSON, not an object, a key
# or 'vector' missing, not numbers, a number beyond a double or an integer beyond 64 bits): the
# exact reader then says what is wrong.
NOT_FAST = (ValueError, TypeError, KeyError, RuntimeError, AttributeError)

# Files this large are parsed by worker processes (parsing is the cost of JSON Lines and CSV: a
# line of 384 numbers takes about 14 us of one core, 20 us as CSV); smaller ones are not worth
# starting them.
PARALLEL_BYTES = 64 << 20
MAX_WORKERS = 4


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


def missing_key(where: str, column: str):
    raise BadVectorFile(f"{where}: missing key column {column!r}")


class FileLines:
    """The decoded lines of a file with their numbers, counting the bytes read (for progress);
    with end, those within its first end bytes."""

    def __init__(self, path: Path, end: int | None = None):
        self.path = path
        self.end = end
        self.bytes_read = 0

    def __iter__(self) -> Iterator[tuple[int, str]]:
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, 1):
                if self.end is not None and self.bytes_read + len(raw) > self.end:
                    return
                self.bytes_read += len(raw)
                try:
                    # utf-8-sig on the first line: spreadsheets ("CSV UTF-8") start files with a BOM.
                    yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError:
                    raise BadVectorFile(f"{self.path.name} line {number}: not valid UTF-8") from None


def escape_copy(value: str) -> str:
    """COPY text format: backslash, tab, newline and carriage return are escaped."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def keys_row(keys: list[str], line: int) -> str:
    return "\t".join([*map(escape_copy, keys), str(line)]) + "\n"


def bad_number(chunk: np.ndarray) -> tuple[int, str] | None:
    """(row, what) of the first row holding NaN or infinity, or a value beyond float4; or None."""
    found = bad_numbers(chunk)
    return min(found) if found else None


def bad_numbers(chunk: np.ndarray) -> list[tuple[int, str]]:
    """(row, what) of each row holding NaN or infinity, or a value beyond float4."""
    if chunk.dtype.kind != "f":
        return []  # integers: finite, and within float4 even at 64 bits
    finite = np.isfinite(chunk).all(axis=1)
    found = [(int(row), "NaN or infinity") for row in np.flatnonzero(~finite)]
    if chunk.dtype.itemsize > 4:
        with np.errstate(invalid="ignore"):
            fits = (np.abs(chunk) < FLOAT4_BOUND).all(axis=1)
        found += [(int(row), "beyond a float4") for row in np.flatnonzero(~fits & finite)]
    return found


# -- JSON Lines and CSV: parsed a block at a time -----------------------------------------------


def fast_vector(value) -> np.ndarray:
    """A simdjson array of numbers as doubles, read in C with no Python number made; nested arrays
    (which simdjson would flatten) are refused."""
    numbers = np.frombuffer(value.as_buffer(of_type="d"), dtype=np.float64)
    if len(numbers) != len(value):
        raise ValueError("nested arrays")
    return numbers


class Blocks:
    """Gathers checked records into Blocks; the first record sets the dimension. ``again(raw,
    where)`` reads a record the exact way, to say what is wrong with it (it raises). With a
    check field, each record's check is kept to be compared with what it holds; when tolerant,
    a damaged record is named and left out rather than refused."""

    def __init__(self, name: str, dimension: int | None, again: Callable, reading: Reading | None = None):
        self.name, self.dimension, self.again = name, dimension, again
        self.reading = reading or Reading(())
        self.lines, self.keys, self.vectors, self.raws = array("q"), [], [], []
        self.key_crcs, self.checks, self.damaged = [], [], []

    def add(self, line: int, keys: list[str], vector: list, raw, check=None) -> None:
        self.lines.append(line)
        self.keys.append(keys_row(keys, line))
        self.vectors.append(vector)
        self.raws.append(raw)
        if self.reading.check:
            self.key_crcs.append(key_check(keys))
            self.checks.append(check)

    def damage(self, line: int, error: BadVectorFile) -> None:
        """A record that cannot be read: refused, or (tolerant) named and left out."""
        if not self.reading.tolerant:
            raise error
        self.damaged.append((line, reason(error)))

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
            return self.damaged_only(size)
        with np.errstate(over="ignore"):
            vectors = np.array(self.vectors, dtype=np.float32).reshape(len(self.lines), self.dimension)
        finite = np.isfinite(vectors).all(axis=1)
        while not finite.all():
            row = int(np.argmin(finite))
            where = f"{self.name} line {self.lines[row]}"
            try:
                self.again(self.raws[row], where)
                raise BadVectorFile(f"{where}: vector holds a value beyond what a float4 holds")
            except BadVectorFile as exc:
                self.damage(self.lines[row], exc)
            self.drop(row)
            vectors, finite = np.delete(vectors, row, axis=0), np.delete(finite, row)
            if not self.lines:
                return self.damaged_only(size)
        block = Block(np.frombuffer(self.lines, dtype=np.int64).copy(), "".join(self.keys), vectors, size)
        if self.reading.check:
            block.checked = True
            block.damaged = check_failures(self.lines, self.key_crcs, self.checks, vectors)
            block.suspect = len(block.damaged)
        block.damaged += self.damaged
        self.lines, self.keys, self.vectors, self.raws = array("q"), [], [], []
        self.key_crcs, self.checks, self.damaged = [], [], []
        return block

    def drop(self, row: int) -> None:
        for kept in (self.lines, self.keys, self.vectors, self.raws, self.key_crcs, self.checks):
            if kept:
                del kept[row]

    def damaged_only(self, size: int) -> Block | None:
        """A block of no records but the damaged ones, to report them; None if there are none."""
        if not self.damaged:
            return None
        empty = np.empty((0, self.dimension or 0), np.float32)
        block = Block(np.empty(0, np.int64), "", empty, size, damaged=self.damaged)
        self.damaged = []
        return block


def line_chunks(
    path: Path, offset: int = 0, number: int = 1, quoted: bool = False, end: int | None = None
) -> Iterator[tuple[int, ...]]:
    """(number of the first line, offset, bytes, lines) of the file's lines from offset (up to
    end), about TEXT_BLOCK bytes at a time: a chunk travels as where it is, and each worker reads
    its own. With quoted (CSV), a chunk whose double quotes do not pair up, a quoted value running
    past its end, raises FastPathRefused."""
    buffer = bytearray(TEXT_BLOCK)
    stop = path.stat().st_size if end is None else end
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        while offset < stop and (size := f.readinto(memoryview(buffer)[: stop - offset])):
            end = buffer.rfind(b"\n", 0, size) + 1
            if end == 0 and size == len(buffer) and offset + size < stop:  # a line longer than the buffer
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


class FastPathRefused(Exception):
    """A CSV whose records do not map one to a line (a quoted value spanning lines) or that
    pyarrow cannot split: the standard library's csv reads it instead."""


def workers_for(path: Path) -> int:
    """Worker processes for a file: forked (a spawned one would run the caller's main module
    again, which a script calling import_vectors need not guard), so on Linux only."""
    if sys.platform != "linux" or path.stat().st_size < PARALLEL_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def parsed(chunks: Iterator, parse: Callable, workers: int, dimension: int | None = None) -> Iterator[Block]:
    """parse(chunk, dimension) of each chunk, in order: in this process until a first record has
    set the dimension (unless the file's record gives it), then in `workers` processes with a few
    chunks in flight (memory stays bounded). A worker's BadVectorFile is raised here, as the first
    bad chunk's."""
    chunks = iter(chunks)
    for chunk in chunks:
        if block := parse(chunk, dimension):
            yield block
            if len(block.vectors):
                dimension = block.vectors.shape[1]
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
    """The Source of blocks, its first block with a record read (damaged ones before it kept)."""
    damaged = []
    for first in blocks:
        if len(first.vectors):
            size = size or path.stat().st_size
            return Source(path.name, itertools.chain([*damaged, first], blocks), first.vectors.shape[1], size, **kwargs)
        damaged.append(first)
    if damaged:
        lines = [line for block in damaged for line, _ in block.damaged]
        raise BadVectorFile(f"{path.name}: no readable vectors in the file ({len(lines)} damaged)")
    raise BadVectorFile(f"{path.name}: no vectors in the file")


def reason(error: BadVectorFile) -> str:
    """What an error says is wrong, without the 'file line N: ' it starts with."""
    text = str(error)
    head, sep, rest = text.partition(": ")
    return rest if sep and (" line " in head or " row " in head) else text


# -- writers: each writes under a temporary name and renames when finished -------------------------


class Writer:
    record_inside = False  # Parquet keeps the record in its schema; the others beside the file

    def __init__(self, path: Path, key_columns: list[str], dimension: int, keys: Path | None, record: dict):
        self.path, self.key_columns, self.dimension, self.keys, self.record = path, key_columns, dimension, keys, record
        self.check = (record.get("check") or {}).get("field")  # each row's check goes in this field (checks_of)
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
