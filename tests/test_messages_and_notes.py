"""A blank query, an unknown model on an encoded
column, why the vector index does not serve a small table, and what the CLI and the API say.
Real embedded PostgreSQL; the in-process 'words' encoder."""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest

from conftest import table_checksum
from vectorize_core import serve as core


@pytest.fixture
def notes(run_cli, url, conn, words):
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO notes SELECT g, 'note number ' || g || ' about things' FROM generate_series(1, 12) g")
    result = run_cli("encode", "--url", url, "-t", "notes", "-c", "body", "-m", "words", "--fulltext")
    assert result.exit_code == 0, result.output
    return conn


# -- item 5: an empty or blank query is bad input, in the CLI and the API ---------------------


@pytest.mark.parametrize("query", ["", "   ", "\t\n", "\u00a0\u3000"])
def test_a_blank_query_is_refused_not_answered_with_arbitrary_rows(run_cli, url, notes, query):
    result = run_cli("search", "--url", url, query, "-t", "notes", "--json")
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "query text is empty" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    hybrid = run_cli("search", "--url", url, query, "-t", "notes", "--hybrid")
    assert hybrid.exit_code == 2 and "query text is empty" in hybrid.stderr


def test_the_api_answers_a_blank_query_with_400(url, notes):
    with core.BackgroundServer(core.create_app(url)) as running, httpx.Client(base_url=running.url) as client:
        for query in ("", "   "):
            response = client.post("/search", json={"table": "notes", "query": query})
            assert response.status_code == 400, response.text
            assert "query text is empty" in response.json()["error"]
        assert client.post("/search", json={"table": "notes", "query": "note"}).status_code == 200


# -- item 8: an unknown model is named before the column's advice ------------------------------


def test_an_unknown_model_on_an_encoded_column_says_unknown_model_first(run_cli, url, notes):
    before = table_checksum(notes, "notes")
    result = run_cli("encode", "--url", url, "-t", "notes", "-c", "body", "-m", "nosuchmodel")
    assert result.exit_code == 2
    assert "unknown model 'nosuchmodel'" in result.stderr
    assert "filled by model" not in result.stderr and "--vector-column" not in result.stderr
    assert table_checksum(notes, "notes") == before


# -- item 10: why the index does not serve a small table ---------------------------------------


def test_status_says_why_the_index_does_not_serve_a_small_table(run_cli, url, notes):
    (column,) = json.loads(run_cli("status", "--url", url, "--json").stdout)
    assert column["index"] and column["index_serves_search"] is False
    assert (
        "with 12 distinct contents the planner ranks every distinct content exactly"
        in column["index_serves_search_note"]
    )
    assert "as the table grows" in column["index_serves_search_note"]
    human = run_cli("status", "--url", url)
    assert human.exit_code == 0
    assert "Note: public.notes.body_vector: index not used: with 12 distinct contents" in human.stdout


def test_status_has_no_note_when_the_index_serves_search(run_cli, url, conn, words):
    conn.execute("CREATE TABLE big (id int PRIMARY KEY, body text)")
    words_list = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    conn.execute(
        "INSERT INTO big SELECT g, (%s::text[])[1 + g %% 10] || ' ' || repeat('x', 1 + g %% 7) || ' ' || g"
        " FROM generate_series(1, 12000) g",
        (words_list,),
    )
    assert run_cli("encode", "--url", url, "-t", "big", "-c", "body", "-m", "words").exit_code == 0
    conn.execute("ANALYZE big")
    (column,) = json.loads(run_cli("status", "--url", url, "--json").stdout)
    assert column["index_serves_search"] is True
    assert column["index_serves_search_note"] is None


# -- item 11: plurals, the API's field names, the imported label, what drop removed -------------


def test_plural():
    from vectorize_core.output import plural

    assert plural(1, "row") == "1 row" and plural(0, "row") == "0 rows" and plural(2, "row") == "2 rows"
    assert plural(1, "row was", "rows were") == "1 row was" and plural(3, "row was", "rows were") == "3 rows were"


def test_one_row_is_one_row_in_the_summary(run_cli, url, conn, words):
    conn.execute("CREATE TABLE one (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO one VALUES (1, 'a single row')")
    result = run_cli("encode", "--url", url, "-t", "one", "-c", "body", "-m", "words")
    assert result.exit_code == 0, result.output
    assert "Encoded 1 row of public.one.body" in result.stdout
    assert not re.search(r"(?<![\d.])1 rows", result.stdout)  # (not '51 rows/s')


def test_api_errors_name_the_api_fields_not_the_cli_options(url, notes):
    with core.BackgroundServer(core.create_app(url)) as running, httpx.Client(base_url=running.url) as client:
        shown = client.post("/search", json={"table": "notes", "query": "note", "show": ["body_vector"]})
        assert shown.status_code == 400
        assert shown.json()["error"].startswith('"show" body_vector: vector columns are not shown')
        both = client.post("/search", json={"table": "notes", "query": "note", "query_vector": [1.0] * 8})
        assert both.status_code == 400 and '"query_vector"' in both.json()["error"]
        wrong = client.post("/search", json={"table": "notes", "query_vector": [1.0] * 3})
        assert wrong.status_code == 400
        for response in (shown, both, wrong):
            assert "--" not in response.json()["error"], response.json()


def test_api_wording_keeps_commands_in_backticks():
    message = (
        "t.v has no full text for --hybrid: add it with `vectorize.py encode -t t -c b --vector-column v --fulltext`"
    )
    assert core.api_wording(message) == (
        't.v has no full text for "hybrid": add it with `vectorize.py encode -t t -c b --vector-column v --fulltext`'
    )


def test_status_shows_the_label_of_imported_vectors(run_cli, url, conn, tmp_path):
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 5) g")
    rng = np.random.default_rng(0)
    path = tmp_path / "v.jsonl"
    path.write_text(
        "".join(json.dumps({"id": i, "vector": rng.standard_normal(4).tolist()}) + "\n" for i in range(1, 6))
    )
    result = run_cli(
        "import-vectors", "--url", url, "-t", "items", "-c", "body", "-f", path, "--model-name", "my-model"
    )
    assert result.exit_code == 0, result.output
    assert "Imported 5 vectors" in result.stdout
    (column,) = json.loads(run_cli("status", "--url", url, "--json").stdout)
    assert column["model"] == "my-model (imported)"
    assert "my-model (imported)" in run_cli("status", "--url", url).stdout


def test_drop_says_it_dropped_the_full_text_column_too(run_cli, url, notes):
    result = run_cli("drop", "--url", url, "-t", "notes", "-c", "body", "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "Dropped public.notes.body_vector and its full-text column body_tsv"
        " and its contents table public.notes_body_vector_contents."
    )
    columns = {
        r[0] for r in notes.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'notes'")
    }
    assert columns == {"id", "body"}
