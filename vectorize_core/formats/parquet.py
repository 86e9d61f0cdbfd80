"""Parquet: read in record batches by pyarrow, each checked with numpy with no Python per row;
'vector' a list (or fixed-size list) of float32 or float64, the key columns by name. Written in
record batches, 'vector' a fixed-size list of float32, with the column's export record in the
schema metadata.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..record import PARQUET_KEY
from . import common
from .checks import check_failures, checks_of, key_check
from .common import BadVectorFile, Block, Reading, Source, Writer, bad_numbers, first_block

# Parquet is read this many rows at a time.
PARQUET_BATCH = 4096


def open_parquet(path: Path):
    """The file as pyarrow opens it (its footer read), or bad input naming it: a file cut short
    has no footer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path, pre_buffer=False, buffer_size=common.TEXT_BLOCK)
    except (pa.ArrowException, OSError) as exc:
        raise BadVectorFile(
            f"{path.name}: not a whole Parquet file: cut short, damaged or another format ({exc})"
        ) from None


def parquet_source(path: Path, reading: Reading) -> Source:
    """The records of a Parquet file: key columns by name and 'vector', a list (or fixed-size
    list) of float32 or float64, read PARQUET_BATCH rows at a time and checked with numpy."""
    import pyarrow as pa

    key_columns = list(reading.key_columns)
    parquet = open_parquet(path)
    schema = parquet.schema_arrow
    for column in [*reading.columns, "vector"]:
        if schema.get_field_index(column) < 0:
            raise BadVectorFile(f"{path.name}: no column {column!r} (it has {', '.join(schema.names)})")
    kind = schema.field("vector").type
    is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    if not is_list:
        raise BadVectorFile(f"{path.name} row 1: 'vector' is {kind}, not a list of float32 or float64")
    if kind.value_type not in (pa.float32(), pa.float64()):
        raise BadVectorFile(f"{path.name} row 1: 'vector' is a list of {kind.value_type}, not of float32 or float64")
    rows = parquet.metadata.num_rows
    batches = parquet.iter_batches(
        batch_size=PARQUET_BATCH, columns=[*key_columns, "vector", *reading.columns[len(key_columns) :]]
    )
    dimension = kind.list_size if pa.types.is_fixed_size_list(kind) else None
    blocks = parquet_blocks(path.name, batches, reading, dimension)
    return first_block(path, blocks, size=max(rows, 1), unit="row", keys_form="csv")


def parquet_blocks(name: str, batches, reading: Reading, dimension: int | None) -> Iterator[Block]:
    """The checked blocks of the file's record batches; data pyarrow cannot read (a damaged
    page) is bad input naming the file and the rows read before it."""
    import pyarrow as pa

    start = 0
    key_columns = list(reading.key_columns)
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as exc:
            raise BadVectorFile(
                f"{name}: damaged Parquet data: rows from {start + 1} on cannot be read ({exc})"
            ) from None
        if batch is None:
            return
        if dimension is None and len(batch):
            dimension = first_length(name, batch.column(len(key_columns)))
        if len(batch):
            yield parquet_block(name, batch, start, reading, dimension)
        start += len(batch)


def first_length(name: str, vectors) -> int:
    if not vectors[0].is_valid:
        raise BadVectorFile(f"{name} row 1: vector is null")
    if not len(vectors[0]):
        raise BadVectorFile(f"{name} row 1: empty vector")
    return len(vectors[0])


def first_true(mask) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def parquet_block(name: str, batch, start: int, reading: Reading, dimension: int) -> Block:
    """One record batch checked (null, wrong-length and non-finite vectors, null keys, naming the
    row; each row's check, when the file has them) and made into a Block: the vectors as float4,
    the keys as CSV that pyarrow writes."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv

    key_columns = list(reading.key_columns)
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
    keep, damaged = None, []
    if found := bad_numbers(values):
        if not reading.tolerant:
            row, why = min(found)
            raise BadVectorFile(f"{name} row {start + row + 1}: {why}")
        damaged = [(start + row + 1, why) for row, why in found]
        keep = np.ones(rows, bool)
        keep[[row for row, _ in found]] = False
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
    written = batch.column(len(key_columns) + 1) if reading.check else None
    if keep is not None:  # tolerant: the rows that hold no float4 vector are left out
        mask = pa.array(keep)
        keys, lines, values = [pc.filter(k, mask) for k in keys], lines[keep], values[keep]
        written = pc.filter(written, mask) if written is not None else None
    text = io.BytesIO()
    table = pa.table([*keys, pa.array(lines)], names=[f"k{i}" for i in range(len(keys))] + ["line"])
    pa_csv.write_csv(table, text, pa_csv.WriteOptions(include_header=False))
    block = Block(lines, text.getvalue().decode("utf-8"), values.astype(np.float32, copy=False), rows, damaged)
    if written is not None:
        block.checked = True
        crcs = [key_check(k) for k in zip(*(column.to_pylist() for column in keys), strict=True)]
        failed = check_failures(lines, crcs, written.to_pylist(), block.vectors)
        block.damaged += failed
        block.suspect = len(failed)
    return block


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
        check = [pa.field(self.check, pa.uint32())] if self.check else []
        schema = pa.schema([*fields, vector, *check], metadata={PARQUET_KEY: json.dumps(self.record).encode()})
        self.writer = self.pq.ParquetWriter(self.temp(self.path), schema)

    def write(self, keys, vectors):
        pa = self.pa
        columns = [pa.array(list(values)) for values in zip(*keys, strict=True)]
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        if self.writer is None:  # the first page's keys (int64 or text) make the schema
            self.start([c.type for c in columns])
        columns.append(pa.FixedSizeListArray.from_arrays(flat, self.dimension))
        if self.check:
            columns.append(pa.array(checks_of(keys, vectors), pa.uint32()))
        self.writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=self.writer.schema))

    def close(self):
        if self.writer is None:  # no rows: an empty file with the record
            self.start([self.pa.string()] * len(self.key_columns))
        self.writer.close()
