"""Any table a user has: every type PostgreSQL offers for a primary key and for a text source,
built in and user defined. For each: encode (with a row edited mid-run), track changes, filter on
the column, and import vectors keyed by it. Real embedded PostgreSQL; the 8-dim words encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from psycopg import sql

from conftest import WordsEncoder

# (SQL type, three distinct key values as the type reads them, the JSON a filter or a file uses)
KEY_TYPES = [
    ("smallint", ["1", "2", "30000"], [1, 2, 30000]),
    ("integer", ["-5", "0", "7"], [-5, 0, 7]),
    ("bigint", ["9007199254740993", "2", "3"], [9007199254740993, 2, 3]),
    ("numeric(10,2)", ["1.50", "2.25", "3.00"], [1.5, 2.25, 3]),
    ("real", ["0.1", "0.2", "1e-3"], [0.1, 0.2, 0.001]),
    ("double precision", ["0.1", "1e300", "3.14159"], [0.1, 1e300, 3.14159]),
    ("text", ["a b", "tab\there", "quote ' \" \\"], ["a b", "tab\there", "quote ' \" \\"]),
    ("varchar(10)", ["x", "y ", "z"], ["x", "y ", "z"]),
    ("char(5)", ["ab", "cd", "e"], ["ab", "cd", "e"]),
    ("uuid", ["00000000-0000-0000-0000-000000000001", "ffffffff-0000-0000-0000-000000000002",
              "12345678-1234-1234-1234-123456789abc"],
     ["00000000-0000-0000-0000-000000000001", "ffffffff-0000-0000-0000-000000000002",
      "12345678-1234-1234-1234-123456789abc"]),
    ("date", ["2024-01-01", "1999-12-31", "2030-06-15"], ["2024-01-01", "1999-12-31", "2030-06-15"]),
    ("timestamp", ["2024-01-01 00:00:00.123456", "2024-01-01 10:00", "1970-01-01"],
     ["2024-01-01 00:00:00.123456", "2024-01-01 10:00", "1970-01-01"]),
    ("timestamptz", ["2024-01-01 00:00:00+00", "2024-01-01 10:00+05", "1970-01-01 00:00+00"],
     ["2024-01-01 00:00:00+00", "2024-01-01 10:00+05", "1970-01-01 00:00+00"]),
    ("bytea", ["\\x00", "\\x0102", "\\xff"], ["\\x00", "\\x0102", "\\xff"]),
    ("inet", ["10.0.0.1", "::1", "192.168.0.0/16"], ["10.0.0.1", "::1", "192.168.0.0/16"]),
    ("interval", ["1 day", "2 hours", "3 mons"], ["1 day", "2 hours", "3 mons"]),
    ("boolean", ["true", "false"], [True, False]),
    ("mood", ["happy", "sad", "ok"], ["happy", "sad", "ok"]),  # enum
    ("positive_int", ["1", "2", "3"], [1, 2, 3]),  # domain over integer
    ("citext", ["Alpha", "beta", "GAMMA"], ["Alpha", "beta", "GAMMA"]),  # extension type
]  # fmt: skip

SOURCE_TYPES = ["text", "varchar(40)", "char(40)", "name", "citext", "short_text", "label"]

TEXTS = ["alpha beta", "gamma delta epsilon", "zeta"]


@pytest.fixture
def types(conn):
    conn.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
    conn.execute("CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0)")
    conn.execute("CREATE DOMAIN short_text AS varchar(40)")
    conn.execute("CREATE DOMAIN label AS text CHECK (VALUE <> 'forbidden')")
    conn.execute("CREATE EXTENSION citext")
    return conn


def make_table(conn, key_type: str, keys: list[str], source_type: str = "text") -> None:
    conn.execute(
        sql.SQL("CREATE TABLE k (id {} PRIMARY KEY, body {}, other int DEFAULT 0)").format(
            sql.SQL(key_type), sql.SQL(source_type)
        )
    )
    for key, text in zip(keys, TEXTS, strict=False):
        conn.execute(
            sql.SQL("INSERT INTO k (id, body) VALUES (CAST(%s AS {}), CAST(%s AS {}))").format(
                sql.SQL(key_type), sql.SQL(source_type)
            ),
            (key, text),
        )


def vectors_by_text(conn, vector_column="body_vector") -> list[tuple[str, np.ndarray | None]]:
    """(text, vector) of each row in key order (the first column is the key's first)."""
    rows = conn.execute(
        sql.SQL("SELECT body::text, {}::text FROM k ORDER BY k").format(sql.Identifier(vector_column))
    ).fetchall()
    return [(text, None if v is None else np.array(json.loads(v), dtype=np.float32)) for text, v in rows]


def assert_every_vector_is_the_models(conn, vector_column="body_vector") -> None:
    for text, vector in vectors_by_text(conn, vector_column):
        assert vector is not None, text
        np.testing.assert_array_equal(vector, WordsEncoder.vector(text))


def encode(run_cli, url, *extra):
    result = run_cli("encode", "--url", url, "-t", "k", "-c", "body", "-m", "words", *extra)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("key_type, keys, json_keys", KEY_TYPES, ids=[t[0] for t in KEY_TYPES])
def test_every_key_type(run_cli, url, types, words, key_type, keys, json_keys):
    make_table(types, key_type, keys)
    n = len(keys)

    # An edit between read and write: that row stays pending, the rest are written.
    edited = []

    def edit_once(batch):
        if not edited:
            edited.append(True)
            types.execute("UPDATE k SET body = 'edited while encoding' WHERE body = %s", (TEXTS[0],))

    words.before_encode = edit_once
    first = encode(run_cli, url, "--track-changes")
    assert f"Encoded {n - 1} row{'s' if n > 2 else ''} of" in first.stdout
    assert "1 row changed while encoding and stays pending" in first.stdout
    words.before_encode = None
    assert "Encoded 1 row of" in encode(run_cli, url).stdout
    assert_every_vector_is_the_models(types)
    assert "Nothing to do" in encode(run_cli, url).stdout

    # Tracking: a text edit re-queues the row; another column's edit does not.
    types.execute("UPDATE k SET other = other + 1")
    assert all(v is not None for _, v in vectors_by_text(types))
    types.execute("UPDATE k SET body = 'changed text here' WHERE body = %s", (TEXTS[1],))
    assert sum(v is None for _, v in vectors_by_text(types)) == 1
    assert "Encoded 1 row of" in encode(run_cli, url).stdout
    assert_every_vector_is_the_models(types)

    # A filter on the key column finds exactly that row, compared in its own type.
    found = run_cli("search", "--url", url, "alpha", "--where", json.dumps({"id": json_keys[-1]}), "--json")
    assert found.exit_code == 0, found.output
    rows = json.loads(found.stdout)
    assert len(rows) == 1
    assert types.execute(
        sql.SQL("SELECT CAST(%s AS {}) = CAST(%s AS {})").format(sql.SQL(key_type), sql.SQL(key_type)),
        (str(rows[0]["id"]).lower() if key_type == "boolean" else rows[0]["id"], keys[-1]),
    ).fetchone()[0]

    # Import vectors keyed by it, into a second vector column.
    path = url_file(types, json_keys)
    imported = run_cli(
        "import-vectors", "--url", url, "-t", "k", "-c", "body", "--file", path, "--vector-column", "body_imp"
    )
    assert imported.exit_code == 0, imported.output
    assert f"Imported {n} vectors" in imported.stdout
    stored = [v for _, v in vectors_by_text(types, "body_imp")]
    assert [list(v) for v in stored] == [[float(i + 1), 0.5, -1.0] for i in key_order(types, key_type, keys)]
    assert types.execute("SELECT count(*) FROM k").fetchone()[0] == n


def url_file(conn, json_keys) -> str:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for i, key in enumerate(json_keys):
            f.write(json.dumps({"id": key, "vector": [float(i + 1), 0.5, -1.0]}) + "\n")
    return f.name


def key_order(conn, key_type: str, keys: list[str]) -> list[int]:
    """The positions of keys in the table's key order."""
    ordered = conn.execute("SELECT k.id::text FROM k ORDER BY k.id").fetchall()
    as_text = [
        conn.execute(sql.SQL("SELECT CAST(CAST(%s AS {}) AS text)").format(sql.SQL(key_type)), (k,)).fetchone()[0]
        for k in keys
    ]
    return [as_text.index(text) for (text,) in ordered]


@pytest.mark.parametrize("source_type", SOURCE_TYPES)
def test_every_text_source_type(run_cli, url, types, words, source_type):
    make_table(types, "integer", ["1", "2", "3"], source_type)
    edited = []

    def edit_once(batch):
        if not edited:
            edited.append(True)
            types.execute("UPDATE k SET body = 'edited while encoding' WHERE id = 2")

    words.before_encode = edit_once
    first = encode(run_cli, url, "--track-changes")
    assert "Encoded 2 rows" in first.stdout and "1 row changed while encoding" in first.stdout
    words.before_encode = None
    assert "Encoded 1 row of" in encode(run_cli, url).stdout
    assert_every_vector_is_the_models(types)

    types.execute("UPDATE k SET other = 1")
    assert all(v is not None for _, v in vectors_by_text(types))
    types.execute("UPDATE k SET body = 'new words' WHERE id = 3")
    assert "Encoded 1 row of" in encode(run_cli, url).stdout
    assert_every_vector_is_the_models(types)

    found = run_cli("search", "--url", url, "x", "--where", '{"body": "new words"}', "--json")
    assert found.exit_code == 0, found.output
    assert [r["id"] for r in json.loads(found.stdout)] == [3]


def test_a_type_outside_the_string_category_is_refused(run_cli, url, types, words):
    types.execute("CREATE TABLE k (id int PRIMARY KEY, body mood)")
    result = run_cli("encode", "--url", url, "-t", "k", "-c", "body", "-m", "words")
    assert result.exit_code == 2 and "not text" in result.stderr


def test_composite_keys_of_mixed_types(run_cli, url, types, words):
    types.execute("CREATE TABLE k (a char(3), b real, c mood, body text, PRIMARY KEY (a, b, c))")
    types.execute(
        "INSERT INTO k VALUES ('x', 0.1, 'sad', 'one two'), ('x', 0.1, 'ok', 'three'), ('y ', 1e-7, 'sad', 'four five')"
    )
    assert "Encoded 3 rows" in encode(run_cli, url, "--batch-size", "2").stdout
    assert_every_vector_is_the_models(types)
