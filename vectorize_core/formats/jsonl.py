"""JSON Lines: read a block of lines at a time (by worker processes for a large file), each record
by simdjson with its vector read as doubles in C, no Python number made, and checked with numpy;
a line simdjson refuses is read again by the standard library's json to say what is wrong with it.
Written a page at a time by orjson, each number the shortest text that reads back as the same float4.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import orjson
import simdjson

from .checks import checks_of
from .common import (
    NOT_FAST,
    BadVectorFile,
    Block,
    Blocks,
    FileLines,
    Reading,
    Writer,
    fast_vector,
    key_text,
    line_chunks,
    missing_key,
    parse_vector,
    parsed,
    read_chunk,
    vector_json,
    workers_for,
)

UTF8_BOM = b"\xef\xbb\xbf"


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


def object_keys(obj: dict, where: str, key_columns) -> list[str]:
    return [key_text(obj[c], where, c) if c in obj else missing_key(where, c) for c in key_columns]


def fast_record(parser, raw: bytes, columns: list[str]) -> tuple[list, np.ndarray]:
    """The key values (and check) and vector of a JSON Lines record, by simdjson. Its proxies
    live only in this frame: a parser is reused only once they are gone."""
    doc = parser.parse(raw)
    return [doc[c] for c in columns], fast_vector(doc["vector"])


def jsonl_blocks(path: Path, reading: Reading) -> Iterator[Block]:
    """The records of a JSON Lines file, about TEXT_BLOCK bytes of lines at a time, parsed in
    worker processes when the file is large (see parsed)."""
    chunks = line_chunks(path, end=reading.end)
    return parsed(chunks, partial(jsonl_block, path=path, reading=reading), workers_for(path), reading.dimension)


def jsonl_block(chunk: tuple[int, ...], dimension: int | None, path: Path, reading: Reading) -> Block | None:
    """The records of some lines of a JSON Lines file, a chunk of line_chunks. A
    line simdjson refuses is read again by json and parse_vector, which name what is wrong (or
    accept it: an integer beyond 64 bits is a number too)."""
    first, offset, size, _ = chunk
    data = read_chunk(path, offset, size)
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    parser = simdjson.Parser()
    columns, keys = reading.columns, reading.key_columns
    blocks = Blocks(path.name, dimension, partial(exact_jsonl_record, columns=keys), reading)
    for number, raw in enumerate(lines, first):
        where = f"{path.name} line {number}"
        if number == 1 and raw.startswith(UTF8_BOM):
            raw = raw[3:]  # spreadsheets and some tools start files with a BOM
        try:
            if not raw.isascii():
                check_utf8(raw, where)
            try:
                values, vector = fast_record(parser, raw, columns)
                if len(vector) != blocks.dimension:
                    raise ValueError("another dimension")
            except NOT_FAST:
                if not raw.strip():
                    continue
                values, vector = exact_jsonl_record(raw, where, columns, blocks)
            texts = [key_text(v, where, c) for v, c in zip(values, keys, strict=False)]
        except BadVectorFile as exc:
            blocks.damage(number, exc)
            continue
        blocks.add(number, texts, vector, raw, values[-1] if reading.check else None)
    return blocks.take(size)


def check_utf8(raw: bytes, where: str) -> None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadVectorFile(f"{where}: not valid UTF-8") from None


def exact_jsonl_record(raw: bytes, where: str, columns, blocks: Blocks | None = None):
    """A line read by the standard library's json: (key values (and check), vector), or the
    message for what simdjson refused (or for a number beyond float4). A missing check is None."""
    obj = json_object(raw, where)
    check = blocks.reading.check if blocks else None
    keys = [obj[c] if c in obj else missing_key(where, c) for c in columns if c != check]
    if check:
        keys.append(obj.get(check))
    vector = parse_vector(obj.get("vector"), where, blocks.dimension if blocks else None)
    if blocks:
        blocks.dimension = len(vector)
    return keys, vector


class JsonlWriter(Writer):
    def __init__(self, *args):
        super().__init__(*args)
        self.out = open(self.temp(self.path), "wb")

    def write(self, keys, vectors):
        names = [json.dumps(k).encode() + b": " for k in self.key_columns]
        check = b", " + json.dumps(self.check).encode() + b": "
        checks = checks_of(keys, vectors) if self.check else [None] * len(keys)
        lines = []
        for key, vector, crc in zip(keys, vector_json(vectors), checks, strict=True):
            fields = b", ".join(n + orjson.dumps(v) for n, v in zip(names, key, strict=True))
            tail = b"}\n" if crc is None else check + str(crc).encode() + b"}\n"
            lines.append(b"{" + fields + b', "vector": ' + vector + tail)
        self.out.write(b"".join(lines))

    def close(self):
        self.out.close()
