"""Tables whose text repeats (boilerplate, templates, signatures): the vector index holds each
distinct content once, search through it finds what exact search finds, and the model reads each
distinct text once; on a real embedded PostgreSQL+pgvector."""

from __future__ import annotations

import json
from urllib.parse import quote

import numpy as np
import pytest
from psycopg import sql

from conftest import CountingEncoder, WordsEncoder, stored_vectors

# Licence-like paragraphs: each appears in many rows, as boilerplate does in users' tables.
BOILERPLATE = [
    f"Permission is hereby granted to any person obtaining a copy of part {i} of this software, "
    f"to deal in the software without restriction, subject to condition {i} and the notice above."
    for i in range(20)
]
UNIQUE = [
    f"Entry {i}: the {animal} crossed the {place} on day {i} and nobody saw it again."
    for i, (animal, place) in enumerate(
        [(a, p) for a in ("zebra", "okapi", "heron", "badger", "lynx") for p in ("river", "bridge", "meadow", "dune")]
    )
]


def index_only(url: str) -> str:
    """The URL with sequential scans off: tables this small are otherwise ranked without the index."""
    return (
        f"{url}&options={quote('-c enable_seqscan=off')}" if "?" in url else f"{url}?options=-c%20enable_seqscan%3Doff"
    )


@pytest.fixture
def repeated(conn):
    """1,920 rows of 20 boilerplate paragraphs (96 copies each) and 20 unique rows among them."""
    conn.execute("CREATE TABLE notice (id int PRIMARY KEY, body text)")
    rows, unique = [], iter(UNIQUE)
    for i in range(1, 1941):
        rows.append((i, next(unique) if i % 97 == 0 else BOILERPLATE[i % len(BOILERPLATE)]))
    with conn.cursor() as cur, cur.copy("COPY notice (id, body) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    return dict(rows)


def search_ids(run_cli, url, query, *extra, k=10):
    result = run_cli("search", "--url", url, query, "-t", "notice", "-k", k, "--json", *extra)
    assert result.exit_code == 0, result.output
    return [(row["id"], round(row["distance"], 5)) for row in json.loads(result.stdout)]


def test_the_index_holds_each_distinct_text_once_and_the_model_reads_it_once(run_cli, url, conn, repeated, counting):
    result = run_cli("encode", "--url", url, "-t", "notice", "-c", "body", "-m", "chunkwords", "--batch-size", "100")
    assert result.exit_code == 0, result.output
    sent = [text for batch in counting.batches for text in batch]
    distinct = set(repeated.values())
    assert sorted(sent) == sorted(distinct)  # each distinct text once, across 20 pages
    assert "1900 texts repeated one the model had read" in result.stdout
    assert conn.execute("SELECT count(*) FROM notice_body_vector_contents").fetchone()[0] == len(distinct) == 40
    # Every row keeps its own vector in the shadow column: the model's output for its text.
    stored = stored_vectors(conn, "notice", "id", "body_vector")
    assert len(stored) == 1940
    for key, text in repeated.items():
        np.testing.assert_allclose(stored[key], CountingEncoder.vector(text), rtol=1e-6, atol=1e-6)
    (status,) = json.loads(run_cli("status", "--url", url, "--json").stdout)
    assert status["indexed"] == 40 and status["embedded"] == 1940
    # Text that repeats gets a denser graph (its distinct contents gather in near copies).
    (indexdef,) = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'notice_body_vector_contents_idx'"
    ).fetchone()
    assert "WITH (m='24')" in indexdef

    # New rows repeating known texts cost no model time; a new text is encoded once.
    counting.batches.clear()
    conn.execute("INSERT INTO notice SELECT g, %s FROM generate_series(5001, 5300) g", (BOILERPLATE[3],))
    conn.execute("INSERT INTO notice VALUES (6001, 'a brand new sentence'), (6002, 'a brand new sentence')")
    again = run_cli("encode", "--url", url, "-t", "notice", "-c", "body", "-m", "chunkwords")
    assert again.exit_code == 0, again.output
    assert counting.batches == [["a brand new sentence"]]
    stored = stored_vectors(conn, "notice", "id", "body_vector")
    np.testing.assert_allclose(stored[5150], CountingEncoder.vector(BOILERPLATE[3]), rtol=1e-6, atol=1e-6)
    assert conn.execute("SELECT count(*) FROM notice_body_vector_contents").fetchone()[0] == 41


def test_search_through_the_index_finds_what_exact_search_finds(run_cli, url, conn, repeated, counting):
    assert run_cli("encode", "--url", url, "-t", "notice", "-c", "body", "-m", "chunkwords").exit_code == 0
    served = run_cli("search", "--url", index_only(url), "zebra river", "-t", "notice", "--explain")
    assert "the vector index notice_body_vector_contents_idx serves this search" in served.stdout, served.stdout
    queries = [" ".join(text.split()[2:6]) for text in UNIQUE] + ["permission copy software", "condition notice"]
    for query in queries:
        for k in (1, 10, 150):  # 150: past the 96 copies of a paragraph, ties broken by key
            through_index = search_ids(run_cli, index_only(url), query, k=k)
            exact = search_ids(run_cli, url, query, "--exact", k=k)
            assert through_index == exact, query
            assert len(exact) == k


