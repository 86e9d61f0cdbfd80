"""Freshness and operations: change tracking, follow mode, status, drop, emitted SQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from conftest import ROOT, table_checksum


@pytest.fixture
def articles(conn):
    conn.execute("CREATE TABLE articles (id int PRIMARY KEY, title text, body text, views int)")
    conn.execute("INSERT INTO articles SELECT g, 'title ' || g, 'body text ' || g, 0 FROM generate_series(1, 6) g")
    conn.execute("INSERT INTO articles VALUES (7, NULL, NULL, 0)")
    return conn


def vector_is_null(conn, column, id_):
    return conn.execute(f"SELECT {column} IS NULL FROM articles WHERE id = %s", (id_,)).fetchone()[0]


def test_track_changes_resets_only_the_vectors_of_changed_sources(run_cli, url, articles, words):
    base = ("encode", "--url", url, "-t", "articles", "-m", "words", "--track-changes")
    assert run_cli(*base, "-c", "title").exit_code == 0
    assert run_cli(*base, "-c", "body", "--vector-column", "body_vec").exit_code == 0
    triggers = articles.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'articles'::regclass").fetchone()[0]
    assert triggers == 2  # one trigger per tracked column, each watching its own sources

    articles.execute("UPDATE articles SET views = 5 WHERE id = 1")  # another column: vectors stay
    assert not vector_is_null(articles, "title_vector", 1) and not vector_is_null(articles, "body_vec", 1)

    articles.execute("UPDATE articles SET body = 'new body' WHERE id = 2")
    assert not vector_is_null(articles, "title_vector", 2) and vector_is_null(articles, "body_vec", 2)

    articles.execute("UPDATE articles SET title = NULL WHERE id = 3")  # to NULL counts
    assert vector_is_null(articles, "title_vector", 3) and not vector_is_null(articles, "body_vec", 3)

    articles.execute("UPDATE articles SET title = 'from null' WHERE id = 7")  # from NULL counts
    assert vector_is_null(articles, "title_vector", 7)

    articles.execute("UPDATE articles SET title = title WHERE id = 4")  # same text: no reset
    assert not vector_is_null(articles, "title_vector", 4)

    result = run_cli(
        "encode", "--url", url, "-t", "articles", "-c", "body", "-m", "words", "--vector-column", "body_vec"
    )
    assert "Encoded 1 row of" in result.stdout
    body_vec = articles.execute("SELECT body_vec::text FROM articles WHERE id = 2").fetchone()[0]
    assert json.loads(body_vec)[:2] == [4, 5]  # 'new body'


def test_status_figures_match_counts(run_cli, url, articles, words):
    assert (
        run_cli("encode", "--url", url, "-t", "articles", "-c", "title", "-m", "words", "--limit", "4").exit_code == 0
    )
    result = run_cli("status", "--url", url, "--json")
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)
    assert {k: entry[k] for k in ("table", "column", "vector_column", "model", "dimension", "metric")} == {
        "table": "public.articles",
        "column": "title",
        "vector_column": "title_vector",
        "model": "words",
        "dimension": 8,
        "metric": "l2",
    }
    assert (entry["rows"], entry["embedded"], entry["pending"], entry["no_text"]) == (7, 4, 2, 1)
    assert entry["index"] == "articles_title_vector_contents_idx" and entry["tracking"] is False
    assert entry["vector_bytes"] > 4 * 8 * 4 and entry["index_bytes"] > 0

    assert (
        run_cli("encode", "--url", url, "-t", "articles", "-c", "title", "-m", "words", "--track-changes").exit_code
        == 0
    )
    (entry,) = json.loads(run_cli("status", "--url", url, "-t", "articles", "--json").stdout)
    assert (entry["embedded"], entry["pending"], entry["tracking"]) == (6, 0, True)
    human = run_cli("status", "--url", url).stdout
    assert "title_vector" in human and "words" in human


def test_pending_rows_are_found_through_the_partial_index(run_cli, url, articles, words):
    assert run_cli("encode", "--url", url, "-t", "articles", "-c", "title", "-m", "words").exit_code == 0
    (indexdef,) = articles.execute(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'articles_title_vector_pending'"
    ).fetchone()
    assert "WHERE ((title_vector IS NULL) AND (title ~ '[^" in indexdef  # the explicit white-space set
    articles.execute("INSERT INTO articles SELECT g, 'x', 'y', 0 FROM generate_series(100, 5000) g")
    articles.execute("UPDATE articles SET title_vector = '[1,1,1,1,1,1,1,1]' WHERE id >= 100")
    articles.execute("ANALYZE articles")
    # The statement encode itself runs to find the next page of pending rows.
    dry = run_cli("encode", "--url", url, "-t", "articles", "-c", "title", "-m", "words", "--dry-run").stdout
    pages = [line for line in dry.splitlines() if line.startswith("SELECT CAST") and ") > (" not in line]
    assert len(pages) == 1, dry
    first_page = pages[0]
    plan = "\n".join(r[0] for r in articles.execute("EXPLAIN " + first_page.rstrip(";"), (1024,)))
    assert "articles_title_vector_pending" in plan


def test_drop_leaves_the_table_as_it_was(run_cli, url, articles, words):
    before = table_checksum(articles, "articles")
    base = ("--url", url, "-t", "articles", "-m", "words")
    assert run_cli("encode", *base, "-c", "title", "--track-changes").exit_code == 0
    assert run_cli("encode", *base, "-c", "body", "--track-changes").exit_code == 0

    refused = run_cli("drop", "--url", url, "-t", "articles", "-c", "title")
    assert refused.exit_code == 2 and "--yes" in refused.stderr

    assert run_cli("drop", "--url", url, "-t", "articles", "-c", "title", "--yes").exit_code == 0
    # body's tracking survives, title's part is gone from the trigger
    articles.execute("UPDATE articles SET body = 'changed' WHERE id = 1")
    assert vector_is_null(articles, "body_vector", 1)
    articles.execute("UPDATE articles SET title = 'changed' WHERE id = 2")  # no error: no reference left

    assert run_cli("drop", "--url", url, "-t", "articles", "-c", "body", "--yes").exit_code == 0
    articles.execute("UPDATE articles SET title = 'title 2', body = 'body text 1' WHERE id IN (1, 2)")
    articles.execute("UPDATE articles SET body = 'body text 2' WHERE id = 2")
    articles.execute("UPDATE articles SET title = 'title 1' WHERE id = 1")
    assert table_checksum(articles, "articles") == before
    assert articles.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'articles'::regclass").fetchone()[0] == 0
    assert articles.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE 'vectorize%'").fetchone()[0] == 0

    missing = run_cli("drop", "--url", url, "-t", "articles", "-c", "title", "--yes")
    assert missing.exit_code == 2


def test_emit_sql_prints_the_parameterised_query(run_cli, url, articles, words):
    assert run_cli("encode", "--url", url, "-t", "articles", "-c", "title", "-m", "words").exit_code == 0
    result = run_cli("search", "--url", url, "--emit-sql")
    assert result.exit_code == 0, result.output
    query = result.stdout.strip().splitlines()[-1].rstrip(";")
    assert '"title_vector" <-> CAST(%s AS vector(8))' in query
    assert "set_config('hnsw.ef_search', '100', true)" in result.stdout
    vector = "[6,2,0,0,0,0,0,0]"
    assert "parameters in order: the query vector, the query vector, the query vector, 11, 10" in result.stdout
    rows = articles.execute(query, (vector, vector, vector, 11, 3)).fetchall()
    assert len(rows) == 3 and rows[0][0] in range(1, 10)


def follow_process(url, *extra):
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT / "tests" / "plugins" / "vectorize_tiny")}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "vectorize.py"), "encode", "-t", "articles", "-c", "title", "-m", "tiny",
         "--track-changes", "--follow", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for(condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except psycopg.errors.UndefinedColumn:
            pass  # the follower has not added the column yet
        time.sleep(0.1)
    return False


def test_follow_embeds_new_and_changed_rows_and_stops_on_sigterm(url, articles):
    proc = follow_process(url)
    try:
        with psycopg.connect(url, autocommit=True) as c:
            assert wait_for(lambda: c.execute("SELECT count(title_vector) FROM articles").fetchone()[0] == 6)
            c.execute("INSERT INTO articles VALUES (50, 'a new row', NULL, 0)")
            c.execute("UPDATE articles SET title = 'changed title text' WHERE id = 1")
            assert wait_for(
                lambda: (
                    c.execute(
                        "SELECT count(*) FROM articles WHERE title_vector IS NULL AND title IS NOT NULL"
                    ).fetchone()[0]
                    == 0
                    and c.execute("SELECT title_vector IS NOT NULL FROM articles WHERE id = 50").fetchone()[0]
                )
            )
            assert json.loads(c.execute("SELECT title_vector::text FROM articles WHERE id = 1").fetchone()[0]) == [
                18,
                5,
                2,
                0,
            ]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        proc.kill()


def test_follow_exits_by_itself_after_max_idle(url, articles):
    proc = follow_process(url, "--max-idle", "1")
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Encoded 6 rows" in out
