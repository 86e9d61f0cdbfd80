"""The indexes of a vector column: the vector index on its contents, the pending-rows index and
the full text's; built once the fill is done (or before, or later by `vectorize.py index`), with
their memory and progress."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from .db import Database, index_exists
from .dialects import REPEATED_RATIO
from .errors import BadInput, DatabaseError
from .fill_queries import FillQueries
from .ops import find_vector_column, layout_problem
from .result import EncodeResult
from .target import VectorTarget, current_sources, recorded_index_names, source_problem


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


def indexes_exist(db: Database, target: VectorTarget) -> bool:
    names = [(target.pending_index_name, target.table)]
    names += [(target.index_name, target.index_table)] if target.index_type else []
    names += [(target.fulltext["index"], target.table)] if target.fulltext else []
    return all(db.index_exists(table, name) for name, table in names)


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
