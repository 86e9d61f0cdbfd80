"""Operations on vectorized columns: status and drop."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from . import names, tracking
from .chunks import OPENING, chunk_table_of, vector_index_table
from .contents import content_table_of
from .db import Database, Table
from .dialects import FULLTEXT_MAX_CHARS
from .errors import BadInput, NoVectorizedColumn
from .output import plural
from .target import Candidate, current_sources, default_vector_column, pick_vector_column, recorded_index_names


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
    index_serves_search_note: str | None = None  # why the index does not serve search (yet)
    fulltext: dict | None = None  # --fulltext: {"column", "index", "language"}
    schema: str = ""  # the table's schema and name apart (table is "schema.name")
    table_name: str = ""
    chunks: int | None = None  # encode --chunk: the chunks stored (None: not chunked)
    chunk_table: str | None = None
    chunk_bytes: int | None = None  # the chunk table with its indexes
    chunk_tokens: int | None = None
    indexed: int | None = None  # the vectors the index holds: one a distinct content (None: made before those)
    content_table: str | None = None

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
    chunked = chunk_table_of(info, meta["chunks"]) if meta.get("chunks") else None
    index_table = vector_index_table(info, meta)
    index = index if db.index_exists(index_table, index) else None
    chunk_count, chunk_bytes = chunk_sizes(db, chunked) if chunked else (None, None)
    contents = content_table_of(info, meta)
    indexed = relation_rows(db, contents) if contents else None
    trouble = (
        tracking.problem(db, info, vector_column, meta, triggers)
        or fulltext_problem(db, info, meta, sources)
        or layout_problem(info, vector_column, meta, sources)
    )
    index_bytes, index_note = db.dialect.index_bytes(db, index_table, index) if index else (None, None)
    notes = [n for n in (db.dialect.vector_bytes_note(), index_note) if n]
    serves = index_verdict(db, info, vector_column) if index and None not in sources else None
    counted = (indexed or 0, "distinct content")  # what the index holds
    return ColumnStatus(
        table=info.display,
        column=",".join(c or "?" for c in sources),
        columns=list(meta["source"]),
        vector_column=vector_column,
        model=model_label(meta),
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
        index_serves_search=serves,
        sizes_note="; ".join(notes) or None,
        index_serves_search_note=not_serving_note(*counted) if serves is False else None,
        fulltext=meta.get("fulltext"),
        schema=info.schema,
        table_name=info.name,
        chunks=chunk_count,
        chunk_table=chunked.display if chunked else None,
        chunk_bytes=chunk_bytes,
        chunk_tokens=meta["chunks"]["tokens"] if chunked else None,
        indexed=indexed,
        content_table=contents.display if contents else None,
    )


def relation_rows(db: Database, relation) -> int | None:
    """The rows of a table vectorize made beside the user's (None when it is gone)."""
    if db.relation_owner(relation.schema, relation.name) is None:
        return None
    return db.fetchone(sql.SQL("SELECT count(*) FROM {}").format(relation.ident))[0]


def layout_problem(info: Table, vector_column: str, meta: dict, sources) -> str | None:
    """A column an earlier version indexed row by row (not by distinct content), and the run that
    rebuilds it."""
    if meta.get("contents") or None in sources:
        return None
    columns = " ".join(f"-c {c}" for c in sources)
    return (
        "indexed by an earlier version of vectorize.py, which search ranks exactly; `vectorize.py encode -t "
        f"{info.display} {columns} --vector-column {vector_column}` rebuilds its index over distinct contents "
        "(no model time)"
    )


def chunk_sizes(db: Database, chunked) -> tuple[int | None, int | None]:
    """A chunk table's chunks and bytes (table, indexes and TOAST; None where the engine keeps no
    sizes); (None, None) when the table is gone."""
    if db.relation_owner(chunked.schema, chunked.name) is None:
        return None, None
    count = db.fetchone(
        sql.SQL("SELECT count(*) FROM {} WHERE {} <> %s").format(chunked.ident, sql.Identifier(chunked.chunk)),
        (OPENING,),
    )[0]  # the rows' openings are not chunks of their text
    return count, db.dialect.table_bytes(db, chunked.ident)


