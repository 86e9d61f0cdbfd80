"""Long documents: each row's text split into chunks the model reads whole, one vector a chunk.

The chunks live in a table beside the user's: the row's key columns (same names and types), the
prefix columns of the index (CockroachDB), the chunk's number, its start and end in the row's text
(the source columns joined by a space, as the model reads them) and its vector; primary key (key...,
chunk number). The shadow column of the user's table still holds the row's own vector (what a
plain encode stores) and says whether the row is done: a row whose vector is NULL is pending, and
its chunks are never returned by search. A row's chunks are replaced in the transaction that sets
its vector, and only if its text is still the text that was split.

Texts are split with semchunk (paragraphs, then sentences, then words) and measured in the
encoder's own tokenizer, so a chunk is never longer than the model reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from psycopg import sql

from . import names
from .contents import content_table_of, vector_hash
from .db import Column, Relation, Table
from .dialects import is_blank
from .errors import BadInput

# The chunk size and overlap, in the encoder's tokens, when --chunk-tokens / --chunk-overlap are
# not given: chosen on half of NFCorpus's queries and a long-document set (docs/benchmarks.md).
DEFAULT_CHUNK_TOKENS = 64
DEFAULT_OVERLAP = 0
# Encoders without a tokenizer here (openai:) are measured in characters: about 4 a token, as
# OpenAI documents for English text.
CHARS_PER_TOKEN = 4
# Text read per page of a chunked fill, in bytes: pages are bounded by what they hold, not by rows.
PAGE_BYTES = 1 << 20


@dataclass(frozen=True)
class ChunkTable(Relation):
    """The chunk table of a vector column: its name, its columns and its indexes."""

    index: str  # the vector index on it, on a column made before contents tables
    keys: tuple[str, ...]
    key_types: tuple[str, ...]
    prefix_columns: tuple[str, ...]
    prefix_types: tuple[str, ...]
    chunk: str  # the chunk's number within its row, from 0
    start: str  # where it starts in the row's text (characters)
    end: str  # where it ends (the character after its last)
    vector: str
    hash: str | None = None  # the content hash of the chunk's text (its vector's key in the contents table)
    row_hash: str | None = None  # the hash of the row's text that was split (the row's hash column then)
    hash_index: str | None = None  # the index on hash: search expands a content to its chunks by it

    def as_table(self) -> Table:
        """The chunk table as a Table (for index checks and filters on its prefix columns)."""
        columns = {}
        for number, (name, type_sql) in enumerate(
            zip((*self.keys, *self.prefix_columns), (*self.key_types, *self.prefix_types), strict=True), 1
        ):
            columns[name] = Column(name, number, "", type_sql, -1, None)
        return Table(self.schema, self.name, 0, columns, self.keys)


def column_names(taken: set[str]) -> dict[str, str]:
    """The chunk table's own columns, named so that none meets a key or prefix column."""
    chosen = {}
    roles = (
        ("chunk", "chunk"), ("start", "chunk_start"), ("end", "chunk_end"), ("vector", "chunk_vector"),
        ("hash", "chunk_hash"), ("row_hash", "row_hash"),
    )  # fmt: skip
    for role, name in roles:
        while name in taken:
            name = f"vectorize_{name}"
        chosen[role] = name
        taken = taken | {name}
    return chosen


def joined_text(parts) -> str:
    """A row's text without the encoder's prefix: the source texts that hold any, joined by a
    space. Chunks' starts and ends count characters of it."""
    return " ".join(part for part in parts if not is_blank(part))


def vector_index_table(table: Table, meta: dict) -> Table:
    """The table a vector column's index is on: its contents table; on a column made before
    those, its chunk table or its own."""
    contents = content_table_of(table, meta)
    if contents is not None:
        return contents.as_table()
    return chunk_table_of(table, meta["chunks"]).as_table() if meta.get("chunks") else table


