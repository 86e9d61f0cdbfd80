"""Change tracking: a BEFORE UPDATE trigger per tracked vector column sets the vector to NULL when
its source text changes, so the next encode (or a running --follow) re-embeds the row.

The trigger fires only when a watched column changes (IS DISTINCT FROM, so changes to and from
NULL count): the source columns, or for a generated source the columns its expression reads
(BEFORE triggers cannot see generated values). Updates of other columns leave vectors alone.

The statements themselves differ per engine (dialects.py). On PostgreSQL the watched columns are
in the trigger's WHEN clause, which follows a rename; the trigger never makes an application's
UPDATE fail, and status reports what a rename or drop did (see problem()).
"""

from __future__ import annotations

import hashlib

from psycopg import sql

from . import names
from .db import Database, Table
from .target import VectorTarget, current_sources, source_problem, watched_columns

# The one trigger per table of earlier versions, with its function vectorize_reset_<table>: its
# body named the source columns, so a rename made every UPDATE of the table fail. Replaced by
# per-column triggers whenever tracking is installed or removed.
LEGACY_TRIGGER = "vectorize_reset"


def tracked_columns(table: Table) -> list[tuple[str, dict]]:
    """(vector column, metadata) for each column of table with tracking on."""
    return [(c.name, c.metadata) for c in table.columns.values() if c.metadata and c.metadata.get("track_changes")]


def legacy_function(table: Table) -> sql.Identifier:
    legacy = f"vectorize_reset_{table.name}"
    if len(legacy.encode()) > names.MAX_IDENTIFIER_BYTES:
        legacy = f"vectorize_reset_{hashlib.sha1(table.name.encode()).hexdigest()[:16]}"
    return sql.Identifier(table.schema, legacy)


def legacy_statements(db: Database, table: Table, keep_out: str) -> list[sql.Composable]:
    """Replace the legacy table trigger by per-column triggers for the tracked columns other than
    keep_out (whose own trigger the caller installs or removes)."""
    statements: list[sql.Composable] = [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(LEGACY_TRIGGER), table.ident),
        sql.SQL("DROP FUNCTION IF EXISTS {}()").format(legacy_function(table)),
    ]
    for vector_column, meta in tracked_columns(table):
        sources = current_sources(table, meta)
        if vector_column == keep_out or None in sources:
            continue
        statements += trigger_statements(db, table, vector_column, list(watched_columns(table, sources)))
    return statements


def trigger_statements(db: Database, table: Table, vector_column: str, watched: list[str]) -> list[sql.Composable]:
    return db.dialect.trigger_statements(table.ident, table.schema, table.name, vector_column, watched)


def orphans(table: Table, triggers: dict[str, list[str]]) -> list[str]:
    """Our triggers that reset a column the table no longer has (the vector column was renamed)."""
    return [
        name
        for name, args in triggers.items()
        if name.startswith("vectorize_") and args and args[0] not in table.columns
    ]


def install_statements(db: Database, target: VectorTarget) -> list[sql.Composable]:
    table = target.table
    statements = []
    triggers = db.dialect.triggers(db, table)
    if LEGACY_TRIGGER in triggers:
        statements += legacy_statements(db, table, target.vector_column)
    for name in orphans(table, triggers):
        statements.append(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), table.ident))
    return statements + trigger_statements(db, table, target.vector_column, list(target.watched))


def remove_statements(db: Database, table: Table, vector_column: str) -> list[sql.Composable]:
    statements = []
    if LEGACY_TRIGGER in db.dialect.triggers(db, table):
        statements += legacy_statements(db, table, vector_column)
    return statements + db.dialect.untrigger_statements(table.ident, table.schema, table.name, vector_column)


def install(db: Database, target: VectorTarget) -> bool:
    """(Re)install the column's trigger, unless it is in place for what the column's metadata says
    (a rerun changes nothing); True when tracking was not already in place."""
    triggers = db.dialect.triggers(db, target.table)
    name = names.trigger_name(target.vector_column)
    in_place = (
        name in triggers
        and not target.needs_comment
        and LEGACY_TRIGGER not in triggers
        and not orphans(target.table, triggers)
        and triggers[name] in ([], [target.vector_column])
    )
    if not in_place:
        run(db, install_statements(db, target))
    return name not in triggers


def run(db: Database, statements: list[sql.Composable]) -> None:
    if db.dialect.ddl_in_transaction:
        # The trigger is swapped with no moment without one.
        def swap(conn):
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement)

        db.run(swap, retry=False)
    else:
        for statement in statements:
            db.command(statement)
    db.forget_catalog()


def problem(db: Database, table: Table, vector_column: str, meta: dict, triggers: dict[str, list[str]]) -> str | None:
    """What is wrong with this column's tracking (or its sources), with how to repair it; None
    when nothing is."""
    found = source_problem(table, meta)
    repair_sources = " ".join(f"-c {c}" for c in current_sources(table, meta) if c)
    if found and None in current_sources(table, meta):
        return (
            f"{found}; remove the vectors with `vectorize.py drop -t {table.display} --vector-column {vector_column}`"
        )
    encode = (
        f"`vectorize.py encode -t {table.display} {repair_sources} --vector-column {vector_column} "
        f"-m {meta.get('model')}`"
    )
    if found:
        return f"{found}; record it with {encode}"
    if not meta.get("track_changes"):
        return None
    name = names.trigger_name(vector_column)
    if name not in triggers:
        if LEGACY_TRIGGER in triggers:
            return None  # the earlier version's trigger, still working; encode replaces it
        for orphan in orphans(table, triggers):
            return f"its trigger resets column {triggers[orphan][0]!r}, renamed since; reinstall it with {encode}"
        return f"its trigger is missing (dropped with a column?); reinstall it with {encode}"
    args = triggers[name]
    if args and args != [vector_column]:
        return f"its trigger resets column {args[0]!r}, renamed since; reinstall it with {encode}"
    return None
