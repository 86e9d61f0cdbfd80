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

from . import tracking
from .db import Database, index_exists
from .errors import BadInput, DatabaseError, EncoderError, Interrupted
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
    column_created: bool = False
    index_created: bool = False
    statements: list[str] = field(default_factory=list)  # --dry-run only

    @property
    def nothing_to_do(self) -> bool:
        return self.pending_before == 0 and not self.column_created and not self.index_created

    @property
    def rows_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


def has_text(columns: list[sql.Composable]) -> sql.Composed:
    """True when any column holds text. NULL, empty or only whitespace is no text: such rows are
    not sent to the model and not pending, so a finished table stays finished."""
    return sql.SQL(" OR ").join(sql.SQL("{} ~ '\\S'").format(c) for c in columns)


class FillQueries:
    """The statements of a fill, built once per target."""

    def __init__(self, target: VectorTarget, dialect, shard: tuple[int, int] | None = None):
        t = target
        self.keys = [sql.Identifier(k) for k in t.table.primary_key]
        self.sources = [sql.Identifier(c) for c in t.sources]
        self.key_list = sql.SQL(", ").join(self.keys)
        self.vector = sql.Identifier(t.vector_column)
        any_text = has_text(self.sources)
        any_value = sql.SQL(" OR ").join(sql.SQL("{} IS NOT NULL").format(c) for c in self.sources)
        self.pending = sql.SQL("{} IS NULL AND ({})").format(self.vector, any_text)
        pending = self.pending
        if shard is not None:
            pending = sql.SQL("{} AND {}").format(pending, dialect.shard_condition(self.keys, shard[1], shard[0]))

        self.count = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(t.table.ident, pending)
        self.blank = sql.SQL("SELECT count(*) FROM {} WHERE {} IS NULL AND ({}) AND NOT coalesce({}, false)").format(
            t.table.ident, self.vector, any_value, any_text
        )
        select = sql.SQL("SELECT {}, {} FROM {} WHERE {}").format(
            self.key_list, sql.SQL(", ").join(self.sources), t.table.ident, pending
        )
        order = sql.SQL(" ORDER BY {} LIMIT %s").format(self.key_list)
        self.first_page = select + order
        after = sql.SQL(" AND ({}) > ({})").format(
            self.key_list, sql.SQL(", ").join(sql.Placeholder() * len(self.keys))
        )
        self.next_page = select + after + order

        key_aliases = [sql.Identifier(f"k{i}") for i in range(len(self.keys))]
        source_aliases = [sql.Identifier(f"s{i}") for i in range(len(self.sources))]
        d = sql.Identifier("d")
        matches = [
            sql.SQL("t.{} = {}").format(key, sql.Composed([d, sql.SQL("."), alias]))
            for key, alias in zip(self.keys, key_aliases, strict=True)
        ]
        # The conditional write: the text is still what was encoded, the vector still NULL.
        unchanged = [
            sql.SQL("t.{} IS NOT DISTINCT FROM {}").format(column, sql.Composed([d, sql.SQL("."), alias]))
            for column, alias in zip(self.sources, source_aliases, strict=True)
        ]
        self.write = sql.SQL(
            "UPDATE {table} AS t SET {vector} = {value}"
            " FROM unnest({params}) AS d({aliases}, vec)"
            " WHERE {matches} AND t.{vector} IS NULL AND {unchanged}"
        ).format(
            table=t.table.ident,
            vector=self.vector,
            value=dialect.write_vectors_value(sql.SQL("d.vec")),
            params=sql.SQL(", ").join([sql.SQL("%b")] * (len(self.keys) + len(self.sources) + 1)),
            aliases=sql.SQL(", ").join(key_aliases + source_aliases),
            matches=sql.SQL(" AND ").join(matches),
            unchanged=sql.SQL(" AND ").join(unchanged),
        )


class PageReader:
    """Pending rows in key order, page by page; remembers where it stopped."""

    def __init__(self, db: Database, queries: FillQueries, page_size: int, limit: int | None):
        self.db = db
        self.q = queries
        self.page_size = page_size
        self.remaining = limit
        self.last_key: tuple | None = None
        self.done = False

    def next_page(self) -> list[tuple]:
        if self.done or self.remaining == 0:
            return []
        n = self.page_size if self.remaining is None else min(self.page_size, self.remaining)
        if self.last_key is None:
            rows = self.db.fetchall(self.q.first_page, (n,))
        else:
            rows = self.db.fetchall(self.q.next_page, (*self.last_key, n))
        if len(rows) < n:
            self.done = True
        if rows:
            self.last_key = tuple(rows[-1][: len(self.q.keys)])
            if self.remaining is not None:
                self.remaining -= len(rows)
        return rows


