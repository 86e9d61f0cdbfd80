"""Operations on vectorized columns: status and drop."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from . import names, tracking
from .db import Database, Table
from .errors import BadInput, NoVectorizedColumn
from .target import current_sources, default_vector_column, recorded_index_names


@dataclass
class ColumnStatus:
    table: str
    column: str
    columns: list[str]
    vector_column: str
    model: str
    dimension: int
    metric: str
    rows: int
    embedded: int
    pending: int | None
    no_text: int | None
    index: str | None
    tracking: bool
    vector_bytes: int | None
    index_bytes: int | None
    problem: str | None = None  # a renamed or dropped source, a broken trigger: and the repair
    index_serves_search: bool | None = None  # from the plan of a probe search (None: no index)
    sizes_note: str | None = None  # why a size is null
    fulltext: dict | None = None  # --fulltext: {"column", "index", "language"}
    schema: str = ""  # the table's schema and name apart (table is "schema.name")
    table_name: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def vectorized(db: Database, table: str | None = None, schema: str | None = None):
    """(Table, vector column, metadata) for every vectorized column, or those of one table."""
    found = db.vectorized_columns()
    if table is not None:
        info = db.find_table(table, schema)
        found = [f for f in found if (f[0], f[1]) == (info.schema, info.name)]
    tables: dict[tuple[str, str], Table] = {}
    for schema_name, table_name, vector_column, meta in found:
        key = (schema_name, table_name)
        if key not in tables:
            tables[key] = db.find_table(table_name, schema_name)
        yield tables[key], vector_column, meta


def status(db: Database, *, table: str | None = None, schema: str | None = None) -> list[ColumnStatus]:
    """Counts, index, tracking and sizes for every vectorized column (of one table)."""
    result = []
    triggers: dict[int, dict] = {}
    for info, vector_column, meta in vectorized(db, table, schema):
        if info.oid not in triggers:
            triggers[info.oid] = db.dialect.triggers(db, info)
        result.append(column_status(db, info, vector_column, meta, triggers[info.oid]))
    return result


def column_status(db: Database, info: Table, vector_column: str, meta: dict, triggers: dict) -> ColumnStatus:
    sources = current_sources(info, meta)
    vector = sql.Identifier(vector_column)
    pending = no_text = None
    if None in sources:  # a source column was dropped: there is no text left to count
        rows, embedded, vector_bytes = db.fetchone(
            sql.SQL("SELECT count(*), count({v}), {bytes} FROM {table}").format(
                v=vector, bytes=db.dialect.column_bytes(vector), table=info.ident
            )
        )
    else:
        any_text = sql.SQL("coalesce({}, false)").format(db.dialect.has_text([sql.Identifier(c) for c in sources]))
        query = sql.SQL(
            "SELECT count(*), count({v}),"
            " sum(CASE WHEN {v} IS NULL AND ({any_text}) THEN 1 ELSE 0 END),"
            " sum(CASE WHEN NOT ({any_text}) THEN 1 ELSE 0 END), {bytes} FROM {table}"
        ).format(v=vector, any_text=any_text, bytes=db.dialect.column_bytes(vector), table=info.ident)
        rows, embedded, pending, no_text, vector_bytes = db.fetchone(query)
        pending, no_text = int(pending or 0), int(no_text or 0)
    index, _ = recorded_index_names(info, vector_column, meta)
    index = index if db.index_exists(info, index) else None
    trouble = tracking.problem(db, info, vector_column, meta, triggers)
    index_bytes, index_note = db.dialect.index_bytes(db, info, index) if index else (None, None)
    notes = [n for n in (db.dialect.vector_bytes_note(), index_note) if n]
    return ColumnStatus(
        table=info.display,
        column=",".join(c or "?" for c in sources),
        columns=list(meta["source"]),
        vector_column=vector_column,
        model=meta.get("model"),
        dimension=meta.get("dimension"),
        metric=meta.get("metric"),
        rows=rows,
        embedded=embedded,
        pending=pending,
        no_text=no_text,
        index=index,
        tracking=bool(meta.get("track_changes")) and trouble is None and tracked_by_trigger(vector_column, triggers),
        vector_bytes=int(vector_bytes) if vector_bytes is not None else None,
        index_bytes=index_bytes,
        problem=trouble,
        index_serves_search=index_verdict(db, info, vector_column) if index and None not in sources else None,
        sizes_note="; ".join(notes) or None,
        fulltext=meta.get("fulltext"),
        schema=info.schema,
        table_name=info.name,
    )


def index_verdict(db: Database, info: Table, vector_column: str) -> bool:
    """Whether the engine's plan for a plain search of this column uses its vector index."""
    from .search import explain

    return explain(db, table=info.name, schema=info.schema, vector_column=vector_column).uses_index