def test_a_filter_on_repeated_text_returns_the_true_top_k(run_cli, url, conn, repeated, counting):
    conn.execute("ALTER TABLE notice ADD COLUMN year int")
    conn.execute("UPDATE notice SET year = 2000 + id % 9")
    assert run_cli("encode", "--url", url, "-t", "notice", "-c", "body", "-m", "chunkwords").exit_code == 0
    where = ("--where", '{"year": 2003}')
    matching = conn.execute("SELECT count(*) FROM notice WHERE year = 2003").fetchone()[0]
    for k in (5, 60, matching + 10):
        through_index = search_ids(run_cli, index_only(url), "okapi bridge", *where, k=k)
        assert through_index == search_ids(run_cli, url, "okapi bridge", *where, "--exact", k=k)
        assert len(through_index) == min(k, matching)


def test_contents_no_row_holds_are_swept_and_a_write_keeps_its_own(run_cli, url, conn, repeated, counting):
    base = ("encode", "--url", url, "-t", "notice", "-c", "body", "-m", "chunkwords", "--track-changes")
    assert run_cli(*base).exit_code == 0
    contents = "SELECT count(*) FROM notice_body_vector_contents"
    # Every row of one paragraph edited: its content is held no more.
    conn.execute("UPDATE notice SET body = 'rewritten ' || id WHERE body = %s", (BOILERPLATE[5],))
    edited = conn.execute("SELECT count(*) FROM notice WHERE body LIKE 'rewritten %'").fetchone()[0]
    assert run_cli(*base).exit_code == 0  # marks it
    assert conn.execute(contents).fetchone()[0] == 40 + edited  # the new texts; the old one kept, marked
    orphaned = conn.execute("SELECT count(*) FROM notice_body_vector_contents WHERE orphaned").fetchone()[0]
    assert orphaned == 1
    # A marked content a row takes again is unmarked by that write, never swept.
    conn.execute("UPDATE notice_body_vector_contents SET orphaned = true")
    conn.execute("UPDATE notice SET body = %s WHERE id = 1", (BOILERPLATE[5],))
    assert run_cli(*base).exit_code == 0
    held = conn.execute(
        "SELECT count(*) FROM notice_body_vector_contents c WHERE EXISTS"
        " (SELECT 1 FROM notice t WHERE t.body_vector_hash = c.content_hash AND t.body_vector IS NOT NULL)"
    ).fetchone()[0]
    assert conn.execute(contents).fetchone()[0] == held  # the unheld are gone, the held all kept
    for query in ("permission copy software", "rewritten"):
        assert search_ids(run_cli, index_only(url), query, k=20) == search_ids(run_cli, url, query, "--exact", k=20)


LEGAL = " ".join(
    f"Clause {i}. The licensee shall keep this notice and every condition of clause {i} in all copies."
    for i in range(40)
)
NEEDLES = [
    "The zebra crossed the frozen river at dawn.",
    "A heron stood in the flooded meadow all afternoon.",
    "The badger dug a tunnel under the old stone bridge.",
]


PLANTED = {7: 0, 19: 1, 33: 2}  # row -> its needle


@pytest.fixture
def contracts(conn):
    """40 long documents: the same legal text in each, three of them with a sentence of their own."""
    conn.execute("CREATE TABLE contract (id int PRIMARY KEY, body text)")
    middle = LEGAL.index(". ", 2000) + 2
    for i in range(1, 41):
        extra = NEEDLES[PLANTED[i]] + " " if i in PLANTED else ""
        conn.execute("INSERT INTO contract VALUES (%s, %s)", (i, LEGAL[:middle] + extra + LEGAL[middle:]))
    return conn


def test_chunked_repeated_text_is_encoded_once_and_found_as_exact_search_finds_it(
    run_cli, url, conn, contracts, counting
):
    result = run_cli("encode", "--url", url, "-t", "contract", "-c", "body", "-m", "chunkwords", "--chunk")
    assert result.exit_code == 0, result.output
    sent = [text for batch in counting.batches for text in batch]
    assert len(sent) == len(set(sent))  # no text twice, rows' own and chunks' alike
    chunks, distinct = conn.execute(
        "SELECT count(*), count(DISTINCT chunk_hash) FROM contract_body_vector_chunks"
    ).fetchone()
    assert chunks > 10 * distinct / 2  # most chunks repeat another
    assert conn.execute("SELECT count(*) FROM contract_body_vector_contents").fetchone()[0] == distinct
    for row, number in PLANTED.items():
        needle = NEEDLES[number]
        query = needle.rstrip(".")
        result = run_cli("search", "--url", index_only(url), query, "-t", "contract", "-k", "40", "--json")
        found = json.loads(result.stdout)
        exact = json.loads(
            run_cli("search", "--url", url, query, "-t", "contract", "-k", "40", "--json", "--exact").stdout
        )
        assert found[0]["id"] == row and needle.split()[1] in found[0]["chunk_text"]
        assert [(r["id"], r["chunk"]) for r in found] == [(r["id"], r["chunk"]) for r in exact]
        assert len(found) == 40


