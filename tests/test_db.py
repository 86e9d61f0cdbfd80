"""Connections: password masking, transient-error classification, reconnect and retry."""

from __future__ import annotations

import psycopg
import pytest

from vectorize_core import db as dbmod
from vectorize_core.errors import DatabaseUnavailable


@pytest.mark.parametrize(
    "url, masked",
    [
        ("postgresql://u:pw@h:5432/d", "postgresql://u:***@h:5432/d"),
        ("postgresql://u@h/d", "postgresql://u@h/d"),
        ("postgresql://h/d?password=pw&sslmode=require", "postgresql://h/d?password=***&sslmode=require"),
        ("host=h password=pw dbname=d", "host=h password=*** dbname=d"),
    ],
)
def test_mask_url(url, masked):
    assert dbmod.mask_url(url) == masked


@pytest.mark.parametrize(
    "sqlstate, transient",
    [
        ("40001", True),
        ("40003", True),
        ("57P01", True),
        ("08006", True),
        ("08C00", True),
        ("23505", False),
        ("42P01", False),
    ],
)
def test_transient_sqlstates(sqlstate, transient):
    class Err(psycopg.OperationalError):
        pass

    Err.sqlstate = sqlstate
    assert dbmod.is_transient(Err("x")) is transient
    assert not dbmod.is_transient(psycopg.errors.UniqueViolation("not operational"))


def test_connection_without_sqlstate_is_transient():
    assert dbmod.is_transient(psycopg.OperationalError("server closed the connection unexpectedly"))
    assert not dbmod.is_transient(ValueError("x"))


def test_run_reconnects_after_the_backend_is_killed(url, conn):
    with dbmod.connect(url) as db:
        pid = db.fetchone("SELECT pg_backend_pid()")[0]
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # The next use finds the connection dead, reconnects and retries.
        assert db.fetchone("SELECT 41 + 1")[0] == 42
        assert db.fetchone("SELECT pg_backend_pid()")[0] != pid


def test_serialization_failures_are_retried(url, monkeypatch):
    monkeypatch.setenv("VECTORIZE_RETRY_SECONDS", "10")
    calls = []

    def flaky(conn):
        calls.append(1)
        if len(calls) < 3:
            raise psycopg.errors.SerializationFailure("restart transaction")
        return conn.execute("SELECT 1").fetchone()[0]

    with dbmod.connect(url) as db:
        assert db.run(flaky) == 1
    assert len(calls) == 3


def test_retry_budget_ends_in_a_clear_error(url, monkeypatch):
    monkeypatch.setenv("VECTORIZE_RETRY_SECONDS", "0.5")

    def always_failing(conn):
        raise psycopg.errors.SerializationFailure("restart transaction")

    with dbmod.connect(url) as db, pytest.raises(DatabaseUnavailable, match="run the command again"):
        db.run(always_failing)
