"""Which vectorized column a command means, decided in one place from the catalog: pure
functions first (no database), then the commands that use them, on a real embedded PostgreSQL."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vectorize_core.errors import AmbiguousVectorColumn, NoVectorizedColumn
from vectorize_core.target import Candidate, pick_vector_column


def column(name, sources, dimension=384, metric="cosine", table="doc"):
    return Candidate("public", table, name, {"source": sources, "dimension": dimension, "metric": metric})


def test_a_column_encoded_from_several_is_found_by_any_of_them():
    found = [column("title_vector", ["title", "body"])]
    assert pick_vector_column(found, column="body").vector_column == "title_vector"
    assert pick_vector_column(found, column=["title", "body"]).vector_column == "title_vector"


def test_the_column_of_exactly_the_named_sources_comes_before_one_that_also_holds_them():
    found = [column("title_vector", ["title", "body"]), column("body_vector", ["body"])]
    assert pick_vector_column(found, column="body").vector_column == "body_vector"
    assert pick_vector_column(found, column=("title", "body")).vector_column == "title_vector"


def test_two_columns_that_fit_alike_are_asked_about_naming_both():
    found = [column("a_vector", ["title", "body"]), column("b_vector", ["body", "notes"])]
    with pytest.raises(AmbiguousVectorColumn, match="a_vector.*b_vector"):
        pick_vector_column(found, column="body")


def test_a_name_no_column_holds_says_so():
    with pytest.raises(NoVectorizedColumn, match="for column 'summary'"):
        pick_vector_column([column("body_vector", ["body"])], column="summary")


def test_a_query_vector_settles_a_choice_between_sizes_and_only_then():
    found = [column("small", ["body"], 8), column("large", ["title"], 384)]
    assert pick_vector_column(found, dimension=8).vector_column == "small"
    assert pick_vector_column(found, vector_column="large", dimension=8).vector_column == "large"
    same = [column("one", ["body"], 8), column("two", ["title"], 8)]
    with pytest.raises(AmbiguousVectorColumn):
        pick_vector_column(same, dimension=8)


@pytest.fixture
def articles(conn, run_cli, url, words):
    conn.execute("CREATE TABLE article (id int PRIMARY KEY, title text, body text)")
    # The words encoder reads word lengths: each title's length is its key.
    conn.execute("INSERT INTO article SELECT g, repeat('x', g), 'body of an article' FROM generate_series(1, 12) g")
    result = run_cli("encode", "--url", url, "-t", "article", "-c", "title", "-c", "body", "-m", "words")
    assert result.exit_code == 0, result.output
    return conn


def test_search_by_one_source_of_a_joined_column(run_cli, url, articles):
    result = run_cli(
        "search", "--url", url, "-t", "article", "-c", "body", "xxxxxxx body of an article", "--json", "-k", "1"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["id"] == 7


def test_eval_with_several_columns_evaluates_the_joined_column(run_cli, url, articles, tmp_path):
    queries, qrels = tmp_path / "q.jsonl", tmp_path / "qrels.tsv"
    queries.write_text(json.dumps({"_id": "q1", "text": "xxx body of an article"}) + "\n")
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\t3\t1\n")
    args = ["eval", "--url", url, "-t", "article", "--queries", queries, "--qrels", qrels, "--json"]
    result = run_cli(*args, "-c", "title", "-c", "body")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert [s["vector_column"] for s in scores] == ["title_vector"], scores
    assert scores[0]["ndcg@10"] == 1.0, scores
    missing = run_cli(*args, "-c", "summary")
    assert missing.exit_code == 2


def test_a_query_vector_takes_the_column_of_its_size(run_cli, url, conn, words, tmp_path):
    conn.execute("CREATE TABLE mixed (id int PRIMARY KEY, body text, title text)")
    conn.execute("INSERT INTO mixed SELECT g, 'body ' || g, 'title ' || g FROM generate_series(1, 5) g")
    assert run_cli("encode", "--url", url, "-t", "mixed", "-c", "title", "-m", "words").exit_code == 0
    path = tmp_path / "body.jsonl"
    path.write_text("".join(json.dumps({"id": i + 1, "vector": v.tolist()}) + "\n" for i, v in enumerate(np.eye(5))))
    result = run_cli("import-vectors", "--url", url, "-t", "mixed", "-c", "body", "--file", path)
    assert result.exit_code == 0, result.output
    query = json.dumps([0, 0, 1, 0, 0])
    result = run_cli("search", "--url", url, "-t", "mixed", "--query-vector", query, "--json", "-k", "1")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["id"] == 3
