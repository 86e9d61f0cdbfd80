"""The encode loop: find pending rows -> encode -> conditional write.

Reads pending rows in primary-key (keyset) order, one page at a time, so memory is bounded by
the page and not the table. While the encoder works on one page, the next page is read and the
previous one written on their own connections, so database time hides behind the model. Each
page is written by one statement in its own short transaction; the write is conditional (the
row's text is still the text that was encoded and its vector is still NULL), hence idempotent
and safe to retry.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import psycopg
from psycopg import sql

from . import chunks, contents, names, tracking
from .chunks import chunk_table_of, joined_text
from .contents import content_hash
from .db import Database, index_exists
from .dialects import REPEATED_RATIO, is_blank, vector_value
from .errors import BadInput, DatabaseError, DatabaseUnavailable, EncoderError, Interrupted
from .output import plural
from .request import EncodeRequest
from .target import VectorTarget, resolve_for_encode

# Texts per encoder call: the unit of progress. Pages are sorted by length first, so chunking
# costs no extra padding.
ENCODE_CHUNK = 128


@dataclass
class EncodeResult:
    target: VectorTarget
    pending_before: int = 0
    written: int = 0
    skipped: int = 0  # rows changed (or filled by someone else) between read and write
    seconds: float = 0.0
    failed: int = 0  # rows the encoder could not encode (--on-error skip); they stay pending
    failed_keys: list[tuple] = field(default_factory=list)  # the first few of them
    failure: str = ""  # the first encoder error
    blank: int = 0  # rows whose text is empty or only whitespace: skipped, not sent to the model
    truncated: int = 0  # rows longer than the model's input limit
    chunks: int = 0  # chunks written (encode --chunk)
    repeats: int = 0  # texts (rows' and chunks') that took the vector of one encoded before: no model time
    unread_columns: int = 0  # rows whose later source columns the model never reached
    pending_after: int = 0  # rows pending when the run ended (changed, refused, or beyond --limit)
    busy_seconds: float = 0.0  # time spent filling (without --follow's idle polls)
    ended: str = ""  # why a --follow run ended
    column_created: bool = False
    index_created: bool = False
    index_note: str = ""  # why there is no vector index (too wide), or that the build outgrew its memory
    index_seconds: float = 0.0  # how long the index build took
    index_skipped: bool = False  # --index skip: build it later with `vectorize.py index`
    pending_elsewhere: int = 0  # --shard: rows other shards still have to do (index not built yet)
    tracking_installed: bool = False  # this run (re)installed the change-tracking trigger
    upgraded: int = 0  # rows of a column made by an earlier version keyed for its new index (no model)
    cleared: int = 0  # --reencode: vectors cleared before the fill
    fulltext_added: bool = False  # --fulltext made the tsvector column this run
    statements: list[str] = field(default_factory=list)  # --dry-run only

    @property
    def nothing_to_do(self) -> bool:
        return (
            self.pending_before == 0
            and self.written == 0
            and not self.skipped
            and not self.failed
            and not self.column_created
            and not self.index_created
            and not self.tracking_installed
            and not self.cleared
            and not self.fulltext_added
            and not self.upgraded
        )

    @property
    def rows_per_second(self) -> float:
        """Over the time spent encoding (--follow's idle polls left out)."""
        seconds = self.busy_seconds or self.seconds
        return self.written / seconds if seconds > 0 else 0.0


class FillQueries:
    """The statements of a fill, built once per target.

    Keys and source texts travel as text: each column's own output form, which its type reads
    back exactly (a real, a char(5), an enum, a domain, a user-defined type alike). Keys are
    compared in the key column's own type, so the primary key index finds the row; the source is
    compared as the text that was read, which is what the model saw.

    ``cut``: each source is read as its first ``cut`` characters (what the model can read of it,
    generously), so a long text costs neither transfer nor tokenizing; the write then compares
    that prefix. ``chunks``: whole texts are read (they are split), pages bounded by their bytes,
    and a row's chunks are written with its vector.
    """

    def __init__(self, target: VectorTarget, dialect, shard: tuple[int, int] | None = None, *, cut: int | None = None):
        t = target
        table = t.table
        self.cut = None if t.chunks else cut
        self.chunk_table = chunk_table_of(table, t.chunks) if t.chunks else None
        self.keys = [sql.Identifier(k) for k in table.primary_key]
        self.sources = [sql.Identifier(c) for c in t.sources]
        self.key_list = sql.SQL(", ").join(self.keys)
        self.vector = sql.Identifier(t.vector_column)
        key_types = [sql.SQL(table.columns[k].type_sql) for k in table.primary_key]
        t_keys = [sql.Identifier("t", k) for k in table.primary_key]
        # NULL, empty or only white space is no text: such rows are not sent to the model and
        # not pending, so a finished table stays finished.
        any_text = dialect.has_text(self.sources)
        any_value = sql.SQL(" OR ").join(sql.SQL("{} IS NOT NULL").format(c) for c in self.sources)
        self.pending = sql.SQL("{} IS NULL AND ({})").format(self.vector, any_text)
        pending = self.pending
        if shard is not None:
            pending = sql.SQL("{} AND {}").format(pending, dialect.shard_condition(self.keys, shard[1], shard[0] - 1))

        self.count = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table.ident, pending)
        self.count_all = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table.ident, self.pending)
        self.blank = sql.SQL("SELECT count(*) FROM {} WHERE {} IS NULL AND ({}) AND NOT coalesce({}, false)").format(
            table.ident, self.vector, any_value, any_text
        )
        t_sources = [self.read_text(sql.Identifier("t", s)) for s in t.sources]
        as_text = [sql.SQL("CAST({} AS text)").format(c) for c in t_keys] + t_sources
        after = sql.SQL(" AND ({}) > ({})").format(
            sql.SQL(", ").join(t_keys),
            sql.SQL(", ").join(sql.SQL("CAST(%s AS {})").format(kt) for kt in key_types),
        )
        # Ordered by the key columns themselves (qualified: not the text columns of the same name).
        order = sql.SQL(" ORDER BY {} LIMIT %s").format(sql.SQL(", ").join(t_keys))
        if self.chunk_table is None:
            select = sql.SQL("SELECT {} FROM {} AS t WHERE {}").format(
                sql.SQL(", ").join(as_text), table.ident, pending
            )
            self.first_page = select + order
            self.next_page = select + after + order
        else:
            self.first_page = self.page_by_bytes(table, pending, t_keys, t.sources, order, sql.SQL(""))
            self.next_page = self.page_by_bytes(table, pending, t_keys, t.sources, order, after)
        self.by_key = sql.SQL("SELECT {} FROM {} AS t WHERE {}").format(
            sql.SQL(", ").join(sql.SQL("CAST({} AS text)").format(sql.Identifier("t", s)) for s in t.sources),
            table.ident,
            sql.SQL(" AND ").join(
                sql.SQL("{} = CAST(%s AS {})").format(k, kt) for k, kt in zip(t_keys, key_types, strict=True)
            ),
        )

        key_aliases = [sql.Identifier(f"k{i}") for i in range(len(self.keys))]
        source_aliases = [sql.Identifier(f"s{i}") for i in range(len(self.sources))]
        d = sql.Identifier("d")
        matches = [
            sql.SQL("t.{} = CAST({} AS {})").format(key, sql.Composed([d, sql.SQL("."), alias]), kt)
            for key, alias, kt in zip(self.keys, key_aliases, key_types, strict=True)
        ]
        # The conditional write: the text is still what was encoded, the vector still NULL.
        unchanged = [
            sql.SQL("{} IS NOT DISTINCT FROM {}").format(
                self.read_text(sql.SQL("t.{}").format(column)),
                sql.Composed([d, sql.SQL("."), alias]),
            )
            for column, alias in zip(self.sources, source_aliases, strict=True)
        ]
        # Every array parameter says its type: an all-NULL column of a page is otherwise an
        # untyped literal that unnest() cannot resolve.
        arrays = [sql.SQL("CAST(%b AS text[])")] * (len(self.keys) + len(self.sources))
        arrays += [sql.SQL("CAST(%b AS uuid[])"), dialect.vectors_param()]
        self.hash_column = sql.Identifier(t.hash["column"])
        # The rows that took their vector come back: their contents are added (and a chunked
        # column's chunks replaced) in the same transaction.
        self.write = sql.SQL(
            "UPDATE {table} AS t SET {vector} = {value}, {hash} = d.vectorize_hash"
            " FROM unnest({params}) AS d({aliases}, vectorize_hash, vec)"
            " WHERE {matches} AND t.{vector} IS NULL AND {unchanged} RETURNING {returned}"
        ).format(
            table=table.ident,
            vector=self.vector,
            value=dialect.write_vectors_value(sql.SQL("d.vec")),
            hash=self.hash_column,
            params=sql.SQL(", ").join(arrays),
            aliases=sql.SQL(", ").join(key_aliases + source_aliases),
            matches=sql.SQL(" AND ").join(matches),
            unchanged=sql.SQL(" AND ").join(unchanged),
            returned=sql.SQL(", ").join(sql.SQL("CAST({} AS text)").format(k) for k in t_keys),
        )
        self.contents = t.content_table
        won = chunks.keys_in(
            sql.Identifier("h"), table.primary_key, [c.type_sql for c in map(table.columns.get, table.primary_key)]
        )
        self.holders = contents.Holders(
            table.ident, t.hash["column"], t.vector_column, sql.SQL("h.{} IS NOT NULL").format(self.vector)
        )
        if self.chunk_table is not None:
            ct = self.chunk_table
            self.holders = contents.Holders(ct.ident, ct.hash, ct.vector)
            self.delete_chunks = chunks.delete_rows(ct)
            self.insert_chunks = chunks.insert_chunks(ct, table, dialect)
            self.delete_stale = chunks.delete_stale(ct, table, t.vector_column, t.hash["column"])
            self.requeue_unchunked = chunks.requeue_unchunked(ct, table, t.vector_column, t.hash["column"])
            # A row's own vector, by the hash of its whole text (another row with the same text).
            self.known_rows = sql.SQL(
                "SELECT h.vectorize_hash, v.{vector} FROM unnest(CAST(%b AS uuid[])) AS h(vectorize_hash)"
                " CROSS JOIN LATERAL (SELECT t.{vector} FROM {table} AS t WHERE t.{hash} = h.vectorize_hash"
                " AND t.{vector} IS NOT NULL LIMIT 1) AS v"
            ).format(vector=self.vector, table=table.ident, hash=self.hash_column)
        # Upgrading a column made before contents tables: rows with a vector and no hash, in key
        # order, keyed by their vector's hash (and their chunks by theirs) a batch at a time.
        unhashed = sql.SQL("SELECT {} FROM {} AS t WHERE t.{} IS NOT NULL AND t.{} IS NULL").format(
            sql.SQL(", ").join(sql.SQL("CAST({} AS text)").format(k) for k in t_keys),
            table.ident,
            self.vector,
            self.hash_column,
        )
        self.unhashed = unhashed + order
        self.unhashed_after = unhashed + after + order
        self.hash_rows = sql.SQL("UPDATE {} AS t SET {} = {} WHERE {} AND t.{} IS NULL").format(
            table.ident,
            self.hash_column,
            contents.vector_hash(sql.SQL("t.{}").format(self.vector)),
            chunks.keys_in(
                sql.Identifier("t"), table.primary_key, [table.columns[k].type_sql for k in table.primary_key]
            ),
            self.hash_column,
        )
        if self.chunk_table is not None:
            ct = self.chunk_table
            self.hash_chunks = sql.SQL(
                "UPDATE {chunks} AS c SET {hash} = {vector_hash}, {row_hash} = t.{row} FROM {table} AS t"
                " WHERE {match} AND {keys_in}"
            ).format(
                chunks=ct.ident,
                hash=sql.Identifier(ct.hash),
                vector_hash=contents.vector_hash(sql.SQL("c.{}").format(sql.Identifier(ct.vector))),
                row_hash=sql.Identifier(ct.row_hash),
                row=self.hash_column,
                table=table.ident,
                match=chunks.key_matches(ct, "t", "c"),
                keys_in=chunks.keys_in(sql.Identifier("c"), ct.keys, ct.key_types),
            )
        self.add_contents = contents.upsert(self.contents, self.holders, won)
        self.known = contents.known_vectors(self.contents)
        # Run before a fill, in order (see tidy()).
        self.tidy = [self.requeue_unchunked, self.delete_stale] if self.chunk_table is not None else []
        self.tidy += contents.sweep_statements(self.contents, self.holders)
        if t.prefix_columns:
            # A row whose prefix value changed holds its content under the new value too.
            self.tidy.append(
                contents.upsert(self.contents, self.holders, contents.missing(self.contents, self.holders))
            )

    def read_text(self, column: sql.Composable) -> sql.Composable:
        """A source column as the fill reads it: its text, or the first `cut` characters of it."""
        text = sql.SQL("CAST({} AS text)").format(column)
        if self.cut is None:
            return text
        return sql.SQL("left({}, {})").format(text, sql.Literal(int(self.cut)))

    def page_by_bytes(self, table, pending, t_keys, sources, order, after) -> sql.Composed:
        """Pending rows in key order, at most n (a parameter) and as many as fit `budget` bytes of
        text (the next parameter), the first row always; each row ends with how many rows the
        page could have held, so the reader knows whether the table has more."""
        originals = [sql.SQL("{} AS {}").format(k, sql.Identifier(f"o{i}")) for i, k in enumerate(t_keys)]
        texts = [
            sql.SQL("{} AS {}").format(sql.Identifier("t", s), sql.Identifier(f"x{i}")) for i, s in enumerate(sources)
        ]
        inner = sql.SQL("SELECT {} FROM {} AS t WHERE {}").format(
            sql.SQL(", ").join(originals + texts), table.ident, pending
        )
        inner = inner + after + order
        o = [sql.Identifier("p", f"o{i}") for i in range(len(t_keys))]
        x = [sql.Identifier("p", f"x{i}") for i in range(len(sources))]
        size = sql.SQL(" + ").join(sql.SQL("coalesce(octet_length(CAST({} AS text)), 0)").format(c) for c in x)
        keys_order = sql.SQL(", ").join(o)
        middle = sql.SQL(
            "SELECT {keys}, {texts}, {o}, sum({size}) OVER (ORDER BY {order}) AS vectorize_bytes,"
            " {size} AS vectorize_row_bytes, count(*) OVER () AS vectorize_rows FROM ({inner}) AS p"
        ).format(
            keys=sql.SQL(", ").join(
                sql.SQL("CAST({} AS text) AS {}").format(c, sql.Identifier(f"k{i}")) for i, c in enumerate(o)
            ),
            texts=sql.SQL(", ").join(
                sql.SQL("CAST({} AS text) AS {}").format(c, sql.Identifier(f"s{i}")) for i, c in enumerate(x)
            ),
            o=sql.SQL(", ").join(o),
            size=size,
            order=keys_order,
            inner=inner,
        )
        return sql.SQL(
            "SELECT {keys}, {texts}, m.vectorize_rows FROM ({middle}) AS m"
            " WHERE m.vectorize_bytes - m.vectorize_row_bytes < %s ORDER BY {order}"
        ).format(
            keys=sql.SQL(", ").join(sql.Identifier("m", f"k{i}") for i in range(len(t_keys))),
            texts=sql.SQL(", ").join(sql.Identifier("m", f"s{i}") for i in range(len(sources))),
            middle=middle,
            order=sql.SQL(", ").join(sql.Identifier("m", f"o{i}") for i in range(len(t_keys))),
        )


