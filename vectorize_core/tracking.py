"""Change tracking: one BEFORE UPDATE trigger per table sets a vector to NULL when its source
text changes, so the next encode (or a running --follow) re-embeds the row.

The trigger function is generated from the metadata of every tracked vector column of the table:
each vector column is reset only when one of its own source columns changes (IS DISTINCT FROM,
so changes to and from NULL count). Updates of other columns leave vectors alone.
"""

from __future__ import annotations

import hashlib

from psycopg import sql

from .db import Database, Table

TRIGGER = "vectorize_reset"


def function_name(table: Table) -> sql.Identifier:
    name = f"vectorize_reset_{table.name}"
    if len(name.encode()) > 63:
        name = f"vectorize_reset_{hashlib.sha1(table.name.encode()).hexdigest()[:16]}"
    return sql.Identifier(table.schema, name)


def tracked_columns(table: Table) -> list[tuple[str, list[str]]]:
    """(vector column, its source columns) for each column of table with tracking on."""
    tracked = []
    for column in table.columns.values():
        meta = column.metadata
        if meta and meta.get("track_changes"):
            tracked.append((column.name, list(meta["source"])))
    return tracked


def trigger_body(tracked: list[tuple[str, list[str]]]) -> sql.Composed:
    # (NEW).col, not NEW.col: CockroachDB reads record fields only in that form (#114687).
    resets = []
    for vector, sources in tracked:
        changed = sql.SQL(" OR ").join(
            sql.SQL("(NEW).{0} IS DISTINCT FROM (OLD).{0}").format(sql.Identifier(s)) for s in sources
        )
        resets.append(sql.SQL("  IF {} THEN NEW.{} := NULL; END IF;\n").format(changed, sql.Identifier(vector)))
    return sql.SQL("\nBEGIN\n{}  RETURN NEW;\nEND\n").format(sql.Composed(resets))


def trigger_statements(db: Database, table: Table, tracked) -> list[sql.Composable]:
    """Statements that make the table's trigger match `tracked` (dropping it when empty)."""
    if not tracked:
        return [
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRIGGER), table.ident),
            sql.SQL("DROP FUNCTION IF EXISTS {}()").format(function_name(table)),
        ]
    body = db.as_string(trigger_body(tracked))
    return db.dialect.trigger_statements(table.ident, function_name(table), TRIGGER, body)


def sync_trigger(db: Database, table: Table, tracked) -> None:
    statements = trigger_statements(db, table, tracked)
    if db.dialect.ddl_in_transaction:

        def swap(conn):
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement)

        db.run(swap, retry=False)
    else:
        for statement in statements:
            db.command(statement)


def trigger_exists(db: Database, table: Table) -> bool:
    row = db.fetchone(
        "SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = %s AND tgname = %s",
        (table.oid, TRIGGER),
    )
    return row is not None
