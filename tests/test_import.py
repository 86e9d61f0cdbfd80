"""Bring your own vectors: import-vectors, search --query-vector, several vector columns."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import table_checksum

DIM = 5


def vector_for(i: int) -> list[float]:
    rng = np.random.default_rng(i)
    return [round(float(x), 6) for x in rng.standard_normal(DIM)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def stored(conn, column="body_vector"):
    rows = conn.execute(f"SELECT id, {column}::text FROM items ORDER BY id").fetchall()
    return {i: (None if v is None else json.loads(v)) for i, v in rows}


def test_import_jsonl_stores_indexes_and_records_external(run_cli, url, items, tmp_path):
    path = write_jsonl(tmp_path / "v.jsonl", [{"id": i, "vector": vector_for(i)} for i in range(1, 16)])
    result = run_cli(
        "import-vectors", "--url", url, "-t", "items", "-c", "body", "--file", path, "--model-name", "my-model"
    )
    assert result.exit_code == 0, result.output
    assert "Imported 15 vectors of 5 dimensions" in result.stdout
    vectors = stored(items)
    for i in range(1, 16):
        np.testing.assert_allclose(vectors[i], vector_for(i), rtol=1e-6)
    assert all(vectors[i] is None for i in range(16, 21))
    comment = items.execute("SELECT col_description('items'::regclass, 3)").fetchone()[0]
    assert json.loads(comment)["vectorize"] == {
        "version": 1, "source": ["body"], "model": "external", "label": "my-model",
        "dimension": 5, "metric": "cosine", "external": True, "source_attnums": [2],
        "index": "items_body_vector_contents_idx", "pending_index": "items_body_vector_pending",
        "contents": {"table": "items_body_vector_contents",
                     "columns": {"hash": "content_hash", "vector": "content_vector", "orphaned": "orphaned"}},
        "hash": {"column": "body_vector_hash", "index": "items_body_vector_hash"},
    }  # fmt: skip
    (indexdef,) = items.execute(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'items_body_vector_contents_idx'"
    ).fetchone()
    assert "items_body_vector_contents USING hnsw (content_vector vector_cosine_ops)" in indexdef
    # Imported vectors are keyed by their own hash: the index holds each distinct one once.
    distinct = items.execute("SELECT count(DISTINCT body_vector::text) FROM items").fetchone()[0]
    assert items.execute("SELECT count(*) FROM items_body_vector_contents").fetchone()[0] == distinct == 15
    assert items.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'vectorize_import%'").fetchone()[0] == 0

    # encode will not mix a model into imported vectors; text search says a vector is needed
    refused = run_cli("encode", "--url", url, "-t", "items", "-c", "body")
    assert refused.exit_code == 2 and "external" in refused.stderr
    text = run_cli("search", "--url", url, "item 3")
    assert text.exit_code == 2 and "--query-vector" in text.stderr and "my-model" in text.stderr


def test_query_vector_search_returns_the_same_shape(run_cli, url, items, tmp_path):
    path = write_jsonl(tmp_path / "v.jsonl", [{"id": i, "vector": vector_for(i)} for i in range(1, 21)])
    assert run_cli("import-vectors", "--url", url, "-t", "items", "-c", "body", "-f", path).exit_code == 0
    result = run_cli("search", "--url", url, "--query-vector", json.dumps(vector_for(7)), "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0]["id"] == 7 and rows[0]["body"] == "item 7" and rows[0]["distance"] == pytest.approx(0, abs=1e-6)
    assert set(rows[0]) == {"id", "body", "distance"} and len(rows) == 3

    query_file = tmp_path / "q.json"
    query_file.write_text(json.dumps(vector_for(9)))
    rows = json.loads(run_cli("search", "--url", url, "--query-vector", f"@{query_file}", "--json").stdout)
    assert rows[0]["id"] == 9

    wrong = run_cli("search", "--url", url, "--query-vector", "[1, 2, 3]")
    assert wrong.exit_code == 2 and "3 dimensions" in wrong.stderr and "5" in wrong.stderr


def test_csv_and_npy_formats(run_cli, url, items, tmp_path):
    path = tmp_path / "v.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "vector"])
        for i in range(1, 6):
            writer.writerow([i, json.dumps(vector_for(i))])
    assert run_cli("import-vectors", "--url", url, "-t", "items", "-c", "body", "-f", path).exit_code == 0
    np.testing.assert_allclose(stored(items)[3], vector_for(3), rtol=1e-6)

    np.save(tmp_path / "v.npy", np.array([vector_for(i) for i in range(6, 11)], dtype=np.float32))
    write_jsonl(tmp_path / "keys.jsonl", [{"id": i} for i in range(6, 11)])
    args = ("import-vectors", "--url", url, "-t", "items", "-c", "body", "-f", tmp_path / "v.npy")
    result = run_cli(*args, "--keys", tmp_path / "keys.jsonl")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(stored(items)[8], vector_for(8), rtol=1e-6)
    assert run_cli(*args).exit_code == 2  # .npy without --keys


def test_stdin(run_cli, url, items):
    lines = "".join(json.dumps({"id": i, "vector": vector_for(i)}) + "\n" for i in (1, 2))
    from click.testing import CliRunner

    import vectorize

    result = CliRunner().invoke(
        vectorize.cli, ["import-vectors", "--url", url, "-t", "items", "-c", "body", "-f", "-"], input=lines
    )
    assert result.exit_code == 0, result.output
    assert stored(items)[2] is not None


@pytest.mark.parametrize(
    "lines, fragment",
    [
        ([{"id": 1, "vector": [1, 2, 3, 4, 5]}, {"id": 2, "vector": [1, 2, 3]}], "line 2: vector has 3 numbers"),
        ([{"id": 1, "vector": [1, 2, "x", 4, 5]}], 'line 1: vector holds "x"'),
        ([{"id": 1, "vector": [1, 2, True, 4, 5]}], "line 1: vector holds true"),
        ([{"id": 1, "vector": [1, 2, 3, 4, 5]}, {"vector": [1, 2, 3, 4, 5]}], "line 2: missing key column 'id'"),
        ([{"id": 1, "vector": [1, 2, 3, 4, 5]}, {"id": 1, "vector": [1, 2, 3, 4, 5]}], "line 2: key 1 repeats line 1"),
        ("NAN", "line 2: vector holds nan"),
        ("BADJSON", "line 2: not valid JSON"),
        ("UTF8", "line 2: not valid UTF-8"),
    ],
    ids=["wrong-length", "string", "bool", "missing-key", "duplicate", "nan", "bad-json", "invalid-utf8"],
)
def test_invalid_files_exit_2_naming_the_line_and_write_nothing(run_cli, url, items, tmp_path, lines, fragment):
    path = tmp_path / "v.jsonl"
    good = json.dumps({"id": 1, "vector": [1, 2, 3, 4, 5]}) + "\n"
    if lines == "NAN":
        path.write_text(good + '{"id": 2, "vector": [1, NaN, 3, 4, 5]}\n')
    elif lines == "BADJSON":
        path.write_text(good + '{"id": 2, "vector": [1, 2\n')
    elif lines == "UTF8":
        path.write_bytes(good.encode() + b'{"id": 2, "vector": [1, 2, 3, 4, 5], "x": "\xff\xfe"}\n')
    else:
        write_jsonl(path, lines)
    before = table_checksum(items, "items")
    result = run_cli("import-vectors", "--url", url, "-t", "items", "-c", "body", "-f", path)
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert table_checksum(items, "items") == before


def test_missing_keys_are_counted_or_refused_with_strict(run_cli, url, items, tmp_path):
    path = write_jsonl(tmp_path / "v.jsonl", [{"id": i, "vector": vector_for(i)} for i in (1, 2, 999)])
    before = table_checksum(items, "items")
    strict = run_cli("import-vectors", "--url", url, "-t", "items", "-c", "body", "-f", path, "--strict")
    assert strict.exit_code == 2 and "1 keys" in strict.stderr
    assert table_checksum(items, "items") == before
    result = run_cli("import-vectors", "--url", url, "-t", "items", "-c", "body", "-f", path)
    assert result.exit_code == 0 and "1 key of the file is not in the table" in result.stdout
    assert stored(items)[2] is not None


def test_several_vector_columns_chosen_by_metric(run_cli, url, items, tmp_path):
    path = write_jsonl(tmp_path / "v.jsonl", [{"id": i, "vector": vector_for(i)} for i in range(1, 21)])
    base = ("import-vectors", "--url", url, "-t", "items", "-c", "body", "-f", path)
    assert run_cli(*base, "--vector-column", "v_cos").exit_code == 0
    assert run_cli(*base, "--vector-column", "v_l2", "--metric", "l2").exit_code == 0
    query = json.dumps(vector_for(4))
    ambiguous = run_cli("search", "--url", url, "--query-vector", query)
    assert ambiguous.exit_code == 2 and "v_cos" in ambiguous.stderr and "v_l2" in ambiguous.stderr
    rows = json.loads(run_cli("search", "--url", url, "--query-vector", query, "--metric", "l2", "--json").stdout)
    assert rows[0]["id"] == 4
    none = run_cli("search", "--url", url, "--query-vector", query, "--metric", "ip")
    assert none.exit_code == 2 and "metric ip" in none.stderr
    (entry,) = [e for e in json.loads(run_cli("status", "--url", url, "--json").stdout) if e["vector_column"] == "v_l2"]
    assert entry["metric"] == "l2" and entry["embedded"] == 20


def test_import_refuses_a_column_of_another_size_or_model(run_cli, url, items, tmp_path, words):
    path = write_jsonl(tmp_path / "v.jsonl", [{"id": 1, "vector": vector_for(1)}])
    items.execute("CREATE EXTENSION vector")
    items.execute("ALTER TABLE items ADD COLUMN v3 vector(3)")
    before = table_checksum(items, "items")
    sized = run_cli("import-vectors", "--url", url, "-t", "items", "-c", "body", "-f", path, "--vector-column", "v3")
    assert sized.exit_code == 2 and "3 dimensions but the file's vectors have 5" in sized.stderr
    assert table_checksum(items, "items") == before
    assert run_cli("encode", "--url", url, "-t", "items", "-c", "body", "-m", "words").exit_code == 0
    mixed = run_cli("import-vectors", "--url", url, "-t", "items", "-c", "body", "-f", path)
    assert mixed.exit_code == 2 and "filled by model 'words'" in mixed.stderr