def write_page(db: Database, queries: FillQueries, dialect, rows: list[tuple], vectors: np.ndarray) -> int:
    columns = [[row[i] for row in rows] for i in range(len(queries.keys) + len(queries.sources))]
    params = (*columns, dialect.vectors_array(vectors))
    return db.run(lambda conn: conn.execute(queries.write, params).rowcount)


def document_text(target: VectorTarget, parts) -> str:
    """What the model reads for a row: the prefix, then the source texts that hold any."""
    return target.prefix + " ".join(part for part in parts if part and not part.isspace())


class ChunkFailed(Exception):
    def __init__(self, indices: list[int], error: EncoderError):
        super().__init__(str(error))
        self.indices = indices
        self.error = error


def encode_page(encoder, target: VectorTarget, texts: list[str], on_chunk=None, skip_failures=False):
    """Vectors for texts in their order, the indices of texts that could not be encoded, and
    the first error.

    Texts go to the model shortest first, in chunks of ENCODE_CHUNK: as little padding as one
    call for the whole page, and progress between chunks.
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
            failed.extend(chunk)
            error = error or exc
        if on_chunk is not None:
            on_chunk(len(chunk))
    return vectors, failed, error


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


def column_statements(db: Database, target: VectorTarget) -> list[sql.Composable]:
    """DDL that makes the vector column exist with its metadata (empty when it already does)."""
    dialect = db.dialect
    statements = []
    if not target.column_exists:
        statements.append(dialect.add_vector_column(target.table.ident, target.vector_column, target.dimension))
    if target.needs_comment:
        statements.append(dialect.comment_on_column(target.table.ident, target.vector_column, target.metadata_json()))
    return statements


def named_indexes(db: Database, target: VectorTarget, queries: FillQueries) -> list[tuple[sql.Composable, str]]:
    """(CREATE INDEX statement, index name) for the vector index and the pending-rows index."""
    return [
        (
            db.dialect.create_index(
                target.table.ident, target.index_name, target.vector_column, target.metric, target.prefix_columns
            ),
            target.index_name,
        ),
        # Pending rows, by key: finding them costs in proportion to them, not to the table.
        (
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({}) WHERE {}").format(
                sql.Identifier(target.pending_index_name), target.table.ident, queries.key_list, queries.pending
            ),
            target.pending_index_name,
        ),
    ]


def index_statements(db: Database, target: VectorTarget, queries: FillQueries) -> list[sql.Composable]:
    return [*db.dialect.index_build_settings(), *(s for s, _ in named_indexes(db, target, queries))]


def create_indexes(db: Database, target: VectorTarget, queries: FillQueries) -> None:
    settings = db.dialect.index_build_settings()
    named = named_indexes(db, target, queries)

    def create(conn):
        # One connection for all: the session settings must hold for the CREATE INDEX.
        for statement in settings:
            conn.execute(statement)
        for statement, name in named:
            try:
                conn.execute(statement)
            except psycopg.errors.UniqueViolation:
                # Another encoder on this table created the same index a moment before us: its
                # catalog row won the race (it has committed by the time this error is raised).
                if not index_exists(conn, target.table.schema, target.table.name, name):
                    raise

    try:
        db.run(create)
    except DatabaseError as exc:
        raise DatabaseError(f"{exc} (while creating the indexes of {target.display})") from None


def run_ddl(db: Database, statement: sql.Composable) -> None:
    """One statement per implicit transaction (CockroachDB commits open transactions before
    DDL). Every statement vectorize issues is idempotent (IF NOT EXISTS, COMMENT, CREATE OR
    REPLACE), so a dropped connection is retried like any other."""
    try:
        db.command(statement, retry=True)
    except DatabaseError as exc:
        raise DatabaseError(f"{exc} (while running: {db.as_string(statement)})") from None


def ensure_extension(db: Database) -> None:
    for statement in db.dialect.setup_statements():
        try:
            db.command(statement)
        except DatabaseError as exc:
            if db.dialect.vector_ready(db):
                continue  # created by another encoder at the same moment (IF NOT EXISTS races)
            raise DatabaseError(
                f"{exc}; vectorize needs the 'vector' extension: ask an administrator to run "
                f"`{db.as_string(statement)}` in this database"
            ) from None
    if db.dialect.name == "postgresql":
        from .db import register_pgvector

        register_pgvector(db.connection())


def encode(
    db: Database,
    *,
    table: str,
    column: str | list[str],
    model: str,
    schema: str | None = None,
    vector_column: str | None = None,
    metric: str | None = None,
    prefix: str | None = None,
    query_prefix: str | None = None,
    backend: str | None = None,
    dimension: int | None = None,
    on_error: str = "stop",
    track_changes: bool = False,
    prefix_columns: list[str] | tuple[str, ...] = (),
    shard: tuple[int, int] | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    follow: bool = False,
    max_idle: float | None = None,
    stop: threading.Event | None = None,
    progress=None,
    on_round=None,
) -> EncodeResult:
    """Add, fill and index the vector column of table.column (or of several columns, joined)
    with model.

    ``progress(done, total)`` is called as rows are encoded (done counts this run's rows).
    ``on_error``: 'stop' raises on the first batch the encoder cannot encode; 'skip' leaves
    those rows pending and goes on. ``track_changes`` installs the trigger that resets a vector
    when its text changes. ``follow`` keeps polling for pending rows until ``stop`` is set or
    nothing was pending for ``max_idle`` seconds; ``on_round(written, result)`` is called after
    every poll that wrote rows. Setting ``stop`` ends a run after the page in flight.
    """
    if on_error not in ("stop", "skip"):
        raise BadInput(f"on_error must be 'stop' or 'skip', not {on_error!r}")
    target, encoder = resolve_for_encode(
        db,
        table=table,
        column=column,
        model=model,
        schema=schema,
        vector_column=vector_column,
        metric=metric,
        prefix=prefix,
        query_prefix=query_prefix,
        backend=backend,
        dimension=dimension,
        track_changes=track_changes,
        prefix_columns=prefix_columns,
    )
    if shard is not None and not (0 <= shard[0] < shard[1]):
        raise BadInput(f"--shard {shard[0]}/{shard[1]}: the shard number must be from 0 to {shard[1] - 1}")
    queries = FillQueries(target, db.dialect, shard)
    page_size = batch_size or db.dialect.default_batch_size
    result = EncodeResult(target)
    has_index = target.column_exists and db.index_exists(target.table, target.index_name)

    if dry_run:
        statements = [*db.dialect.setup_statements(), *column_statements(db, target)]
        if target.track_changes:
            statements += tracking_statements(db, target)
        statements += [queries.first_page, queries.next_page, queries.write]
        if not has_index:
            statements += index_statements(db, target, queries)
        result.statements = [db.as_string(s) for s in statements]
        return result

    ensure_extension(db)
    for statement in column_statements(db, target):
        run_ddl(db, statement)
    result.column_created = not target.column_exists
    if target.track_changes:
        tracking.sync_trigger(db, *tracked_after_comment(db, target))

    result.pending_before = db.fetchone(queries.count)[0]
    result.blank = db.fetchone(queries.blank)[0]
    total = result.pending_before if limit is None else min(limit, result.pending_before)
    fill = Fill(db, target, encoder, queries, result, skip_failures=on_error == "skip", stop=stop)
    started = time.monotonic()
    try:
        fill.run(page_size, limit, total, progress)
    finally:
        result.seconds = time.monotonic() - started

    # On a first fill, building the index once over the filled column is far cheaper than
    # maintaining it row by row.
    if not has_index:
        create_indexes(db, target, queries)
        result.index_created = True
    if follow:
        keep_following(db, fill, queries, page_size, max_idle, stop, on_round, started)
    return result


# Polling backoff of --follow: quick after activity, at most POLL_MAX seconds apart when idle.
POLL_MIN, POLL_MAX = 0.2, 2.0


def keep_following(db, fill, queries, page_size, max_idle, stop, on_round, started) -> None:
    """Poll for pending rows (new or changed) and encode them, until stop or max_idle."""
    stop = stop or threading.Event()
    result = fill.result
    idle_since = time.monotonic()
    wait = POLL_MIN
    while not stop.is_set():
        before = result.written + result.skipped + result.failed
        pending = db.fetchone(queries.count)[0]
        if pending:
            fill.run(page_size, None, pending)
            result.seconds = time.monotonic() - started
        if result.written + result.skipped + result.failed > before:
            idle_since, wait = time.monotonic(), POLL_MIN
            if on_round is not None:
                on_round(result)
            continue
        if max_idle is not None and time.monotonic() - idle_since >= max_idle:
            return
        stop.wait(wait)
        wait = min(POLL_MAX, wait * 2)


def tracked_after_comment(db: Database, target: VectorTarget):
    """The table as it now is, and its tracked columns (this one included)."""
    table = db.find_table(target.table.name, target.table.schema)
    return table, tracking.tracked_columns(table)


def tracking_statements(db: Database, target: VectorTarget) -> list[sql.Composable]:
    tracked = [(v, s) for v, s in tracking.tracked_columns(target.table) if v != target.vector_column]
    tracked.append((target.vector_column, list(target.sources)))
    return tracking.trigger_statements(db, target.table, tracked)


class Fill:
    """One run of the encode loop: read ahead, encode, write behind."""

    def __init__(
        self, db: Database, target: VectorTarget, encoder, queries: FillQueries, result, skip_failures=False, stop=None
    ):
        self.db = db
        self.stop = stop
        self.target = target
        self.encoder = encoder
        self.queries = queries
        self.result = result
        self.skip_failures = skip_failures
        self.count_truncated = getattr(encoder, "count_truncated", None)
        self.total = 0
        self.encoded = 0
        self.progress = None

    def run(self, page_size: int, limit: int | None, total: int, progress=None) -> None:
        self.total, self.encoded = total, 0
        self.progress = progress or self.progress
        self.report(0)
        reader = PageReader(self.db.clone(), self.queries, page_size, limit)
        writer_db = self.db.clone()
        try:
            with ThreadPoolExecutor(1, "vectorize-read") as reads, ThreadPoolExecutor(1, "vectorize-write") as writes:
                self.loop(reader, reads, writes, writer_db)
        finally:
            reader.db.close()
            writer_db.close()

    def loop(self, reader: PageReader, reads, writes, writer_db: Database) -> None:
        next_page = reads.submit(reader.next_page)
        last_write, last_rows = None, 0
        try:
            while (rows := next_page.result()) and not (self.stop and self.stop.is_set()):
                next_page = reads.submit(reader.next_page)  # read ahead while the model works
                rows, vectors = self.encode(rows)
                if last_write is not None:
                    self.account(last_write.result(), last_rows)
                    last_write = None
                if rows:
                    last_write = writes.submit(write_page, writer_db, self.queries, self.db.dialect, rows, vectors)
                    last_rows = len(rows)
            if last_write is not None:
                self.account(last_write.result(), last_rows)
                last_write = None
        except KeyboardInterrupt:
            # Finish the page already encoded; abandon the one in the model.
            if last_write is not None:
                self.account(last_write.result(), last_rows)
            raise Interrupted(
                f"interrupted: {self.result.written} rows written to {self.target.display}; "
                "run the same command again to continue where it stopped"
            ) from None
        finally:
            next_page.cancel()

    def encode(self, rows: list[tuple]) -> tuple[list[tuple], np.ndarray]:
        """The rows the encoder managed, with their vectors."""
        nkeys = len(self.queries.keys)
        texts = [document_text(self.target, row[nkeys:]) for row in rows]
        if self.count_truncated is not None:
            self.result.truncated += self.count_truncated(texts)
        try:
            vectors, failed, error = encode_page(self.encoder, self.target, texts, self.report, self.skip_failures)
        except ChunkFailed as exc:
            keys = [rows[i][:nkeys] for i in exc.indices]
            raise EncoderError(f"{exc.error} (rows {describe_keys(self.target, keys)})") from None
        if not failed:
            return rows, vectors
        self.result.failed += len(failed)
        self.result.failure = self.result.failure or str(error)
        self.result.failed_keys += [rows[i][:nkeys] for i in failed][: 10 - len(self.result.failed_keys)]
        keep = sorted(set(range(len(rows))) - set(failed))
        return [rows[i] for i in keep], vectors[keep]

    def report(self, encoded: int) -> None:
        self.encoded += encoded
        if self.progress is not None:
            self.progress(self.encoded, self.total)

    def account(self, written: int, rows: int) -> None:
        self.result.written += written
        self.result.skipped += rows - written


def describe_keys(target: VectorTarget, keys: list[tuple], most: int = 5) -> str:
    names = target.table.primary_key
    shown = [", ".join(f"{n}={v}" for n, v in zip(names, key, strict=True)) for key in keys[:most]]
    more = f" and {len(keys) - most} more" if len(keys) > most else ""
    return "; ".join(shown) + more
