"""Filtered search returns the true top-k among matching rows, with the HNSW index in place."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vectorize_core import connect
from vectorize_core.search import search

N, DIM, K = 4000, 32, 10


@pytest.fixture
def corpus(run_cli, url, conn, tmp_path):
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((N, DIM)).astype(np.float32)
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, category text, half text, published date)")
    rows = [
        (i, f"doc {i}", "rare" if i % 100 == 0 else "common", "a" if i % 2 else "b", f"2025-{1 + i % 12:02d}-01")
        for i in range(N)
    ]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO docs VALUES (%s, %s, %s, %s, %s)", rows)
    path = tmp_path / "v.jsonl"
    path.write_text("".join(json.dumps({"id": i, "vector": v.tolist()}) + "\n" for i, v in enumerate(vectors)))
    result = run_cli("import-vectors", "--url", url, "-t", "docs", "-c", "body", "-f", path, "--metric", "l2")
    assert result.exit_code == 0, result.output
    conn.execute("ANALYZE docs")
    return vectors, rows


def recall(db, queries, where) -> tuple[float, list]:
    hits, results = [], []
    for q in queries:
        approx = search(db, query_vector=q, k=K, where=where)
        exact = search(db, query_vector=q, k=K, where=where, exact=True)
        assert exact.mode == "exact"
        got = {r["id"] for r in approx.rows}
        hits.append(len(got & {r["id"] for r in exact.rows}) / K)
        results.append(approx)
    return float(np.mean(hits)), results


@pytest.mark.parametrize(
    "where, matches",
    [
        ({"category": "rare"}, lambda row: row[2] == "rare"),  # 1% of rows
        ({"half": "a"}, lambda row: row[3] == "a"),  # 50%
        ({"$and": [{"half": "b"}, {"published": {"$gte": "2025-07-01"}}]}, lambda r: r[3] == "b" and r[4] >= "2025-07"),
    ],
    ids=["1-percent", "50-percent", "date-range"],
)
def test_filtered_search_returns_k_matching_rows_close_to_exact(url, corpus, where, matches):
    vectors, rows = corpus
    queries = np.random.default_rng(1).standard_normal((8, DIM)).astype(np.float32)
    with connect(url) as db:
        value, results = recall(db, queries, where)
    print(f"recall@{K} against exact with {where}: {value:.3f} ({results[0].mode})")
    assert value >= 0.9, value
    allowed = {row[0] for row in rows if matches(row)}
    for result in results:
        assert len(result.rows) == K
        assert {r["id"] for r in result.rows} <= allowed
        distances = [r["distance"] for r in result.rows]
        assert distances == sorted(distances)


def test_fewer_matches_than_k_returns_every_match(url, corpus):
    with connect(url) as db:
        result = search(db, query_vector=corpus[0][5], k=K, where={"id": {"$in": [5, 6, 7]}})
    assert sorted(r["id"] for r in result.rows) == [5, 6, 7]


def test_where_and_show_through_the_cli(run_cli, url, corpus):
    vectors, _ = corpus
    args = ("search", "--url", url, "--query-vector", json.dumps(vectors[300].tolist()), "-k", "3")
    result = run_cli(*args, "--where", '{"category": "rare"}', "--show", "category,published", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0]["id"] == 300 and rows[0]["category"] == "rare" and rows[0]["published"] == "2025-01-01"
    assert set(rows[0]) == {"id", "body", "category", "published", "distance"}
    plain = run_cli(*args, "--where", '{"category": "rare"}', "--show", "category").stdout
    assert "category=rare" in plain.splitlines()[0]
    tuned = run_cli(*args, "--ef-search", "200", "--json")
    assert json.loads(tuned.stdout)[0]["id"] == 300


@pytest.mark.parametrize(
    "where, fragment",
    [
        ('{"nosuch": 1}', "unknown column 'nosuch'"),
        ('{"category": {"$regex": "x"}}', "$regex"),
        ('{"category": ', "not valid JSON"),
        ('{"id; DROP TABLE docs": 1}', "unknown column"),
        ('{"$or": {"a": 1}}', "$or"),
    ],
)
def test_malformed_filters_exit_2_before_any_query(run_cli, url, corpus, conn, monkeypatch, where, fragment):
    vectors, _ = corpus

    def no_query(*args):
        raise AssertionError("a search query ran")

    monkeypatch.setattr("vectorize_core.search.ranked_rows", no_query)
    result = run_cli("search", "--url", url, "--query-vector", json.dumps(vectors[0].tolist()), "--where", where)
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert conn.execute("SELECT count(*) FROM docs").fetchone()[0] == N


def test_show_rejects_unknown_columns(run_cli, url, corpus):
    vectors, _ = corpus
    result = run_cli("search", "--url", url, "--query-vector", json.dumps(vectors[0].tolist()), "--show", "nope")
    assert result.exit_code == 2 and "nope" in result.stderr
