"""What an export carries so its import can tell a damaged file from a whole one, and the checks
an import makes of any file's vectors.

Each exported row carries a check: the CRC-32 (zlib's) of its key values' text joined by tabs,
UTF-8, followed by its vector as little-endian float4 bytes. A flipped byte in a key or a vector,
or a check field that was itself damaged, makes the row's check fail; the export record says
how many rows the file holds, so a file cut short, or with rows lost, is told from a whole one.
Anyone can compute the check: ``zlib.crc32(vector.astype('<f4').tobytes(), zlib.crc32(keys))``.

A file that carries no checks (vectors computed elsewhere) still has each vector's length
checked: one whose squared length overflows a float4 (pgvector computes distances in float4, so
every distance to it is infinite or NaN), or that is more than OUTLIER_FACTOR times longer than
the file's typical vector, is damaged: a flipped exponent bit makes such a vector.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

# The field (a column, in CSV and Parquet) that holds each row's check, unless a key column has
# that name; the record names the field it used.
CHECK_FIELD = "crc32"
CHECK_ALGORITHM = "crc32(keys joined by tabs, utf-8; then the vector as float4 little-endian)"
# A vector this long has a squared length beyond float4 (3.4e38): its distances overflow.
MAX_NORM = 1.8e19
# A vector longer than this many times the median length of the file's first vectors is damaged.
OUTLIER_FACTOR = 1000.0
# Damaged rows an error or a summary names; the rest are counted.
NAMED = 5


def check_field(key_columns: Sequence[str]) -> str:
    """The name of the check's field: CHECK_FIELD, or it with underscores until no key column has it."""
    name = CHECK_FIELD
    while name in key_columns or name == "vector":
        name += "_"
    return name


def key_check(keys: Iterable[str]) -> int:
    """The running CRC-32 of a row's key values (as text), before its vector."""
    return zlib.crc32("\t".join(keys).encode("utf-8"))


def row_checks(key_crcs: Sequence[int], vectors: np.ndarray) -> list[int]:
    """Each row's check: its vector's float4 little-endian bytes continuing its keys' CRC-32."""
    data = np.ascontiguousarray(vectors, dtype="<f4").tobytes()
    size = vectors.shape[1] * 4 if len(vectors) else 0
    view = memoryview(data)
    return [zlib.crc32(view[i * size : (i + 1) * size], crc) for i, crc in enumerate(key_crcs)]


def checks_of(keys: Sequence[Sequence], vectors: np.ndarray) -> list[int]:
    """The checks of rows given as key values (integers or text) and vectors: what an export writes."""
    return row_checks([key_check(map(str, k)) for k in keys], vectors)


# What a row whose check does not match what it holds is called.
CHECK_FAILED = "its check does not match its keys and vector"


def check_value(value) -> int | None:
    """A row's check as written (an integer, or its digits as text: CSV), or None for one missing
    or not an integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, (str, bytes)) and value.strip().isdigit():
        return int(value)
    return None


def failed_checks(key_crcs: Sequence[int], written: Sequence, vectors: np.ndarray) -> list[int]:
    """The rows (indices) whose written check is missing or is not the check of what they hold."""
    computed = row_checks(key_crcs, vectors)
    return [i for i, (got, want) in enumerate(zip(computed, written, strict=True)) if got != check_value(want)]


def check_failures(lines: Sequence[int], key_crcs: Sequence[int], written: Sequence, vectors: np.ndarray):
    """(line, CHECK_FAILED) of the rows (their lines given) whose check fails."""
    return [(int(lines[row]), CHECK_FAILED) for row in failed_checks(key_crcs, written, vectors)]


def norm_reference(vectors: np.ndarray) -> float:
    """The typical length of a file's vectors: the median of its first block's."""
    return float(np.median(np.linalg.norm(vectors.astype(np.float64, copy=False), axis=1)))


def absurd_norms(vectors: np.ndarray, reference: float) -> list[tuple[int, str]]:
    """(row, why) of the vectors whose length is absurd: beyond MAX_NORM, or OUTLIER_FACTOR times
    the reference length."""
    norms = np.linalg.norm(vectors.astype(np.float64, copy=False), axis=1)
    limit = min(MAX_NORM, OUTLIER_FACTOR * reference) if reference > 0 else MAX_NORM
    outlier = f"its length is over {OUTLIER_FACTOR:,.0f} times the file's typical {reference:.3g}"
    return [
        (int(i), "its length overflows float4 distances" if norms[i] > MAX_NORM else outlier)
        for i in np.flatnonzero(norms > limit)
    ]


@dataclass
class Damage:
    """The damaged rows an import found: (line or row, why), in file order, and how the file
    names its records."""

    unit: str = "line"
    rows: list[tuple[int, str]] = field(default_factory=list)

    def add(self, line: int, why: str) -> None:
        self.rows.append((line, why))

    @property
    def lines(self) -> list[int]:
        return [line for line, _ in self.rows]

    def describe(self) -> str:
        """The damaged rows by what is wrong with them: 'lines 7, 9 and 12: why; line 30: why',
        at most NAMED of each."""
        by_why: dict[str, list[int]] = {}
        for line, why in sorted(self.rows):
            by_why.setdefault(why, []).append(line)
        return "; ".join(f"{self.named(lines)}: {why}" for why, lines in by_why.items())

    def named(self, lines: list[int]) -> str:
        if len(lines) == 1:
            return f"{self.unit} {lines[0]}"
        shown = ", ".join(map(str, lines[: min(NAMED, len(lines) - 1)]))
        rest = len(lines) - min(NAMED, len(lines) - 1)
        last = str(lines[-1]) if rest == 1 else f"{rest} more"
        return f"{self.unit}s {shown} and {last}"