class PageReader:
    """Pending rows in key order, page by page; remembers where it stopped. A chunked fill's
    pages also stop at PAGE_BYTES of text (one row at least)."""

    def __init__(self, db: Database, queries: FillQueries, page_size: int, limit: int | None):
        self.db = db
        self.q = queries
        self.page_size = page_size
        self.remaining = limit
        self.last_key: tuple | None = None
        self.done = False
        self.by_bytes = queries.chunk_table is not None

    def next_page(self) -> list[tuple]:
        if self.done or self.remaining == 0:
            return []
        n = self.page_size if self.remaining is None else min(self.page_size, self.remaining)
        budget = (chunks.PAGE_BYTES,) if self.by_bytes else ()
        if self.last_key is None:
            rows = self.db.fetchall(self.q.first_page, (n, *budget))
        else:
            rows = self.db.fetchall(self.q.next_page, (*self.last_key, n, *budget))
        # The table has no more pending rows when it gave fewer than asked for: before the byte
        # budget of a chunked fill, and the budget kept none of them back.
        seen = rows[0][-1] if self.by_bytes and rows else len(rows)
        if self.by_bytes:
            rows = [row[:-1] for row in rows]
        if seen < n and len(rows) == seen:
            self.done = True
        if rows:
            self.last_key = tuple(rows[-1][: len(self.q.keys)])
            if self.remaining is not None:
                self.remaining -= len(rows)
        return rows


