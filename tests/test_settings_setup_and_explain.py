"""Defects the CockroachDB source audit found (docs/cockroachdb-sql-audit.md in the shared design
folder), tested here on PostgreSQL where the engine allows; their CockroachDB statements are pinned
in test_dialects.py."""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from conftest import WordsEncoder, table_checksum
from vectorize_core import connect
from vectorize_core.search import search


def test_a_page_whose_second_column_is_null_in_every_row(run_cli, url, conn, words):
    """Audit defect 1: an all-NULL array was an untyped literal: unnest(unknown) is not unique."""
    conn.execute("CREATE TABLE mc (id int PRIMARY KEY, title text, body text)")
    conn.execute("INSERT INTO mc SELECT g, 'title ' || g, NULL FROM generate_series(1, 5) g")
    result = run_cli("encode", "--url", url, "-t", "mc", "-c", "title", "-c", "body", "-m", "words")
    assert result.exit_code == 0, result.output
    assert "Encoded 5 rows" in result.stdout
    for title, vector in conn.execute("SELECT title, title_vector::text FROM mc"):
        np.testing.assert_array_equal(np.array(json.loads(vector), np.float32), WordsEncoder.vector(title))


def as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.split('@', 1)[1]}"))


def test_setup_refused_stops_before_anything_is_encoded(run_cli, url, conn, words):
    """Audit defect 4: a user who may not switch the vector feature on (here: may not create the
    extension) is stopped before the fill, told what an administrator must run."""
    conn.execute("CREATE ROLE app_user LOGIN")
    conn.execute("CREATE TABLE doc (id int PRIMARY KEY, body text)")
    conn.execute("ALTER TABLE doc OWNER TO app_user")
    conn.execute("INSERT INTO doc VALUES (1, 'x'), (2, 'y')")
    before = table_checksum(conn, "doc")
    result = run_cli("encode", "--url", as_role(url, "app_user"), "-t", "doc", "-c", "body", "-m", "words")
    assert result.exit_code == 1
    assert "administrator" in result.stderr and "CREATE EXTENSION IF NOT EXISTS vector" in result.stderr
    assert table_checksum(conn, "doc") == before and words.batches == []


def test_search_settings_do_not_leak_into_the_connection(url, conn, run_cli, words):
    """Audit item 9: per-query settings are local to the search's own transaction."""
    conn.execute("CREATE TABLE doc (id int PRIMARY KEY, body text, cat text)")
    conn.execute("INSERT INTO doc SELECT g, 'w' || repeat(' w', g % 7), 'c' || g % 3 FROM generate_series(1, 50) g")
    assert run_cli("encode", "--url", url, "-t", "doc", "-c", "body", "-m", "words").exit_code == 0
    with connect(url) as db:
        rows = search(db, "w w", k=5, ef_search=300, where={"cat": "c1"}).rows
        assert len(rows) == 5
        after = db.fetchone("SELECT current_setting('hnsw.ef_search'), current_setting('hnsw.iterative_scan')")
    assert after == ("40", "off")  # pgvector's defaults, not this search's 300 and strict_order


def test_beam_size_is_bounded_to_what_cockroachdb_accepts(run_cli, url):
    result = run_cli("search", "--url", url, "x", "--beam-size", "4096")
    assert result.exit_code == 2 and "--beam-size" in result.stderr


def test_explain_says_whether_the_vector_index_serves_the_search(run_cli, url, conn, words):
    conn.execute("CREATE TABLE doc (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO doc SELECT g, repeat('w ', g % 7 + 1) || g FROM generate_series(1, 3000) g")
    assert run_cli("encode", "--url", url, "-t", "doc", "-c", "body", "-m", "words").exit_code == 0
    conn.execute("ANALYZE doc")
    served = run_cli("search", "--url", url, "w w", "--explain")
    assert served.exit_code == 0, served.output
    assert "Index Scan using doc_body_vector_contents_idx" in served.stdout
    assert (
        served.stdout.strip().splitlines()[-1] == "-- the vector index doc_body_vector_contents_idx serves this search"
    )
    exact = run_cli("search", "--url", url, "--explain", "--exact")  # no query: a probe vector
    assert exact.exit_code == 0 and "-- NOT served by the vector index" in exact.stdout

    (column,) = json.loads(run_cli("status", "--url", url, "--json").stdout)
    assert column["index_serves_search"] is True and column["index_bytes"] > 0

    conn.execute("DROP INDEX doc_body_vector_contents_idx")
    missing = run_cli("search", "--url", url, "--explain")
    assert "-- NOT served by a vector index: public.doc.body_vector has none (yet)" in missing.stdout
    search = run_cli("search", "--url", url, "w w", "-k", "3")
    assert search.exit_code == 0 and "Note: public.doc.body_vector has no vector index (yet)" in search.stderr
    (column,) = json.loads(run_cli("status", "--url", url, "--json").stdout)
    assert column["index"] is None and column["index_serves_search"] is None


def test_follower_read_is_a_cockroachdb_feature(run_cli, url, conn, words):
    conn.execute("CREATE TABLE doc (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO doc VALUES (1, 'x')")
    assert run_cli("encode", "--url", url, "-t", "doc", "-c", "body", "-m", "words").exit_code == 0
    result = run_cli("search", "--url", url, "x", "--follower-read")
    assert result.exit_code == 2 and "CockroachDB feature" in result.stderr
