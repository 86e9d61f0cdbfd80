"""The same integration checks on every engine: PostgreSQL+pgvector always, CockroachDB when
VECTORIZE_TEST_CRDB_URL is set (skipped otherwise, and the pytest header says so)."""

from __future__ import annotations

import json

import numpy as np
import psycopg
import pytest

import modules
from conftest import cosine


@pytest.fixture
def engine_conn(engine_url):
    with psycopg.connect(engine_url, autocommit=True) as c:
        yield c


def is_crdb(conn) -> bool:
    return bool(conn.info.parameter_status("crdb_version"))


def test_encode_then_search(run_cli, engine_url, engine_conn):
    texts = ["Wall Street banks and the stock exchange", "A kitten asleep in the sun", "Rain over the North Sea"]
    engine_conn.execute("CREATE TABLE passage (id INT PRIMARY KEY, passage TEXT)")
    for i, text in enumerate(texts, 1):
        engine_conn.execute("INSERT INTO passage VALUES (%s, %s)", (i, text))
    engine_conn.execute("INSERT INTO passage VALUES (4, NULL)")

    result = run_cli("encode", "--url", engine_url, "--table", "passage", "--column", "passage", "--model", "minilm")
    assert result.exit_code == 0, result.output

    rows = dict(engine_conn.execute("SELECT id, passage_vector::TEXT FROM passage").fetchall())
    expected = modules.get("minilm").encode(texts)
    for i in range(1, 4):
        assert cosine(np.array(json.loads(rows[i])), expected[i - 1]) > 0.999
    assert rows[4] is None

    result = run_cli(
        "search", "--url", engine_url, "New York is the financial capital of the world", "-k", "3", "--json"
    )
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert [r["id"] for r in found][:1] == [1]
    assert len(found) == 3  # exactly k: the NULL-text row never shows

    again = run_cli("encode", "--url", engine_url, "--table", "passage", "--column", "passage", "--model", "minilm")
    assert "Nothing to do" in again.stdout


def test_table_without_declared_key(run_cli, engine_url, engine_conn, words):
    engine_conn.execute("CREATE TABLE loose (body TEXT)")
    engine_conn.execute("INSERT INTO loose VALUES ('one two'), ('three')")
    result = run_cli("encode", "--url", engine_url, "-t", "loose", "-c", "body", "-m", "words")
    if is_crdb(engine_conn):
        # CockroachDB gives such tables a hidden rowid primary key, which vectorize uses.
        assert result.exit_code == 0, result.output
        assert engine_conn.execute("SELECT count(*) FROM loose WHERE body_vector IS NOT NULL").fetchone()[0] == 2
    else:
        assert result.exit_code == 2
        assert "no primary key" in result.stderr


def test_injected_retry_errors_are_retried(run_cli, engine_url, engine_conn, words):
    """CockroachDB: inject_retry_errors_enabled makes statements fail with 40001 a few times."""
    if not is_crdb(engine_conn):
        pytest.skip("inject_retry_errors_enabled is a CockroachDB session setting; see test_reliability for PostgreSQL")
    engine_conn.execute("CREATE TABLE t (id INT PRIMARY KEY, body TEXT)")
    engine_conn.execute("INSERT INTO t SELECT g, 'row ' || g::TEXT FROM generate_series(1, 30) g")
    sep = "&" if "?" in engine_url else "?"
    url = f"{engine_url}{sep}options=-c%20inject_retry_errors_enabled%3Dtrue"
    result = run_cli("encode", "--url", url, "-t", "t", "-c", "body", "-m", "words", "--batch-size", "10")
    assert result.exit_code == 0, result.output
    assert engine_conn.execute("SELECT count(body_vector) FROM t").fetchone()[0] == 30


