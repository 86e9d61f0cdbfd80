"""The catalog is read once a command and answered from memory: statement counts of a first
chunked encode, a rerun with nothing to do and a warm search; targets resolved from a catalog built
by hand (no database); and serve following columns encoded or dropped while it runs."""

from __future__ import annotations

import json

import httpx
import psycopg
import pytest

from vectorize_core import connect, encode
from vectorize_core import serve as core
from vectorize_core.catalog import Catalog, Column, Entry, Table
from vectorize_core.dialects import Dialect
from vectorize_core.errors import AmbiguousVectorColumn, NoSuchTable, NoVectorizedColumn
from vectorize_core.search import search
from vectorize_core.target import resolve_for_search


class Statements:
    """Every statement psycopg sends while it is on (Connection.execute goes through here too)."""

    def __init__(self, monkeypatch):
        self.sent: list[str] = []
        original = psycopg.Cursor.execute

        def execute(cursor, query, params=None, **kwargs):
            text = query if isinstance(query, (str, bytes)) else query.as_string(cursor.connection)
            self.sent.append(str(text).lstrip().upper())
            return original(cursor, query, params, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, "execute", execute)

    def before_first_ddl(self) -> list[str]:
        for i, text in enumerate(self.sent):
            if text.startswith(("ALTER", "CREATE", "COMMENT", "DROP")):
                return self.sent[:i]
        return self.sent


@pytest.fixture
def notes(conn):
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, title text, body text)")
    conn.execute(
        "INSERT INTO notes SELECT g, 'title ' || g, repeat('word ' || g || ' of a note. ', 30)"
        " FROM generate_series(1, 300) g"
    )
    return conn


def test_an_encode_reads_the_catalog_once_and_a_rerun_makes_nothing_again(url, notes, counting, monkeypatch):
    statements = Statements(monkeypatch)
    options = {"table": "notes", "column": ["body"], "model": "chunkwords", "chunk": True, "fulltext": True}
    with connect(url) as db:
        encode(db, track_changes=True, **options)
    before = statements.before_first_ddl()
    assert len(before) <= 6, before
    statements.sent.clear()
    with connect(url) as db:
        result = encode(db, track_changes=True, **options)
    assert result.nothing_to_do
    assert len(statements.sent) <= 15, statements.sent
    assert not any(text.startswith(("ALTER", "CREATE", "COMMENT", "DROP")) for text in statements.sent)


def test_a_warm_search_sends_three_statements(url, notes, counting, monkeypatch):
    with connect(url) as db:
        encode(db, table="notes", column="body", model="chunkwords", chunk=True)
        search(db, "word 7", table="notes", k=3)
        statements = Statements(monkeypatch)
        found = search(db, "word 7 of a note", table="notes", k=3)
    assert found.rows[0]["id"] == 7
    # The column confirmed as it is now, the index's setting, the search.
    assert len(statements.sent) == 3, statements.sent


def hand_made_catalog() -> tuple[Catalog, Table]:
    meta = {"vectorize": {"version": 1, "source": ["body"], "model": "words", "dimension": 8, "metric": "l2"}}
    columns = {
        "id": Column("id", 1, "int4", "integer", -1, None, "N"),
        "body": Column("body", 2, "text", "text", -1, None, "S"),
        "body_vector": Column("body_vector", 3, "vector", "vector(8)", 8, json.dumps(meta), "U"),
    }
    table = Table("app", "notes", 42, columns, ("id",))
    relations = {("app", "notes"): Entry("r", 42, None, ""), ("app", "notes_pkey"): Entry("i", None, None, "notes")}
    catalog = Catalog(Dialect(version=(18, 0)), ["app", "public"], {"vector"}, relations, [])
    catalog.vectorized_rows = [(42, "app", "notes", "body_vector", json.dumps(meta))]
    catalog.tables[42] = table
    return catalog, table


class NoDatabase:
    """A Database that has only its catalog: resolving a target asks nothing of a server."""

    def __init__(self, catalog):
        self._catalog = catalog
        self.dialect = catalog.dialect

    def catalog(self):
        return self._catalog

    def find_table(self, table, schema=None):
        return self._catalog.find_table(self, table, schema)

    def vectorized_columns(self):
        return self._catalog.vectorized_columns()

    def forget_catalog(self):
        pass


def test_targets_resolve_from_a_catalog_without_a_database():
    catalog, table = hand_made_catalog()
    db = NoDatabase(catalog)
    target = resolve_for_search(db, table="notes")  # found through the search path
    assert (target.table, target.vector_column, target.sources) == (table, "body_vector", ["body"])
    assert resolve_for_search(db, column="body").vector_column == "body_vector"
    assert catalog.relation_owner("app", "notes_pkey") == "notes" and catalog.relation_owner("app", "free") is None
    assert catalog.index_exists(table, "notes_pkey") and not catalog.index_exists(table, "other")
    with pytest.raises(NoSuchTable):
        resolve_for_search(db, table="missing")
    with pytest.raises(NoVectorizedColumn):
        resolve_for_search(db, column="title")
    catalog.vectorized_rows.append(catalog.vectorized_rows[0][:3] + ("other_vector", catalog.vectorized_rows[0][4]))
    with pytest.raises(AmbiguousVectorColumn):
        resolve_for_search(db, table="notes")


def test_serve_follows_columns_encoded_and_dropped_while_it_runs(run_cli, url, conn, words):
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, title text, body text)")
    conn.execute("INSERT INTO notes SELECT g, 'title ' || g, 'body text ' || g FROM generate_series(1, 40) g")
    assert run_cli("encode", "--url", url, "-t", "notes", "-c", "body", "-m", "words").exit_code == 0
    with core.BackgroundServer(core.create_app(url)) as running, httpx.Client(base_url=running.url) as client:

        def post(**body):
            return client.post("/search", json={"query": "body text 7", "k": 3, **body})

        assert post().status_code == 200  # warm: the pooled connection holds its catalog
        assert run_cli("encode", "--url", url, "-t", "notes", "-c", "title", "-m", "words").exit_code == 0
        found = post(vector_column="title_vector")
        assert found.status_code == 200, found.text
        assert found.json()["ranking"]["vector_column"] == "title_vector"
        listed = {c["vector_column"] for c in client.get("/columns").json()["columns"]}
        assert listed == {"body_vector", "title_vector"}
        assert run_cli("drop", "--url", url, "-t", "notes", "-c", "title", "--yes").exit_code == 0
        gone = post(vector_column="title_vector")
        assert gone.status_code == 404, gone.text
        # Dropped and encoded again by another model: answered by what the column holds now.
        assert run_cli("drop", "--url", url, "-t", "notes", "-c", "body", "--yes").exit_code == 0
        assert (
            run_cli("encode", "--url", url, "-t", "notes", "-c", "body", "-m", "words", "--metric", "cosine").exit_code
            == 0
        )
        again = post()
        assert again.status_code == 200, again.text
        assert again.json()["ranking"]["metric"] == "cosine", again.json()