def fulltext_problem(db: Database, info: Table, meta: dict, sources) -> str | None:
    """A full-text column an earlier version made over whole texts, and the run that bounds it."""
    fulltext = meta.get("fulltext")
    column = info.columns.get(fulltext["column"]) if fulltext else None
    if column is None or None in sources or db.dialect.fulltext_bounded(column.expression):
        return None
    return (
        f"full-text column {column.name!r} indexes whole texts (made by an earlier version), so a write whose words "
        "pass the engine's tsvector limit fails; `vectorize.py encode -t "
        f"{info.display} {' '.join('-c ' + c for c in sources)}` bounds it to the first "
        f"{FULLTEXT_MAX_CHARS:,} characters (rewriting the table once)"
    )


def model_label(meta: dict) -> str | None:
    """The model, or for imported vectors the --model-name they were imported with."""
    if meta.get("external") and meta.get("label"):
        return f"{meta['label']} (imported)"
    return meta.get("model")


# Below this many rows a planner commonly finds ranking every row cheaper than walking the index
# (PostgreSQL 18 + pgvector 0.8, k = 10, measured: a sequential scan up to 2,000 rows of 384
# dimensions and 1,000 of 8; the HNSW index from 5,000 and 2,000).
SMALL_TABLE_ROWS = 10_000


def not_serving_note(rows: int, what: str = "row") -> str:
    """Why the plan of a plain search does not use the vector index that exists (what the index
    holds: rows, or a chunked column's chunks)."""
    if rows < SMALL_TABLE_ROWS:
        return (
            f"with {plural(rows, what)} the planner ranks every {what} exactly, which costs less than the index "
            "on a table this small; it turns to the index as the table grows"
        )
    return "the planner ranks the rows without the index; `vectorize.py search --explain` shows its plan"


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
    fulltext_column: str | None = None  # the full-text column dropped with it (no other column uses it)
    chunk_table: str | None = None  # encode --chunk: the chunk table dropped with it
    content_table: str | None = None  # the distinct contents, with the vector index

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
        Candidate(info.schema, info.name, c.name, c.metadata, info)
        for c in info.columns.values()
        if c.metadata is not None
    ]
    default = [f for f in found if f.vector_column == default_vector_column(column) and f.fit((column,))]
    chosen = default[0] if default else pick_vector_column(found, scope=f" in {info.display}", column=column)
    return chosen.vector_column, chosen.metadata


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
    hash_column = (meta.get("hash") or {}).get("column")
    if hash_column in info.columns:
        # Its index goes with it.
        statements.append(sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(info.ident, sql.Identifier(hash_column)))
    chunked = chunk_table_of(info, meta["chunks"]) if meta.get("chunks") else None
    if chunked:
        # The chunk table, with its indexes: nothing else refers to it.
        statements.append(sql.SQL("DROP TABLE IF EXISTS {}").format(chunked.ident))
    contents = content_table_of(info, meta)
    if contents:
        # The contents table, with the vector index.
        statements.append(sql.SQL("DROP TABLE IF EXISTS {}").format(contents.ident))
    fulltext = meta.get("fulltext")
    shared = fulltext and any(
        ((c.metadata or {}).get("fulltext") or {}).get("column") == fulltext["column"]
        for c in info.columns.values()
        if c.name != vector_column
    )
    dropped_fulltext = None
    if fulltext and not shared and fulltext["column"] in info.columns:
        # Its GIN index goes with it; and its BM25 statistics.
        statements.append(
            sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(info.ident, sql.Identifier(fulltext["column"]))
        )
        dropped_fulltext = fulltext["column"]
    if fulltext and not shared and fulltext.get("terms"):
        statements.append(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(info.schema, fulltext["terms"])))
    return DropPlan(
        info,
        vector_column,
        list(meta["source"]),
        statements,
        dropped_fulltext,
        chunked.display if chunked else None,
        contents.display if contents else None,
    )


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
    db.forget_catalog()
    return plan