def tracked_by_trigger(vector_column: str, triggers: dict) -> bool:
    return names.trigger_name(vector_column) in triggers or tracking.LEGACY_TRIGGER in triggers


@dataclass
class DropPlan:
    table: Table
    vector_column: str
    sources: list[str]
    statements: list[sql.Composable]

    @property
    def display(self) -> str:
        return f"{self.table.display}.{self.vector_column}"


def find_vector_column(info: Table, column: str | None, vector_column: str | None) -> tuple[str, dict]:
    """The vectorized column to drop: named, or the one whose source is column (by its recorded
    name or its current one, so a renamed or dropped source still finds it)."""
    if vector_column is not None:
        existing = info.columns.get(vector_column)
        meta = existing.metadata if existing else None
        if meta is None:
            raise NoVectorizedColumn(f"{info.display} has no vector column {vector_column!r} made by vectorize")
        if column is not None and column not in (*meta["source"], *current_sources(info, meta)):
            raise BadInput(
                f"{info.display}.{vector_column} holds vectors of {', '.join(meta['source'])}, not {column!r}"
            )
        return vector_column, meta
    if column is None:
        raise BadInput("say which vectors to drop: --column or --vector-column")
    found = [
        (c.name, c.metadata)
        for c in info.columns.values()
        if c.metadata is not None and column in (*c.metadata["source"], *current_sources(info, c.metadata))
    ]
    default = default_vector_column(column)
    if any(name == default for name, _ in found):
        found = [(name, meta) for name, meta in found if name == default]
    if not found:
        raise NoVectorizedColumn(f"{info.display} has no vector column made by vectorize for {column!r}")
    if len(found) > 1:
        raise BadInput(
            f"{info.display} has several vector columns for {column!r} ({', '.join(n for n, _ in found)}); "
            "choose one with --vector-column"
        )
    return found[0]


def plan_drop(
    db: Database, *, table: str, column: str | None = None, vector_column: str | None = None, schema=None
) -> DropPlan:
    info = db.find_table(table, schema)
    vector_column, meta = find_vector_column(info, column, vector_column)
    triggers = db.dialect.triggers(db, info)
    statements = []
    if names.trigger_name(vector_column) in triggers or tracking.LEGACY_TRIGGER in triggers:
        statements += tracking.remove_statements(db, info, vector_column)
    for name in recorded_index_names(info, vector_column, meta):
        if db.index_exists(info, name):
            statements.append(sql.SQL("DROP INDEX {}").format(sql.Identifier(info.schema, name)))
    statements.append(sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(info.ident, sql.Identifier(vector_column)))
    fulltext = meta.get("fulltext")
    shared = any(
        (c.metadata or {}).get("fulltext") == fulltext for c in info.columns.values() if c.name != vector_column
    )
    if fulltext and not shared and fulltext["column"] in info.columns:
        # Its GIN index goes with it.
        statements.append(
            sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(info.ident, sql.Identifier(fulltext["column"]))
        )
    return DropPlan(info, vector_column, list(meta["source"]), statements)


def drop(
    db: Database, *, table: str, column: str | None = None, vector_column=None, schema=None, confirm=None
) -> DropPlan | None:
    """Remove a vector column with its indexes, metadata and change-tracking trigger.

    ``confirm(plan)`` is asked first; when it returns False nothing is changed and None returned.
    """
    plan = plan_drop(db, table=table, column=column, vector_column=vector_column, schema=schema)
    if confirm is not None and not confirm(plan):
        return None
    for statement in plan.statements:
        db.command(statement)
    for statement in db.dialect.unused_function_statements(db, plan.table.schema):
        db.command(statement)
    return plan
