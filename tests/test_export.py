"""export-vectors (#25): a vector column's vectors and model record out to JSON Lines, CSV, .npy +
keys and Parquet, and back in with `import-vectors --file` alone into a fresh database: the same
float4 values bit for bit (compared in SQL), the same model record, the same search results and
the same status. Real embedded PostgreSQL, two databases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pgvector.psycopg import register_vector

from conftest import fresh_database
from vectorize_core import exporter
from vectorize_core.record import record_path, recorded

N = 60
DIM = 8
FORMATS = ["parquet", "jsonl", "csv", "npy"]


def awkward_float32(n: int) -> np.ndarray:
    """Values a text round trip could get wrong: subnormals, -0.0, the extremes of float4, and
    numbers whose shortest decimal form is long."""
    vectors = np.random.default_rng(11).standard_normal((n, DIM)).astype(np.float32)
    vectors[0, :6] = [np.finfo(np.float32).max, -np.finfo(np.float32).max, np.finfo(np.float32).tiny, -0.0, 1e-45, 0.1]
    vectors[1, :6] = [np.nextafter(np.float32(1), np.float32(2)), 1 / 3, 3.4e-39, -2.5e-40, 16777217, 1e38]
    return vectors


def make_table(conn) -> None:
    conn.execute("CREATE TABLE passage (id int PRIMARY KEY, body text)")
    conn.execute(
        "INSERT INTO passage SELECT g, 'passage ' || g || ' about ' || repeat('word ', g %% 7) FROM generate_series(1, %s) g",
        (N,),
    )


@pytest.fixture
def source(run_cli, url, conn, words):
    """A table encoded by the test model (prefixes, l2, change tracking, full text), then given
    awkward float4 values in place of the model's (the record stays the model's)."""
    make_table(conn)
    conn.execute("INSERT INTO passage VALUES (%s, NULL)", (N + 1,))  # no text: no vector
    encoded = run_cli(
        "encode", "--url", url, "-t", "passage", "-c", "body", "-m", "words", "--prefix", "doc: ",
        "--query-prefix", "q: ", "--track-changes", "--fulltext",
    )  # fmt: skip
    assert encoded.exit_code == 0, encoded.output
    register_vector(conn)
    vectors = awkward_float32(N)
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE passage SET body_vector = %s WHERE id = %s", [(v, i + 1) for i, v in enumerate(vectors)]
        )
    return vectors


def target_url(pg_server, make=True) -> str:
    url = fresh_database(pg_server.get_uri())
    if make:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            make_table(conn)
            conn.execute("INSERT INTO passage VALUES (%s, NULL)", (N + 1,))
    return url


def sql_digest(url: str) -> tuple:
    """The stored vectors compared in SQL: the shortest text of every float4, in key order."""
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT count(body_vector), md5(string_agg(id || ':' || body_vector::text, ',' ORDER BY id)) FROM passage"
        ).fetchone()


def stored_bits(url: str) -> dict[int, list[int]]:
    import psycopg

    with psycopg.connect(url) as conn:
        register_vector(conn)
        rows = conn.cursor(binary=True).execute("SELECT id, body_vector FROM passage WHERE body_vector IS NOT NULL")
        return {i: v.to_numpy().view(np.uint32).tolist() for i, v in rows}


def column_record(url: str) -> dict:
    import psycopg

    with psycopg.connect(url) as conn:
        comment = conn.execute(
            "SELECT col_description('passage'::regclass, attnum) FROM pg_attribute"
            " WHERE attrelid = 'passage'::regclass AND attname = 'body_vector'"
        ).fetchone()[0]
    return json.loads(comment)["vectorize"]


def status_of(run_cli, url: str) -> list[dict]:
    result = run_cli("status", "--url", url, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def search_rows(run_cli, url: str, *extra) -> list:
    result = run_cli("search", "--url", url, "passage 3 about word word word", "-k", "10", "--json", "--exact", *extra)
    assert result.exit_code == 0, result.output
    return [(r["id"], r["distance"]) for r in json.loads(result.stdout)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_then_import_restores_vectors_bit_for_bit_and_the_model_record(
    run_cli, url, pg_server, tmp_path, source, fmt
):
    out = tmp_path / f"passage.{fmt}"
    exported = run_cli("export-vectors", "--url", url, "-t", "passage", "-c", "body", "--file", out)
    assert exported.exit_code == 0, exported.output
    assert f"Exported {N} vectors of {DIM} dimensions from public.passage.body_vector" in exported.stdout
    assert out.is_file() and not list(tmp_path.glob(".*.partial"))
    if fmt != "parquet":
        assert record_path(out).is_file()  # the record beside the file
    if fmt == "npy":
        assert (tmp_path / "passage.keys.jsonl").is_file()
        assert np.load(out).view(np.uint32).tolist() == source.view(np.uint32).tolist()  # key order

    target = target_url(pg_server)
    imported = run_cli("import-vectors", "--url", target, "--file", out)  # no other option
    assert imported.exit_code == 0, imported.output
    assert f"Imported {N} vectors of {DIM} dimensions into public.passage.body_vector" in imported.stdout

    assert sql_digest(target) == sql_digest(url)
    assert stored_bits(target) == stored_bits(url)
    assert stored_bits(url)[1] == source[0].view(np.uint32).tolist()
    assert column_record(target) == column_record(url)
    assert column_record(target)["model"] == "words" and column_record(target)["prefix"] == "doc: "
    assert search_rows(run_cli, target) == search_rows(run_cli, url)  # text search, no re-encoding
    assert search_rows(run_cli, target, "--hybrid") == search_rows(run_cli, url, "--hybrid")

    def comparable(rows):
        return [{k: v for k, v in r.items() if k not in ("vector_bytes", "index_bytes", "sizes_note")} for r in rows]

    assert comparable(status_of(run_cli, target)) == comparable(status_of(run_cli, url))
    assert status_of(run_cli, target)[0]["tracking"] is True


def test_an_external_column_round_trips_with_its_label(run_cli, url, conn, pg_server, tmp_path):
    make_table(conn)
    vectors = awkward_float32(N)
    # float4's extremes (and 2**24 + 1) are refused for their length in a file with no checks
    vectors[0, :2] = vectors[1, 4:6] = 100.0
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "k.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(1, N + 1)))
    args = ("-t", "passage", "-c", "body", "--metric", "ip", "--model-name", "acme-embed-v2")
    files = ("-f", tmp_path / "v.npy", "--keys", tmp_path / "k.jsonl")
    assert run_cli("import-vectors", "--url", url, *args, *files).exit_code == 0
    out = tmp_path / "out.jsonl"
    assert run_cli("export-vectors", "--url", url, "-t", "passage", "-f", out).exit_code == 0
    record = json.loads(record_path(out).read_text())
    assert record["column"] == {
        "source": ["body"], "model": "external", "external": True, "label": "acme-embed-v2", "dimension": DIM,
        "metric": "ip",
    }  # fmt: skip
    assert record["rows"] == N and record["table"] == "passage" and record["key_columns"] == ["id"]
    target = target_url(pg_server)
    assert run_cli("import-vectors", "--url", target, "-f", out).exit_code == 0
    assert stored_bits(target) == stored_bits(url)
    assert column_record(target) == column_record(url)
    (entry,) = status_of(run_cli, target)
    assert entry["model"] == "acme-embed-v2 (imported)" and entry["metric"] == "ip"


def test_options_override_the_record(run_cli, url, pg_server, tmp_path, source):
    out = tmp_path / "p.parquet"
    assert run_cli("export-vectors", "--url", url, "-t", "passage", "-f", out).exit_code == 0
    target = target_url(pg_server, make=False)
    import psycopg

    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, text_col text)")
        conn.execute("INSERT INTO docs SELECT g, 'x' FROM generate_series(1, %s) g", (N,))
    result = run_cli(
        "import-vectors", "--url", target, "-f", out, "-t", "docs", "-c", "text_col", "--vector-column", "v"
    )
    assert result.exit_code == 0, result.output
    assert "into public.docs.v" in result.stdout
    with psycopg.connect(target) as conn:
        comment = json.loads(conn.execute("SELECT col_description('docs'::regclass, 3)").fetchone()[0])["vectorize"]
    assert comment["source"] == ["text_col"] and comment["model"] == "words" and comment["query_prefix"] == "q: "


def test_export_streams_in_pages_in_key_order(run_cli, url, tmp_path, source, monkeypatch):
    monkeypatch.setattr(exporter, "EXPORT_PAGE", 7)
    out = tmp_path / "p.jsonl"
    assert run_cli("export-vectors", "--url", url, "-t", "passage", "-f", out).exit_code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in lines] == list(range(1, N + 1))  # the row with no vector left out
    assert np.array([r["vector"] for r in lines], dtype=np.float32).view(np.uint32).tolist() == (
        source.view(np.uint32).tolist()
    )


def test_export_progress_and_text_keys(url, conn, words, tmp_path):
    conn.execute("CREATE TABLE notes (code text, part int, body text, PRIMARY KEY (code, part))")
    conn.execute("INSERT INTO notes SELECT 'c' || (g % 3), g, 'note ' || g FROM generate_series(1, 20) g")
    from vectorize_core import connect, encode

    with connect(url) as db:
        encode(db, table="notes", column="body", model="words")
        events = []
        result = exporter.export_vectors(db, table="notes", file=str(tmp_path / "n.parquet"), progress=events.append)
    assert result.rows == 20 and events[-1].finished and events[-1].done == events[-1].total == 20
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "n.parquet")
    assert table.schema.field("code").type == "string" and table.schema.field("part").type == "int64"
    assert table.column("code").to_pylist()[:2] == ["c0", "c0"]  # key order
    record = json.loads(table.schema.metadata[b"vectorize"])
    assert record["key_columns"] == ["code", "part"] and record["column"]["model"] == "words"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["-f", "out.txt"], "the file's suffix names its format"),
        (["-f", "out.jsonl", "--keys", "k.jsonl"], "--keys goes with a .npy file"),
        (["-f", "missing-folder/out.jsonl"], "no such folder"),
    ],
)
def test_export_refuses_bad_requests(run_cli, url, tmp_path, source, args, fragment, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("export-vectors", "--url", url, "-t", "passage", *args)
    assert result.exit_code == 2 and fragment in result.stderr, result.output
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".*partial"))


def test_export_of_a_table_with_no_vectorized_column(run_cli, url, conn, tmp_path):
    make_table(conn)
    result = run_cli("export-vectors", "--url", url, "-t", "passage", "-f", tmp_path / "x.parquet")
    assert result.exit_code == 2 and "no vectorized column" in result.stderr


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_column_with_no_vectors_exports_an_empty_file(run_cli, url, conn, tmp_path, source, fmt):
    conn.execute("UPDATE passage SET body_vector = NULL")
    out = tmp_path / f"empty.{fmt}"
    result = run_cli("export-vectors", "--url", url, "-t", "passage", "-f", out)
    assert result.exit_code == 0 and "Exported 0 vectors" in result.stdout, result.output
    assert recorded(out)["column"]["model"] == "words"
    again = run_cli("import-vectors", "--url", url, "-f", out)
    assert again.exit_code == 2 and "no vectors in the file" in again.stderr, again.output
