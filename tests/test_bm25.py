"""The full-text leg scores like BM25: the SQL's scores equal a reference implementation's
(bm25s, Lucene's formula) on the same tokens, the statistics follow the table's writes, and the
statistics table comes and goes with the full text. Real embedded PostgreSQL."""

from __future__ import annotations

import json
import random

import bm25s
import pytest
from bm25s.tokenization import Tokenized
from psycopg import sql

from conftest import column_metadata
from vectorize_core import bm25, connect, search_sql
from vectorize_core.dialects import CockroachDialect, Dialect
from vectorize_core.search import fulltext_of, search_spec
from vectorize_core.target import resolve_for_search

WORDS = (
    "protein cell cancer vitamin diet blood heart brain risk study trial gene dose sleep coffee "
    "sugar liver kidney bone muscle fat acid tumor growth women children patients effect level"
).split()
QUERIES = ["cancer risk", "vitamin and blood levels", "coffee coffee sleep", "gene therapy trial", "zebra"]


def texts(n: int, seed: int = 7) -> list[str]:
    """Texts of different lengths, words repeated within a text, common and rare words."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(len(WORDS))]  # Zipf-like: df varies a lot
    return [" ".join(rng.choices(WORDS, weights, k=rng.randint(3, 60))) for _ in range(n)]


@pytest.fixture
def docs(conn, run_cli, url, words):
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.cursor().executemany("INSERT INTO docs VALUES (%s, %s)", list(enumerate(texts(80), 1)))
    result = run_cli("encode", "--url", url, "-t", "docs", "-c", "body", "-m", "words", "--fulltext")
    assert result.exit_code == 0, result.output
    return conn


def tokens_of(conn) -> dict[int, list[str]]:
    """Each row's tokens as the tsvector holds them: a lexeme once per position."""
    found: dict[int, list[str]] = {}
    rows = conn.execute("SELECT d.id, u.lexeme, cardinality(u.positions) FROM docs d, unnest(d.body_tsv) u")
    for key, lexeme, count in rows:
        found.setdefault(key, []).extend([lexeme] * count)
    return found


def query_tokens(conn, text: str) -> list[str]:
    rows = conn.execute("SELECT lexeme, cardinality(positions) FROM unnest(to_tsvector('english', %s))", (text,))
    return [lexeme for lexeme, count in rows for _ in range(count)]


def reference_scores(conn, query: str) -> dict[int, float]:
    """bm25s (method 'lucene', k1 1.2, b 0.75) over the same tokens: every row, its score."""
    corpus = tokens_of(conn)
    keys = sorted(conn.execute("SELECT id FROM docs").fetchall())
    keys = [k for (k,) in keys]
    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(t, len(vocab)) for t in corpus.get(k, [])] for k in keys]
    retriever = bm25s.BM25(method="lucene", k1=bm25.K1, b=bm25.B)
    retriever.index(Tokenized(ids=ids, vocab=vocab), show_progress=False)
    wanted = [t for t in query_tokens(conn, query) if t in vocab]
    scores = retriever.get_scores(wanted) if wanted else [0.0] * len(keys)
    return {k: float(s) for k, s in zip(keys, scores, strict=True) if s > 0}


def sql_scores(url: str, query: str) -> dict[int, float]:
    with connect(url) as db:
        target = resolve_for_search(db, table="docs")
        fulltext = fulltext_of(target)
        matches = sql.SQL("{} @@ {}").format(sql.Identifier("t", fulltext["column"]), db.dialect.text_query("english"))
        statement = bm25.ranking(
            target.table.ident, ["id"], fulltext["column"], fulltext["terms_ident"], "english", matches, None
        )
        rows = db.fetchall(statement, (query, bm25.TOTALS, query, query))
    return {key: score for key, score in rows}


@pytest.mark.parametrize("query", QUERIES)
def test_scores_equal_the_reference_implementation_on_the_same_tokens(url, docs, query):
    expected = reference_scores(docs, query)
    got = sql_scores(url, query)
    assert set(got) == set(expected)
    for key, score in expected.items():
        assert got[key] == pytest.approx(score, rel=1e-5), key
    if query == "zebra":
        assert got == {}  # a word no row has matches nothing


def test_the_text_leg_ranks_rows_by_the_reference_scores(url, docs):
    expected = reference_scores(docs, "cancer risk")
    ranked = sorted(expected, key=lambda k: (-round(expected[k], 9), k))[:10]
    with connect(url) as db:
        target = resolve_for_search(db, table="docs")
        spec = search_spec(db, target, 10)
        names = {"text_rank": "text_rank"}
        query, params = search_sql.text_statement(db.dialect, spec, "cancer risk", fulltext_of(target), names)
        rows = db.fetchall(query, params)
    assert [r[0] for r in rows] == ranked


def test_the_statistics_follow_the_rows_an_encode_writes(run_cli, url, docs):
    docs.cursor().executemany(
        "INSERT INTO docs VALUES (%s, %s)", [(100 + i, t) for i, t in enumerate(texts(15, seed=3))]
    )
    docs.execute("DELETE FROM docs WHERE id <= 5")
    result = run_cli("encode", "--url", url, "-t", "docs", "-c", "body", "-m", "words")
    assert result.exit_code == 0, result.output
    terms = column_metadata(docs, "docs", "body_vector")["fulltext"]["terms"]
    stored = dict(docs.execute(sql.SQL("SELECT lexeme, docs FROM {}").format(sql.Identifier(terms))).fetchall())
    truth = dict(docs.execute("SELECT word, ndoc FROM ts_stat('SELECT body_tsv FROM docs')").fetchall())
    assert stored.pop(bm25.TOTALS) == docs.execute("SELECT count(*) FROM docs").fetchone()[0] == 90
    assert stored == truth
    assert sql_scores(url, "cancer risk") == pytest.approx(reference_scores(docs, "cancer risk"), rel=1e-5)


def test_a_full_text_column_from_before_the_statistics_gains_them(run_cli, url, docs):
    meta = {"vectorize": column_metadata(docs, "docs", "body_vector")}
    terms = meta["vectorize"]["fulltext"].pop("terms")
    docs.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(terms)))
    docs.execute(sql.SQL("COMMENT ON COLUMN docs.body_vector IS {}").format(sql.Literal(json.dumps(meta))))
    result = run_cli("encode", "--url", url, "-t", "docs", "-c", "body", "-m", "words")
    assert result.exit_code == 0, result.output
    assert sql_scores(url, "vitamin") == pytest.approx(reference_scores(docs, "vitamin"), rel=1e-5)


def test_drop_removes_the_statistics(run_cli, url, docs):
    assert docs.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'docs_%terms'").fetchone()[0] == 1
    result = run_cli("drop", "--url", url, "-t", "docs", "-c", "body", "--yes")
    assert result.exit_code == 0, result.output
    assert docs.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'docs_%terms'").fetchone()[0] == 0


def test_cockroachdb_ranks_its_full_text_by_ts_rank():
    assert Dialect.bm25 and not CockroachDialect.bm25