def key_columns(rows: list[tuple], nkeys: int) -> list[list]:
    """The keys of rows (or of keys), one list a key column: unnest()'s text arrays."""
    return [[row[i] for row in rows] for i in range(nkeys)]


def write_page(
    db: Database, queries: FillQueries, dialect, rows: list[tuple], vectors: np.ndarray, hashes: list
) -> int:
    """The rows' vectors and hashes, then the contents they hold that the contents table lacks,
    in one transaction (retried whole: it is idempotent)."""
    nkeys = len(queries.keys)
    columns = key_columns(rows, nkeys + len(queries.sources))
    params = (*columns, hashes, dialect.vectors_array(vectors))

    def write(conn) -> int:
        with conn.transaction():
            won = conn.execute(queries.write, params).fetchall()
            if won:
                conn.execute(queries.add_contents, key_columns(won, nkeys))
            return len(won)

    return db.run(write)


# Chunks per INSERT statement of a page's write (all in the page's one transaction).
CHUNKS_PER_INSERT = 2048


@dataclass
class PageChunks:
    """A page's chunks: whose row (index into the page), number, start, end, content hash, and
    the vectors."""

    owners: list[int] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    hashes: list = field(default_factory=list)
    vectors: np.ndarray | None = None


@dataclass
class ChunkedPage:
    """What a chunked page's write needs: each row's own vector and the hash of its whole text,
    and its chunks."""

    vectors: np.ndarray
    row_hashes: list
    chunks: PageChunks


def write_chunked_page(
    db: Database, queries: FillQueries, dialect, rows: list[tuple], page: ChunkedPage
) -> tuple[int, int]:
    """The rows' vectors and their chunks, in one transaction: only rows whose text is still the
    text that was split and whose vector is still NULL take theirs, and only their old chunks are
    replaced by the new; then the contents of the new chunks. Retried whole on a transient
    failure (it is all or nothing). Returns the rows and the chunks written."""
    nkeys = len(queries.keys)
    columns = key_columns(rows, nkeys + len(queries.sources))
    params = (*columns, page.row_hashes, dialect.vectors_array(page.vectors))
    chunked = page.chunks

    def write(conn) -> tuple[int, int]:
        with conn.transaction():
            won = {tuple(r) for r in conn.execute(queries.write, params).fetchall()}
            if not won:
                return 0, 0
            keys = [tuple(row[:nkeys]) for row in rows]
            done = [key for key in keys if key in won]
            conn.execute(queries.delete_chunks, key_columns(done, nkeys))
            chosen = [c for c, owner in enumerate(chunked.owners) if keys[owner] in won]
            everything = len(chosen) == len(chunked.owners)
            # In slices: the statement's parameters stay small however many chunks a row has.
            for first in range(0, len(chosen), CHUNKS_PER_INSERT):
                part = chosen[first : first + CHUNKS_PER_INSERT]
                vectors_part = chunked.vectors[part[0] : part[-1] + 1] if everything else chunked.vectors[part]
                conn.execute(
                    queries.insert_chunks,
                    (
                        *([keys[chunked.owners[c]][i] for c in part] for i in range(nkeys)),
                        [chunked.numbers[c] for c in part],
                        [chunked.starts[c] for c in part],
                        [chunked.ends[c] for c in part],
                        [chunked.hashes[c] for c in part],
                        [page.row_hashes[chunked.owners[c]] for c in part],
                        dialect.vectors_array(vectors_part),
                    ),
                )
            conn.execute(queries.add_contents, key_columns(done, nkeys))
            return len(won), len(chosen)

    return db.run(write)


def document_text(target: VectorTarget, parts) -> str:
    """What the model reads for a row: the prefix, then the source texts that hold any."""
    return target.prefix + joined_text(parts)


class ChunkFailed(Exception):
    def __init__(self, indices: list[int], error: EncoderError):
        super().__init__(str(error))
        self.indices = indices
        self.error = error


def encode_page(encoder, target: VectorTarget, texts: list[str], on_chunk=None, skip_failures=False):
    """Vectors for texts in their order, the indices of texts that could not be encoded, and
    the first error.

    Texts go to the model shortest first, in chunks of ENCODE_CHUNK: as little padding as one
    call for the whole page, and progress between chunks. With skip_failures, a chunk the
    encoder refuses is split until the texts it refuses are found: only those stay pending.
    """
    vectors = np.zeros((len(texts), target.dimension), dtype=np.float32)
    failed: list[int] = []
    error = None
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), ENCODE_CHUNK):
        chunk = order[start : start + ENCODE_CHUNK]
        try:
            vectors[chunk] = encode_chunk(encoder, target, [texts[i] for i in chunk])
        except EncoderError as exc:
            if not skip_failures:
                raise ChunkFailed(chunk, exc) from exc
            refused = isolate_failures(encoder, target, texts, chunk, vectors)
            failed.extend(refused)
            error = error or exc
        if on_chunk is not None:
            on_chunk(len(chunk))
    return vectors, failed, error


def isolate_failures(encoder, target: VectorTarget, texts: list[str], chunk: list[int], vectors) -> list[int]:
    """Encode a refused chunk in halves, recursively: fills vectors for the texts that encode and
    returns the indices of those the encoder refuses on their own."""
    if len(chunk) == 1:
        return chunk
    refused = []
    middle = len(chunk) // 2
    for half in (chunk[:middle], chunk[middle:]):
        try:
            vectors[half] = encode_chunk(encoder, target, [texts[i] for i in half])
        except EncoderError:
            refused += isolate_failures(encoder, target, texts, half, vectors)
    return refused


