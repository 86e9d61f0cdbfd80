"""Connections, engine detection, catalog introspection and retries: everything that knows
about connections lives here."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from . import dialects
from .errors import (
    BadInput,
    DatabaseError,
    DatabaseUnavailable,
    NoPrimaryKey,
    NoSuchColumn,
    NoSuchTable,
)

METADATA_KEY = "vectorize"
# Only for Column objects built by hand; columns read from the catalog go by pg_type.typcategory.
TEXT_TYPES = {"text", "varchar", "bpchar", "citext", "name"}
# PostgreSQL's identifier limit (NAMEDATALEN - 1); longer names are silently truncated.
MAX_IDENTIFIER_BYTES = 63
# SQLSTATEs worth retrying: serialization failure, ambiguous result (idempotent writes only),
# deadlock (two writers), admin shutdown / node draining, every connection exception class.
RETRY_SQLSTATES = {"40001", "40003", "40P01", "57P01"}


def mask_url(url: str | None) -> str:
    """The URL with any password replaced by '***', for messages."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        masked = url
    else:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        masked = urlunsplit(parts._replace(netloc=netloc))
    # key=value DSNs and ?password= query parameters
    return re.sub(r"(password=)[^&\s]*", r"\1***", masked)


def is_transient(exc: BaseException) -> bool:
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = getattr(exc, "sqlstate", None)
    # No SQLSTATE means the connection itself failed (reset, closed, unreachable).
    return state is None or state in RETRY_SQLSTATES or state.startswith("08")


def retry_budget_seconds() -> float:
    return float(os.environ.get("VECTORIZE_RETRY_SECONDS", "60"))


@dataclass(frozen=True)
class Column:
    name: str
    attnum: int
    typname: str  # pg_type.typname: 'text', 'vector', 'int8', ...
    type_sql: str  # format_type(): 'character varying(20)', 'vector(384)'
    typmod: int
    comment: str | None
    category: str = ""  # pg_type.typcategory ('S' = string; domains carry their base type's)
    generated: str = ""  # '' (ordinary), 'stored' or 'virtual'
    expression: str | None = None  # the generation expression of a generated column

    @property
    def is_text(self) -> bool:
        # The string category covers text, varchar, char(n), name, citext and any domain over
        # them, whatever they are called: the catalog decides, not a list of names.
        if self.category:
            return self.category == "S"
        return self.typname in TEXT_TYPES

    @property
    def is_vector(self) -> bool:
        return self.typname == "vector"

    @property
    def metadata(self) -> dict | None:
        """The vectorize record kept in the column comment, if this column has one."""
        if not self.comment:
            return None
        try:
            doc = json.loads(self.comment)
        except ValueError:
            return None
        if isinstance(doc, dict) and isinstance(doc.get(METADATA_KEY), dict):
            return doc[METADATA_KEY]
        return None


@dataclass(frozen=True)
class Relation:
    """A table by its schema and name: the user's, or one the tool makes beside it."""

    schema: str
    name: str

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Table(Relation):
    oid: int
    columns: dict[str, Column]
    primary_key: tuple[str, ...]

    def column(self, name: str) -> Column:
        try:
            return self.columns[name]
        except KeyError:
            raise NoSuchColumn(f"table {self.display} has no column {name!r}") from None


def split_table_name(table: str, schema: str | None) -> tuple[str | None, str]:
    """'name' or 'schema.name' (each part exactly as written); --schema may be given instead."""
    if schema is not None:
        return schema, table
    if "." in table:
        left, right = table.split(".", 1)
        return left, right
    return None, table


