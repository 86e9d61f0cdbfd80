"""A chunked column moves between databases as a plain one does: export-vectors writes a record
a chunk (the row's opening among them) with its span in the text and the column's chunking, and
import-vectors into a table holding the same text restores it bit for bit: the same chunk rows,
row vectors, hashes and contents, so search answers the same. A row whose text changed since, or
whose chunks did not all arrive, is left out, named, and stays pending. Real embedded PostgreSQL,
two databases, real files in every format."""

from __future__ import annotations

import json

import psycopg
import pytest
from test_chunks import long_text

from conftest import column_metadata, fresh_database, table_checksum

FORMATS = ["jsonl", "csv", "parquet", "npy"]
ROWS = 24


def make_docs(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE doc (id int PRIMARY KEY, body text)")
        for i in range(1, ROWS + 1):
            needle = f"The lighthouse keeper number {i} counts ships." if i % 3 == 0 else None
            text = long_text(65, 5) if i in (5, 6) else long_text(60 + i, i, needle, at=20)
            conn.execute("INSERT INTO doc VALUES (%s, %s)", (i, text))  # rows 5 and 6 share their text


@pytest.fixture
def source(run_cli, url, counting):
    """Table doc encoded with --chunk (12-token model, 8-token chunks) in the test database."""
    make_docs(url)
    result = run_cli(
        "encode", "--url", url, "-t", "doc", "-c", "body", "-m", "chunkwords", "--chunk", "--chunk-tokens", "8"
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return url


@pytest.fixture
def target(pg_server):
    """A second database with the same table and text, no vectors."""
    url = fresh_database(pg_server.get_uri())
    make_docs(url)
    return url


def export(run_cli, url, path) -> None:
    result = run_cli("export-vectors", "--url", url, "-t", "doc", "-f", path)
    assert result.exit_code == 0, result.output
    assert "chunk vectors (each row's opening among them)" in result.stdout


def state(url: str, skip: tuple[int, ...] = ()) -> dict:
    """Everything a chunked column is, compared in SQL: its chunk rows, the row vectors and text
    hashes, its contents, and its chunking record."""
    with psycopg.connect(url) as conn:
        meta = column_metadata(conn, "doc", "body_vector")
        ct, columns = meta["chunks"]["table"], meta["chunks"]["columns"]
        chunk_rows = conn.execute(
            f"SELECT md5(string_agg(concat_ws(':', id, {columns['chunk']}, {columns['start']}, {columns['end']},"
            f" {columns['hash']}, {columns['row_hash']}, {columns['vector']}::text), ',' ORDER BY id,"
            f" {columns['chunk']})), count(*) FROM {ct} WHERE id <> ALL(%s)",
            (list(skip),),
        ).fetchone()
        rows = conn.execute(
            "SELECT md5(string_agg(concat_ws(':', id, body_vector::text, body_vector_hash), ',' ORDER BY id)),"
            " count(body_vector) FROM doc WHERE id <> ALL(%s)",
            (list(skip),),
        ).fetchone()
        contents = conn.execute(
            f"SELECT count(*), md5(string_agg(content_hash::text || content_vector::text, ',' ORDER BY content_hash))"
            f" FROM {meta['contents']['table']}"
        ).fetchone()
        chunking = {k: meta["chunks"][k] for k in ("tokens", "overlap", "counting", "opening_weight")}
    return {"chunks": chunk_rows, "rows": rows, "contents": contents, "chunking": chunking, "model": meta["model"]}


def search(run_cli, url: str, query: str) -> list:
    result = run_cli("search", "--url", url, query, "-t", "doc", "-k", "5", "--json")
    assert result.exit_code == 0, result.output
    return [(r["id"], round(r["distance"], 6)) for r in json.loads(result.stdout)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_chunked_column_round_trips_bit_for_bit_in_every_format(run_cli, source, target, tmp_path, fmt):
    path = tmp_path / f"doc.{fmt}"
    export(run_cli, source, path)
    result = run_cli("import-vectors", "--url", target, "-f", path)
    assert result.exit_code == 0, result.output
    assert f"Imported the chunks of {ROWS} rows" in result.stdout
    assert state(target) == state(source)
    for query in ("lighthouse keeper number 9", "ships counted by the keeper"):
        assert search(run_cli, target, query) == search(run_cli, source, query)


def test_rows_whose_text_changed_are_left_out_named_and_stay_pending(run_cli, source, target, tmp_path, counting):
    path = tmp_path / "doc.jsonl"
    export(run_cli, source, path)
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("UPDATE doc SET body = body || ' One more sentence.' WHERE id = 4")
        conn.execute("UPDATE doc SET body = replace(body, 'lighthouse', 'windmill') WHERE id = 9")
    result = run_cli("import-vectors", "--url", target, "-f", path)
    assert result.exit_code == 0, result.output
    assert "2 rows were left out because their text changed since the export (id=4; id=9)" in result.stdout
    assert state(target, skip=(4, 9))["chunks"] == state(source, skip=(4, 9))["chunks"]
    with psycopg.connect(target) as conn:
        pending = conn.execute("SELECT id FROM doc WHERE body_vector IS NULL ORDER BY id").fetchall()
    assert pending == [(4,), (9,)]
    counting.batches.clear()
    again = run_cli("encode", "--url", target, "-t", "doc", "-c", "body", "-m", "chunkwords", "--chunk")
    assert again.exit_code == 0, again.output
    assert "Encoded 2 rows" in again.stdout
    assert search(run_cli, target, "windmill keeper number 9")[0][0] == 9


def test_strict_refuses_a_file_whose_rows_changed_and_writes_nothing(run_cli, source, target, tmp_path):
    path = tmp_path / "doc.parquet"
    export(run_cli, source, path)
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("UPDATE doc SET body = 'a different text' WHERE id = 2")
        before = table_checksum(conn, "doc")
    result = run_cli("import-vectors", "--url", target, "-f", path, "--strict")
    assert result.exit_code == 2
    assert "the text of 1 row of public.doc changed since the export" in result.stderr, result.stderr
    with psycopg.connect(target) as conn:
        assert table_checksum(conn, "doc") == before


def test_a_cut_file_with_partial_restores_only_rows_whose_chunks_all_arrived(run_cli, source, target, tmp_path):
    path = tmp_path / "doc.jsonl"
    export(run_cli, source, path)
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[: len(lines) // 2]
    last_whole = json.loads(kept[-1])
    path.write_text("".join(kept))
    refused = run_cli("import-vectors", "--url", target, "-f", path)
    assert refused.exit_code == 2 and f"holds {len(kept)} of the {len(lines)} lines" in refused.stderr
    result = run_cli("import-vectors", "--url", target, "-f", path, "--partial")
    assert result.exit_code == 0, result.output
    with psycopg.connect(target) as conn:
        restored = [r[0] for r in conn.execute("SELECT id FROM doc WHERE body_vector IS NOT NULL ORDER BY id")]
    complete = last_whole["chunk"] == last_whole["row_chunks"] - 1
    assert not complete  # the half falls inside a row's chunks (the case this pins)
    expected = list(range(1, last_whole["id"] + (1 if complete else 0)))
    assert restored == expected
    if not complete:
        assert "1 row was left out: not all its chunks are in the file" in result.stdout
    assert (
        state(target, skip=tuple(range(len(expected) + 1, ROWS + 1)))["chunks"]
        == state(source, skip=tuple(range(len(expected) + 1, ROWS + 1)))["chunks"]
    )


def test_a_damaged_chunk_skipped_leaves_its_whole_row_out(run_cli, source, target, tmp_path):
    path = tmp_path / "doc.jsonl"
    export(run_cli, source, path)
    lines = path.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if json.loads(line)["id"] == 7 and json.loads(line)["chunk"] == 2)
    lines[at] = lines[at].replace('"start": ', '"start": 1', 1)  # its span moved: its check fails
    path.write_text("".join(lines))
    refused = run_cli("import-vectors", "--url", target, "-f", path)
    assert refused.exit_code == 2 and f"line {at + 1}: its check does not match" in refused.stderr
    result = run_cli("import-vectors", "--url", target, "-f", path, "--skip-damaged")
    assert result.exit_code == 0, result.output
    assert "1 row was left out: not all its chunks are in the file" in result.stdout
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT body_vector IS NULL FROM doc WHERE id = 7").fetchone()[0]
    assert state(target, skip=(7,))["chunks"] == state(source, skip=(7,))["chunks"]


def test_chunks_go_only_into_a_column_chunked_the_same_way(run_cli, source, target, tmp_path, counting):
    path = tmp_path / "doc.jsonl"
    export(run_cli, source, path)
    plain = run_cli("encode", "--url", target, "-t", "doc", "-c", "body", "-m", "chunkwords")
    assert plain.exit_code == 0, plain.output
    with psycopg.connect(target) as conn:
        before = table_checksum(conn, "doc")
    result = run_cli("import-vectors", "--url", target, "-f", path)
    assert result.exit_code == 2 and "holds one vector a row, without chunks" in result.stderr, result.stderr
    other = run_cli("import-vectors", "--url", target, "-f", path, "--vector-column", "chunked_vector")
    assert other.exit_code == 0, other.output
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT count(chunked_vector) FROM doc").fetchone()[0] == ROWS
        assert table_checksum(conn, "doc") != before
    twice = run_cli("import-vectors", "--url", target, "-f", path, "--vector-column", "chunked_vector")
    assert twice.exit_code == 0, twice.output  # the same chunks again: replaced, not doubled
    with psycopg.connect(target) as conn:
        meta = column_metadata(conn, "doc", "chunked_vector")
        count = conn.execute(f"SELECT count(*) FROM {meta['chunks']['table']}").fetchone()[0]
    assert count == state(source)["chunks"][1]


def test_a_column_chunked_otherwise_is_refused(run_cli, source, target, tmp_path, counting):
    path = tmp_path / "doc.csv"
    export(run_cli, source, path)
    other = run_cli(
        "encode", "--url", target, "-t", "doc", "-c", "body", "-m", "chunkwords", "--chunk", "--chunk-tokens", "10"
    )  # fmt: skip
    assert other.exit_code == 0, other.output
    result = run_cli("import-vectors", "--url", target, "-f", path)
    assert result.exit_code == 2
    assert "is chunked otherwise than the file's chunks: tokens 8 (the column's: 10)" in result.stderr