def encode_chunk(encoder, target: VectorTarget, texts: list[str]) -> np.ndarray:
    try:
        vectors = np.asarray(encoder.encode(texts), dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - any encoder failure is reported the same way
        raise EncoderError(f"model {target.model!r} failed: {type(exc).__name__}: {exc}") from exc
    if vectors.shape != (len(texts), target.dimension):
        raise EncoderError(
            f"model {target.model!r} returned an array of shape {vectors.shape} "
            f"for {len(texts)} texts; expected ({len(texts)}, {target.dimension})"
        )
    return vectors


def set_up_columns(db: Database, target: VectorTarget) -> None:
    """Make the vector column, its metadata, the full-text column and the chunk table exist: all
    or nothing where DDL is transactional (PostgreSQL). Elsewhere (CockroachDB: one DDL statement
    a transaction) the metadata comes right after the column, and a rerun makes what is missing:
    a half-made setup is finished, never left for nobody to repair."""
    statements = column_statements(db, target)
    if not statements:
        return
    for attempt in range(SETUP_ATTEMPTS):
        try:
            if not db.dialect.ddl_in_transaction:
                for statement in statements:
                    run_ddl(db, statement)
            else:
                run_in_transaction(db, statements)
            db.forget_catalog()
            return
        except DatabaseError as exc:
            # Another encoder of the same column made the same table or index a moment before
            # (IF NOT EXISTS is not proof against that): it is there now, and the names are the
            # same (see names.own_or_free), so the statements pass when run again.
            if exc.sqlstate not in CONCURRENT_DDL or attempt + 1 == SETUP_ATTEMPTS:
                where = "" if not db.dialect.ddl_in_transaction else "; nothing was changed"
                raise DatabaseError(f"{exc} (setting up {target.display}{where})", exc.sqlstate) from None


# Two encoders setting up one column at once: a unique violation in the catalog, a duplicate
# table or object. The setup is run again, up to SETUP_ATTEMPTS times.
CONCURRENT_DDL = {"23505", "42P07", "42710"}
SETUP_ATTEMPTS = 3


def column_statements(db: Database, target: VectorTarget) -> list[sql.Composable]:
    """DDL that makes the vector column (and the full-text column, the chunk table) exist with its
    metadata (empty when they already do). The metadata comes right after the column: a rerun
    then knows the column for its own."""
    dialect = db.dialect
    statements = []
    if not target.column_exists:
        statements.append(dialect.add_vector_column(target.table.ident, target.vector_column, target.dimension))
    if target.needs_comment:
        statements.append(dialect.comment_on_column(target.table.ident, target.vector_column, target.metadata_json()))
    if target.fulltext and target.fulltext["column"] not in target.table.columns:
        statements.append(
            dialect.fulltext_column(
                target.table.ident, target.fulltext["column"], target.fulltext["language"], list(target.sources)
            )
        )
    statements += dialect.fulltext_upgrade(target.table, target.fulltext, list(target.sources))  # bound an old one
    statements += content_statements(db, target)
    return statements


def content_statements(db: Database, target: VectorTarget) -> list[sql.Composable]:
    """The hash column and its index, the contents table, the chunk table and its hash index that
    the catalog lacks: the indexes encode looks texts up by, made before the fill."""
    table, catalog = target.table, db.catalog()
    hash_column = target.hash["column"]
    statements = []
    if hash_column not in table.columns:
        statements.append(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} UUID").format(table.ident, sql.Identifier(hash_column))
        )
        # Tagged as the tool's: a rerun (or another encoder started at the same time) knows it.
        tag = names.relation_tag(table.schema, table.name, target.vector_column, "hash")
        statements.append(db.dialect.comment_on_column(table.ident, hash_column, tag))
    if not catalog.index_exists(table, target.hash["index"]):
        statements.append(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({}) WHERE {} IS NOT NULL").format(
                sql.Identifier(target.hash["index"]),
                table.ident,
                sql.Identifier(hash_column),
                sql.Identifier(hash_column),
            )
        )
    content_table = target.content_table
    if catalog.relation_owner(table.schema, content_table.name) is None:
        tag = names.relation_tag(table.schema, table.name, target.vector_column, "contents")
        statements += [
            contents.create_table(content_table, target.dimension),
            comment_on_table(content_table.ident, tag),
        ]
    if target.chunks:
        chunk_table = chunk_table_of(table, target.chunks)
        if catalog.relation_owner(table.schema, chunk_table.name) is None:
            tag = names.relation_tag(table.schema, table.name, target.vector_column, "chunks")
            statements += [chunks.create_table(chunk_table, target.dimension), comment_on_table(chunk_table.ident, tag)]
        elif "hash" not in (((target.existing_metadata or {}).get("chunks") or {}).get("columns") or {}):
            statements += chunks.add_hash_columns(chunk_table)  # a chunk table an earlier version made
        if not catalog.index_exists(chunk_table, chunk_table.hash_index):
            statements.append(chunks.create_hash_index(chunk_table))
    return statements


def comment_on_table(table: sql.Composable, text: str) -> sql.Composed:
    return sql.SQL("COMMENT ON TABLE {} IS {}").format(table, sql.Literal(text))


def named_indexes(
    db: Database, target: VectorTarget, queries: FillQueries, dense: bool = False
) -> list[tuple[sql.Composable, str, str]]:
    """(CREATE INDEX statement, index name, table name): the pending-rows index, then the vector
    index when an index can hold vectors of this size (on the column's contents table). The first
    does not wait on the second."""
    indexes = [
        # Pending rows, by key: finding them costs in proportion to them, not to the table.
        (
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({}) WHERE {}").format(
                sql.Identifier(target.pending_index_name), target.table.ident, queries.key_list, queries.pending
            ),
            target.pending_index_name,
            target.table.name,
        )
    ]
    if target.fulltext:
        indexes.append(
            (
                db.dialect.fulltext_index(target.table.ident, target.fulltext["index"], target.fulltext["column"]),
                target.fulltext["index"],
                target.table.name,
            )
        )
    if target.index_type is not None:
        ct = target.content_table
        statement = db.dialect.create_index(
            ct.ident, target.index_name, ct.vector, target.metric, target.prefix_columns, target.dimension, dense
        )
        indexes.append((statement, target.index_name, ct.name))
    return indexes


def index_statements(db: Database, target: VectorTarget, queries: FillQueries) -> list[sql.Composable]:
    return [*db.dialect.index_build_settings(), *(s for s, _, _ in named_indexes(db, target, queries))]


# Memory for an HNSW build when the graph's size is not known, and the most "auto" asks for (an
# explicit --index-memory may ask for more): maintenance_work_mem is taken as the graph grows.
DEFAULT_INDEX_MEMORY = 1 << 30
MAX_AUTO_INDEX_MEMORY = 8 << 30


@dataclass
class IndexProgress:
    """What on_index(progress) is told while the indexes are built."""

    index: str
    phase: str  # 'started', the engine's phase ('building index: loading tuples', ...), 'done'
    done: int = 0
    total: int = 0
    seconds: float = 0.0


def rows_with_vectors(db: Database, target: VectorTarget) -> int:
    """The vectors the index will hold: the distinct contents."""
    return db.fetchone(sql.SQL("SELECT count(*) FROM {}").format(target.content_table.ident))[0]


def repeats(db: Database, queries: FillQueries, contents: int) -> bool:
    """Whether the column's text repeats: its rows with a vector (or its chunks) are at least
    REPEATED_RATIO times its distinct contents (then the vector index is a denser graph)."""
    if not contents:
        return False
    live = sql.SQL(" WHERE {}").format(queries.holders.live) if queries.holders.live is not None else sql.SQL("")
    held = db.fetchone(sql.SQL("SELECT count(*) FROM {} AS h{}").format(queries.holders.ident, live))[0]
    return held >= REPEATED_RATIO * contents


def index_memory(db: Database, target: VectorTarget, memory: int | None, rows: int, dense: bool = False) -> int:
    """The build's memory: as asked, else room for the graph of the rows that have vectors."""
    if memory:
        return memory
    estimate = db.dialect.index_memory_estimate(rows, target.dimension, dense) if target.index_type else 0
    return min(MAX_AUTO_INDEX_MEMORY, max(DEFAULT_INDEX_MEMORY, int(estimate * 1.25)))


