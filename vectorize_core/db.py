"""Connections, engine detection, catalog introspection and retries: everything that knows
about connections lives here."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from . import dialects
from .catalog import METADATA_KEY, Catalog, Column, Relation, Table, require_key, split_table_name  # noqa: F401
from .errors import (
    BadInput,
    DatabaseError,
    DatabaseUnavailable,
)

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


@dataclass
class Database:
    """One connection (autocommit) that reconnects and retries transient failures."""

    url: str
    _conn: psycopg.Connection | None = field(default=None, repr=False)
    dialect: dialects.Dialect | None = None
    # Session settings applied on every connect and reconnect, e.g. serve's
    # {"default_transaction_read_only": "on", "statement_timeout": "30s"}.
    settings: dict[str, str] = field(default_factory=dict)
    _catalog: Catalog | None = field(default=None, repr=False)

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
            register_pgvector(conn, self.url)
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

    # -- introspection: answered from one snapshot of the catalog (catalog.py) -----------

    def catalog(self) -> Catalog:
        """The catalog as this command read it (read on first use)."""
        if self._catalog is None:
            self._catalog = Catalog.read(self)
        return self._catalog

    def forget_catalog(self) -> None:
        """After the tool's own DDL: the next question reads the catalog again."""
        self._catalog = None

    def find_table(self, table: str, schema: str | None = None) -> Table:
        return require_key(self.catalog().find_table(self, table, schema))

    def vectorized_columns(self) -> list[tuple[str, str, str, dict]]:
        """(schema, table, vector column, metadata) for every column vectorize has filled."""
        return self.catalog().vectorized_columns()

    def relation_owner(self, schema: str, name: str) -> str | None:
        """Who holds a relation name in a schema: the table an index of that name is on, '' for
        a relation that is not an index, None when the name is free."""
        return self.catalog().relation_owner(schema, name)

    def relation_comment(self, schema: str, name: str) -> str | None:
        return self.catalog().relation_comment(schema, name)

    def index_exists(self, table: Table, index_name: str) -> bool:
        return self.catalog().index_exists(table, index_name)


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


# The vector type's description, by database URL: looked up once a process, not on every
# connection (a pooled serve or a fill's reader and writer open several).
VECTOR_TYPES: dict[str, object] = {}


def register_pgvector(conn: psycopg.Connection, url: str = "") -> None:
    """Binary vector adapters on PostgreSQL; quietly skipped until the extension exists."""
    from pgvector.psycopg.vector import register_vector_info
    from psycopg.types import TypeInfo

    info = VECTOR_TYPES.get(url)
    if info is None:
        info = TypeInfo.fetch(conn, "vector")
        if info is None:
            return  # not installed yet: ensure_extension() registers after creating it
        VECTOR_TYPES[url] = info
    register_vector_info(conn, info)


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
