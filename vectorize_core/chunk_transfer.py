"""A chunked column's vectors moved between databases: export-vectors writes one record a chunk
(and one a row's opening, chunk -1, whose vector is the row's own) with where it lies in the
row's text, and import-vectors restores them, bit for bit, into a table whose text is the text
that was split.

Each record holds the row's key, then the chunk fields: the chunk's number, its start and end in
the row's text (the source columns joined by a space, as the model read them), how many chunks
the row has (so a row whose chunks did not all arrive is told), the hash of the chunk's text and
the hash of the row's whole text when it was split. The column's chunking (tokens, overlap, how
tokens were counted, the opening's weight) travels in the export record.

On import a row is restored only when the hash of its text now is the recorded one (its chunks'
spans then lie where they did) and all its chunks are in the file: its chunks replace any it had,
its opening's vector becomes its own, and each distinct chunk text's vector joins the contents
the index is built on. Other rows are left out, named, and stay pending for encode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from psycopg import sql

from .chunks import OPENING, chunk_table_of, joined_text, keys_in, row_holds
from .contents import content_hash
from .db import Database
from .errors import BadInput
from .target import SearchTarget

# The chunk fields of a record, by role; each named so in the file unless a key column has the name.
FIELD_ROLES = ("chunk", "start", "end", "row_chunks", "chunk_hash", "row_hash")
# The chunking settings that travel with the vectors (the table names are the database's own).
CARRIED_CHUNKING = ("tokens", "overlap", "counting", "opening_weight")
# Rows a statement of the restore writes (their chunks with them), each batch its own transaction.
RESTORE_BATCH = 1000


def chunk_fields(key_columns: list[str]) -> dict[str, str]:
    """{role: the field's name in the file}: the role's name, or it with underscores until no key
    column (nor 'vector') has it."""
    fields, taken = {}, {*key_columns, "vector"}
    for role in FIELD_ROLES:
        name = role
        while name in taken:
            name += "_"
        fields[role] = name
        taken.add(name)
    return fields


# -- export ---------------------------------------------------------------------------------------


def export_record_part(target: SearchTarget, key_columns: list[str]) -> dict:
    """What the export record says of a chunked column: its chunking and the fields' names."""
    chunking = target.metadata["chunks"]
    if "hash" not in chunking["columns"]:
        raise BadInput(
            f"{target.display} was chunked by an earlier version; `vectorize.py encode` on it upgrades it (no model "
            "run) so that it can be exported"
        )
    return {
        "chunks": {k: chunking[k] for k in CARRIED_CHUNKING if k in chunking},
        "chunk_fields": chunk_fields(key_columns),
    }


def export_pages(db: Database, target: SearchTarget) -> tuple[sql.Composed, sql.Composed, int]:
    """The first and the later page of the chunks in (key, chunk) order, and how many leading
    fields bound a page (the key columns and the chunk number). Fields: the keys as text, the
    chunk number, start, end, the row's chunk count, the chunk's and the row's text hashes as
    text, then the vector. Only the chunks of rows that hold them (their text the text split)."""
    table, meta = target.table, target.metadata
    ct = chunk_table_of(table, meta["chunks"])
    c_keys = [sql.Identifier("c", k) for k in ct.keys]
    chunk = sql.Identifier("c", ct.chunk)
    holds = row_holds(ct, target.vector_column, meta["hash"]["column"])
    count = sql.SQL("(SELECT count(*) FROM {} AS o WHERE {} AND o.{} >= 0)").format(
        ct.ident,
        sql.SQL(" AND ").join(sql.SQL("o.{0} = c.{0}").format(sql.Identifier(k)) for k in ct.keys),
        sql.Identifier(ct.chunk),
    )
    fields = sql.SQL(", ").join(
        [
            *(sql.SQL("CAST({} AS text)").format(k) for k in c_keys),
            chunk,
            sql.Identifier("c", ct.start),
            sql.Identifier("c", ct.end),
            count,
            sql.SQL("CAST({} AS text)").format(sql.Identifier("c", ct.hash)),
            sql.SQL("CAST({} AS text)").format(sql.Identifier("c", ct.row_hash)),
            db.dialect.exported_vector(sql.Identifier("c", ct.vector)),
        ]
    )
    select = sql.SQL("SELECT {} FROM {} AS c JOIN {} AS t ON {}").format(fields, ct.ident, table.ident, holds)
    order = sql.SQL(" ORDER BY {}, {} LIMIT %s").format(sql.SQL(", ").join(c_keys), chunk)
    typed = [sql.SQL("CAST(%s AS {})").format(sql.SQL(t)) for t in ct.key_types] + [sql.SQL("CAST(%s AS int4)")]
    after = sql.SQL(" WHERE ({}, {}) > ({})").format(sql.SQL(", ").join(c_keys), chunk, sql.SQL(", ").join(typed))
    return select + order, select + after + order, len(ct.keys) + 1


def chunk_rows_estimate(db: Database, target: SearchTarget) -> int:
    """The chunk table's rows as the planner knows them (for progress), or 0."""
    ct = chunk_table_of(target.table, target.metadata["chunks"])
    found = db.fetchone(
        "SELECT c.reltuples FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (ct.schema, ct.name),
    )
    return max(0, int(found[0] or 0)) if found else 0


# -- import ---------------------------------------------------------------------------------------


@dataclass
class ChunkRestore:
    """What an import of chunks did to the rows: restored, left out because their text changed
    since the export (named), or because not all their chunks were in the file."""

    rows: int = 0
    changed: int = 0
    changed_keys: list[tuple] = field(default_factory=list)
    incomplete: int = 0
    chunks: int = 0


def staging_columns(fields: dict[str, str]) -> list[tuple[str, str]]:
    """The scratch keys table's chunk columns (file field name, type), in the file's order."""
    types = {"chunk": "INT4", "start": "INT4", "end": "INT4", "row_chunks": "INT8", "chunk_hash": "UUID"}
    return [(fields[role], types.get(role, "UUID")) for role in FIELD_ROLES]


def add_staging_columns(staging_keys: sql.Identifier, fields: dict[str, str]) -> list[sql.Composed]:
    if not fields:
        return []
    return [
        sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(staging_keys, sql.Identifier(name), sql.SQL(kind))
        for name, kind in staging_columns(fields)
    ]


class Restorer:
    """The statements that check and restore a file's chunks from the scratch tables (keys and
    chunk fields s, vectors v by line) into the column's chunk table and the user's table t."""

    def __init__(self, target, staging_keys: sql.Identifier, staging_vectors: sql.Identifier, fields: dict[str, str]):
        self.target, self.table = target, target.table
        self.ct = chunk_table_of(self.table, target.chunks)
        self.s, self.v = staging_keys, staging_vectors
        self.f = {role: sql.Identifier(name) for role, name in fields.items()}
        self.keys = [sql.Identifier(k) for k in self.table.primary_key]
        self.key_types = [self.table.columns[k].type_sql for k in self.table.primary_key]

    def same_row(self, a: str, b: str) -> sql.Composed:
        """Rows a and b have the same key."""
        a, b = sql.Identifier(a), sql.Identifier(b)
        return sql.SQL(" AND ").join(sql.SQL("{0}.{2} = {1}.{2}").format(a, b, k) for k in self.keys)

    def opening(self, alias: str = "s") -> sql.Composed:
        return sql.SQL("{}.{} = {}").format(sql.Identifier(alias), self.f["chunk"], sql.SQL(str(int(OPENING))))

    def drop_incomplete(self, db: Database) -> int:
        """Leave out the rows whose opening or some of whose chunks are not in the file (a file
        cut short, damaged chunks skipped); returns how many rows."""
        rows = sql.SQL(", ").join(sql.SQL("s.{}").format(k) for k in self.keys)
        found = sql.SQL(
            "SELECT {rows} FROM {s} AS s GROUP BY {rows} HAVING sum(CASE WHEN {opening} THEN 1 ELSE 0 END) <> 1"
            " OR sum(CASE WHEN s.{chunk} >= 0 THEN 1 ELSE 0 END) <> max(s.{count})"
        ).format(rows=rows, s=self.s, opening=self.opening(), chunk=self.f["chunk"], count=self.f["row_chunks"])
        incomplete = sql.SQL("SELECT count(*) FROM ({}) AS i").format(found)
        count = db.fetchone(incomplete)[0]
        if count:
            db.command(
                sql.SQL("DELETE FROM {} AS s WHERE ({}) IN ({})").format(
                    self.s, sql.SQL(", ").join(sql.SQL("s.{}").format(k) for k in self.keys), found
                )
            )
        return count

    def texts_page(self) -> tuple[sql.Composed, sql.Composed]:
        """The rows to restore a page at a time, in key order: their keys as text, the recorded
        hash of their text, and their sources' text now."""
        s_keys = [sql.SQL("s.{}").format(k) for k in self.keys]
        select = sql.SQL("SELECT {}, CAST(s.{} AS text), {} FROM {} AS s JOIN {} AS t ON {} WHERE {}").format(
            sql.SQL(", ").join(sql.SQL("CAST({} AS text)").format(k) for k in s_keys),
            self.f["row_hash"],
            sql.SQL(", ").join(sql.SQL("CAST(t.{} AS text)").format(sql.Identifier(c)) for c in self.target.sources),
            self.s,
            self.table.ident,
            self.same_row("t", "s"),
            self.opening(),
        )
        order = sql.SQL(" ORDER BY {} LIMIT %s").format(sql.SQL(", ").join(s_keys))
        typed = sql.SQL(", ").join(sql.SQL("CAST(%s AS {})").format(sql.SQL(t)) for t in self.key_types)
        after = sql.SQL(" AND ({}) > ({})").format(sql.SQL(", ").join(s_keys), typed)
        return select + order, select + after + order

    def drop_changed(self, db: Database, restore: ChunkRestore, page: int = 5000) -> None:
        """Leave out the rows whose text is not the text that was split: their recorded hash is
        not the hash of their text now (computed as encode computes it)."""
        first, later = self.texts_page()
        nkeys, prefix = len(self.keys), self.target.prefix
        last: tuple = ()
        while True:
            rows = db.fetchall(later if last else first, (*last, page))
            changed = [r[:nkeys] for r in rows if str(content_hash(prefix + joined_text(r[nkeys + 1 :]))) != r[nkeys]]
            if changed:
                restore.changed += len(changed)
                restore.changed_keys += changed[: 10 - len(restore.changed_keys)]
                self.delete_rows(db, changed)
            if len(rows) < page:
                return
            last = tuple(rows[-1][:nkeys])

    def delete_rows(self, db: Database, keys: list[tuple]) -> None:
        columns = [list(k) for k in zip(*keys, strict=True)]
        db.command(
            sql.SQL("DELETE FROM {} AS s WHERE {}").format(
                self.s, keys_in(sql.Identifier("s"), self.table.primary_key, self.key_types)
            ),
            columns,
        )

    def in_batch(self, alias: str, bounds: tuple[tuple, tuple]) -> tuple[sql.Composed, tuple]:
        """The rows of alias within a batch's bounds, and the parameters."""
        keys = sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(alias), k) for k in self.keys)
        typed = sql.SQL(", ").join(sql.SQL("CAST(%s AS {})").format(sql.SQL(t)) for t in self.key_types)
        parts, params = [], []
        after, upto = bounds
        if after:
            parts.append(sql.SQL("({}) > ({})").format(keys, typed))
            params += after
        if upto:
            parts.append(sql.SQL("({}) <= ({})").format(keys, typed))
            params += upto
        return sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE"), tuple(params)

    def batch_statements(self, bounds) -> tuple[list[sql.Composed], tuple]:
        """A batch's statements, each taking the batch's parameters: delete the rows' chunks,
        insert the file's (the prefix columns of the vector index copied from the row), and set
        each row's own vector and text hash from its opening."""
        ct, f = self.ct, self.f
        s_in, params = self.in_batch("s", bounds)
        delete = sql.SQL("DELETE FROM {} AS c WHERE EXISTS (SELECT 1 FROM {} AS s WHERE {} AND {} AND {})").format(
            ct.ident, self.s, self.same_row("s", "c"), self.opening(), s_in
        )
        columns = (*ct.keys, *ct.prefix_columns, ct.chunk, ct.start, ct.end, ct.hash, ct.row_hash, ct.vector)
        values = [
            *(sql.SQL("s.{}").format(k) for k in self.keys),
            *(sql.SQL("t.{}").format(sql.Identifier(c)) for c in ct.prefix_columns),
            *(sql.SQL("s.{}").format(f[role]) for role in ("chunk", "start", "end", "chunk_hash", "row_hash")),
            sql.SQL("v.vec"),
        ]
        insert = sql.SQL(
            "INSERT INTO {} ({}) SELECT {} FROM {} AS s JOIN {} AS v ON v.line = s.line JOIN {} AS t ON {} WHERE {}"
        ).format(
            ct.ident,
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(values),
            self.s,
            self.v,
            self.table.ident,
            self.same_row("t", "s"),
            s_in,
        )
        update = sql.SQL(
            "UPDATE {} AS t SET {} = v.vec, {} = s.{} FROM {} AS s JOIN {} AS v ON v.line = s.line"
            " WHERE {} AND {} AND {}"
        ).format(
            self.table.ident,
            sql.Identifier(self.target.vector_column),
            sql.Identifier(self.target.hash["column"]),
            f["row_hash"],
            self.s,
            self.v,
            self.same_row("t", "s"),
            self.opening(),
            s_in,
        )
        return [delete, insert, update], params

    def restore_batch(self, db: Database, bounds) -> tuple[int, int]:
        """One batch in one transaction; returns (rows, chunks) written."""
        (delete, insert, update), params = self.batch_statements(bounds)

        def work(conn):
            with conn.transaction():
                conn.execute(delete, params)
                chunks = conn.execute(insert, params).rowcount
                rows = conn.execute(update, params).rowcount
            return rows, chunks

        return db.run(work)  # idempotent: the delete makes a rerun of the batch write the same

    def restore(self, db: Database, restore: ChunkRestore, tell: Callable[[int], None], ranges) -> None:
        """Each range of rows (after, up to: their openings' keys, RESTORE_BATCH a range) in a batch."""
        for bounds in ranges:
            rows, chunks = self.restore_batch(db, bounds)
            restore.rows += rows
            restore.chunks += chunks
            tell(restore.rows)


def check_chunking(display: str, existing: dict | None, carried: dict) -> None:
    """An existing column takes chunks only made the same way (else its rows would be ranked by
    chunks of two sizes)."""
    if existing is None:
        return
    if not existing.get("chunks"):
        raise BadInput(
            f"{display} holds one vector a row, without chunks; the file holds chunks (encode --chunk): import into "
            "another --vector-column"
        )
    mine = existing["chunks"]
    differ = [k for k in ("tokens", "overlap", "counting") if k in carried and mine.get(k) != carried[k]]
    if differ:
        said = ", ".join(f"{k} {carried[k]} (the column's: {mine.get(k)})" for k in differ)
        raise BadInput(f"{display} is chunked otherwise than the file's chunks: {said}")
