"""Every key a table holds comes back from an export, in every format: the empty string, white
space, words a format might read as null, quotes, separators, line breaks. Real embedded
PostgreSQL, two databases."""

from __future__ import annotations

import pytest

from conftest import fresh_database

KEYS = ["", " ", "NULL", "null", "None", '"quoted"', "a,b;c\td", "two\nlines", "ünïcödé", "0", "-"]
FORMATS = ["parquet", "jsonl", "csv", "npy"]


def make_table(url: str, with_vectors: bool) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE note (name text PRIMARY KEY, body text)")
        conn.cursor().executemany(
            "INSERT INTO note VALUES (%s, %s)", [(k, f"note {i} has {'word ' * (i + 1)}") for i, k in enumerate(KEYS)]
        )


def stored(url: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT name, body_vector::text FROM note WHERE body_vector IS NOT NULL"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_key_the_table_holds_round_trips(run_cli, url, pg_server, words, tmp_path, fmt):
    make_table(url, True)
    assert run_cli("encode", "--url", url, "-t", "note", "-c", "body", "-m", "words").exit_code == 0
    out = tmp_path / f"note.{fmt}"
    exported = run_cli("export-vectors", "--url", url, "-t", "note", "-c", "body", "--file", out)
    assert exported.exit_code == 0, exported.output
    target = fresh_database(pg_server.get_uri())
    make_table(target, False)
    imported = run_cli("import-vectors", "--url", target, "--file", out)
    assert imported.exit_code == 0, imported.output
    assert stored(target) == stored(url)
    assert set(stored(target)) == set(KEYS)
