""".npy with a keys file: the array's header read and checked (a 2-D array of numbers), then its
vectors a chunk at a time with plain reads, each chunk checked with numpy; the keys file, JSON
Lines or CSV of the key columns, holds a row for each vector. Written as float32 with the keys as
JSON Lines.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from .checks import checks_of
from .common import BadVectorFile, FileLines, Reading, Writer, bad_number, key_text, missing_key
from .delimited import csv_reader
from .jsonl import json_objects, object_keys

# A .npy is read (and checked, and sent) this many bytes of vectors at a time.
NPY_CHUNK_BYTES = 4 << 20


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


def check_numbers(npy: NpyFile, start: int, chunk: np.ndarray, keys_name: str, lines: array) -> None:
    """Every value finite and within float4, or bad input naming the first row that is not."""
    if found := bad_number(chunk):
        row = start + found[0]
        raise BadVectorFile(f"{npy.path.name} row {row + 1} ({keys_name} line {lines[row]}): {found[1]}")


def read_keys(path: Path, reading: Reading) -> Iterator[tuple[int, list[str], object]]:
    """(line, keys, check) of each row of a .npy's keys file, JSON Lines or CSV (the check None
    when the file has none)."""
    lines = FileLines(path)
    key_columns, check = reading.key_columns, reading.check
    if path.suffix.lower() == ".csv":
        reader = csv_reader(lines)
        for row in reader:
            where = f"{path.name} line {reader.line_num}"
            yield (
                reader.line_num,
                [
                    key_text(row.get(c), where, c) if row.get(c) is not None else missing_key(where, c)
                    for c in key_columns
                ],
                row.get(check) if check else None,
            )
        return
    for number, where, obj, _ in json_objects(lines):
        yield number, object_keys(obj, where, key_columns), obj.get(check) if check else None


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
        rows = [dict(zip(names, k, strict=True)) for k in keys]
        if self.check:
            for row, crc in zip(rows, checks_of(keys, vectors), strict=True):
                row[self.check] = crc
        self.key_lines.write(b"".join(orjson.dumps(row) + b"\n" for row in rows))
        self.count += len(vectors)

    def close(self):
        self.write_header()
        self.out.close()
        self.key_lines.close()
