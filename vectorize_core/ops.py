"""Operations on vectorized columns: status and drop."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from . import tracking
from .db import Database, Table
from .errors import BadInput, NoVectorizedColumn
from .pipeline import has_text
from .target import default_vector_column, index_name_for


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
    pending: int
    no_text: int
    index: str | None
    tracking: bool
    vector_bytes: int | None
    index_bytes: int | None

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
    triggers: dict[int, bool] = {}
    for info, vector_column, meta in vectorized(db, table, schema):
        if info.oid not in triggers:
            triggers[info.oid] = tracking.trigger_exists(db, info)
        result.append(column_status(db, info, vector_column, meta, triggers[info.oid]))
    return result


def column_status(db: Database, info: Table, vector_column: str, meta: dict, has_trigger: bool) -> ColumnStatus:
    sources = [sql.Identifier(c) for c in meta["source"]]
    vector = sql.Identifier(vector_column)
    any_text = sql.SQL("coalesce({}, false)").format(has_text(sources))  # the same notion of text as encode
    query = sql.SQL(
        "SELECT count(*), count({v}),"
        " sum(CASE WHEN {v} IS NULL AND ({any_text}) THEN 1 ELSE 0 END),"
        " sum(CASE WHEN NOT ({any_text}) THEN 1 ELSE 0 END), {bytes} FROM {table}"
    ).format(v=vector, any_text=any_text, bytes=db.dialect.column_bytes(vector), table=info.ident)
    rows, embedded, pending, no_text, vector_bytes = db.fetchone(query)
    index = index_name_for(info.name, vector_column)
    index = index if db.index_exists(info, index) else None
    return ColumnStatus(
        table=info.display,
        column=",".join(meta["source"]),
        columns=list(meta["source"]),
        vector_column=vector_column,
        model=meta.get("model"),
        dimension=meta.get("dimension"),
        metric=meta.get("metric"),
        rows=rows,
        embedded=embedded,
        pending=int(pending or 0),
        no_text=int(no_text or 0),
        index=index,
        tracking=bool(meta.get("track_changes")) and has_trigger,
        vector_bytes=int(vector_bytes) if vector_bytes is not None else None,
        index_bytes=relation_bytes(db, info, index),
    )


def relation_bytes(db: Database, info: Table, index: str | None) -> int | None:
    query = db.dialect.relation_bytes()
    if index is None or query is None:
        return None
    return db.fetchone(query, (db.as_string(sql.Identifier(info.schema, index)),))[0]


@dataclass
class DropPlan:
    table: Table
    vector_column: str
    sources: list[str]
    statements: list[sql.Composable]

    @property
    def display(self) -> str:
        return f"{self.table.display}.{self.vector_column}"


def plan_drop(db: Database, *, table: str, column: str, vector_column: str | None = None, schema=None) -> DropPlan:
    info = db.find_table(table, schema)
    info.column(column)
    vector_column = vector_column or default_vector_column(column)
    existing = info.columns.get(vector_column)
    meta = existing.metadata if existing else None
    if meta is None:
        raise NoVectorizedColumn(f"{info.display} has no vector column {vector_column!r} made by vectorize")
    if column not in meta["source"]:
        raise BadInput(f"{info.display}.{vector_column} holds vectors of {', '.join(meta['source'])}, not {column!r}")
    tracked = [(v, s) for v, s in tracking.tracked_columns(info) if v != vector_column]
    statements = []
    if any(v == vector_column for v, _ in tracking.tracked_columns(info)):
        statements += tracking.trigger_statements(db, info, tracked)
    for name in (index_name_for(info.name, vector_column), index_name_for(info.name, vector_column, "pending")):
        if db.index_exists(info, name):
            statements.append(sql.SQL("DROP INDEX {}").format(sql.Identifier(info.schema, name)))
    statements.append(sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(info.ident, sql.Identifier(vector_column)))
    return DropPlan(info, vector_column, list(meta["source"]), statements)


def drop(db: Database, *, table: str, column: str, vector_column=None, schema=None, confirm=None) -> DropPlan | None:
    """Remove a vector column with its index, metadata and its part of the trigger.

    ``confirm(plan)`` is asked first; when it returns False nothing is changed and None returned.
    """
    plan = plan_drop(db, table=table, column=column, vector_column=vector_column, schema=schema)
    if confirm is not None and not confirm(plan):
        return None
    for statement in plan.statements:
        db.command(statement)
    return plan
