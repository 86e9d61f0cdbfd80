"""One vector per distinct content: the table a vector column's index is built on.

Users' tables repeat text: licence boilerplate, templates, signatures, quoted replies. An HNSW
graph built over many identical vectors strands them (pgvector's maintainers: HNSW is not made
for many duplicates), and search through it misses rows that exact search ranks first. So a
column's vector index is built on a table beside the user's that holds each distinct content
once: its hash, the CockroachDB index's prefix columns, and its vector; primary key (hash,
prefix...). Search ranks these and expands each hit to every row (or chunk) holding its hash.
The shadow column still holds every row's vector, and a chunk table every chunk's: the contents
table is the index's, nothing else.

A content's hash is the md5 of the text the model read, as a UUID: the same in Python and in
SQL (md5(text)), and the key that lets encode run the model once per distinct text. Vectors that
came without a model (import-vectors) are keyed by the md5 of their text form.

Contents no row holds any more are removed in two steps: a sweep marks them orphaned, and a
later sweep deletes those still orphaned and unheld. A write that takes a content unmarks it in
the write's own transaction (the upsert's DO UPDATE), so a delete that reaches the row after
that write sees the mark gone, and a delete before it leaves the write to insert the content
again: a committed row's content is never swept away.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from psycopg import sql

from .db import Column, Relation, Table


def content_hash(text: str) -> uuid.UUID:
    """The hash of a text the model read: md5 as a UUID, as SQL's CAST(md5(text) AS uuid)."""
    return uuid.UUID(hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest())


def vector_hash(vector: sql.Composable) -> sql.Composed:
    """The hash of a vector that came without a text (import-vectors): md5 of its text form."""
    return sql.SQL("CAST(md5(CAST({} AS text)) AS uuid)").format(vector)


@dataclass(frozen=True)
class ContentTable(Relation):
    """The distinct contents of a vector column: hash, prefix columns, vector; the vector index."""

    index: str
    prefix_columns: tuple[str, ...] = ()
    prefix_types: tuple[str, ...] = ()
    hash: str = "content_hash"
    vector: str = "content_vector"
    orphaned: str = "orphaned"

    @property
    def key(self) -> tuple[str, ...]:
        """The primary key: the hash first, so a lookup by hash alone uses it."""
        return (self.hash, *self.prefix_columns)

    def as_table(self) -> Table:
        """The contents table as a Table (for index checks and filters on its prefix columns)."""
        columns = {
            name: Column(name, number, "", type_sql, -1, None)
            for number, (name, type_sql) in enumerate(zip(self.prefix_columns, self.prefix_types, strict=True), 1)
        }
        return Table(self.schema, self.name, 0, columns, self.key)


def column_names(prefix_columns) -> dict[str, str]:
    """The contents table's own columns, named so that none meets a prefix column."""
    taken = set(prefix_columns)
    chosen = {}
    for role, name in (("hash", "content_hash"), ("vector", "content_vector"), ("orphaned", "orphaned")):
        while name in taken:
            name = f"vectorize_{name}"
        chosen[role] = name
        taken.add(name)
    return chosen


def content_table_of(table: Table, meta: dict) -> ContentTable | None:
    """The contents table a column's metadata records (None for a column made before them)."""
    record = meta.get("contents")
    if not record:
        return None
    prefix = tuple(meta.get("prefix_columns") or ())
    columns = record["columns"]
    return ContentTable(
        schema=table.schema,
        name=record["table"],
        index=meta["index"],
        prefix_columns=prefix,
        prefix_types=tuple(table.columns[c].type_sql for c in prefix),
        hash=columns["hash"],
        vector=columns["vector"],
        orphaned=columns["orphaned"],
    )


@dataclass(frozen=True)
class Holders:
    """The rows that hold contents: the user's table (a plain column: its shadow column and hash
    column, rows with a vector) or a chunked column's chunk table (every chunk)."""

    ident: sql.Identifier
    hash: str
    vector: str
    live: sql.Composable | None = None  # condition (alias h) for a row that holds its content


# -- statements --------------------------------------------------------------------------------