def chunk_table_of(table: Table, record: dict) -> ChunkTable:
    """The chunk table a column's metadata record ('chunks') describes."""
    prefix = tuple(record.get("prefix_columns") or ())
    columns = record["columns"]
    return ChunkTable(
        schema=table.schema,
        name=record["table"],
        index=record.get("index", ""),
        keys=tuple(table.primary_key),
        key_types=tuple(table.columns[k].type_sql for k in table.primary_key),
        prefix_columns=prefix,
        prefix_types=tuple(table.columns[c].type_sql for c in prefix),
        chunk=columns["chunk"],
        start=columns["start"],
        end=columns["end"],
        vector=columns["vector"],
        hash=columns.get("hash"),
        row_hash=columns.get("row_hash"),
        hash_index=record.get("hash_index"),
    )


def new_record(db, table: Table, vector_column: str, tokens: int, overlap: int, counting: str, prefix) -> dict:
    """The 'chunks' record of a column chunked for the first time: a free table name in the schema
    (never one another table has), its index name, the chunk columns, the sizes."""
    salt = f"{table.schema}.{table.name}"
    tag = names.relation_tag(table.schema, table.name, vector_column, "chunks")
    name = names.own_or_free(db, table.schema, f"{table.name}_{vector_column}", "_chunks", salt=salt, tag=tag)
    hash_index = names.own_or_free(db, table.schema, name, "_hash_idx", salt=salt, on=name)
    return {
        "table": name,
        "hash_index": hash_index,
        "tokens": tokens,
        "overlap": overlap,
        "counting": counting,
        "columns": column_names({*table.primary_key, *prefix}),
        **({"prefix_columns": list(prefix)} if prefix else {}),
        "opening_weight": OPENING_WEIGHT,
    }


def upgraded_record(db, table: Table, record: dict) -> dict:
    """The 'chunks' record of a column an earlier version chunked, with the hash columns and
    index its chunk table gets now (free names: none meets a column of it)."""
    if "opening_weight" not in record:
        record = {**record, "opening_weight": OPENING_WEIGHT}  # its rows gain their openings first
    if "hash" in record["columns"]:
        return record
    taken = {*table.primary_key, *(record.get("prefix_columns") or ()), *record["columns"].values()}
    columns = dict(record["columns"])
    for role, name in (("hash", "chunk_hash"), ("row_hash", "row_hash")):
        while name in taken:
            name = f"vectorize_{name}"
        columns[role] = name
        taken.add(name)
    salt = f"{table.schema}.{table.name}"
    hash_index = names.own_or_free(db, table.schema, record["table"], "_hash_idx", salt=salt, on=record["table"])
    return {**record, "columns": columns, "hash_index": hash_index}


# The number of a row's opening in its chunk table: the text the model reads of the whole row,
# with the row's own vector. Not a piece of the text (start and end 0): never a best chunk.
OPENING = -1
# Search ranks a row by w x its opening's distance + (1 - w) x its best chunk's; w is recorded
# in the column's metadata. Chosen on the first half of the NFCorpus and SciFact queries
# (benchmarks/ranking.py; docs/benchmarks.md gives the other half's figures).
OPENING_WEIGHT = 0.4


# -- splitting ------------------------------------------------------------------------------


# A chunk with fewer letters than this has no word to be found by (a table rule of '|' and
# '-', a row of numbers): it joins its neighbour, so that it never ranks first for anything.
MIN_LETTERS = 4