class IndexMonitor:
    """Reads the build's progress from a second connection while it runs, every `every` seconds."""

    def __init__(self, db: Database, pid: int, name: str, on_index, rows: int, every: float = 0.5):
        self.db, self.pid, self.name, self.on_index, self.every = db.clone(), pid, name, on_index, every
        self.rows = rows  # the total when the engine counts tuples without one
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watch, name="vectorize-index-progress", daemon=True)
        self.started = time.monotonic()

    def __enter__(self):
        self.on_index(IndexProgress(self.name, "started"))
        self.thread.start()
        return self

    def watch(self):
        while not self.stop.wait(self.every):
            try:
                seen = self.db.dialect.index_progress(self.db, self.pid, self.name)
            except Exception:  # noqa: BLE001 - progress is a courtesy; the build decides success
                return
            if seen is not None:
                phase, done, total = seen
                total = total or (self.rows if "tuples" in phase else 0)
                self.on_index(IndexProgress(self.name, phase, done, total, time.monotonic() - self.started))

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.db.close()
        if exc[0] is None:
            self.on_index(IndexProgress(self.name, "done", seconds=time.monotonic() - self.started))
        return False


def create_indexes(
    db: Database, target: VectorTarget, queries: FillQueries, *, on_index=None, memory: int | None = None
) -> list[str]:
    """Build the pending-rows, full-text and vector indexes that are missing; returns what the
    engine said along the way (pgvector's notice that the graph outgrew its memory)."""
    rows = rows_with_vectors(db, target)
    dense = repeats(db, queries, rows)
    memory = index_memory(db, target, memory, rows, dense) if db.dialect.name == "postgresql" else None
    settings = db.dialect.index_build_settings(memory)
    catalog = db.catalog()
    named = [
        (statement, name, table_name)
        for statement, name, table_name in named_indexes(db, target, queries, dense)
        if catalog.relation_owner(target.table.schema, name) != table_name
    ]
    notices: list[str] = []

    def create(conn):
        # One connection for all: the session settings must hold for the CREATE INDEX.
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        for statement in settings:
            conn.execute(statement)
        for statement, name, table_name in named:
            try:
                if on_index is None:
                    conn.execute(statement)
                else:
                    with IndexMonitor(db, conn.info.backend_pid, name, on_index, rows):
                        conn.execute(statement)
            except psycopg.errors.UniqueViolation:
                # Another encoder on this table created the same index a moment before us: its
                # catalog row won the race (it has committed by the time this error is raised).
                if not index_exists(conn, target.table.schema, table_name, name):
                    raise

    try:
        db.run(create)
    except DatabaseError as exc:
        raise DatabaseError(f"{exc} (while creating the indexes of {target.display})") from None
    db.forget_catalog()
    # IF NOT EXISTS succeeds quietly when the name belongs to another table's index: never claim
    # an index this table does not have.
    made = dict(
        db.fetchall(
            "SELECT indexname, tablename FROM pg_catalog.pg_indexes WHERE schemaname = %s AND indexname = ANY(%s)",
            (target.table.schema, [name for _, name, _ in named]),
        )
    )
    for _, name, table_name in named:
        if made.get(name) != table_name:
            raise DatabaseError(
                f"index {name} was not created on {target.table.schema}.{table_name}: the name is taken"
            )
    outgrown = [n for n in notices if "no longer fits" in n]
    if outgrown and memory:
        rows_fitted = outgrown[0]
        return [f"{rows_fitted} (maintenance_work_mem {memory >> 20} MB); --index-memory with more would be faster"]
    return []


def run_ddl(db: Database, statement: sql.Composable) -> None:
    """One statement per implicit transaction (CockroachDB commits open transactions before
    DDL). Every statement vectorize issues is idempotent (IF NOT EXISTS, COMMENT, CREATE OR
    REPLACE), so a dropped connection is retried like any other."""
    try:
        db.command(statement, retry=True)
    except DatabaseError as exc:
        raise DatabaseError(f"{exc} (while running: {db.as_string(statement)})", exc.sqlstate) from None


def ensure_extension(db: Database) -> None:
    """Make the vector type (and on CockroachDB before v25.4 its index feature) available, or
    stop before anything is encoded, saying what an administrator must run."""
    if db.dialect.name == "postgresql" and "vector" in db.catalog().extensions:
        return  # installed: nothing to ask of the server
    db.forget_catalog()
    for statement in db.dialect.setup_statements():
        try:
            db.command(statement)
        except DatabaseError as exc:
            if db.dialect.vector_ready(db):
                continue  # done by someone else (another encoder at the same moment, an admin)
            raise DatabaseError(
                f"{exc}; vectorize needs this done once by an administrator: `{db.as_string(statement)}`"
            ) from None
    if db.dialect.name == "postgresql":
        from .db import register_pgvector

        register_pgvector(db.connection(), db.url)


def encode(
    db: Database,
    request: EncodeRequest | None = None,
    *,
    stop: threading.Event | None = None,
    interrupt: threading.Event | None = None,
    progress=None,
    on_round=None,
    on_index=None,
    **options,
) -> EncodeResult:
    """Carry out an EncodeRequest (or one built from keyword options, the request's fields):
    add, fill and index the vector column.

    ``progress(done, total)`` is called as rows are encoded (done counts this run's rows).
    ``stop``: an event that ends the run after the page in flight (with ``follow``, the way to
    end it). ``interrupt``: an event that, once set (Ctrl-C), stops the run after the encoder
    call in flight, keeping every page written; Interrupted says how far it got.
    ``on_round(written, result)`` is called after every poll of ``follow`` that wrote rows;
    ``on_index(progress)`` hears an IndexProgress as the indexes are built.

        encode(db, table="passage", column="passage", model="minilm")
        encode(db, EncodeRequest(table="article", column=("title", "body"), chunk=True))
    """
    if request is None:
        request = EncodeRequest.of(**options)
    elif options:
        raise BadInput(f"give the request or its options, not both ({', '.join(sorted(options))})")
    target, encoder = resolve_for_encode(db, request)
    shard, index, limit = request.shard, request.index, request.limit
    queries = FillQueries(target, db.dialect, shard, cut=model_cut(encoder))
    page_size = request.batch_size or db.dialect.default_batch_size
    result = EncodeResult(target)
    has_index = target.column_exists and indexes_exist(db, target)

    if request.dry_run:
        statements = [*db.dialect.setup_statements(), *column_statements(db, target)]
        if target.reencode:
            statements += clear_vectors(target)
        if target.track_changes:
            statements += tracking.install_statements(db, target)
        statements += queries.tidy
        statements += [queries.first_page, queries.next_page, queries.known]
        if queries.chunk_table is not None:
            statements.append(queries.known_rows)
        statements.append(queries.write)
        if queries.chunk_table is not None:
            statements += [queries.delete_chunks, queries.insert_chunks]
        statements.append(queries.add_contents)
        if not has_index:
            statements += index_statements(db, target, queries)
        result.statements = [db.as_string(s) for s in statements]
        return result

    ensure_extension(db)
    if target.upgrading:
        result.upgraded = upgrade_layout(db, target, queries)
    set_up_columns(db, target)
    drop_legacy_index(db, target)
    result.column_created = not target.column_exists
    result.fulltext_added = bool(target.fulltext) and target.fulltext["column"] not in target.table.columns
    if target.reencode:
        result.cleared = run_in_transaction(db, clear_vectors(target))[0]
    if target.track_changes:
        result.tracking_installed = tracking.install(db, target)
    tidy(db, queries)

    if index == "now" and not has_index:
        build_indexes_when_done(db, target, queries, result, None, on_index, request.index_memory)
        has_index = True
    result.pending_before = db.fetchone(queries.count)[0]
    result.blank = db.fetchone(queries.blank)[0]
    total = result.pending_before if limit is None else min(limit, result.pending_before)
    splitter = chunk_splitter(encoder, target) if target.chunks else None
    fill = Fill(
        db, target, encoder, queries, result, skip_failures=request.on_error == "skip", stop=stop, splitter=splitter,
        interrupt=interrupt,
    )  # fmt: skip
    started = time.monotonic()
    try:
        fill.run(page_size, limit, total, progress)
    except DatabaseUnavailable as exc:
        if not target.reencode:
            raise
        raise DatabaseUnavailable(f"{exc} ({how_to_continue(target)})") from None
    finally:
        result.seconds = time.monotonic() - started

    if interrupt is not None and interrupt.is_set():
        raise Interrupted(interrupted_message(result))
    # On a first fill, building the index once over the filled column is far cheaper than
    # maintaining it row by row.
    if index == "skip":
        result.index_skipped = not has_index
    elif not has_index:
        build_indexes_when_done(db, target, queries, result, shard, on_index, request.index_memory)
    if request.follow:
        keep_following(db, fill, queries, page_size, request.max_idle, stop, on_round, started)
    result.pending_after = db.fetchone(queries.count)[0]
    return result