def test_what_only_a_live_server_settles(run_cli, engine_url, engine_conn, words):
    """The audit's open questions (docs/cockroachdb-sql-audit.md): the vector index serves a search
    planned without null_ordered_last; status sees the index (pg_indexes) and the trigger (SHOW
    TRIGGERS / pg_trigger); a BEFORE UPDATE trigger under UPDATE ... FROM unnest(...); CHAR(n)
    under the conditional write; the import staging table (CREATE TABLE AS) of a rowid table."""
    engine_conn.execute("CREATE TABLE t (id INT PRIMARY KEY, body CHAR(24), title TEXT, views INT DEFAULT 0)")
    engine_conn.execute(
        "INSERT INTO t (id, body, title) SELECT g, 'w ' || g::TEXT, NULL FROM generate_series(1, 3000) g"
    )
    base = ("encode", "--url", engine_url, "-t", "t", "-c", "body", "-c", "title", "-m", "words")
    result = run_cli(*base, "--track-changes")
    assert result.exit_code == 0, result.output
    assert "Encoded 3000 rows" in result.stdout  # char(n) and an all-NULL second column
    engine_conn.execute("ANALYZE t")
    explained = run_cli("search", "--url", engine_url, "w 3", "--explain")
    assert explained.exit_code == 0, explained.output
    assert "serves this search" in explained.stdout.splitlines()[-1], explained.stdout
    (column,) = json.loads(run_cli("status", "--url", engine_url, "--json").stdout)
    assert column["index"] and column["tracking"] is True and column["index_serves_search"] is True
    assert column["problem"] is None

    engine_conn.execute("UPDATE t SET views = views + 1 WHERE id <= 10")
    assert engine_conn.execute("SELECT count(*) FROM t WHERE body_vector IS NULL").fetchone()[0] == 0
    engine_conn.execute("UPDATE t SET body = 'edited' WHERE id = 1")
    assert engine_conn.execute("SELECT body_vector IS NULL FROM t WHERE id = 1").fetchone()[0]
    assert "Encoded 1 row of" in run_cli(*base).stdout

    found = run_cli("search", "--url", engine_url, "w 3", "-k", "5", "--where", '{"views": 1}', "--json")
    assert found.exit_code == 0 and len(json.loads(found.stdout)) == 5

    engine_conn.execute("CREATE TABLE loose2 (body TEXT)")
    engine_conn.execute("INSERT INTO loose2 VALUES ('a'), ('b c')")
    key = "rowid" if is_crdb(engine_conn) else None
    if key:
        keys = [r[0] for r in engine_conn.execute("SELECT rowid FROM loose2 ORDER BY rowid")]
        lines = "".join(json.dumps({"rowid": k, "vector": [1.0, 2.0, 3.0]}) + "\n" for k in keys)
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            f.write(lines)
        imported = run_cli("import-vectors", "--url", engine_url, "-t", "loose2", "-c", "body", "--file", f.name)
        assert imported.exit_code == 0, imported.output
        assert engine_conn.execute("SELECT count(body_vector) FROM loose2").fetchone()[0] == 2


def test_chunked_encode_search_track_and_drop(run_cli, engine_url, engine_conn):
    """encode --chunk end to end on each engine: the chunk table and its vector index, a deep fact
    found, a change re-queued (its old chunks never found), a deleted row's chunks removed, drop."""
    filler = " ".join(f"Section {i} describes the ordinary maintenance of pumps and valves." for i in range(60))
    needle = "The lighthouse keeper feeds exactly forty-two gulls every morning."
    engine_conn.execute("CREATE TABLE manual (id INT PRIMARY KEY, body TEXT)")
    for i in range(1, 6):
        body = filler + (" " + needle + " " + filler if i == 3 else "")
        engine_conn.execute("INSERT INTO manual VALUES (%s, %s)", (i, body))
    encoded = run_cli("encode", "--url", engine_url, "-t", "manual", "-c", "body", "--chunk", "--track-changes")
    assert encoded.exit_code == 0, encoded.output
    assert "chunks)" in encoded.stdout
    found = run_cli("search", "--url", engine_url, "how many seagulls does the keeper feed", "-t", "manual", "--json")
    assert found.exit_code == 0, found.output
    top = json.loads(found.stdout)[0]
    assert top["id"] == 3 and "gulls" in top["chunk_text"]
    engine_conn.execute("UPDATE manual SET body = %s WHERE id = 3", (filler,))
    again = json.loads(
        run_cli(
            "search", "--url", engine_url, "how many seagulls does the keeper feed", "-t", "manual", "--json"
        ).stdout
    )
    assert all("gulls" not in (row["chunk_text"] or "") for row in again)
    engine_conn.execute("DELETE FROM manual WHERE id = 5")
    assert run_cli("encode", "--url", engine_url, "-t", "manual", "-c", "body", "--chunk").exit_code == 0
    keys = {r[0] for r in engine_conn.execute("SELECT DISTINCT id FROM manual_body_vector_chunks")}
    assert keys == {1, 2, 3, 4}
    status = json.loads(run_cli("status", "--url", engine_url, "--json").stdout)[0]
    assert status["chunks"] and status["pending"] == 0 and status["index"] == "manual_body_vector_contents_idx"
    assert run_cli("drop", "--url", engine_url, "-t", "manual", "-c", "body", "--yes").exit_code == 0
    assert engine_conn.execute("SELECT count(*) FROM manual").fetchone()[0] == 4