@dataclass
class Database:
    """One connection (autocommit) that reconnects and retries transient failures."""

    url: str
    _conn: psycopg.Connection | None = field(default=None, repr=False)
    dialect: dialects.Dialect | None = None
    # Session settings applied on every connect and reconnect, e.g. serve's
    # {"default_transaction_read_only": "on", "statement_timeout": "30s"}.
    settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def connect(cls, url: str, settings: dict[str, str] | None = None) -> Database:
        db = cls(url, settings=dict(settings or {}))
        db.connection()
        return db

    def clone(self) -> Database:
        """Another connection to the same database (for work on another thread)."""
        return Database(self.url, dialect=self.dialect, settings=dict(self.settings))

    def connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self._open()
        return self._conn

    def _open(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"cannot connect to {mask_url(self.url)}: {first_line(exc, self.url)}") from None
        if self.dialect is None:
            self.dialect = dialects.for_connection(conn)
        if self.dialect.name == "postgresql":
            register_pgvector(conn)
        try:
            for statement in session_statements(self.settings):
                conn.execute(statement)
        except psycopg.Error as exc:
            conn.close()
            raise DatabaseError(f"session settings refused: {first_line(exc, self.url)}", exc.sqlstate) from None
        return conn

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def reset(self) -> None:
        """Drop the connection so the next use opens a fresh one."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - the connection is already gone
                pass
        self._conn = None

    def run(self, work, *, retry: bool = True):
        """Call work(conn), retrying transient failures with backoff for a bounded time.

        Only idempotent work may be retried: a 40003 'result is ambiguous' may have committed.
        """
        if not retry:
            return self._translate(work)
        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_delay(retry_budget_seconds()),
            wait=wait_exponential_jitter(multiplier=0.1, max=5),
            before_sleep=lambda _state: self.reset(),
            reraise=True,
        )
        try:
            return retrying(self._call, work)
        except psycopg.OperationalError as exc:
            if is_transient(exc):
                raise DatabaseUnavailable(
                    f"lost the database at {mask_url(self.url)} and could not get it back "
                    f"within {retry_budget_seconds():.0f}s: {first_line(exc, self.url)}; "
                    "what was written is kept, run the command again to continue"
                ) from None
            raise DatabaseError(first_line(exc, self.url), exc.sqlstate) from None
        except psycopg.Error as exc:
            raise DatabaseError(first_line(exc, self.url), exc.sqlstate) from None

    def _call(self, work):
        try:
            conn = self.connection()
        except DatabaseUnavailable as exc:
            # Reconnecting is part of the retry loop: surface it as a transient failure.
            raise psycopg.OperationalError(str(exc)) from None
        return work(conn)

    def _translate(self, work):
        try:
            return work(self.connection())
        except psycopg.Error as exc:
            raise DatabaseError(first_line(exc, self.url), exc.sqlstate) from None

    def fetchall(self, query, params=None, *, retry: bool = True) -> list[tuple]:
        return self.run(lambda conn: conn.execute(query, params).fetchall(), retry=retry)

    def fetchone(self, query, params=None, *, retry: bool = True):
        return self.run(lambda conn: conn.execute(query, params).fetchone(), retry=retry)

    def command(self, query, params=None, *, retry: bool = False) -> int:
        """Run a statement that returns no rows; DDL is not retried by default."""
        return self.run(lambda conn: conn.execute(query, params).rowcount, retry=retry)

    def as_string(self, query: sql.Composable) -> str:
        return query.as_string(self.connection())

    # -- introspection -------------------------------------------------------------------

    def find_table(self, table: str, schema: str | None = None) -> Table:
        schema, name = split_table_name(table, schema)
        if schema is None:
            row = self.fetchone(
                "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c"
                " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relname = %s AND c.relkind IN ('r', 'p')"
                " AND n.nspname = ANY(current_schemas(false))"
                " ORDER BY array_position(current_schemas(false), n.nspname) LIMIT 1",
                (name,),
            )
        else:
            row = self.fetchone(
                "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c"
                " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relname = %s AND n.nspname = %s AND c.relkind IN ('r', 'p')",
                (name, schema),
            )
        if row is None:
            shown = f"{schema}.{name}" if schema else name
            raise NoSuchTable(f"no table {shown!r} in the database")
        oid, schema, name = row
        columns = self._columns(oid, schema, name)
        return Table(schema, name, oid, columns, self._primary_key(schema, name, columns))

    def _columns(self, oid: int, schema: str, name: str) -> dict[str, Column]:
        rows = self.fetchall(
            "SELECT a.attname, a.attnum, t.typname, format_type(a.atttypid, a.atttypmod),"
            " a.atttypmod, col_description(a.attrelid, a.attnum), t.typcategory::text"
            " FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid"
            " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (oid,),
        )
        query = self.dialect.generated_columns_query()
        generated = {
            column: (kind, expression)
            for column, kind, expression in self.fetchall(query, {"oid": oid, "schema": schema, "name": name})
        }
        return {r[0]: Column(*r, *generated.get(r[0], ("", None))) for r in rows}

    def _primary_key(self, schema: str, name: str, columns: dict[str, Column]) -> tuple[str, ...]:
        rows = self.fetchall(
            "SELECT kcu.column_name FROM information_schema.table_constraints tc"
            " JOIN information_schema.key_column_usage kcu"
            "   ON kcu.constraint_schema = tc.constraint_schema"
            "  AND kcu.constraint_name = tc.constraint_name"
            "  AND kcu.table_name = tc.table_name"
            " WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = %s AND tc.table_name = %s"
            " ORDER BY kcu.ordinal_position",
            (schema, name),
        )
        key = tuple(r[0] for r in rows)
        if not key and self.dialect.name == "cockroachdb" and "rowid" in columns:
            key = ("rowid",)  # CockroachDB's hidden key of tables declared without one
        if not key:
            raise NoPrimaryKey(
                f"table {schema}.{name} has no primary key; vectorize needs one to write vectors back "
                "to their rows (ALTER TABLE ... ADD PRIMARY KEY)"
            )
        return key

    def vectorized_columns(self) -> list[tuple[str, str, str, dict]]:
        """(schema, table, vector column, metadata) for every column vectorize has filled."""
        rows = self.fetchall(
            "SELECT n.nspname, c.relname, a.attname, col_description(c.oid, a.attnum)"
            " FROM pg_catalog.pg_attribute a"
            " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_catalog.pg_type t ON t.oid = a.atttypid"
            " WHERE t.typname = 'vector' AND a.attnum > 0 AND NOT a.attisdropped"
            " AND c.relkind IN ('r', 'p')"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'crdb_internal')"
            " ORDER BY n.nspname, c.relname, a.attnum"
        )
        found = []
        for schema, table, column, comment in rows:
            meta = Column(column, 0, "vector", "", 0, comment).metadata
            if meta is not None:
                found.append((schema, table, column, meta))
        return found

    def relation_owner(self, schema: str, name: str) -> str | None:
        """Who holds a relation name in a schema: the table an index of that name is on, '' for
        a relation that is not an index, None when the name is free."""
        row = self.fetchone(
            "SELECT coalesce(t.relname, '') FROM pg_catalog.pg_class c"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid"
            " LEFT JOIN pg_catalog.pg_class t ON t.oid = i.indrelid"
            " WHERE n.nspname = %s AND c.relname = %s",
            (schema, name),
        )
        return None if row is None else row[0]

    def relation_comment(self, schema: str, name: str) -> str | None:
        row = self.fetchone(
            "SELECT obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            (schema, name),
        )
        return None if row is None else row[0]

    def index_exists(self, table: Table, index_name: str) -> bool:
        return self.run(lambda conn: index_exists(conn, table.schema, table.name, index_name))


def session_statements(settings: dict[str, str]) -> list[sql.Composed]:
    """SET name = 'value' for each setting: the same on PostgreSQL and CockroachDB. Names are the
    tool's own constants, written bare as both engines document them (never from input)."""
    statements = []
    for name, value in settings.items():
        if not re.fullmatch(r"[a-z_][a-z0-9_.]*", name):
            raise ValueError(f"not a session setting name: {name!r}")
        statements.append(sql.SQL("SET {} = {}").format(sql.SQL(name), sql.Literal(value)))
    return statements


def index_exists(conn: psycopg.Connection, schema: str, table: str, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_indexes WHERE schemaname = %s AND tablename = %s AND indexname = %s",
        (schema, table, name),
    ).fetchone()
    return row is not None


def register_pgvector(conn: psycopg.Connection) -> None:
    """Binary vector adapters on PostgreSQL; quietly skipped until the extension exists."""
    from pgvector.psycopg import register_vector

    try:
        register_vector(conn)
    except psycopg.ProgrammingError:
        pass  # 'vector type not found': ensure_extension() registers after creating it


def first_line(exc: BaseException, url: str | None = None) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if url:
        parts = urlsplit(url) if "://" in url else None
        if parts is not None and parts.password:
            text = text.replace(parts.password, "***")
    return text


def connect(url: str | None) -> Database:
    """Connect to url, or to the embedded default database when url is None or empty."""
    if not url:
        from .embedded import default_url

        url = default_url()
    if not isinstance(url, str) or not url.strip():
        raise BadInput("empty database URL")
    return Database.connect(url)
