"""search: exactly k rows, ranked by the column's metric, with the recorded encoder."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import modules
from conftest import WordsEncoder
from vectorize_core import search_sql


@pytest.fixture
def filled(run_cli, url, conn, words):
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    texts = [" ".join("w" * ((i * 7 + j) % 9 + 1) for j in range(i % 5 + 1)) for i in range(40)]
    conn.execute("INSERT INTO t SELECT g, b FROM unnest(%s::text[]) WITH ORDINALITY AS x(b, g)", (texts,))
    assert run_cli("encode", "--url", url, "-t", "t", "-c", "body", "-m", "words").exit_code == 0
    # Rows without vectors: new rows with text (pending) and rows with no text.
    conn.execute("INSERT INTO t VALUES (41, 'pending row'), (42, NULL), (43, NULL)")
    return dict(enumerate(texts, 1))


def test_search_returns_exactly_k_nearest_by_l2(run_cli, url, filled):
    query = "www ww wwwww"
    result = run_cli("search", "--url", url, query, "-k", "7", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 7
    assert set(rows[0]) == {"id", "body", "distance"}
    q = WordsEncoder.vector(query)
    exact = sorted(filled, key=lambda i: (float(np.linalg.norm(WordsEncoder.vector(filled[i]) - q)), i))
    distances = [r["distance"] for r in rows]
    assert distances == sorted(distances)
    expected = [float(np.linalg.norm(WordsEncoder.vector(filled[i]) - q)) for i in exact[:7]]
    np.testing.assert_allclose(distances, expected, rtol=1e-5)
    assert all(r["body"] == filled[r["id"]] for r in rows)


def test_k_larger_than_rows_with_vectors_returns_every_vector_row(run_cli, url, filled):
    rows = json.loads(run_cli("search", "--url", url, "w", "-k", "100", "--json").stdout)
    assert len(rows) == 40
    assert all(r["distance"] is not None for r in rows)


def test_search_query_uses_the_hnsw_index(url, conn, filled):
    from vectorize_core import connect
    from vectorize_core.search import search_spec
    from vectorize_core.target import resolve_for_search

    with connect(url) as db:
        target = resolve_for_search(db)
        spec = replace(search_spec(db, target, 5), candidates=5)
        query, params = search_sql.search_statement(db.dialect, spec, "[1,2,3,4,5,6,7,8]")
        query = db.as_string(query)
    conn.execute("SET enable_seqscan = off")  # 43 rows: the planner would rightly scan them all
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + query, params))
    # The index of the distinct contents ranks them; their rows are found by the hash index.
    assert "Index Scan using t_body_vector_contents_idx" in plan
    assert "Index Scan using t_body_vector_hash" in plan
    assert len(conn.execute(query, params).fetchall()) == 5


def test_plain_output_shows_rank_distance_key_and_snippet(run_cli, url, filled):
    result = run_cli("search", "--url", url, "w", "-k", "2")
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    rank, distance, key, *text = lines[0].split()
    assert rank == "1" and float(distance) >= 0 and key.startswith("id=")


def test_search_uses_the_recorded_model_with_real_minilm(run_cli, url, conn):
    conn.execute("CREATE TABLE passage (id int PRIMARY KEY, passage text)")
    conn.execute(
        "INSERT INTO passage VALUES (1, 'The stock exchange on Wall Street'), (2, 'Kittens playing with yarn'),"
        " (3, 'Baking bread at home'), (4, 'A storm over the ocean')"
    )
    assert (
        run_cli("encode", "--url", url, "--table", "passage", "--column", "passage", "--model", "minilm").exit_code == 0
    )
    result = run_cli("search", "--url", url, "New York is the financial capital of the world", "--json", "-k", "4")
    rows = json.loads(result.stdout)
    assert rows[0]["id"] == 1
    query = modules.get("minilm").encode(["New York is the financial capital of the world"])[0]
    stored = conn.execute("SELECT passage_vector::text FROM passage WHERE id = 1").fetchone()[0]
    np.testing.assert_allclose(rows[0]["distance"], 1 - float(np.dot(query, json.loads(stored))), atol=1e-5)