def test_repeated_text_is_indexed_once_and_searched_as_exactly(run_cli, engine_url, engine_conn, counting):
    """The contents table, its upserts and sweeps, the hash lookups and the search through the
    index on each engine: a table of repeated paragraphs, a prefix column, a changed key of a
    chunked row, and an import keyed by its vectors."""
    paragraphs = [f"Permission is granted under condition {i} to copy this notice." for i in range(12)]
    engine_conn.execute("CREATE TABLE notice (id INT PRIMARY KEY, tenant INT, body TEXT)")
    for i in range(1, 601):
        body = f"A unique sentence about item {i} and the river." if i % 50 == 0 else paragraphs[i % 12]
        engine_conn.execute("INSERT INTO notice VALUES (%s, %s, %s)", (i, i % 3, body))
    base = ("encode", "--url", engine_url, "-t", "notice", "-c", "body", "-m", "chunkwords", "--track-changes")
    prefix = ("--prefix-column", "tenant") if is_crdb(engine_conn) else ()
    result = run_cli(*base, *prefix, "--batch-size", "100")
    assert result.exit_code == 0, result.output
    sent = [text for batch in counting.batches for text in batch]
    assert len(sent) == len(set(sent)) == 24
    for query in ("item 150 river", "condition 7 copy"):
        for where in ((), ("--where", '{"tenant": 1}')):
            through_index = run_cli("search", "--url", engine_url, query, "-k", "30", "--json", *where)
            exact = run_cli("search", "--url", engine_url, query, "-k", "30", "--json", "--exact", *where)
            assert through_index.exit_code == 0, through_index.output
            assert json.loads(through_index.stdout) == json.loads(exact.stdout)
    engine_conn.execute("UPDATE notice SET body = 'rewritten' WHERE body = %s", (paragraphs[4],))
    for _ in range(2):  # marked, then swept
        assert run_cli(*base).exit_code == 0
    (status,) = json.loads(run_cli("status", "--url", engine_url, "--json").stdout)
    held = engine_conn.execute("SELECT count(DISTINCT (body, tenant)) FROM notice").fetchone()[0]
    assert status["indexed"] == (held if prefix else 24)


def test_chunked_rows_whose_key_changed_are_split_again(run_cli, engine_url, engine_conn, counting):
    filler = " ".join(f"Clause {i} keeps this notice in all copies of the work." for i in range(30))
    engine_conn.execute("CREATE TABLE contract (id INT PRIMARY KEY, body TEXT)")
    for i in range(1, 7):
        extra = " The zebra crossed the frozen river at dawn." if i == 3 else ""
        engine_conn.execute("INSERT INTO contract VALUES (%s, %s)", (i, filler + extra))
    base = ("encode", "--url", engine_url, "-t", "contract", "-c", "body", "-m", "chunkwords")
    assert run_cli(*base, "--chunk").exit_code == 0
    engine_conn.execute("UPDATE contract SET id = id + 1000000000")
    query = ("search", "--url", engine_url, "The zebra crossed the frozen river at dawn", "-t", "contract", "--json")
    assert json.loads(run_cli(*query).stdout) == []  # no chunk belongs to a row under another key
    counting.batches.clear()
    assert run_cli(*base).exit_code == 0
    # Split again with no model time: the chunks' contents were kept, and so were the rows'
    # openings (what the model reads of each row), which are contents too.
    sent = [text for batch in counting.batches for text in batch]
    assert sent == []
    found = json.loads(run_cli(*query, "-k", "1").stdout)
    assert found[0]["id"] == 1000000003 and "zebra" in found[0]["chunk_text"]


def test_a_chunked_columns_export_restores_bit_for_bit_and_a_damaged_one_is_refused(
    run_cli, engine_url, engine_conn, counting, tmp_path
):
    text = " ".join(f"Sentence {i} names the lighthouse number {i} by the sea." for i in range(12))
    for table in ("doc", "twin"):
        engine_conn.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, body TEXT)")
        for i in range(1, 9):
            engine_conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (i, f"{text} Row {i}."))
    encoded = run_cli("encode", "--url", engine_url, "-t", "doc", "-c", "body", "-m", "chunkwords", "--chunk")
    assert encoded.exit_code == 0, encoded.output
    path = tmp_path / "doc.jsonl"
    assert run_cli("export-vectors", "--url", engine_url, "-t", "doc", "-f", path).exit_code == 0
    lines = path.read_text().splitlines(keepends=True)
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text("".join([lines[0].replace('"start": ', '"start": 1', 1), *lines[1:]]))
    (tmp_path / "damaged.jsonl.vectorize.json").write_text((tmp_path / "doc.jsonl.vectorize.json").read_text())
    refused = run_cli("import-vectors", "--url", engine_url, "-t", "twin", "-f", damaged)
    assert refused.exit_code == 2 and "line 1: its check does not match" in refused.stderr
    imported = run_cli("import-vectors", "--url", engine_url, "-t", "twin", "-f", path)
    assert imported.exit_code == 0, imported.output

    def rows(table):
        return engine_conn.execute(f"SELECT id, body_vector::TEXT FROM {table} ORDER BY id").fetchall()

    assert rows("twin") == rows("doc")
    query = ("search", "--url", engine_url, "lighthouse number 7", "-k", "3", "--json")
    found = [json.loads(run_cli(*query, "-t", t).stdout) for t in ("doc", "twin")]
    assert [(r["id"], r["distance"]) for r in found[0]] == [(r["id"], r["distance"]) for r in found[1]]
