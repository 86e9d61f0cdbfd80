"""The vector-file formats, a module each: JSON Lines (jsonl), CSV (delimited), .npy with a keys
file (npy) and Parquet (parquet). Each holds its reading, into checked Blocks ready to COPY, and
its writer, so a format is read and written in one place; what they share is in common. The
import and the export pick a format's reader or writer here and know nothing of the others.
"""

from __future__ import annotations

from .delimited import CsvWriter
from .jsonl import JsonlWriter
from .npy import NpyWriter
from .parquet import ParquetWriter

# The writer of each format, by the name record.FORMATS gives a file's suffix.
WRITERS = {"jsonl": JsonlWriter, "csv": CsvWriter, "npy": NpyWriter, "parquet": ParquetWriter}
