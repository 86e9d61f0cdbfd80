"""Hybrid search: full text and vectors fused with reciprocal rank fusion. Real embedded
PostgreSQL with the real all-MiniLM-L6-v2 model; the CockroachDB statements are pinned below."""

from __future__ import annotations

import json

import pytest

from conftest import table_checksum

DOCS = [
    (1, "Deployment failed with error code ZX-7731 in the billing service", "en"),
    (2, "A kitten napping on the couch all afternoon", "en"),
    (3, "Quarterly revenue grew by twelve percent", "en"),
    (4, "The train to Lisbon leaves at noon", "en"),
    (5, "Recipe: slow-cooked beef stew with carrots", "en"),
    (6, "Un gato durmiendo en el sofá", "es"),
    (7, "How to reset a forgotten password", "en"),
    (8, "Mountain weather turns quickly in spring", "en"),
]
QUERY = "cat sleeping ZX-7731"


@pytest.fixture
def docs(run_cli, url, conn):
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, lang text)")
    conn.cursor().executemany("INSERT INTO docs VALUES (%s, %s, %s)", DOCS)
    result = run_cli("encode", "--url", url, "-t", "docs", "-c", "body", "--fulltext")
    assert result.exit_code == 0, result.output
    assert "full text in body_tsv (english)" in result.stdout
    return conn


def ids(result) -> list[int]:
    assert result.exit_code == 0, result.output
    return [row["id"] for row in json.loads(result.stdout)]


def test_the_exact_term_and_the_paraphrase_both_reach_the_top(run_cli, url, docs):
    dense = ids(run_cli("search", "--url", url, QUERY, "-k", "2", "--json"))
    hybrid = run_cli("search", "--url", url, QUERY, "-k", "2", "--hybrid", "--json")
    assert set(ids(hybrid)) == {1, 2}, (dense, hybrid.stdout)
    rows = json.loads(hybrid.stdout)
    by_id = {r["id"]: r for r in rows}
    assert by_id[1]["text_rank"] == 1  # only full text knows the code
    assert by_id[2]["text_rank"] is None and by_id[2]["dense_rank"] <= 2  # only vectors know the cat
    assert all(r["score"] > 0 for r in rows)
    plain = run_cli("search", "--url", url, QUERY, "-k", "2", "--hybrid")
    assert "(vector #" in plain.stdout and "text #1" in plain.stdout


def test_filters_apply_to_both_legs(run_cli, url, docs):
    found = ids(run_cli("search", "--url", url, QUERY, "-k", "3", "--hybrid", "--where", '{"lang": "es"}', "--json"))
    assert found == [6]
    found = ids(
        run_cli("search", "--url", url, QUERY, "-k", "8", "--hybrid", "--where", '{"id": {"$ne": 1}}', "--json")
    )
    assert 1 not in found and found[0] == 2


def test_a_query_of_stop_words_runs_the_vector_leg_alone(run_cli, url, docs):
    result = run_cli("search", "--url", url, "the of and", "-k", "3", "--hybrid", "--json")
    rows = json.loads(result.stdout)
    assert result.exit_code == 0 and len(rows) == 3
    assert all(r["text_rank"] is None and r["dense_rank"] for r in rows)


def test_new_rows_are_searchable_by_their_words_at_once(run_cli, url, docs):
    docs.execute("INSERT INTO docs VALUES (9, 'Incident QQ-4242 resolved', 'en')")
    rows = json.loads(run_cli("search", "--url", url, "QQ-4242", "-k", "2", "--hybrid", "--json").stdout)
    (new,) = [r for r in rows if r["id"] == 9]  # no vector yet: found by its words alone
    assert new["text_rank"] == 1 and new["dense_rank"] is None


