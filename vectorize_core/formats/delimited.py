"""CSV, with the file's own delimiter (',' or, as spreadsheets in many locales write, ';' or a
tab): split into fields by pyarrow a block of lines at a time (by worker processes for a large
file), each vector read by simdjson; a file whose records are not one a line (a quoted value
spanning lines) is read by the standard library's csv instead. Written a page at a time by
pyarrow. Named for what it reads so as not to shadow the standard library's csv.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import simdjson

from . import common
from .checks import checks_of
from .common import (
    BadVectorFile,
    Block,
    Blocks,
    FastPathRefused,
    FileLines,
    Reading,
    Writer,
    key_text,
    line_chunks,
    missing_key,
    parsed,
    read_chunk,
    vector_json,
    workers_for,
)


def csv_reader(lines: FileLines) -> csv.DictReader:
    """A reader for the file's own delimiter: ',' or, as spreadsheets in many locales write, ';'
    or a tab, told by the header line."""
    texts = (line for _, line in lines)
    first = next(texts, "")
    delimiter = max(",;\t", key=first.count) if first else ","
    return csv.DictReader(itertools.chain([first], texts), delimiter=delimiter)


def csv_delimiter(path: Path) -> str:
    """The file's own delimiter: ',' or, as spreadsheets in many locales write, ';' or a tab,
    told by the header line."""
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8-sig", errors="replace")
    return max(",;\t", key=first.count) if first else ","


def csv_header(path: Path, reading: Reading) -> list[str]:
    lines = FileLines(path)
    header = csv_reader(lines).fieldnames or []
    for column in [*reading.columns, "vector"]:
        if column not in header:
            raise BadVectorFile(f"{path.name} line 1: the header has no column {column!r}")
    return header


def csv_rows_block(chunk: tuple[int, list[tuple]], dimension: int | None, name: str, reading: Reading):
    """The records of some rows of a CSV file, (bytes, [(line, key values..., (check,) vector
    text)]); rows of nothing but empty values are blank lines."""
    size, rows = chunk
    blocks = Blocks(name, dimension, None, reading)
    blocks.again = blocks.exact_vector
    parser = simdjson.Parser()
    nkeys = len(reading.key_columns)
    for number, *values, vector_text in rows:
        key_values, check = values[:nkeys], values[nkeys] if reading.check else None
        if not (vector_text or any(values)):
            continue
        where = f"{name} line {number}"
        try:
            # A key column is never null: an empty field is the empty string, a missing one is missing.
            keys = [
                key_text(v, where, c) if v is not None else missing_key(where, c)
                for v, c in zip(key_values, reading.key_columns, strict=True)
            ]
            vector = blocks.vector(parser, vector_text, where)
        except BadVectorFile as exc:
            blocks.damage(number, exc)
            continue
        blocks.add(number, keys, vector, vector_text, check)
    return blocks.take(size)


def csv_block(chunk: tuple[int, ...], dimension: int | None, path: Path, reading: Reading, header: list[str],
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
                include_columns=[*reading.columns, "vector"],
            ),
        )
    except pa.ArrowInvalid as exc:
        raise FastPathRefused(str(exc)) from None
    if table.num_rows != lines:
        raise FastPathRefused("a value spans lines")
    columns = [table.column(c).to_pylist() for c in [*reading.columns, "vector"]]
    if any(b"\r" in v for v in columns[-1]) or any("\r" in v for values in columns[:-1] for v in values):
        raise FastPathRefused("a value holds a carriage return")
    rows = list(zip(range(first, first + table.num_rows), *columns, strict=True))
    return csv_rows_block((size, rows), dimension, path.name, reading)


def csv_blocks(path: Path, reading: Reading) -> Iterator[Block]:
    """The records of a CSV file, about TEXT_BLOCK bytes of lines at a time, split by pyarrow and
    parsed in worker processes when the file is large. Anything pyarrow does not read one row a
    line raises FastPathRefused: the standard library's csv reads such a file."""
    header = csv_header(path, reading)
    with open(path, "rb") as f:
        start = len(f.readline())
    chunks = line_chunks(path, start, 2, quoted=True, end=reading.end)
    parse = partial(csv_block, path=path, reading=reading, header=header, delimiter=csv_delimiter(path))
    return parsed(chunks, parse, workers_for(path), reading.dimension)


def exact_csv_blocks(path: Path, reading: Reading) -> Iterator[Block]:
    """The records of a CSV file as the standard library's csv reads it (quoted line breaks and
    all), a block of rows at a time."""
    csv_header(path, reading)
    lines = FileLines(path, reading.end)
    reader = csv_reader(lines)

    def chunks():
        rows, taken = [], 0
        for row in reader:
            rows.append((reader.line_num, *[row.get(c) for c in reading.columns], row.get("vector") or ""))
            if lines.bytes_read - taken >= common.TEXT_BLOCK:
                yield lines.bytes_read - taken, rows
                rows, taken = [], lines.bytes_read
        yield lines.bytes_read - taken, rows

    return parsed(chunks(), partial(csv_rows_block, name=path.name, reading=reading), 1, reading.dimension)


class CsvWriter(Writer):
    """A header, then each page as pyarrow writes CSV (strings quoted, quotes doubled)."""

    def __init__(self, *args):
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        super().__init__(*args)
        self.pa, self.pa_csv = pa, pa_csv
        self.out = open(self.temp(self.path), "wb")
        header = io.StringIO()
        csv.writer(header).writerow([*self.key_columns, "vector", *([self.check] if self.check else [])])
        self.out.write(header.getvalue().encode())

    def write(self, keys, vectors):
        pa = self.pa
        columns = [pa.array(list(values)) for values in zip(*keys, strict=True)]
        columns.append(pa.array(vector_json(vectors), pa.binary()).cast(pa.string()))
        if self.check:
            columns.append(pa.array(checks_of(keys, vectors), pa.uint32()))
        table = pa.table(columns, names=[f"c{i}" for i in range(len(columns))])
        self.pa_csv.write_csv(table, self.out, self.pa_csv.WriteOptions(include_header=False))

    def close(self):
        self.out.close()