# Rows keyed per transaction when a column made by an earlier version is upgraded.
UPGRADE_BATCH = 5000


def upgrade_layout(db: Database, target: VectorTarget, queries: FillQueries) -> int:
    """Give a column made before contents tables (or taken over with --adopt) what its index is
    now built on, running no model: the hash column, the contents table, a chunk table's hash
    columns; each row's vector (and chunk's) keyed by its own hash, and added to the contents.
    Done before the column's metadata says so, so search ranks it exactly until then. Returns
    the rows keyed."""
    for statement in content_statements(db, target):
        run_ddl(db, statement)
    db.forget_catalog()
    keyed = 0
    last: tuple = ()
    while rows := db.fetchall(queries.unhashed_after if last else queries.unhashed, (*last, UPGRADE_BATCH)):
        keys = key_columns(rows, len(queries.keys))
        db.run(lambda conn, keys=keys: upgrade_batch(conn, queries, keys))
        keyed += len(rows)
        last = tuple(rows[-1])
    return keyed


def drop_legacy_index(db: Database, target: VectorTarget) -> None:
    """The vector index an earlier version built on the rows (or chunks) themselves: search no
    longer reads it, and it would slow every write."""
    meta = target.existing_metadata or {}
    legacy = meta.get("index")
    if legacy and not meta.get("contents") and legacy != target.index_name:
        run_ddl(db, sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(target.table.schema, legacy)))


def upgrade_batch(conn, queries: FillQueries, keys: list[list]) -> None:
    with conn.transaction():
        conn.execute(queries.hash_rows, keys)
        if queries.chunk_table is not None:
            conn.execute(queries.hash_chunks, keys)
        conn.execute(queries.add_contents, keys)


def tidy(db: Database, queries: FillQueries) -> None:
    """Re-queue rows whose chunks were lost (their key changed), remove chunks no row holds, and
    sweep the contents no row or chunk holds (see contents.py)."""
    for statement in queries.tidy:
        db.command(statement, retry=True)


def chunk_splitter(encoder, target: VectorTarget) -> chunks.Splitter:
    counting = chunks.counting_for(encoder)
    record = target.chunks
    room = counting.room - (counting.count(target.prefix) if target.prefix else 0)
    return chunks.Splitter(counting.count, record["tokens"], record["overlap"], counting.max_token_chars, room)


def run_in_transaction(db: Database, statements: list[sql.Composable]) -> list[int]:
    """Statements in one transaction, retried whole: each one's row count."""

    def run(conn):
        with conn.transaction():
            return [conn.execute(statement).rowcount for statement in statements]

    return db.run(run)


def indexes_exist(db: Database, target: VectorTarget) -> bool:
    names = [(target.pending_index_name, target.table)]
    names += [(target.index_name, target.index_table)] if target.index_type else []
    names += [(target.fulltext["index"], target.table)] if target.fulltext else []
    return all(db.index_exists(table, name) for name, table in names)


def clear_vectors(target: VectorTarget) -> list[sql.Composed]:
    """--reencode: every vector of the column to NULL, and a chunked column's chunks gone."""
    statements = [
        sql.SQL("UPDATE {} SET {} = NULL WHERE {} IS NOT NULL").format(
            target.table.ident, sql.Identifier(target.vector_column), sql.Identifier(target.vector_column)
        )
    ]
    if target.chunks:
        statements.append(sql.SQL("DELETE FROM {}").format(chunk_table_of(target.table, target.chunks).ident))
    statements.append(sql.SQL("DELETE FROM {}").format(target.content_table.ident))
    return statements


def build_indexes_when_done(
    db: Database, target: VectorTarget, queries: FillQueries, result, shard, on_index=None, memory=None
) -> None:
    """Build the indexes, unless this is one shard of several and rows are still pending in
    others: the last shard to finish builds them (a backfill blocks writes on CockroachDB
    before v25.4, and N shards would build N times)."""
    if shard is not None and shard[1] > 1:
        result.pending_elsewhere = db.fetchone(queries.count_all)[0]
        if result.pending_elsewhere:
            return
    started = time.monotonic()
    notes = create_indexes(db, target, queries, on_index=on_index, memory=memory)
    result.index_seconds = time.monotonic() - started
    result.index_created = target.index_type is not None
    if target.index_type is None:
        notes.append(db.dialect.index_limit_note(target.dimension))
    result.index_note = "; ".join(notes)


# Polling backoff of --follow: quick after activity, at most POLL_MAX seconds apart when idle.
POLL_MIN, POLL_MAX = 0.2, 2.0
# --follow: how often chunks and contents no row holds any more are removed.
SWEEP_SECONDS = 60.0


def keep_following(db, fill, queries, page_size, max_idle, stop, on_round, started) -> None:
    """Poll for pending rows (new or changed) and encode them, until stop, or until nothing was
    written for max_idle seconds. Rows the encoder refused, or that stay pending, are not
    activity: the poll backs off."""
    stop = stop or threading.Event()
    result = fill.result
    idle_since = swept = time.monotonic()
    wait = POLL_MIN
    while not stop.is_set():
        if time.monotonic() - swept >= SWEEP_SECONDS:
            # Chunks of rows deleted (or re-queued) meanwhile, hidden from search, are removed;
            # and contents no row holds any more.
            tidy(db, queries)
            swept = time.monotonic()
        before = result.written
        pending = db.fetchone(queries.count)[0]
        if pending:
            fill.run(page_size, None, pending)
            result.seconds = time.monotonic() - started
        if result.written > before:
            idle_since, wait = time.monotonic(), POLL_MIN
            if on_round is not None:
                on_round(result.written - before, result)
            continue
        if max_idle is not None and time.monotonic() - idle_since >= max_idle:
            result.ended = f"stopped after {max_idle:g}s with nothing to encode (--max-idle)"
            return
        stop.wait(wait)
        wait = min(POLL_MAX, wait * 2)
    result.ended = "stopped when asked to (a signal)"


