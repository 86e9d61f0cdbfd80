"""What a vector column needs before its fill, made once and only where missing: the vector type,
the column and its metadata, the full-text column, the hash column, the contents and chunk
tables; and the upgrade of a column an earlier version made."""

from __future__ import annotations

from psycopg import sql

from . import bm25, chunks, contents, names
from .chunks import chunk_table_of
from .db import Database
from .errors import DatabaseError
from .fill_queries import FillQueries, key_columns
from .target import VectorTarget


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
    terms = (target.fulltext or {}).get("terms")
    if terms and catalog.relation_owner(table.schema, terms) is None:
        tag = names.relation_tag(table.schema, table.name, target.fulltext["column"], "terms")
        ident = sql.Identifier(table.schema, terms)
        statements += [bm25.create_table(ident), comment_on_table(ident, tag)]
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


def run_ddl(db: Database, statement: sql.Composable) -> None:
    """One statement per implicit transaction (CockroachDB commits open transactions before
    DDL). Every statement vectorize issues is idempotent (IF NOT EXISTS, COMMENT, CREATE OR
    REPLACE), so a dropped connection is retried like any other."""
    try:
        db.command(statement, retry=True)
    except DatabaseError as exc:
        raise DatabaseError(f"{exc} (while running: {db.as_string(statement)})", exc.sqlstate) from None


def extension_installed(db: Database) -> bool:
    """pgvector is installed in this PostgreSQL database, as the catalog read says."""
    return db.dialect.name == "postgresql" and "vector" in db.catalog().extensions


def ensure_extension(db: Database) -> None:
    """Make the vector type (and on CockroachDB before v25.4 its index feature) available, or
    stop before anything is encoded, saying what an administrator must run."""
    if extension_installed(db):
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


def run_in_transaction(db: Database, statements: list[sql.Composable]) -> list[int]:
    """Statements in one transaction, retried whole: each one's row count."""

    def run(conn):
        with conn.transaction():
            return [conn.execute(statement).rowcount for statement in statements]

    return db.run(run)


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


def refresh_terms(db: Database, target: VectorTarget) -> None:
    """Replace the BM25 statistics of the column's full text with the table's own (bm25.py): in
    one transaction, so a search reads the old ones or the new, never none."""
    terms = (target.fulltext or {}).get("terms")
    if not terms or not db.dialect.bm25:
        return
    statements = bm25.refresh_statements(
        db, target.table.ident, target.fulltext["column"], sql.Identifier(target.table.schema, terms)
    )

    def run(conn):
        with conn.transaction():
            for statement, params in statements:
                conn.execute(statement, params)

    db.run(run)


def add_openings(db: Database, target: VectorTarget, queries: FillQueries) -> int:
    """A column chunked before rows had their openings among their chunks: each row with a vector
    gains its opening, and the contents table its content, in one transaction (no model run).
    Returns the openings added."""
    if not target.chunks or not target.column_exists or target.reencode:
        return 0
    if "opening_weight" in ((target.existing_metadata or {}).get("chunks") or {}):
        return 0

    def run(conn) -> int:
        with conn.transaction():
            added = conn.execute(queries.add_openings, (chunks.OPENING, chunks.OPENING)).rowcount
            conn.execute(queries.add_missing_contents)
            return added

    return db.run(run)