class Splitter:
    """Splits a text into (start, end) spans the model reads whole, at natural boundaries."""

    def __init__(self, count, tokens: int, overlap: int, max_token_chars: int | None = None, room: int | None = None):
        import semchunk

        self.overlap = overlap or None
        self.count = count
        self.room = room or tokens  # the most tokens the model reads whole: what a merged chunk may hold
        # Counts are remembered for one text at a time (semchunk asks for the same pieces again):
        # its own cache would keep pieces of every text, the largest ones included, for the run.
        self.counted: dict[str, int] = {}
        self.chunker = semchunk.chunkerify(self.remembered, tokens, max_token_chars=max_token_chars, memoize=False)

    def remembered(self, text: str) -> int:
        found = self.counted.get(text)
        if found is None:
            found = self.counted[text] = self.count(text)
        return found

    def spans(self, text: str) -> list[tuple[int, int]]:
        if not text.strip():
            return []
        try:
            _, offsets = self.chunker(text, offsets=True, overlap=self.overlap)
            return self.without_wordless(text, [(int(s), int(e)) for s, e in offsets])
        finally:
            self.counted.clear()

    def without_wordless(self, text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Spans of few letters joined to the one before (or after) where the model still reads
        the two whole, and dropped where it would not (they hold no word); a text of no span with
        words keeps its spans."""
        if all(has_words(text[s:e]) for s, e in spans) or not any(has_words(text[s:e]) for s, e in spans):
            return spans
        kept: list[tuple[int, int]] = []
        waiting: int | None = None  # the start of wordless spans before the first with words
        for start, end in spans:
            if has_words(text[start:end]):
                if waiting is not None and self.remembered(text[waiting:end]) <= self.room:
                    start = waiting
                kept.append((start, end))
                waiting = None
            elif kept:
                joined = (kept[-1][0], max(kept[-1][1], end))
                if self.remembered(text[joined[0] : joined[1]]) <= self.room:
                    kept[-1] = joined
            elif waiting is None:
                waiting = start
        return kept


def has_words(piece: str) -> bool:
    letters = 0
    for character in piece:
        if character.isalpha():
            letters += 1
            if letters >= MIN_LETTERS:
                return True
    return False


@dataclass(frozen=True)
class Counting:
    """How an encoder's tokens are counted for chunking."""

    count: object  # text -> tokens, as the model reads it (no special tokens, no truncation)
    room: int  # tokens of text the model reads in one input (its limit less its special tokens)
    how: str  # 'tokenizer' or 'characters'
    max_token_chars: int | None = None


def counting_for(encoder) -> Counting:
    """The encoder's own tokenizer when it has one; otherwise characters (CHARS_PER_TOKEN a token)."""
    counter = getattr(encoder, "token_counter", None)
    if callable(counter):
        count, specials, max_token_chars = counter()
        room = (getattr(encoder, "max_length", None) or 512) - specials
        return Counting(count, room, "tokenizer", max_token_chars)
    limit = getattr(encoder, "max_length", None) or getattr(encoder, "max_tokens", None) or 512
    return Counting(lambda text: math.ceil(len(text) / CHARS_PER_TOKEN), limit, "characters")


def peek_counting(encoder) -> Counting | None:
    """counting_for() loading no model (a dry run): the tokenizer from the model's files, or
    characters for an encoder without one; None when the files are not on this machine."""
    if not callable(getattr(encoder, "token_counter", None)):
        return counting_for(encoder)
    peek = getattr(encoder, "peek_token_counter", None)
    found = peek() if callable(peek) else None
    if found is None:
        return None
    count, specials, max_token_chars = found
    room = (getattr(encoder, "max_length", None) or 512) - specials
    return Counting(count, room, "tokenizer", max_token_chars)


def chunk_sizes(counting: Counting, tokens: int | None, overlap: int | None, prefix: str) -> tuple[int, int]:
    """--chunk-tokens and --chunk-overlap, checked against what the model reads (its prefix
    included); defaults where not given."""
    room = counting.room - (counting.count(prefix) if prefix else 0)
    if tokens is None:
        tokens = min(DEFAULT_CHUNK_TOKENS, room)
    if tokens > room:
        raise BadInput(
            f"--chunk-tokens {tokens}: the model reads {room} tokens of text at a time"
            + (" (after its --prefix)" if prefix else "")
            + "; a longer chunk would be cut"
        )
    overlap = DEFAULT_OVERLAP if overlap is None else overlap
    if not 0 <= overlap < tokens:
        raise BadInput(f"--chunk-overlap must be at least 0 and less than --chunk-tokens ({tokens})")
    return tokens, overlap


# -- statements ------------------------------------------------------------------------------


def create_table(ct: ChunkTable, dimension: int) -> sql.Composed:
    columns = [
        sql.SQL("{} {} NOT NULL").format(sql.Identifier(name), sql.SQL(type_sql))
        for name, type_sql in zip((*ct.keys, *ct.prefix_columns), (*ct.key_types, *ct.prefix_types), strict=True)
    ]
    columns += [
        sql.SQL("{} INT4 NOT NULL").format(sql.Identifier(ct.chunk)),
        sql.SQL("{} INT4 NOT NULL").format(sql.Identifier(ct.start)),
        sql.SQL("{} INT4 NOT NULL").format(sql.Identifier(ct.end)),
        sql.SQL("{} VECTOR({}) NOT NULL").format(sql.Identifier(ct.vector), sql.Literal(int(dimension))),
        sql.SQL("{} UUID NOT NULL").format(sql.Identifier(ct.hash)),
        sql.SQL("{} UUID NOT NULL").format(sql.Identifier(ct.row_hash)),
        sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(sql.Identifier(c) for c in (*ct.keys, ct.chunk))),
    ]
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(ct.ident, sql.SQL(", ").join(columns))


