"""A chunked column ranks a row by all of it: w x its opening's distance + (1 - w) x its best
chunk's, w recorded in the column's metadata; through the index as exactly; a column chunked
before openings gains them with no model run. Real embedded PostgreSQL; the 'chunkwords'
test encoder (a token is a word, the model reads 12)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from psycopg import sql

from conftest import CountingEncoder, column_metadata
from vectorize_core.chunks import OPENING, OPENING_WEIGHT

TOPICS = ["zebra", "violin", "glacier", "orchid", "copper", "falcon", "saffron", "harbor"]


def document(i: int) -> str:
    """An opening about one topic, then sentences that mention others: the opening and the best
    chunk of a row point different ways."""
    opening = f"{TOPICS[i % 8]} notes {i}: " + " ".join([TOPICS[i % 8]] * 3) + " and more."
    middle = " ".join(f"{TOPICS[(i + j) % 8]} mixed with {TOPICS[(i * j + 3) % 8]} sentence {j}." for j in range(12))
    return opening + " " + middle


@pytest.fixture
def articles(conn, run_cli, url, counting):
    conn.execute("CREATE TABLE article (id int PRIMARY KEY, body text)")
    conn.cursor().executemany("INSERT INTO article VALUES (%s, %s)", [(i, document(i)) for i in range(1, 41)])
    result = run_cli("encode", "--url", url, "-t", "article", "-c", "body", "-m", "chunkwords", "--chunk")
    assert result.exit_code == 0, result.output
    return conn


def metadata(conn) -> dict:
    return column_metadata(conn, "article", "body_vector")


def stored(conn):
    """{id: opening vector}, {id: [chunk vectors]} and {id: opening chunk vector}."""
    openings = {k: np.array(json.loads(v)) for k, v in conn.execute("SELECT id, body_vector::text FROM article")}
    chunks: dict[int, list] = {}
    opening_chunks = {}
    table = sql.Identifier(metadata(conn)["chunks"]["table"])
    for key, number, vector in conn.execute(sql.SQL("SELECT id, chunk, chunk_vector::text FROM {}").format(table)):
        if number == OPENING:
            opening_chunks[key] = np.array(json.loads(vector))
        else:
            chunks.setdefault(key, []).append(np.array(json.loads(vector)))
    return openings, chunks, opening_chunks


def expected_ranking(conn, query: str, weight: float, k: int) -> list[tuple[int, float]]:
    q = CountingEncoder.vector(query)
    openings, chunks, _ = stored(conn)
    scored = []
    for key, opening in openings.items():
        best = min(1 - float(q @ c) for c in chunks[key])
        scored.append((weight * (1 - float(q @ opening)) + (1 - weight) * best, key))
    return [(key, d) for d, key in sorted(scored)[:k]]


def searched(run_cli, url, query: str, *extra) -> list[tuple[int, float]]:
    result = run_cli("search", "--url", url, "-t", "article", query, "-k", "5", "--json", *extra)
    assert result.exit_code == 0, result.output
    return [(r["id"], r["distance"]) for r in json.loads(result.stdout)]


def test_every_row_has_its_opening_among_its_chunks_with_its_own_vector(articles):
    openings, chunks, opening_chunks = stored(articles)
    assert set(opening_chunks) == set(openings) == set(chunks)
    for key, vector in openings.items():
        assert np.allclose(opening_chunks[key], vector, atol=1e-6)
        text = articles.execute("SELECT body FROM article WHERE id = %s", (key,)).fetchone()[0]
        assert np.allclose(vector, CountingEncoder.vector(text), atol=1e-6)  # what the model reads of the row
    assert metadata(articles)["chunks"]["opening_weight"] == OPENING_WEIGHT


def test_status_counts_chunks_of_the_text_not_openings(run_cli, url, articles):
    result = run_cli("status", "--url", url, "--json")
    assert result.exit_code == 0, result.output
    (column,) = json.loads(result.stdout)
    table = sql.Identifier(metadata(articles)["chunks"]["table"])
    real = articles.execute(sql.SQL("SELECT count(*) FROM {} WHERE chunk >= 0").format(table)).fetchone()[0]
    assert column["chunks"] == real


@pytest.mark.parametrize("query", ["zebra zebra zebra", "violin mixed with glacier", "copper notes"])
def test_rows_rank_by_opening_and_best_chunk_through_the_index_as_exactly(run_cli, url, articles, query):
    expected = expected_ranking(articles, query, OPENING_WEIGHT, 5)
    for extra in ((), ("--exact",)):
        got = searched(run_cli, url, query, *extra)
        assert [k for k, _ in got] == [k for k, _ in expected], extra
        assert [d for _, d in got] == pytest.approx([d for _, d in expected], abs=1e-5)


def test_the_recorded_weight_is_the_one_search_uses(run_cli, url, articles):
    meta = metadata(articles)
    meta["chunks"]["opening_weight"] = 0.0
    comment = json.dumps({"vectorize": meta})
    articles.execute(sql.SQL("COMMENT ON COLUMN article.body_vector IS {}").format(sql.Literal(comment)))
    got = searched(run_cli, url, "violin mixed with glacier", "--exact")
    assert [k for k, _ in got] == [k for k, _ in expected_ranking(articles, "violin mixed with glacier", 0.0, 5)]


def test_a_column_chunked_before_openings_gains_them_without_the_model(run_cli, url, articles, counting):
    meta = metadata(articles)
    del meta["chunks"]["opening_weight"]
    table = sql.Identifier(meta["chunks"]["table"])
    articles.execute(sql.SQL("DELETE FROM {} WHERE chunk = %s").format(table), (OPENING,))
    comment = json.dumps({"vectorize": meta})
    articles.execute(sql.SQL("COMMENT ON COLUMN article.body_vector IS {}").format(sql.Literal(comment)))
    counting.batches.clear()
    result = run_cli("encode", "--url", url, "-t", "article", "-c", "body", "-m", "chunkwords")
    assert result.exit_code == 0, result.output
    assert "Gave 40 rows (chunked by an earlier version) their openings" in result.stdout
    assert counting.batches == []
    openings, _, opening_chunks = stored(articles)
    assert {k: v.tolist() for k, v in opening_chunks.items()} == {k: v.tolist() for k, v in openings.items()}
    query = "zebra zebra zebra"
    assert [k for k, _ in searched(run_cli, url, query)] == [
        k for k, _ in expected_ranking(articles, query, OPENING_WEIGHT, 5)
    ]
