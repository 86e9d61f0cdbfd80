"""Bad input: one line on stderr, exit code 2 (1 for runtime failures), the table untouched."""

from __future__ import annotations

import pytest

from conftest import table_checksum


@pytest.fixture
def docs(conn):
    conn.execute("CREATE EXTENSION vector")
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, n int, payload jsonb)")
    conn.execute("INSERT INTO docs VALUES (1, 'some text', 1, '{}'), (2, 'more text', 2, '{}')")
    conn.execute("CREATE TABLE nokey (body text)")
    conn.execute("INSERT INTO nokey VALUES ('x')")
    conn.execute("CREATE TABLE clash (id int PRIMARY KEY, body text, body_vector vector(3), other_vector int)")
    conn.execute("INSERT INTO clash VALUES (1, 'text', '[1,2,3]', 5)")
    return conn


def one_line_error(result, code, *fragments):
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    "args, table, fragments",
    [
        (["-t", "nosuch", "-c", "body"], "docs", ["no table 'nosuch'"]),
        (["-t", 'docs"; DROP TABLE docs; --', "-c", "body"], "docs", ["no table"]),
        (["-t", "docs", "-c", "nosuch"], "docs", ["no column 'nosuch'"]),
        (["-t", "docs", "-c", "body; DROP TABLE docs"], "docs", ["no column"]),
        (["-t", "docs", "-c", "n"], "docs", ["'n'", "integer, not text"]),
        (["-t", "docs", "-c", "payload"], "docs", ["jsonb, not text"]),
        (["-t", "nokey", "-c", "body"], "nokey", ["no primary key"]),
        (["-t", "docs", "-c", "body", "-m", "nosuch"], "docs", ["unknown model 'nosuch'", "minilm"]),
        (["-t", "clash", "-c", "body"], "clash", ["3 dimensions", "384"]),
        (["-t", "clash", "-c", "body", "--vector-column", "other_vector"], "clash", ["integer", "vector(384)"]),
        (["-t", "docs", "-c", "body", "--vector-column", "id"], "docs", ["overwrite"]),
    ],
    ids=[
        "unknown-table",
        "sql-in-table",
        "unknown-column",
        "sql-in-column",
        "int-column",
        "jsonb-column",
        "no-primary-key",
        "unknown-model",
        "dimension-clash",
        "not-a-vector-column",
        "vector-column-is-key",
    ],
)
def test_bad_encode_input_exits_2_and_changes_nothing(run_cli, url, docs, args, table, fragments):
    before = {t: table_checksum(docs, t) for t in ("docs", "nokey", "clash")}
    result = run_cli("encode", "--url", url, *args)
    one_line_error(result, 2, *fragments)
    assert {t: table_checksum(docs, t) for t in ("docs", "nokey", "clash")} == before


def test_second_model_into_a_filled_column_is_refused(run_cli, url, docs, words):
    assert (
        run_cli("encode", "--url", url, "-t", "docs", "-c", "body", "-m", "words", "--vector-column", "v").exit_code
        == 0
    )
    before = table_checksum(docs, "docs")
    one_line_error(
        run_cli("encode", "--url", url, "-t", "docs", "-c", "body", "-m", "minilm", "--vector-column", "v"),
        2,
        "filled by model 'words'",
    )
    one_line_error(
        run_cli(
            "encode", "--url", url, "-t", "docs", "-c", "body", "-m", "words", "--vector-column", "v", "--metric", "ip"
        ),
        2,
        "l2 metric",
    )
    assert table_checksum(docs, "docs") == before


def test_unreachable_database_exits_1_and_masks_the_password(run_cli):
    url = "postgresql://alice:s3cretpw@127.0.0.1:1/nodb?connect_timeout=2"
    result = run_cli("encode", "--url", url, "-t", "t", "-c", "body")
    line = one_line_error(result, 1, "cannot connect", "alice:***@127.0.0.1")
    assert "s3cretpw" not in result.output and "s3cretpw" not in line


def test_password_from_database_url_is_masked_too(run_cli):
    result = run_cli(
        "search", "hello", env={"DATABASE_URL": "postgresql://bob:hunter2@127.0.0.1:1/x?connect_timeout=2"}
    )
    one_line_error(result, 1, "bob:***@")
    assert "hunter2" not in result.output


def test_search_with_several_vectorized_columns_lists_them(run_cli, url, docs, words):
    assert (
        run_cli("encode", "--url", url, "-t", "docs", "-c", "body", "-m", "words", "--vector-column", "v1").exit_code
        == 0
    )
    assert (
        run_cli("encode", "--url", url, "-t", "docs", "-c", "body", "-m", "words", "--vector-column", "v2").exit_code
        == 0
    )
    one_line_error(
        run_cli("search", "--url", url, "text"), 2, "several vectorized columns", "public.docs.v1", "public.docs.v2"
    )


def test_search_with_nothing_vectorized(run_cli, url, docs):
    one_line_error(run_cli("search", "--url", url, "text"), 2, "no vectorized column", "vectorize.py encode")


def test_missing_table_option_is_a_usage_error(run_cli, url):
    result = run_cli("encode", "--url", url, "-c", "body")
    assert result.exit_code == 2
    assert "--table" in result.stderr


def test_debug_shows_the_traceback(run_cli, url, docs):
    import vectorize_core.errors as errors

    with pytest.raises(errors.NoSuchTable):
        run_cli("encode", "--url", url, "-t", "nosuch", "-c", "body", env={"VECTORIZE_DEBUG": "1"})


def test_unexpected_errors_are_one_masked_line(run_cli, url, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom\nwhile talking to postgresql://carol:s3cret@db.example/x")

    monkeypatch.setattr("vectorize_core.search.search", explode)
    result = run_cli("search", "--url", url, "hello")
    line = one_line_error(result, 1, "unexpected RuntimeError: boom", "carol:***@", "VECTORIZE_DEBUG=1")
    assert "s3cret" not in line