def create_table(ct: ContentTable, dimension: int) -> sql.Composed:
    columns = [
        sql.SQL("{} UUID NOT NULL").format(sql.Identifier(ct.hash)),
        *(
            sql.SQL("{} {} NOT NULL").format(sql.Identifier(name), sql.SQL(type_sql))
            for name, type_sql in zip(ct.prefix_columns, ct.prefix_types, strict=True)
        ),
        sql.SQL("{} VECTOR({}) NOT NULL").format(sql.Identifier(ct.vector), sql.Literal(int(dimension))),
        sql.SQL("{} BOOL NOT NULL DEFAULT false").format(sql.Identifier(ct.orphaned)),
        sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(sql.Identifier(c) for c in ct.key)),
    ]
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(ct.ident, sql.SQL(", ").join(columns))


def known_vectors(ct: ContentTable) -> sql.Composed:
    """(hash, vector) of the given hashes (a uuid[] parameter) that the column has encoded."""
    return sql.SQL("SELECT {hash}, {vector} FROM {table} WHERE {hash} = ANY(CAST(%b AS uuid[]))").format(
        hash=sql.Identifier(ct.hash), vector=sql.Identifier(ct.vector), table=ct.ident
    )


def upsert(ct: ContentTable, holders: Holders, where: sql.Composable) -> sql.Composed:
    """Add the contents of the holder rows (alias h) matching `where`, each once; a content
    already there is unmarked if a sweep had marked it (and locked, so no sweep deletes it while
    this transaction runs). Rows without a value in a prefix column are left out: only a search
    that pins the prefix columns reads the index, and it never asks for NULL."""
    h = sql.Identifier("h")
    values = [
        sql.SQL("{}.{}").format(h, sql.Identifier(holders.hash)),
        *(sql.SQL("{}.{}").format(h, sql.Identifier(c)) for c in ct.prefix_columns),
    ]
    present = [sql.SQL("{} IS NOT NULL").format(v) for v in values]
    if holders.live is not None:
        present.append(holders.live)
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in (*ct.key, ct.vector))
    return sql.SQL(
        "INSERT INTO {table} AS c ({columns}) SELECT DISTINCT ON ({values}) {values}, h.{vector} FROM {holders} AS h"
        " WHERE {where} AND {present} ORDER BY {values}"
        " ON CONFLICT ({key}) DO UPDATE SET {orphaned} = false WHERE c.{orphaned}"
    ).format(
        table=ct.ident,
        columns=columns,
        values=sql.SQL(", ").join(values),
        vector=sql.Identifier(holders.vector),
        holders=holders.ident,
        where=where,
        present=sql.SQL(" AND ").join(present),
        key=sql.SQL(", ").join(sql.Identifier(c) for c in ct.key),
        orphaned=sql.Identifier(ct.orphaned),
    )


def held(ct: ContentTable, holders: Holders) -> sql.Composed:
    """EXISTS a holder row of the content row aliased c."""
    match = [sql.SQL("h.{} = c.{}").format(sql.Identifier(holders.hash), sql.Identifier(ct.hash))]
    match += [sql.SQL("h.{0} = c.{0}").format(sql.Identifier(p)) for p in ct.prefix_columns]
    if holders.live is not None:
        match.append(holders.live)
    return sql.SQL("EXISTS (SELECT 1 FROM {} AS h WHERE {})").format(holders.ident, sql.SQL(" AND ").join(match))


def sweep_statements(ct: ContentTable, holders: Holders) -> list[sql.Composed]:
    """Delete the contents a previous sweep marked that are still unheld, then mark the unheld."""
    orphaned = sql.Identifier(ct.orphaned)
    return [
        sql.SQL("DELETE FROM {} AS c WHERE c.{} AND NOT {}").format(ct.ident, orphaned, held(ct, holders)),
        sql.SQL("UPDATE {} AS c SET {} = true WHERE NOT c.{} AND NOT {}").format(
            ct.ident, orphaned, orphaned, held(ct, holders)
        ),
    ]


def missing(ct: ContentTable, holders: Holders) -> sql.Composed:
    """The holder row aliased h has a content the table lacks (a row whose prefix value changed,
    or one written before the table existed)."""
    match = [sql.SQL("c.{} = h.{}").format(sql.Identifier(ct.hash), sql.Identifier(holders.hash))]
    match += [sql.SQL("c.{0} = h.{0}").format(sql.Identifier(p)) for p in ct.prefix_columns]
    return sql.SQL("NOT EXISTS (SELECT 1 FROM {} AS c WHERE {})").format(ct.ident, sql.SQL(" AND ").join(match))