def test_the_full_text_leg_uses_its_index(run_cli, url, docs):
    docs.execute("INSERT INTO docs SELECT g, 'filler text number ' || g, 'en' FROM generate_series(100, 3000) g")
    docs.execute("VACUUM ANALYZE docs")  # flushes the GIN pending list, which weighs on its cost estimate
    (index,) = docs.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'docs_body_tsv_idx'").fetchone()
    assert "USING gin (body_tsv)" in index
    emitted = run_cli("search", "--url", url, "--hybrid", "--emit-sql").stdout
    # The vector leg's query, then the fusion's, which takes the vector leg's rows as arrays.
    assert "parameters in order: the query vector, the query vector, the query vector, 101, 100" in emitted
    assert (
        "then: the query text, '', the query text, the query text, 100, 1.0, 60, 1.0, 60, 10 (the last is k)" in emitted
    )
    statement = emitted.strip().splitlines()[-1].rstrip(";")
    params = (["1", "2"], [0.1, 0.2], [1, 2], "ZX-7731", "", "ZX-7731", "ZX-7731", 100, 1.0, 60, 1.0, 60, 10)
    plan = "\n".join(r[0] for r in docs.execute("EXPLAIN " + statement, params))
    assert "Bitmap Index Scan on docs_body_tsv_idx" in plan, plan


def test_hybrid_without_full_text_names_the_option(run_cli, url, conn, words):
    conn.execute("CREATE TABLE plain (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO plain VALUES (1, 'x')")
    assert run_cli("encode", "--url", url, "-t", "plain", "-c", "body", "-m", "words").exit_code == 0
    result = run_cli("search", "--url", url, "x", "--hybrid")
    assert result.exit_code == 2 and "--fulltext" in result.stderr


def test_fulltext_on_an_encoded_column_then_drop_removes_it(run_cli, url, conn, words):
    conn.execute("CREATE TABLE plain (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO plain VALUES (1, 'alpha beta'), (2, 'gamma')")
    before = table_checksum(conn, "plain")
    assert run_cli("encode", "--url", url, "-t", "plain", "-c", "body", "-m", "words").exit_code == 0
    added = run_cli("encode", "--url", url, "-t", "plain", "-c", "body", "-m", "words", "--fulltext")
    assert added.exit_code == 0 and "full text in body_tsv" in added.stdout
    (status,) = json.loads(run_cli("status", "--url", url, "--json").stdout)
    assert status["fulltext"] == {
        "column": "body_tsv", "index": "plain_body_tsv_idx", "language": "english", "terms": "plain_body_tsv_terms"
    }  # fmt: skip
    assert ids(run_cli("search", "--url", url, "gamma", "--hybrid", "-k", "1", "--json")) == [2]
    bad = run_cli(
        "encode", "--url", url, "-t", "plain", "-c", "body", "-m", "words", "--fulltext", "--language", "nope"
    )
    assert bad.exit_code == 2
    assert run_cli("drop", "--url", url, "-t", "plain", "-c", "body", "--yes").exit_code == 0
    assert table_checksum(conn, "plain") == before


def test_unknown_language_is_refused_before_any_change(run_cli, url, conn, words):
    conn.execute("CREATE TABLE plain (id int PRIMARY KEY, body text)")
    before = table_checksum(conn, "plain")
    result = run_cli(
        "encode", "--url", url, "-t", "plain", "-c", "body", "-m", "words", "--fulltext", "--language", "klingon"
    )
    assert result.exit_code == 2 and "klingon" in result.stderr and "english" in result.stderr
    assert table_checksum(conn, "plain") == before


def test_eval_hybrid_shows_dense_fulltext_and_hybrid_side_by_side(run_cli, url, docs, tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        json.dumps({"_id": "q1", "text": QUERY}) + "\n" + json.dumps({"_id": "q2", "text": "beef"}) + "\n"
    )
    qrels = tmp_path / "r.tsv"
    qrels.write_text("q1\t1\t1\nq1\t2\t1\nq2\t5\t1\n")
    args = (
        "eval",
        "--url",
        url,
        "-t",
        "docs",
        "-c",
        "body",
        "--queries",
        queries,
        "--qrels",
        qrels,
        "--exact",
        "-k",
        "10",
    )
    result = run_cli(*args, "--hybrid", "--json")
    assert result.exit_code == 0, result.output
    scores = {r["ranking"]: r for r in json.loads(result.stdout)}
    assert set(scores) == {"dense", "fulltext", "hybrid"}
    assert scores["hybrid"]["ndcg@10"] >= max(scores["dense"]["ndcg@10"], scores["fulltext"]["ndcg@10"])
    assert scores["hybrid"]["recall@10"] == 1.0
    assert "hybrid" in run_cli(*args, "--hybrid").stdout
