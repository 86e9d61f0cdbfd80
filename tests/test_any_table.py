"""Ordinary schemas that used to lose rows or break writes: generated sources, renamed and dropped
columns, derived names that meet, vector columns the tool did not make, refused rows, models wider
than an index, odd column names and values. Real embedded PostgreSQL 18 + pgvector."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

import modules
from conftest import WordsEncoder, table_checksum


def vectors(conn, table="doc", column="doc_vector", key="id") -> dict:
    rows = conn.execute(f'SELECT "{key}", "{column}"::text FROM {table} ORDER BY 1').fetchall()
    return {k: None if v is None else np.array(json.loads(v), dtype=np.float32) for k, v in rows}


def texts(conn, table="doc", column="doc", key="id") -> dict:
    return dict(conn.execute(f'SELECT "{key}", "{column}" FROM {table} ORDER BY 1').fetchall())


def assert_vectors_match_texts(conn, table="doc", column="doc", vector_column="doc_vector"):
    stored = vectors(conn, table, vector_column)
    for key, text in texts(conn, table, column).items():
        assert stored[key] is not None, key
        np.testing.assert_array_equal(stored[key], WordsEncoder.vector(text))


# -- generated source columns (item 2) ------------------------------------------------------------


@pytest.fixture
def generated(conn):
    conn.execute(
        "CREATE TABLE doc (id int PRIMARY KEY, title text, doc text GENERATED ALWAYS AS (title || ' views.') STORED,"
        " views int DEFAULT 0)"
    )
    conn.execute("INSERT INTO doc (id, title) SELECT g, 'title number ' || g FROM generate_series(1, 6) g")
    return conn


def test_generated_source_with_tracking_keeps_its_vectors(run_cli, url, generated, words):
    base = ("encode", "--url", url, "-t", "doc", "-c", "doc", "-m", "words")
    result = run_cli(*base, "--track-changes")
    assert result.exit_code == 0, result.output
    assert "Encoded 6 rows" in result.stdout
    assert_vectors_match_texts(generated)

    generated.execute("UPDATE doc SET views = views + 1")  # a column the text does not read
    assert all(v is not None for v in vectors(generated).values())
    generated.execute("UPDATE doc SET title = 'a new title' WHERE id = 2")  # what the text is made of
    assert vectors(generated)[2] is None and sum(v is None for v in vectors(generated).values()) == 1
    assert "Encoded 1 row of" in run_cli(*base).stdout
    assert_vectors_match_texts(generated)
    assert "Nothing to do" in run_cli(*base).stdout


def test_virtual_generated_source_is_refused_before_any_change(run_cli, url, conn, words):
    conn.execute(
        "CREATE TABLE doc (id int PRIMARY KEY, title text, doc text GENERATED ALWAYS AS (title || '.') VIRTUAL)"
    )
    conn.execute("INSERT INTO doc (id, title) VALUES (1, 'x')")
    before = table_checksum(conn, "doc")
    result = run_cli("encode", "--url", url, "-t", "doc", "-c", "doc", "-m", "words")
    assert result.exit_code == 2 and "VIRTUAL" in result.stderr and "STORED" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert table_checksum(conn, "doc") == before


# -- renamed and dropped columns (item 3) ---------------------------------------------------------


@pytest.fixture
def tracked(run_cli, url, conn, words):
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text, views int DEFAULT 0)")
    conn.execute("INSERT INTO t (id, body) SELECT g, 'body text ' || g FROM generate_series(1, 5) g")
    result = run_cli("encode", "--url", url, "-t", "t", "-c", "body", "-m", "words", "--track-changes")
    assert result.exit_code == 0, result.output
    return conn


def status(run_cli, url) -> tuple[list[dict], str]:
    result = run_cli("status", "--url", url, "--json")
    assert result.exit_code == 0, result.output
    human = run_cli("status", "--url", url)
    assert human.exit_code == 0, human.output
    return json.loads(result.stdout), human.stderr


def test_renaming_a_tracked_source_never_breaks_the_application(run_cli, url, tracked):
    tracked.execute("ALTER TABLE t RENAME COLUMN body TO content")
    tracked.execute("UPDATE t SET views = views + 1")  # the application's writes go on
    tracked.execute("UPDATE t SET content = 'edited after the rename' WHERE id = 1")
    # The trigger followed the rename: the edited row is pending again.
    assert vectors(tracked, "t", "body_vector")[1] is None

    (column,), warning = status(run_cli, url)
    assert "'body' is now 'content'" in column["problem"] and "-c content" in column["problem"]
    assert "now 'content'" in warning

    # encode under the new name finds the vector column, records the rename and catches up.
    repaired = run_cli("encode", "--url", url, "-t", "t", "-c", "content", "-m", "words")
    assert repaired.exit_code == 0, repaired.output
    assert "Encoded 1 row of" in repaired.stdout and "into body_vector" in repaired.stdout
    assert_vectors_match_texts(tracked, "t", "content", "body_vector")
    (column,), _ = status(run_cli, url)
    assert column["problem"] is None and column["tracking"] is True and column["columns"] == ["content"]


@pytest.mark.parametrize("spelling", ["body", "content"])
def test_drop_after_a_rename_takes_the_old_or_the_new_name(run_cli, url, tracked, spelling):
    tracked.execute("ALTER TABLE t RENAME COLUMN body TO content")
    result = run_cli("drop", "--url", url, "-t", "t", "-c", spelling, "--yes")
    assert result.exit_code == 0, result.output
    assert tracked.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 't'::regclass").fetchone()[0] == 0
    tracked.execute("UPDATE t SET content = 'still writable'")


def test_a_dropped_source_is_reported_and_can_be_removed(run_cli, url, tracked):
    refused = None
    try:
        tracked.execute("ALTER TABLE t DROP COLUMN body")
    except Exception as exc:  # noqa: BLE001 - the trigger depends on the column: PostgreSQL says so
        refused = str(exc)
    assert refused and "depend" in refused
    tracked.execute("ALTER TABLE t DROP COLUMN body CASCADE")
    tracked.execute("UPDATE t SET views = 2")
    (column,), _ = status(run_cli, url)
    assert "'body' was dropped" in column["problem"] and "drop" in column["problem"]
    result = run_cli("drop", "--url", url, "-t", "t", "--vector-column", "body_vector", "--yes")
    assert result.exit_code == 0, result.output
    assert "body_vector" not in [
        r[0] for r in tracked.execute("SELECT attname FROM pg_attribute WHERE attrelid = 't'::regclass")
    ]


def test_renaming_the_vector_column_is_reported_and_repaired(run_cli, url, tracked):
    tracked.execute("ALTER TABLE t RENAME COLUMN body_vector TO bv")
    tracked.execute("UPDATE t SET body = 'changed' WHERE id = 1")  # no error
    (column,), _ = status(run_cli, url)
    assert "renamed since" in column["problem"]
    repaired = run_cli("encode", "--url", url, "-t", "t", "-c", "body", "--vector-column", "bv", "-m", "words")
    assert repaired.exit_code == 0, repaired.output
    tracked.execute("UPDATE t SET body = 'changed again' WHERE id = 2")
    assert vectors(tracked, "t", "bv")[2] is None
    (column,), _ = status(run_cli, url)
    assert column["problem"] is None


def test_the_earlier_table_trigger_is_replaced(run_cli, url, conn, words):
    """Columns tracked by an earlier version had one table trigger naming the sources in its body."""
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
    assert run_cli("encode", "--url", url, "-t", "t", "-c", "body", "-m", "words", "--track-changes").exit_code == 0
    conn.execute("DROP TRIGGER vectorize_body_vector ON t")
    conn.execute(
        "CREATE FUNCTION vectorize_reset_t() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF (NEW).body IS DISTINCT FROM (OLD).body THEN NEW.body_vector := NULL; END IF; RETURN NEW; END $$"
    )
    conn.execute("CREATE TRIGGER vectorize_reset BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION vectorize_reset_t()")
    (column,), _ = status(run_cli, url)
    assert column["tracking"] is True and column["problem"] is None
    assert run_cli("encode", "--url", url, "-t", "t", "-c", "body", "-m", "words").exit_code == 0
    names = [r[0] for r in conn.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 't'::regclass")]
    assert names == ["vectorize_body_vector"]
    conn.execute("ALTER TABLE t RENAME COLUMN body TO content")
    conn.execute("UPDATE t SET content = 'x' WHERE id = 1")  # the legacy body would have failed here


# -- derived names (item 4) -----------------------------------------------------------------------


def indexes_of(conn, table: str) -> list[str]:
    return [r[0] for r in conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", (table,))]


def vector_indexes(conn) -> list[str]:
    return [r[0] for r in conn.execute("SELECT indexdef FROM pg_indexes WHERE indexdef LIKE '%USING hnsw%'")]


def test_derived_index_names_never_meet(run_cli, url, conn, words):
    conn.execute("CREATE TABLE a_b (id int PRIMARY KEY, c text)")
    conn.execute("CREATE TABLE a (id int PRIMARY KEY, b_c text)")
    conn.execute("INSERT INTO a_b VALUES (1, 'x y')")
    conn.execute("INSERT INTO a VALUES (1, 'z')")
    first = run_cli("encode", "--url", url, "-t", "a_b", "-c", "c", "-m", "words")
    second = run_cli("encode", "--url", url, "-t", "a", "-c", "b_c", "-m", "words")
    assert first.exit_code == 0 and second.exit_code == 0, second.output
    for table in ("a_b", "a"):
        defs = indexes_of(conn, table)
        assert sum("IS NULL" in d for d in defs) == 1, defs  # each table's pending-rows index
    # a_b.c and a.b_c meet at a_b_c_vector_contents: the second column's contents table (and its
    # vector index) is named apart.
    tables = sorted(d.split(" ON ")[1].split(" USING")[0] for d in vector_indexes(conn))
    assert len(set(tables)) == 2 and "public.a_b_c_vector_contents" in tables, tables
    index = second.stdout.split("index ")[1].split(" ready")[0]
    (made,) = [d for d in vector_indexes(conn) if f"INDEX {index} ON " in d]
    assert "ON public.a_b_c_vector_contents " not in made  # not the first column's
    statuses, _ = status(run_cli, url)
    assert all(s["index"] for s in statuses)
    assert run_cli("drop", "--url", url, "-t", "a", "-c", "b_c", "--yes").exit_code == 0
    assert len(vector_indexes(conn)) == 1  # the other table's index stays


def test_long_names_fit_the_identifier_limit(run_cli, url, conn, words):
    table, column = "t" * 60, "c" * 62
    conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, {column} text)")
    conn.execute(f"INSERT INTO {table} VALUES (1, 'long names')")
    base = ("encode", "--url", url, "-t", table, "-c", column, "-m", "words", "--track-changes")
    result = run_cli(*base)
    assert result.exit_code == 0, result.output
    assert "Nothing to do" in run_cli(*base).stdout
    (s,), _ = status(run_cli, url)
    assert s["index"] and s["tracking"] and len(s["vector_column"].encode()) <= 63
    assert run_cli("drop", "--url", url, "-t", table, "-c", column, "--yes").exit_code == 0


# -- vector columns the tool did not make (item 5) -------------------------------------------------


@pytest.fixture
def inhouse(conn):
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.execute("CREATE TABLE doc (id int PRIMARY KEY, doc text, doc_vector vector(8))")
    conn.execute("INSERT INTO doc VALUES (1, 'a b', '[9,9,9,9,9,9,9,9]'), (2, 'c', NULL)")
    conn.execute("COMMENT ON COLUMN doc.doc_vector IS 'in-house model v3'")
    return conn


def test_a_foreign_vector_column_is_refused_by_default(run_cli, url, inhouse, words):
    before = table_checksum(inhouse, "doc")
    result = run_cli("encode", "--url", url, "-t", "doc", "-c", "doc", "-m", "words")
    assert result.exit_code == 2 and "--adopt" in result.stderr and "in-house model v3" in result.stderr
    assert table_checksum(inhouse, "doc") == before


def test_adopt_keeps_the_vectors_and_records_the_model(run_cli, url, inhouse, words):
    result = run_cli("encode", "--url", url, "-t", "doc", "-c", "doc", "-m", "words", "--adopt")
    assert result.exit_code == 0, result.output
    stored = vectors(inhouse)
    np.testing.assert_array_equal(stored[1], np.full(8, 9, np.float32))  # kept
    np.testing.assert_array_equal(stored[2], WordsEncoder.vector("c"))  # the pending row filled
    comment = inhouse.execute("SELECT col_description('doc'::regclass, 3)").fetchone()[0]
    assert json.loads(comment)["vectorize"]["model"] == "words"


def test_reencode_replaces_every_vector(run_cli, url, inhouse, words):
    result = run_cli("encode", "--url", url, "-t", "doc", "-c", "doc", "-m", "words", "--reencode")
    assert result.exit_code == 0, result.output
    assert "Cleared 1 vector of" in result.stdout
    assert_vectors_match_texts(inhouse)


# -- refused rows (items 6 and 7) ----------------------------------------------------------------


class PickyEncoder(WordsEncoder):
    """Refuses any batch holding a text with REFUSE in it, as an endpoint refuses a long text."""

    name = "picky"

    def encode(self, batch):
        self.batches.append(list(batch))
        if any("REFUSE" in t for t in batch):
            raise ValueError("HTTP 400: input too long")
        return np.stack([self.vector(t) for t in batch])


@pytest.fixture
def picky(conn):
    encoder = PickyEncoder()
    modules.register(encoder)
    conn.execute("CREATE TABLE doc (id int PRIMARY KEY, doc text)")
    conn.execute("INSERT INTO doc VALUES (1, 'one'), (2, 'two words'), (3, 'REFUSE me'), (4, 'four of them')")
    yield encoder
    modules.unregister(encoder.name)


def test_skip_leaves_only_the_refused_row_pending(run_cli, url, conn, picky):
    result = run_cli("encode", "--url", url, "-t", "doc", "-c", "doc", "-m", "picky", "--on-error", "skip")
    assert result.exit_code == 0, result.output
    assert "1 row could not be encoded" in result.stderr and "id=3" in result.stderr
    stored = vectors(conn)
    assert stored[3] is None and all(stored[k] is not None for k in (1, 2, 4))


def test_follow_backs_off_on_a_refused_row_and_exits_when_idle(run_cli, url, conn, picky):
    started = time.monotonic()
    result = run_cli(
        "encode", "--url", url, "-t", "doc", "-c", "doc", "-m", "picky", "--on-error", "skip",
        "--follow", "--max-idle", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 15
    assert sum(any("REFUSE" in t for t in b) for b in picky.batches) <= 4  # found once, never asked again


def test_follow_reports_what_each_poll_wrote(run_cli, url, conn, words):
    conn.execute("CREATE TABLE doc (id int PRIMARY KEY, doc text)")
    conn.execute("INSERT INTO doc SELECT g, 'text ' || g FROM generate_series(1, 5) g")

    def insert_later():
        time.sleep(1.0)
        conn.execute("INSERT INTO doc VALUES (100, 'late one'), (101, 'late two')")

    thread = threading.Thread(target=insert_later)
    thread.start()
    result = run_cli("encode", "--url", url, "-t", "doc", "-c", "doc", "-m", "words", "--follow", "--max-idle", "3")
    thread.join()
    assert result.exit_code == 0, result.output
    assert "2 rows encoded into public.doc.doc_vector (7 in all)" in result.stderr


# -- models wider than an index (item 8) ---------------------------------------------------------


class WideEncoder:
    description = "test encoder: wide pseudo-random vectors"
    metric = "cosine"

    def __init__(self, dimension: int):
        self.name = f"wide{dimension}"
        self.dimension = dimension

    def vector(self, text: str) -> np.ndarray:
        rng = np.random.default_rng(sum(map(ord, text)))
        return rng.standard_normal(self.dimension).astype(np.float32)

    def encode(self, batch):
        return np.stack([self.vector(t) for t in batch])


@pytest.mark.parametrize("dimension, index", [(3072, "halfvec"), (5000, None)])
def test_vectors_wider_than_hnsw(run_cli, url, conn, dimension, index):
    encoder = WideEncoder(dimension)
    modules.register(encoder)
    try:
        conn.execute("CREATE TABLE doc (id int PRIMARY KEY, doc text)")
        conn.execute("INSERT INTO doc SELECT g, 'document ' || g FROM generate_series(1, 30) g")
        result = run_cli("encode", "--url", url, "-t", "doc", "-c", "doc", "-m", encoder.name)
        assert result.exit_code == 0, result.output
        defs = vector_indexes(conn)
        if index:
            assert any("USING hnsw (((content_vector)::halfvec(3072)) halfvec_cosine_ops)" in d for d in defs), defs
        else:
            assert not defs and "searches rank every row exactly" in result.stdout
        query = encoder.vector("document 7")
        found = run_cli("search", "--url", url, "--query-vector", json.dumps(query.tolist()), "-k", "3", "--json")
        assert found.exit_code == 0, found.output
        assert json.loads(found.stdout)[0]["id"] == 7
        sql_text = run_cli("search", "--url", url, "--emit-sql").stdout
        if index:
            assert 'CAST("c"."content_vector" AS halfvec(3072)) <=> CAST(%s AS halfvec(3072))' in sql_text
            conn.execute("SET enable_seqscan = off")  # 30 rows: show that the index can serve it
            literal = json.dumps(query.tolist())
            plan = conn.execute(
                "EXPLAIN " + sql_text.strip().splitlines()[-1].rstrip(";"), (literal, literal, literal, 10, 3)
            ).fetchall()
            assert "doc_doc_vector_contents_idx" in str(plan)
    finally:
        modules.unregister(encoder.name)


# -- search output (items 10, 11) ------------------------------------------------------------------


def test_a_column_named_distance(run_cli, url, conn, words):
    conn.execute("CREATE TABLE doc (id int PRIMARY KEY, doc text, distance real)")
    conn.execute("INSERT INTO doc VALUES (1, 'a b', 0.5), (2, 'c d e', 1.5), (3, 'f', 'NaN')")
    assert run_cli("encode", "--url", url, "-t", "doc", "-c", "doc", "-m", "words").exit_code == 0
    for extra in ([], ["--exact", "--where", '{"distance": {"$gt": 1}}']):
        result = run_cli("search", "--url", url, "a b", "--show", "distance", "--json", *extra)
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)
        assert {"distance", "vectorize_distance"} <= set(rows[0])
    rows = json.loads(run_cli("search", "--url", url, "f", "--show", "distance", "--json").stdout)
    assert [r["distance"] for r in rows if r["id"] == 3] == [None]  # NaN is not JSON: null
    plain = run_cli("search", "--url", url, "a b", "--show", "distance")
    assert plain.exit_code == 0 and "distance=0.5" in plain.stdout


def test_json_is_strict_and_keeps_the_data(run_cli, url, conn, words):
    conn.execute("CREATE TABLE doc (id bytea PRIMARY KEY, doc text, price numeric(6,2), flag boolean)")
    conn.execute("INSERT INTO doc VALUES ('\\x00ff', 'a b', 1.50, NULL), ('\\x01', 'c', NULL, false)")
    assert run_cli("encode", "--url", url, "-t", "doc", "-c", "doc", "-m", "words").exit_code == 0
    result = run_cli("search", "--url", url, "a b", "--show", "price,flag", "--json")
    rows = json.loads(result.stdout)
    assert rows[0]["id"] == "\\x00ff" and rows[0]["price"] == "1.50" and rows[0]["flag"] is None
    plain = run_cli("search", "--url", url, "a b", "--show", "price,flag").stdout
    assert "None" not in plain and "False" not in plain and "flag=no" in plain
    human = run_cli("status", "--url", url).stdout
    assert "None" not in human and "False" not in human


def test_a_zero_query_vector_on_a_cosine_column_is_bad_input(run_cli, url, conn):
    encoder = WideEncoder(4)
    modules.register(encoder)
    try:
        conn.execute("CREATE TABLE doc (id int PRIMARY KEY, doc text)")
        conn.execute("INSERT INTO doc VALUES (1, 'x')")
        assert run_cli("encode", "--url", url, "-t", "doc", "-c", "doc", "-m", "wide4").exit_code == 0
        result = run_cli("search", "--url", url, "--query-vector", "[0, 0, 0, 0]", "--json")
        assert result.exit_code == 2 and "zeros" in result.stderr
    finally:
        modules.unregister(encoder.name)


def test_k_beyond_any_limit_is_bad_usage(run_cli, url):
    result = run_cli("search", "--url", url, "x", "-k", str(2**63))
    assert result.exit_code == 2 and "-k" in result.stderr


def test_a_filter_value_the_column_cannot_hold_is_bad_input(run_cli, url, conn, words):
    conn.execute("CREATE TABLE doc (id int PRIMARY KEY, doc text, d date)")
    conn.execute("INSERT INTO doc VALUES (1, 'x', '2024-01-01')")
    assert run_cli("encode", "--url", url, "-t", "doc", "-c", "doc", "-m", "words").exit_code == 0
    result = run_cli("search", "--url", url, "x", "--where", '{"d": "not a date"}')
    assert result.exit_code == 2 and "not a date" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- smaller (item 14) ------------------------------------------------------------------------------


def test_track_changes_on_a_finished_table_says_it_installed_tracking(run_cli, url, conn, words):
    conn.execute("CREATE TABLE doc (id int PRIMARY KEY, doc text)")
    conn.execute("INSERT INTO doc VALUES (1, 'x')")
    assert run_cli("encode", "--url", url, "-t", "doc", "-c", "doc", "-m", "words").exit_code == 0
    result = run_cli("encode", "--url", url, "-t", "doc", "-c", "doc", "-m", "words", "--track-changes")
    assert result.exit_code == 0 and "change tracking is on" in result.stdout
    again = run_cli("encode", "--url", url, "-t", "doc", "-c", "doc", "-m", "words", "--track-changes")
    assert "Nothing to do" in again.stdout


def test_unicode_white_space_is_no_text(run_cli, url, conn, words):
    conn.execute("CREATE TABLE doc (id int PRIMARY KEY, doc text)")
    conn.execute("INSERT INTO doc VALUES (1, %s), (2, %s), (3, 'real text')", ("\u00a0\u00a0", "\u2003\u3000\u000b"))
    result = run_cli("encode", "--url", url, "-t", "doc", "-c", "doc", "-m", "words")
    assert result.exit_code == 0, result.output
    assert "Encoded 1 row of" in result.stdout and "2 rows with only empty or whitespace text" in result.stdout
    assert words.batches == [["real text"]]
    (s,), _ = status(run_cli, url)
    assert s["pending"] == 0 and s["no_text"] == 2