class Fill:
    """One run of the encode loop: read ahead, encode, write behind."""

    def __init__(
        self,
        db: Database,
        target: VectorTarget,
        encoder,
        queries: FillQueries,
        result,
        skip_failures=False,
        stop=None,
        splitter=None,
        interrupt=None,
    ):
        self.db = db
        self.stop = stop
        self.target = target
        self.encoder = encoder
        self.queries = queries
        self.result = result
        self.skip_failures = skip_failures
        self.splitter = splitter  # chunks.Splitter for a chunked column
        self.interrupt = interrupt  # set (Ctrl-C): stop after the encoder call in flight
        self.count_truncated = getattr(encoder, "count_truncated", None)
        self.max_length = getattr(encoder, "max_length", None)
        self.model_cut = model_cut(encoder)  # what a chunked fill cuts a row's own text to
        # Rows the encoder refused, by key, with the text it refused: not sent again (--follow
        # polls) until their text changes.
        self.refused: dict[tuple, str] = {}
        # The vectors the last page encoded, by hash: its write may still be in flight while the
        # next page looks its texts up (one page of vectors, whatever the table's size).
        self.recent: dict = {}
        self.total = 0
        self.encoded = 0
        self.progress = None

    def run(self, page_size: int, limit: int | None, total: int, progress=None) -> None:
        self.total, self.encoded = total, 0
        self.progress = progress or self.progress
        self.report(0)
        reader = PageReader(self.db.clone(), self.queries, page_size, limit)
        writer_db = self.db.clone()
        started = time.monotonic()
        try:
            with ThreadPoolExecutor(1, "vectorize-read") as reads, ThreadPoolExecutor(1, "vectorize-write") as writes:
                self.loop(reader, reads, writes, writer_db)
        finally:
            self.result.busy_seconds += time.monotonic() - started
            reader.db.close()
            writer_db.close()

    def loop(self, reader: PageReader, reads, writes, writer_db: Database) -> None:
        next_page = reads.submit(reader.next_page)
        last_write, last_rows = None, 0
        try:
            while (rows := next_page.result()) and not (self.stop and self.stop.is_set()):
                next_page = reads.submit(reader.next_page)  # read ahead while the model works
                rows, payload = self.encode(rows)
                if last_write is not None:
                    self.account(last_write.result(), last_rows)
                    last_write = None
                if rows:
                    last_write = writes.submit(self.write, writer_db, rows, payload)
                    last_rows = len(rows)
            if last_write is not None:
                self.account(last_write.result(), last_rows)
                last_write = None
        except (KeyboardInterrupt, StopNow):
            # Finish the write in flight; abandon the page in the model.
            if last_write is not None:
                self.account(last_write.result(), last_rows)
            raise Interrupted(interrupted_message(self.result)) from None
        finally:
            next_page.cancel()

    def check_interrupt(self) -> None:
        """Between two calls of the encoder: stop now when asked to (Ctrl-C)."""
        if self.interrupt is not None and self.interrupt.is_set():
            raise StopNow

    def write(self, db: Database, rows: list[tuple], payload) -> int:
        if self.splitter is None:
            vectors, hashes = payload
            return write_page(db, self.queries, self.db.dialect, rows, vectors, hashes)
        written, chunk_count = write_chunked_page(db, self.queries, self.db.dialect, rows, payload)
        self.result.chunks += chunk_count
        return written

    def texts(self, rows: list[tuple]) -> list[list[str | None]]:
        """Each row's source texts as the model reads them: a prefix cut short where the whole
        text would be read past it (so few words in so many characters that the model might read
        beyond the cut: then the whole text, read again)."""
        nkeys = len(self.queries.keys)
        parts = [list(row[nkeys:]) for row in rows]
        cut = self.queries.cut
        if cut is None or not self.max_length:
            return parts
        for i, row_parts in enumerate(parts):
            if may_read_past_cut(row_parts, cut, self.max_length):
                whole = self.db.fetchone(self.queries.by_key, rows[i][:nkeys])
                if whole is not None:
                    parts[i] = list(whole)
        return parts

    def model_text(self, parts) -> str:
        """What the model reads of a row whose whole text is at hand (a chunked fill): the same
        text a plain fill gives it, cut where the model stops reading."""
        cut = self.model_cut
        if cut is not None and not may_read_past_cut(parts, cut, self.max_length):
            parts = [None if p is None else p[:cut] for p in parts]
        return document_text(self.target, parts)

    def encode(self, rows: list[tuple]) -> tuple[list[tuple], object]:
        """The rows the encoder managed, with what their write needs (vectors and hashes; with
        chunks too)."""
        nkeys = len(self.queries.keys)
        parts = self.texts(rows)
        if self.splitter is None:
            texts = [document_text(self.target, p) for p in parts]
        else:
            texts = [self.model_text(p) for p in parts]
        if self.refused:
            fresh = [i for i, row in enumerate(rows) if self.refused.get(row[:nkeys]) != texts[i]]
            self.report(len(rows) - len(fresh))
            rows, texts, parts = [rows[i] for i in fresh], [texts[i] for i in fresh], [parts[i] for i in fresh]
        if self.splitter is not None:
            return self.encode_chunked(rows, parts, texts)
        if self.count_truncated is not None:
            self.result.truncated += self.count_truncated(texts)
        if len(self.queries.sources) > 1 and self.max_length:
            self.result.unread_columns += sum(later_columns_unread(p, self.max_length) for p in parts)
        hashes = [content_hash(text) for text in texts]
        vectors, failed = self.vectors_of(rows, texts, hashes, list(range(len(rows))), self.known_contents(hashes))
        if not failed:
            return rows, (vectors, hashes)
        keep = self.forget(rows, texts, failed)
        return [rows[i] for i in keep], (vectors[keep], [hashes[i] for i in keep])

    def known_contents(self, hashes: list) -> dict:
        """{hash: vector} of the hashes whose text the column has encoded before: in the contents
        table, or on the page before (whose write may not have committed yet)."""
        wanted = list(dict.fromkeys(hashes))
        found = self.db.fetchall(self.queries.known, (wanted,)) if wanted else []
        known = {h: vector_value(v) for h, v in found}
        known.update((h, self.recent[h]) for h in wanted if h not in known and h in self.recent)
        return known

    def known_rows(self, row_hashes: list) -> dict:
        """{hash of a whole text: a row's own vector} for the texts another row already has."""
        wanted = list(dict.fromkeys(row_hashes))
        found = self.db.fetchall(self.queries.known_rows, (wanted,)) if wanted else []
        return {h: vector_value(v) for h, v in found}

    def vectors_of(self, rows, texts: list[str], hashes: list, owners: list[int], known: dict):
        """The vectors of texts (each keyed by its hash; `owners` maps a text to its row), each
        distinct text encoded once and none that `known` has; and the indices of the texts the
        encoder refused (with --on-error skip). Progress is told in rows."""
        first: dict = {}  # hash -> the first text with it
        for i, h in enumerate(hashes):
            first.setdefault(h, i)
        wanted = [h for h in first if h not in known]
        self.result.repeats += len(texts) - len(wanted)
        progress = RowProgress(self.report, len(rows), len(wanted))
        fresh, failed = self.encode_texts(
            rows, [texts[first[h]] for h in wanted], [owners[first[h]] for h in wanted], progress.texts_done
        )
        progress.finish()
        refused = {wanted[i] for i in failed}
        self.recent = {h: fresh[i] for i, h in enumerate(wanted) if h not in refused}
        distinct = list(known) + wanted
        position = {h: n for n, h in enumerate(distinct)}
        table = np.empty((len(distinct), self.target.dimension), dtype=np.float32)
        if known:
            table[: len(known)] = np.stack(list(known.values()))
        table[len(known) :] = fresh
        return table[[position[h] for h in hashes]], [i for i, h in enumerate(hashes) if h in refused]

    def encode_chunked(self, rows, parts, texts) -> tuple[list[tuple], object]:
        """Split each row's text, encode its chunks and its own (model-truncated) text, each
        distinct text once; a row one of whose texts the encoder refuses is left pending whole.
        The rows' own texts come first among the inputs and the chunks after them."""
        prefix = self.target.prefix
        chunked = PageChunks()
        chunk_texts: list[str] = []
        documents = [joined_text(row_parts) for row_parts in parts]
        for i, document in enumerate(documents):
            for number, (start, end) in enumerate(self.splitter.spans(document)):
                chunk_texts.append(prefix + document[start:end])
                chunked.owners.append(i)
                chunked.numbers.append(number)
                chunked.starts.append(start)
                chunked.ends.append(end)
        row_hashes = [content_hash(prefix + document) for document in documents]
        chunked.hashes = [content_hash(text) for text in chunk_texts]
        own_hashes = [content_hash(text) for text in texts]
        hashes = own_hashes + chunked.hashes
        known = self.known_contents(hashes)
        # A row's own text is no chunk's when it is longer than the model reads: another row
        # with the same whole text has its vector.
        unknown = [i for i, h in enumerate(own_hashes) if h not in known]
        by_row = self.known_rows([row_hashes[i] for i in unknown])
        known.update((own_hashes[i], by_row[row_hashes[i]]) for i in unknown if row_hashes[i] in by_row)
        owners = list(range(len(rows))) + chunked.owners
        vectors, failed = self.vectors_of(rows, texts + chunk_texts, hashes, owners, known)
        del chunk_texts
        failed_rows = sorted({owners[i] for i in failed})
        if not failed_rows:
            chunked.vectors = vectors[len(rows) :]
            return rows, ChunkedPage(vectors[: len(rows)], row_hashes, chunked)
        keep = self.forget(rows, texts, failed_rows)
        renumber = {old: new for new, old in enumerate(keep)}
        chosen = [c for c, owner in enumerate(chunked.owners) if owner in renumber]
        kept = PageChunks(
            owners=[renumber[chunked.owners[c]] for c in chosen],
            numbers=[chunked.numbers[c] for c in chosen],
            starts=[chunked.starts[c] for c in chosen],
            ends=[chunked.ends[c] for c in chosen],
            hashes=[chunked.hashes[c] for c in chosen],
            vectors=vectors[[len(rows) + c for c in chosen]],
        )
        return [rows[i] for i in keep], ChunkedPage(vectors[keep], [row_hashes[i] for i in keep], kept)

    def encode_texts(self, rows, texts: list[str], owner: list[int], on_chunk) -> tuple[np.ndarray, list[int]]:
        """Vectors of texts; the indices of those the encoder refused (with --on-error skip)."""
        nkeys = len(self.queries.keys)

        def after_call(count: int) -> None:
            if on_chunk is not None:
                on_chunk(count)
            self.check_interrupt()

        self.check_interrupt()
        try:
            vectors, failed, error = encode_page(self.encoder, self.target, texts, after_call, self.skip_failures)
        except ChunkFailed as exc:
            keys = list(dict.fromkeys(rows[owner[i]][:nkeys] for i in exc.indices))
            raise EncoderError(f"{exc.error} (rows {describe_keys(self.target, keys)})") from None
        if failed:
            self.result.failure = self.result.failure or str(error)
        return vectors, failed

    def forget(self, rows, texts, failed: list[int]) -> list[int]:
        """Count the rows the encoder refused, remember them, and return the others' indices."""
        nkeys = len(self.queries.keys)
        self.result.failed += len(failed)
        self.result.failed_keys += [rows[i][:nkeys] for i in failed][: 10 - len(self.result.failed_keys)]
        self.refused.update((rows[i][:nkeys], texts[i]) for i in failed)
        return sorted(set(range(len(rows))) - set(failed))

    def report(self, encoded: int) -> None:
        self.encoded += encoded
        if self.progress is not None:
            self.progress(self.encoded, self.total)

    def account(self, written: int, rows: int) -> None:
        self.result.written += written
        self.result.skipped += rows - written