def add_hash_columns(ct: ChunkTable) -> list[sql.Composed]:
    alter = sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} UUID")
    return [alter.format(ct.ident, sql.Identifier(c)) for c in (ct.hash, ct.row_hash)]


def create_hash_index(ct: ChunkTable) -> sql.Composed:
    """Search expands a content to its chunks, and encode finds a text's vector, by this index."""
    return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
        sql.Identifier(ct.hash_index), ct.ident, sql.Identifier(ct.hash)
    )


def key_matches(ct: ChunkTable, alias: str, other: str) -> sql.Composed:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(alias, k), sql.Identifier(other, k)) for k in ct.keys
    )


def key_aliases(count: int) -> list[sql.Identifier]:
    """The keys' names in an unnest() of text arrays: k0, k1, ..."""
    return [sql.Identifier(f"k{i}") for i in range(count)]


def typed_keys(key_types) -> list[sql.Composed]:
    """The keys of an unnest() aliased d (text, the form the fill reads keys in), cast back to
    their own types."""
    return [
        sql.SQL("CAST(d.{} AS {})").format(a, sql.SQL(t))
        for a, t in zip(key_aliases(len(key_types)), key_types, strict=True)
    ]


def keys_in(alias: sql.Identifier, keys, key_types) -> sql.Composed:
    """The row aliased `alias` is one of those whose keys are given (one text array a key column)."""
    source = sql.SQL("unnest({}) AS d({})").format(
        sql.SQL(", ").join(sql.SQL("CAST(%b AS text[])") for _ in keys), sql.SQL(", ").join(key_aliases(len(keys)))
    )
    return sql.SQL("({}) IN (SELECT {} FROM {})").format(
        sql.SQL(", ").join(sql.SQL("{}.{}").format(alias, sql.Identifier(k)) for k in keys),
        sql.SQL(", ").join(typed_keys(key_types)),
        source,
    )


def delete_rows(ct: ChunkTable) -> sql.Composed:
    """Delete every chunk of the rows whose keys (text arrays) are given."""
    return sql.SQL("DELETE FROM {} AS c WHERE {}").format(ct.ident, keys_in(sql.Identifier("c"), ct.keys, ct.key_types))