def make_legacy(conn, table: str, vector_column: str, chunked: bool) -> None:
    """Turn a column into what an earlier version made: no contents table, no hash columns, the
    vector index on the rows (or chunks) themselves."""
    comment = conn.execute(
        "SELECT col_description(%s::regclass, attnum) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s",
        (table, table, vector_column),
    ).fetchone()[0]
    meta = json.loads(comment)["vectorize"]
    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(meta["contents"]["table"])))
    conn.execute(
        sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(sql.Identifier(table), sql.Identifier(meta["hash"]["column"]))
    )
    del meta["contents"], meta["hash"]
    legacy_index = f"{table}_{vector_column}_idx"
    if chunked:
        record = meta["chunks"]
        for column in ("chunk_hash", "row_hash"):
            conn.execute(
                sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(sql.Identifier(record["table"]), sql.Identifier(column))
            )
        record["columns"] = {k: v for k, v in record["columns"].items() if k not in ("hash", "row_hash")}
        legacy_index = record.pop("hash_index").replace("_hash_idx", "_idx")
        record["index"] = legacy_index
        conn.execute(
            sql.SQL("CREATE INDEX {} ON {} USING hnsw (chunk_vector vector_cosine_ops)").format(
                sql.Identifier(legacy_index), sql.Identifier(record["table"])
            )
        )
    else:
        conn.execute(
            sql.SQL("CREATE INDEX {} ON {} USING hnsw ({} vector_cosine_ops)").format(
                sql.Identifier(legacy_index), sql.Identifier(table), sql.Identifier(vector_column)
            )
        )
    meta["index"] = legacy_index
    conn.execute(
        sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
            sql.Identifier(table), sql.Identifier(vector_column), sql.Literal(json.dumps({"vectorize": meta}))
        )
    )


@pytest.mark.parametrize("chunked", [False, True])
def test_a_column_an_earlier_version_made_is_upgraded_without_the_model(
    run_cli, url, conn, contracts, counting, chunked
):
    flags = ("--chunk",) if chunked else ()
    base = ("encode", "--url", url, "-t", "contract", "-c", "body", "-m", "chunkwords")
    assert run_cli(*base, *flags).exit_code == 0
    make_legacy(conn, "contract", "body_vector", chunked)
    query = NEEDLES[0].rstrip(".")
    before = run_cli("search", "--url", url, query, "-t", "contract", "-k", "5", "--json")
    assert before.exit_code == 0 and "earlier version" in before.stderr  # ranked exactly meanwhile
    (status,) = json.loads(run_cli("status", "--url", url, "--json").stdout)
    assert "earlier version" in status["problem"]
    counting.batches.clear()
    upgraded = run_cli(*base)
    assert upgraded.exit_code == 0, upgraded.output
    assert counting.batches == []
    assert "Keyed the vectors of 40 rows (made by an earlier version)" in upgraded.stdout
    vector_indexes = [r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%hnsw%'")]
    assert vector_indexes == ["contract_body_vector_contents_idx"]  # the old one dropped
    after = run_cli("search", "--url", index_only(url), query, "-t", "contract", "-k", "5", "--json")
    assert after.exit_code == 0 and "earlier version" not in after.stderr
    assert json.loads(after.stdout) == json.loads(before.stdout)
    (status,) = json.loads(run_cli("status", "--url", url, "--json").stdout)
    assert status["problem"] is None and status["indexed"] > 0


def test_words_encoder_ties_rank_by_key_in_both_paths(run_cli, url, conn, words):
    """An encoder that gives many texts one vector: ties are ranked by key, through the index as
    exactly."""
    conn.execute("CREATE TABLE notice (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO notice SELECT g, 'ab cd ' || g FROM generate_series(1, 500) g")
    assert run_cli("encode", "--url", url, "-t", "notice", "-c", "body", "-m", "words").exit_code == 0
    through_index = search_ids(run_cli, index_only(url), "xy zw 123", k=30)
    assert through_index == search_ids(run_cli, url, "xy zw 123", "--exact", k=30)
    assert [key for key, _ in through_index] == sorted(key for key, _ in through_index)
    assert WordsEncoder.vector("ab cd 100").tolist() == WordsEncoder.vector("ab cd 999").tolist()