class RowProgress:
    """Progress told in rows while a page's distinct texts are encoded: a page of many rows and
    few distinct texts moves the count as its texts are done."""

    def __init__(self, report, rows: int, texts: int):
        self.report, self.rows, self.texts = report, rows, texts
        self.done = self.told = 0

    def texts_done(self, count: int) -> None:
        self.done += count
        rows = self.rows * self.done // max(1, self.texts)
        self.report(rows - self.told)
        self.told = rows

    def finish(self) -> None:
        self.report(self.rows - self.told)
        self.told = self.rows


class StopNow(BaseException):
    """Raised between encoder calls when the run is interrupted (a BaseException, like
    KeyboardInterrupt: no handler of ordinary errors may swallow it)."""


def interrupted_message(result) -> str:
    chunked = f" ({plural(result.chunks, 'chunk')})" if result.chunks else ""
    return (
        f"interrupted: {plural(result.written, 'row')}{chunked} written to {result.target.display} in this run; "
        f"{how_to_continue(result.target)}"
    )


def how_to_continue(target: VectorTarget) -> str:
    """What finishes a run cut short: the same command, but never --reencode again (it would clear
    the column again, losing what this run wrote)."""
    if target.reencode:
        return "run it again without --reencode to continue where it stopped (--reencode would clear the column again)"
    return "run the same command again to continue where it stopped"


# A source is read as its first CUT_CHARS_PER_TOKEN characters for every token the model reads:
# more than any tokenizer's longest token, so the cut never changes what the model sees (see
# may_read_past_cut for the text where it could).
CUT_CHARS_PER_TOKEN = 16


def model_cut(encoder) -> int | None:
    """How many characters of a source the fill reads for the model (None: all of it)."""
    max_length = getattr(encoder, "max_length", None)
    return max_length * CUT_CHARS_PER_TOKEN if max_length else None


def later_columns_unread(parts: list[str | None], max_length: int) -> bool:
    """Whether the model stops before a later source column with text: the ones before it hold
    more words than it reads tokens (a word is a token at least)."""
    words = 0
    for part in parts:
        if words >= max_length and not is_blank(part):
            return True
        if part is not None:
            words += len(part.split(None, max_length))
    return False


def may_read_past_cut(parts: list[str | None], cut: int, max_length: int) -> bool:
    """Whether the model might read past the cut of a source: a cut text with fewer words before
    it than the model reads tokens (every word is a token at least, and the words before a cut
    tokenize as in the whole text)."""
    words = 0
    for part in parts:
        if part is None:
            continue
        if len(part) >= cut:
            return words + len(part.split(None, max_length)) <= max_length
        words += len(part.split(None, max_length))
        if words > max_length:
            return False
    return False


def describe_keys(target: VectorTarget, keys: list[tuple], most: int = 5) -> str:
    names = target.table.primary_key
    shown = [", ".join(f"{n}={v}" for n, v in zip(names, key, strict=True)) for key in keys[:most]]
    more = f" and {len(keys) - most} more" if len(keys) > most else ""
    return "; ".join(shown) + more


def build_index(
    db: Database,
    *,
    table: str,
    column: str | None = None,
    vector_column: str | None = None,
    schema: str | None = None,
    memory: int | None = None,
    on_index=None,
) -> EncodeResult:
    """Build the missing indexes of a vectorized column (after `encode --index skip`, or after
    the last of several fills): the vector index, the pending-rows index and the full text's."""
    from .ops import find_vector_column, layout_problem
    from .target import current_sources, recorded_index_names, source_problem

    info = db.find_table(table, schema)
    vector_column, meta = find_vector_column(info, column, vector_column)
    sources = current_sources(info, meta)
    if None in sources:
        raise BadInput(f"{info.display}.{vector_column}: {source_problem(info, meta)}")
    if not meta.get("contents"):
        raise BadInput(f"{info.display}.{vector_column}: {layout_problem(info, vector_column, meta, sources)}")
    index_name, pending_index_name = recorded_index_names(info, vector_column, meta)
    dimension = int(meta["dimension"])
    target = VectorTarget(
        table=info,
        sources=tuple(sources),
        vector_column=vector_column,
        model=meta["model"],
        dimension=dimension,
        metric=meta["metric"],
        column_exists=True,
        existing_metadata=meta,
        prefix_columns=tuple(meta.get("prefix_columns") or ()),
        index_name=index_name,
        pending_index_name=pending_index_name,
        index_type=db.dialect.index_type(dimension),
        fulltext=meta.get("fulltext"),
        chunks=meta.get("chunks"),
        contents=meta.get("contents"),
        hash=meta.get("hash"),
    )
    result = EncodeResult(target)
    if not indexes_exist(db, target):
        build_indexes_when_done(db, target, FillQueries(target, db.dialect), result, None, on_index, memory)
    return result