def insert_chunks(ct: ChunkTable, table: Table, dialect) -> sql.Composed:
    """Insert chunks given as arrays: the keys (text), chunk numbers, starts, ends, content hashes,
    row hashes, vectors. Prefix columns are copied from the row."""
    params = [sql.SQL("CAST(%b AS text[])") for _ in ct.keys] + [sql.SQL("CAST(%b AS int4[])")] * 3
    params += [sql.SQL("CAST(%b AS uuid[])")] * 2 + [dialect.vectors_param()]
    source = sql.SQL("unnest({}) AS d({}, n, s, e, h, r, vec)").format(
        sql.SQL(", ").join(params), sql.SQL(", ").join(key_aliases(len(ct.keys)))
    )
    typed = typed_keys(ct.key_types)
    columns = sql.SQL(", ").join(
        sql.Identifier(c)
        for c in (*ct.keys, *ct.prefix_columns, ct.chunk, ct.start, ct.end, ct.hash, ct.row_hash, ct.vector)
    )
    values = [*typed]
    join = sql.SQL("")
    if ct.prefix_columns:
        values += [sql.Identifier("t", c) for c in ct.prefix_columns]
        on = sql.SQL(" AND ").join(
            sql.SQL("t.{} = {}").format(sql.Identifier(k), v) for k, v in zip(ct.keys, typed, strict=True)
        )
        join = sql.SQL(" JOIN {} AS t ON {}").format(table.ident, on)
    values += [sql.SQL("d.n"), sql.SQL("d.s"), sql.SQL("d.e"), sql.SQL("d.h"), sql.SQL("d.r")]
    values.append(dialect.write_vectors_value(sql.SQL("d.vec")))
    return sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}{}").format(
        ct.ident, columns, sql.SQL(", ").join(values), source, join
    )


def add_openings(ct: ChunkTable, table: Table, vector_column: str, hash_column: str) -> sql.Composed:
    """A chunk table made before rows had their opening among their chunks: each row with a vector
    gains it, from that vector (keyed by the vector's hash: its text is not at hand), no model run."""
    t_keys = [sql.Identifier("t", k) for k in ct.keys]
    columns = (*ct.keys, *ct.prefix_columns, ct.chunk, ct.start, ct.end, ct.vector, ct.hash, ct.row_hash)
    vector = sql.Identifier("t", vector_column)
    return sql.SQL(
        "INSERT INTO {chunks} ({columns}) SELECT {keys}, %s, 0, 0, {vector}, {vector_hash}, t.{hash} FROM {table} AS t"
        " WHERE {vector} IS NOT NULL AND t.{hash} IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM {chunks} AS c WHERE {match} AND c.{chunk} = %s)"
    ).format(
        chunks=ct.ident,
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        keys=sql.SQL(", ").join([*t_keys, *(sql.Identifier("t", p) for p in ct.prefix_columns)]),
        vector=vector,
        vector_hash=vector_hash(vector),
        hash=sql.Identifier(hash_column),
        table=table.ident,
        match=key_matches(ct, "c", "t"),
        chunk=sql.Identifier(ct.chunk),
    )


def row_holds(ct: ChunkTable, vector_column: str, hash_column: str) -> sql.Composed:
    """The row aliased t holds the chunks aliased c: same key, its vector set, and its text the text
    that was split (a row whose key or text changed since does not)."""
    return sql.SQL("{} AND t.{} IS NOT NULL AND t.{} = c.{}").format(
        key_matches(ct, "t", "c"),
        sql.Identifier(vector_column),
        sql.Identifier(hash_column),
        sql.Identifier(ct.row_hash),
    )


def delete_stale(ct: ChunkTable, table: Table, vector_column: str, hash_column: str) -> sql.Composed:
    """Chunks no search may return: of rows deleted, re-queued (their vector reset to NULL), or
    whose key changed. A row's new chunks are written with its vector, in one transaction, so none
    is lost here."""
    return sql.SQL("DELETE FROM {ct} AS c WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE {holds})").format(
        ct=ct.ident, table=table.ident, holds=row_holds(ct, vector_column, hash_column)
    )


def requeue_unchunked(ct: ChunkTable, table: Table, vector_column: str, hash_column: str) -> sql.Composed:
    """Rows with a vector but none of their chunks (their key changed since: the chunks are under
    the old one) are pending again, so the next fill splits them anew."""
    return sql.SQL(
        "UPDATE {table} AS t SET {vector} = NULL WHERE t.{vector} IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM {ct} AS c WHERE {holds})"
    ).format(
        table=table.ident,
        vector=sql.Identifier(vector_column),
        ct=ct.ident,
        holds=row_holds(ct, vector_column, hash_column),
    )
