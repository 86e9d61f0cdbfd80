"""encode --chunk: long texts split into chunks the model reads whole, ranked as rows, on a real
embedded PostgreSQL+pgvector."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
from psycopg import sql

import modules
from conftest import ROOT, CountingEncoder, cosine, stored_vectors

FILLER = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def long_text(words: int, seed: int, needle: str | None = None, at: int = 0) -> str:
    """Sentences of filler words; the needle (a sentence) placed after `at` words."""
    rng = np.random.default_rng(seed)
    out, sentence = [], []
    for i in range(words):
        if needle and i == at:
            out.append(needle)
        sentence.append(FILLER[rng.integers(len(FILLER))])
        if len(sentence) == 6:
            out.append(" ".join(sentence) + ".")
            sentence = []
    if sentence:
        out.append(" ".join(sentence) + ".")
    return " ".join(out)


def chunks_of(conn, table="doc_body_vector_chunks", key="id"):
    return conn.execute(
        # The rows' openings (chunk -1, the row's own vector) are pinned in test_row_ranking.py.
        sql.SQL(
            "SELECT {}, chunk, chunk_start, chunk_end, chunk_vector::text FROM {} WHERE chunk >= 0 ORDER BY 1, 2"
        ).format(sql.Identifier(key), sql.Identifier(table))
    ).fetchall()


@pytest.fixture
def docs(conn):
    conn.execute("CREATE TABLE doc (id int PRIMARY KEY, title text, body text)")
    for i in range(1, 9):
        needle = "the zebra crossed the frozen river." if i == 5 else None
        conn.execute("INSERT INTO doc VALUES (%s, %s, %s)", (i, f"title {i}", long_text(200, i, needle, at=150)))
    return "doc"


def encode_chunked(run_cli, url, *extra):
    return run_cli("encode", "--url", url, "-t", "doc", "-c", "body", "-m", "chunkwords", "--chunk", *extra)


def test_chunks_are_stored_with_the_model_output_of_their_text(run_cli, url, conn, docs, counting):
    result = encode_chunked(run_cli, url)
    assert result.exit_code == 0, result.output
    bodies = dict(conn.execute("SELECT id, body FROM doc"))
    rows = chunks_of(conn)
    assert {r[0] for r in rows} == set(range(1, 9))
    for key, _number, start, end, vector in rows:
        text = bodies[key][start:end]
        assert len(text.split()) <= 12  # each chunk is read whole by the model
        np.testing.assert_allclose(json.loads(vector), CountingEncoder.vector(text), rtol=1e-6, atol=1e-6)
    for key, body in bodies.items():
        numbers = [r[1] for r in rows if r[0] == key]
        assert numbers == list(range(len(numbers)))  # numbered from 0, none missing
        covered = " ".join(body[r[2] : r[3]] for r in rows if r[0] == key)
        assert covered.split() == body.split()  # every word is in a chunk, in order (no overlap)
    # The row's own vector is what a plain encode stores: the model's output for its text.
    stored = stored_vectors(conn, "doc", "id", "body_vector")
    for key, body in bodies.items():
        np.testing.assert_allclose(stored[key], CountingEncoder.vector(body), rtol=1e-6, atol=1e-6)
    assert conn.execute("SELECT count(*) FROM doc").fetchone()[0] == 8


def test_search_finds_a_word_deep_in_a_row_that_a_plain_column_cannot(run_cli, url, conn, docs, counting):
    assert encode_chunked(run_cli, url).exit_code == 0
    plain = run_cli(
        "encode", "--url", url, "-t", "doc", "-c", "body", "-m", "chunkwords", "--vector-column", "plain_vector"
    )
    assert plain.exit_code == 0, plain.output
    query = "zebra crossed frozen river"
    chunked = run_cli("search", "--url", url, query, "-t", "doc", "--vector-column", "body_vector", "--json", "-k", "3")
    assert chunked.exit_code == 0, chunked.output
    found = json.loads(chunked.stdout)
    assert found[0]["id"] == 5
    assert "zebra" in found[0]["chunk_text"]
    body = conn.execute("SELECT body FROM doc WHERE id = 5").fetchone()[0]
    assert body[found[0]["chunk_start"] : found[0]["chunk_end"]] == found[0]["chunk_text"]
    assert len({row["id"] for row in found}) == 3  # each row once
    unchunked = run_cli("search", "--url", url, query, "-t", "doc", "--vector-column", "plain_vector", "--json")
    assert json.loads(unchunked.stdout)[0]["id"] != 5  # the plain column reads the first 12 words


def chunk_keys(conn, table="doc_body_vector_chunks") -> dict[int, int]:
    rows = conn.execute(
        sql.SQL("SELECT id, count(*) FROM {} WHERE chunk >= 0 GROUP BY id").format(sql.Identifier(table))
    ).fetchall()
    return dict(rows)


def assert_chunks_match_texts(
    conn, table="doc", column="body", chunk_table="doc_body_vector_chunks", vector_of=CountingEncoder.vector
):
    """Every row with a vector has chunks that split exactly its current text, each with the
    model's vector of its own text; no chunk belongs to a row without a vector."""
    texts = dict(
        conn.execute(
            sql.SQL("SELECT id, {} FROM {} WHERE {} IS NOT NULL").format(
                sql.Identifier(column), sql.Identifier(table), sql.Identifier(f"{column}_vector")
            )
        )
    )
    by_row: dict[int, list] = {}
    for key, number, start, end, vector in chunks_of(conn, chunk_table):
        by_row.setdefault(key, []).append((number, start, end, vector))
    assert set(by_row) == {k for k, t in texts.items() if t and t.strip()}
    for key, found in by_row.items():
        text = texts[key]
        assert [f[0] for f in found] == list(range(len(found)))
        assert " ".join(text[s:e] for _, s, e, _ in found).split() == text.split()
        for _, s, e, vector in found:
            np.testing.assert_allclose(json.loads(vector), vector_of(text[s:e]), rtol=1e-6, atol=1e-6)


def test_a_row_edited_while_it_is_encoded_stays_pending_with_no_chunks(run_cli, url, conn, docs, counting):
    def edit_row_3(batch):
        if any("title 3" in text for text in batch) or any(text.startswith(body3[:40]) for text in batch):
            conn.execute("UPDATE doc SET body = 'a new text for row three' WHERE id = 3")

    body3 = conn.execute("SELECT body FROM doc WHERE id = 3").fetchone()[0]
    counting.before_encode = edit_row_3
    result = encode_chunked(run_cli, url)
    assert result.exit_code == 0, result.output
    assert "1 row changed while encoding" in result.stdout
    assert conn.execute("SELECT body_vector IS NULL FROM doc WHERE id = 3").fetchone()[0]
    assert 3 not in chunk_keys(conn)  # none of the old text's chunks was written
    counting.before_encode = None
    assert encode_chunked(run_cli, url).exit_code == 0
    assert_chunks_match_texts(conn)


def test_changed_row_is_requeued_and_its_old_chunks_are_never_found(run_cli, url, conn, docs, counting):
    assert encode_chunked(run_cli, url, "--track-changes").exit_code == 0
    conn.execute("UPDATE doc SET body = 'plain words about nothing in particular at all' WHERE id = 5")
    found = run_cli("search", "--url", url, "zebra crossed frozen river", "-t", "doc", "--json", "-k", "8")
    assert found.exit_code == 0, found.output
    assert 5 not in [row["id"] for row in json.loads(found.stdout)]  # its old chunk is not found
    assert encode_chunked(run_cli, url).exit_code == 0  # the change re-queued it
    assert_chunks_match_texts(conn)
    assert chunk_keys(conn)[5] == 1


def test_deleted_rows_are_never_returned_and_their_chunks_go(run_cli, url, conn, docs, counting):
    assert encode_chunked(run_cli, url).exit_code == 0
    conn.execute("DELETE FROM doc WHERE id = 5")
    found = json.loads(
        run_cli("search", "--url", url, "zebra crossed frozen river", "-t", "doc", "--json", "-k", "8").stdout
    )
    assert [row["id"] for row in found] and 5 not in [row["id"] for row in found]
    assert 5 in chunk_keys(conn)
    assert encode_chunked(run_cli, url).exit_code == 0  # the next run removes them
    assert 5 not in chunk_keys(conn)
    assert_chunks_match_texts(conn)


def test_rerun_does_nothing_and_doubles_nothing(run_cli, url, conn, docs, counting):
    assert encode_chunked(run_cli, url).exit_code == 0
    before = chunks_of(conn)
    result = encode_chunked(run_cli, url)
    assert result.exit_code == 0
    assert "Nothing to do" in result.stdout
    assert chunks_of(conn) == before


def test_limit_shard_and_skip_on_a_chunked_column(run_cli, url, conn, docs, counting):
    assert encode_chunked(run_cli, url, "--limit", "3", "--index", "skip").exit_code == 0
    assert len(chunk_keys(conn)) == 3
    assert encode_chunked(run_cli, url, "--shard", "1/2").exit_code == 0
    assert encode_chunked(run_cli, url, "--shard", "2/2").exit_code == 0
    assert len(chunk_keys(conn)) == 8
    assert_chunks_match_texts(conn)
    indexes = [
        r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'doc_body_vector_contents'")
    ]
    assert "doc_body_vector_contents_idx" in indexes  # the last shard built it


def test_on_error_skip_leaves_the_whole_row_pending(run_cli, url, conn, docs, counting, monkeypatch):
    from vectorize_core import pipeline

    monkeypatch.setattr(pipeline, "CHUNKS_PER_INSERT", 7)
    real = counting.encode

    def picky(batch):
        if any("zebra" in text for text in batch):
            raise ValueError("refused")
        return real(batch)

    counting.encode = picky
    result = encode_chunked(run_cli, url, "--on-error", "skip")
    assert result.exit_code == 0, result.output
    assert "1 row failed" in result.stdout or "1 row could not" in result.stderr
    assert conn.execute("SELECT body_vector IS NULL FROM doc WHERE id = 5").fetchone()[0]
    assert 5 not in chunk_keys(conn)  # all or none: none of its chunks
    assert len(chunk_keys(conn)) == 7
    assert_chunks_match_texts(conn)


def test_dry_run_prints_the_chunk_table_and_changes_nothing(run_cli, url, conn, docs, counting):
    from conftest import table_checksum

    before = table_checksum(conn, "doc")
    result = encode_chunked(run_cli, url, "--dry-run")
    assert result.exit_code == 0, result.output
    assert 'CREATE TABLE IF NOT EXISTS "public"."doc_body_vector_chunks"' in result.stdout
    assert '"id" integer NOT NULL' in result.stdout
    assert 'PRIMARY KEY ("id", "chunk")' in result.stdout
    # The vector index is on the chunks' distinct contents.
    assert 'ON "public"."doc_body_vector_contents" USING hnsw ("content_vector" vector_cosine_ops)' in result.stdout
    assert table_checksum(conn, "doc") == before
    assert conn.execute("SELECT to_regclass('doc_body_vector_chunks')").fetchone()[0] is None
    assert conn.execute("SELECT to_regclass('doc_body_vector_contents')").fetchone()[0] is None


def test_index_skip_then_index_command_status_and_drop(run_cli, url, conn, docs, counting):
    assert encode_chunked(run_cli, url, "--index", "skip").exit_code == 0
    status = json.loads(run_cli("status", "--url", url, "--json").stdout)[0]
    assert status["chunks"] == sum(chunk_keys(conn).values()) > 8
    assert status["chunk_table"] == "public.doc_body_vector_chunks"
    assert status["index"] is None and status["pending"] == 0
    assert status["chunk_bytes"] > 0
    built = run_cli("index", "--url", url, "-t", "doc", "-c", "body")
    assert built.exit_code == 0, built.output
    status = json.loads(run_cli("status", "--url", url, "--json").stdout)[0]
    assert status["index"] == "doc_body_vector_contents_idx"
    # What the index holds is the chunks' distinct contents: a note on a small table counts them.
    distinct = conn.execute("SELECT count(DISTINCT chunk_hash) FROM doc_body_vector_chunks").fetchone()[0]
    assert status["indexed"] == distinct
    note = status["index_serves_search_note"]
    assert status["index_serves_search"] or f"with {distinct} distinct contents" in note
    human = run_cli("status", "--url", url)
    assert "chunks" in human.stdout.splitlines()[0]
    dropped = run_cli("drop", "--url", url, "-t", "doc", "-c", "body", "--yes")
    assert dropped.exit_code == 0, dropped.output
    assert "chunk table public.doc_body_vector_chunks" in dropped.stdout
    assert "contents table public.doc_body_vector_contents" in dropped.stdout
    for made in ("doc_body_vector_chunks", "doc_body_vector_contents"):
        assert conn.execute("SELECT to_regclass(%s)", (made,)).fetchone()[0] is None
    assert conn.execute("SELECT count(*) FROM doc").fetchone()[0] == 8


def test_bad_chunk_options_exit_2_and_change_nothing(run_cli, url, conn, docs, counting):
    from conftest import table_checksum

    before = table_checksum(conn, "doc")
    for args, message in (
        (["--chunk-tokens", "13"], "reads 12 tokens"),
        (["--chunk-tokens", "8", "--chunk-overlap", "8"], "--chunk-overlap must be"),
    ):
        result = encode_chunked(run_cli, url, *args)
        assert result.exit_code == 2, result.output
        assert message in result.stderr
    plain = run_cli("encode", "--url", url, "-t", "doc", "-c", "body", "-m", "chunkwords", "--chunk-tokens", "8")
    assert plain.exit_code == 2 and "go with --chunk" in plain.stderr
    assert table_checksum(conn, "doc") == before
    assert run_cli("encode", "--url", url, "-t", "doc", "-c", "body", "-m", "chunkwords").exit_code == 0
    again = encode_chunked(run_cli, url)
    assert again.exit_code == 2 and "--reencode --chunk" in again.stderr
    switched = encode_chunked(run_cli, url, "--reencode")
    assert switched.exit_code == 0, switched.output
    assert_chunks_match_texts(conn)
    resized = encode_chunked(run_cli, url, "--chunk-tokens", "10")
    assert resized.exit_code == 2 and "--reencode splits it again" in resized.stderr


def test_search_where_hybrid_query_vector_explain_and_emit_sql(run_cli, url, conn, docs, counting):
    conn.execute("ALTER TABLE doc ADD COLUMN lang text")
    conn.execute("UPDATE doc SET lang = CASE WHEN id % 2 = 0 THEN 'en' ELSE 'fr' END")
    assert encode_chunked(run_cli, url, "--fulltext").exit_code == 0
    query = "zebra crossed frozen river"
    # --where: the true top k among the matching rows, each once.
    where = run_cli("search", "--url", url, query, "-t", "doc", "--where", '{"lang": "en"}', "--json", "-k", "3")
    assert where.exit_code == 0, where.output
    rows = json.loads(where.stdout)
    assert [r["id"] % 2 for r in rows] == [0, 0, 0] and len({r["id"] for r in rows}) == 3
    exact = run_cli("search", "--url", url, query, "-t", "doc", "--where", '{"lang": "en"}', "--json", "-k", "3",
                    "--exact")  # fmt: skip
    assert [r["id"] for r in json.loads(exact.stdout)] == [r["id"] for r in rows]
    # --hybrid: fused per row, with the best chunk of the vector leg.
    hybrid = run_cli("search", "--url", url, query, "-t", "doc", "--hybrid", "--json", "-k", "3")
    assert hybrid.exit_code == 0, hybrid.output
    top = json.loads(hybrid.stdout)[0]
    assert top["id"] == 5 and "zebra" in top["chunk_text"]
    # --query-vector: the model's vector of the needle finds its row.
    vector = CountingEncoder.vector("the zebra crossed the frozen river.").tolist()
    by_vector = run_cli("search", "--url", url, "--query-vector", json.dumps(vector), "-t", "doc", "--json")
    assert json.loads(by_vector.stdout)[0]["id"] == 5
    human = run_cli("search", "--url", url, query, "-t", "doc", "-k", "1")
    assert "[chunk" in human.stdout and "zebra" in human.stdout
    emitted = run_cli("search", "--url", url, "--emit-sql", "-t", "doc")
    assert emitted.exit_code == 0, emitted.output
    assert '"doc_body_vector_chunks"' in emitted.stdout and "row_number() OVER (PARTITION BY" in emitted.stdout
    explained = run_cli("search", "--url", url, query, "-t", "doc", "--explain")
    assert explained.exit_code == 0, explained.output
    assert "doc_body_vector_chunks" in explained.stdout


def test_several_source_columns_are_all_read(run_cli, url, conn, docs, counting):
    conn.execute("UPDATE doc SET title = 'walrus walrus walrus walrus walrus' WHERE id = 2")
    result = run_cli("encode", "--url", url, "-t", "doc", "-c", "body", "-c", "title", "-m", "chunkwords", "--chunk")
    assert result.exit_code == 0, result.output
    found = json.loads(run_cli("search", "--url", url, "walrus", "-t", "doc", "--json", "-k", "1").stdout)
    assert found[0]["id"] == 2  # the title comes after 200 words of body: only a chunk holds it
    assert found[0]["chunk_text"].endswith("walrus")
    # Starts and ends count characters of the sources joined by a space, as the model reads them.
    body, title = conn.execute("SELECT body, title FROM doc WHERE id = 2").fetchone()
    spans = [(s, e) for key, _, s, e, _ in chunks_of(conn) if key == 2]
    assert " ".join((body + " " + title)[s:e] for s, e in spans).split() == (body + " " + title).split()


def test_key_columns_named_like_the_chunk_columns(run_cli, url, conn, counting):
    conn.execute("CREATE TABLE odd (chunk text, chunk_start int, body text, PRIMARY KEY (chunk, chunk_start))")
    conn.execute(
        "INSERT INTO odd VALUES ('a', 1, %s), ('b', 2, %s)", (long_text(60, 1), long_text(60, 2, "zebra here", 30))
    )
    result = run_cli("encode", "--url", url, "-t", "odd", "-c", "body", "-m", "chunkwords", "--chunk")
    assert result.exit_code == 0, result.output
    columns = [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'odd_body_vector_chunks'::regclass AND attnum > 0 ORDER BY attnum"
    )]  # fmt: skip
    assert columns == [
        "chunk", "chunk_start", "vectorize_chunk", "vectorize_chunk_start", "chunk_end", "chunk_vector", "chunk_hash",
        "row_hash",
    ]  # fmt: skip
    found = json.loads(run_cli("search", "--url", url, "zebra", "-t", "odd", "--json", "-k", "1").stdout)
    assert (found[0]["chunk"], found[0]["chunk_start"]) == ("b", 2)
    assert "zebra" in found[0]["chunk_text"]


def test_follow_chunks_new_rows(run_cli, url, conn, docs, counting):
    assert encode_chunked(run_cli, url).exit_code == 0

    def insert_later():
        import time

        import psycopg

        time.sleep(0.5)
        with psycopg.connect(url, autocommit=True) as other:
            other.execute("INSERT INTO doc VALUES (9, 'late', %s)", (long_text(100, 9, "a late okapi arrived", 50),))

    writer = threading.Thread(target=insert_later)
    writer.start()
    result = encode_chunked(run_cli, url, "--follow", "--max-idle", "2")
    writer.join()
    assert result.exit_code == 0, result.output
    assert 9 in chunk_keys(conn)
    assert_chunks_match_texts(conn)


def test_pages_bounded_by_bytes_still_reach_every_row(run_cli, url, conn, docs, counting, monkeypatch):
    from vectorize_core import chunks, pipeline

    monkeypatch.setattr(chunks, "PAGE_BYTES", 3000)  # about two rows a page
    monkeypatch.setattr(pipeline, "CHUNKS_PER_INSERT", 7)  # a page's chunks in several statements
    result = encode_chunked(run_cli, url)
    assert result.exit_code == 0, result.output
    assert "Encoded 8 rows" in result.stdout
    assert len(chunk_keys(conn)) == 8
    assert_chunks_match_texts(conn)


def test_kill_9_then_rerun_finishes_with_nothing_doubled_or_lost(url, conn):
    """A real process killed mid-run (the tiny plugin: no tokenizer, so chunks are counted in
    characters), then run again."""
    import signal

    from test_reliability import running, start_encode, vectorize_tiny, wait_until, written

    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    conn.execute(
        "INSERT INTO t SELECT g, repeat('row ' || g || ' has words and more words. ', 40 + g % 13)"
        " FROM generate_series(1, 600) g"
    )
    with running(start_encode(url, "--chunk", "--batch-size", "20", VECTORIZE_TINY_DELAY="0.05")) as proc:
        wait_until(lambda: written(conn) >= 100 or proc.poll() is not None, seconds=180)
        assert proc.poll() is None, proc.communicate()  # still running: killed mid-run, not ended
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    done = conn.execute("SELECT count(body_vector) FROM t").fetchone()[0]
    assert 0 < done < 600
    finished = start_encode(url, "--chunk")
    out, err = finished.communicate(timeout=300)
    assert finished.returncode == 0, err
    texts = dict(conn.execute("SELECT id, body FROM t WHERE body_vector IS NOT NULL"))
    assert len(texts) == 600
    spans: dict[int, list] = {}
    for key, number, start, end, vector in conn.execute(
        "SELECT id, chunk, chunk_start, chunk_end, chunk_vector::text FROM t_body_vector_chunks WHERE chunk >= 0"
        " ORDER BY 1, 2"
    ):
        spans.setdefault(key, []).append(number)
        assert json.loads(vector) == vectorize_tiny.vector(texts[key][start:end])
        assert len(texts[key][start:end]) <= 128 * 4  # 128 tokens of 4 characters
    assert set(spans) == set(texts)
    assert all(numbers == list(range(len(numbers))) for numbers in spans.values())  # none doubled or missing


def test_a_plain_fill_reads_a_prefix_and_stores_what_the_model_makes_of_the_whole_text(run_cli, url, conn):
    """Without --chunk a long text is cut before it is tokenized, never changing the vector: a
    2 MB row, and a row whose words come after 10,000 spaces (the cut would hide them: the whole
    text is read for it)."""
    words = " ".join(f"word{i} sentence number {i} of a long manual." for i in range(40_000))
    spaced = "start" + " " * 10_000 + " ".join(f"later{i}" for i in range(300))
    conn.execute("CREATE TABLE big (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO big VALUES (1, %s), (2, %s), (3, 'short text')", (words[:2_000_000], spaced))
    result = run_cli("encode", "--url", url, "-t", "big", "-c", "body")
    assert result.exit_code == 0, result.output
    assert "2 rows were longer than the model reads" in result.stdout
    stored = stored_vectors(conn, "big", "id", "body_vector")
    expected = modules.get("minilm").encode([words[:2_000_000], spaced, "short text"])
    for key in (1, 2, 3):
        assert cosine(stored[key], expected[key - 1]) > 0.9999


def test_serve_answers_with_the_best_chunk_and_without_text_when_asked(run_cli, url, conn, docs, counting):
    import httpx

    from vectorize_core import serve

    assert encode_chunked(run_cli, url).exit_code == 0
    with serve.BackgroundServer(serve.create_app(url)) as running, httpx.Client(base_url=running.url) as client:
        body = {"table": "doc", "query": "zebra crossed frozen river", "k": 2}
        answer = client.post("/search", json=body).json()
        top = answer["rows"][0]
        assert top["id"] == 5 and "zebra" in top["chunk_text"]
        assert answer["ranking"]["chunk_keys"] == ["chunk", "chunk_start", "chunk_end", "chunk_text"]
        lean = client.post("/search", json={**body, "text": False}).json()["rows"]
        assert lean[0]["id"] == 5 and "body" not in lean[0] and "zebra" in lean[0]["chunk_text"]
        columns = client.get("/columns").json()["columns"]
        assert columns[0]["chunks"] == sum(chunk_keys(conn).values())


# -- what users' tables do to a chunked column ------------------------------------------------------


def test_two_shards_started_together_set_the_column_up_once_and_both_finish(pg_server):
    """The first chunked encode of a column, by two shards at the same moment: one chunk table,
    one contents table, every row found (three tries, each on a fresh database)."""
    import psycopg
    from test_reliability import encoder_env, vectorize_tiny

    from conftest import fresh_database

    for attempt in range(3):
        url = fresh_database(pg_server.get_uri())
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
            conn.execute(
                "INSERT INTO t SELECT g, repeat('row ' || g || ' has words and more words. ', 30 + g % 11)"
                " FROM generate_series(1, 60) g"
            )
            command = [sys.executable, str(ROOT / "vectorize.py"), "encode", "-t", "t", "-c", "body", "-m", "tiny"]
            procs = [
                subprocess.Popen(
                    [*command, "--chunk", "--shard", f"{i}/2"],
                    env=encoder_env(url),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )  # fmt: skip
                for i in (1, 2)
            ]
            for proc in procs:
                out, err = proc.communicate(timeout=300)
                assert proc.returncode == 0, (attempt, err)
            made = [r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relname LIKE 't_body_vector%%'")]
            assert sorted(n for n in made if n.endswith(("_chunks", "_contents"))) == [
                "t_body_vector_chunks", "t_body_vector_contents"
            ]  # fmt: skip
            assert conn.execute("SELECT count(*) FROM t WHERE body_vector IS NULL").fetchone()[0] == 0
            assert len(chunk_keys(conn, "t_body_vector_chunks")) == 60
            assert_chunks_match_texts(conn, "t", chunk_table="t_body_vector_chunks", vector_of=vectorize_tiny.vector)


@pytest.mark.parametrize("change", ["shift", "swap", "rename"])
def test_a_changed_key_leaves_no_chunk_behind_and_the_row_is_found_after_the_next_run(
    run_cli, url, conn, docs, counting, change
):
    table = "doc"
    if change == "rename":  # a text key
        conn.execute("CREATE TABLE tdoc (id text PRIMARY KEY, body text)")
        conn.execute("INSERT INTO tdoc SELECT 'k' || id, body FROM doc")
        table = "tdoc"
    base = ("encode", "--url", url, "-t", table, "-c", "body", "-m", "chunkwords")
    assert run_cli(*base, "--chunk").exit_code == 0  # no change tracking
    zebra = "the zebra crossed the frozen river"
    if change == "shift":
        conn.execute("UPDATE doc SET id = id + 1000000000")
        moved = 1000000005
    elif change == "swap":  # the needle's row takes key 4, and key 5 goes to another text
        conn.execute("UPDATE doc SET id = -id WHERE id IN (4, 5)")
        conn.execute("UPDATE doc SET id = 4 WHERE id = -5")
        conn.execute("UPDATE doc SET id = 5 WHERE id = -4")
        moved = 4
    else:
        conn.execute("UPDATE tdoc SET id = 'renamed-5' WHERE id = 'k5'")
        moved = "renamed-5"

    def search(k):
        result = run_cli("search", "--url", url, zebra, "-t", table, "--json", "-k", k)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    # Before any run: no row is returned with another text's chunk, nor a moved row's old ones.
    texts = {str(k): t for k, t in conn.execute(sql.SQL("SELECT id::text, body FROM {}").format(sql.Identifier(table)))}
    for row in search(8):
        assert texts[str(row["id"])][row["chunk_start"] : row["chunk_end"]] == row["chunk_text"]
        assert "zebra" not in row["chunk_text"]
    assert run_cli(*base).exit_code == 0
    found = search(1)
    assert str(found[0]["id"]) == str(moved) and "zebra" in found[0]["chunk_text"]
    keys = {
        str(k)
        for (k,) in conn.execute(
            sql.SQL("SELECT DISTINCT id FROM {}").format(sql.Identifier(f"{table}_body_vector_chunks"))
        ).fetchall()
    }
    assert keys == set(texts)  # every row's chunks under its key now, none under an old one


def test_import_vectors_into_a_chunked_column_is_refused_by_cause(run_cli, url, conn, docs, counting, tmp_path):
    from conftest import table_checksum

    assert encode_chunked(run_cli, url).exit_code == 0
    path = tmp_path / "v.jsonl"
    path.write_text("".join(json.dumps({"id": i, "vector": [0.25] * 16}) + "\n" for i in range(1, 9)))
    before = table_checksum(conn, "doc"), chunks_of(conn)
    for extra in ((), ("--model-name", "chunkwords"), ("--model-name", "minilm")):
        refused = run_cli("import-vectors", "--url", url, "-t", "doc", "-c", "body", "--file", path, *extra)
        assert refused.exit_code == 2, refused.output
        assert "is chunked (encode --chunk)" in refused.stderr and "--reencode" not in refused.stderr
        assert "another --vector-column" in refused.stderr and "vectorize.py drop" in refused.stderr
        assert (table_checksum(conn, "doc"), chunks_of(conn)) == before


def test_import_advice_names_options_import_vectors_has(run_cli, url, conn, words, tmp_path):
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO t VALUES (1, 'a b'), (2, 'c d')")
    assert run_cli("encode", "--url", url, "-t", "t", "-c", "body", "-m", "words").exit_code == 0
    path = tmp_path / "v.jsonl"
    path.write_text(json.dumps({"id": 1, "vector": [1.0] * 8}) + "\n")
    refused = run_cli("import-vectors", "--url", url, "-t", "t", "-c", "body", "--file", path)
    assert refused.exit_code == 2 and "--reencode" not in refused.stderr
    assert "another --vector-column" in refused.stderr and "vectorize.py drop" in refused.stderr


@pytest.fixture
def dated(conn):
    """200 long rows with a year; 60 of them from 2003."""
    conn.execute("CREATE TABLE paper (id int PRIMARY KEY, body text, year int)")
    for i in range(1, 201):
        needle = "the zebra crossed the frozen river." if i % 17 == 0 else None
        conn.execute(
            "INSERT INTO paper VALUES (%s, %s, %s)", (i, long_text(90, i, needle, at=40), 2003 if i % 10 < 3 else 1999)
        )
    return conn


def test_filtered_search_on_a_chunked_column_returns_the_true_top_k_in_every_mode(run_cli, url, dated, counting):
    base = ("encode", "--url", url, "-t", "paper", "-c", "body", "-m", "chunkwords", "--chunk", "--fulltext")
    assert run_cli(*base).exit_code == 0
    where = ("--where", '{"year": 2003}')
    for mode in ((), ("--exact",), ("--hybrid",)):
        result = run_cli("search", "--url", url, "zebra river", "-t", "paper", "-k", "60", "--json", *where, *mode)
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)
        assert len(rows) == 60 and all(r["id"] % 10 < 3 for r in rows), mode  # all 60 that match
    # Through the index the rows are exact search's, in its order.
    ranked = [
        [r["id"] for r in json.loads(run_cli("search", "--url", url, "zebra river", "-t", "paper", "-k", k, "--json",
                                             *where, *mode).stdout)]
        for k in (10, 25) for mode in ((), ("--exact",))
    ]  # fmt: skip
    assert ranked[0] == ranked[1] and ranked[2] == ranked[3]


def test_eval_hybrid_on_a_chunked_column(run_cli, url, dated, counting, tmp_path):
    assert (
        run_cli(
            "encode", "--url", url, "-t", "paper", "-c", "body", "-m", "chunkwords", "--chunk", "--fulltext"
        ).exit_code
        == 0
    )
    queries = tmp_path / "q.tsv"
    queries.write_text("q1\tzebra river\nq2\tfrozen crossed\n")
    qrels = tmp_path / "r.tsv"
    qrels.write_text("q1\t17\t1\nq2\t34\t1\n")
    result = run_cli(
        "eval", "--url", url, "-t", "paper", "-c", "body", "--queries", queries, "--qrels", qrels, "--hybrid", "--json"
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert [s["ranking"] for s in scores] == ["dense", "fulltext", "hybrid"]
    assert all(0 <= s["ndcg@10"] <= 1 and s["queries"] == 2 for s in scores)
    vectors = {"search": "index", "score": "0.4 x opening + 0.6 x best chunk"}
    assert [s["ranked_by"] for s in scores] == [
        {"vectors": vectors},
        {"text": "bm25"},
        {"vectors": vectors, "text": "bm25", "fusion": {"method": "reciprocal rank", "k": 60, "weights": [1.0, 1.0]}},
    ]


def test_pieces_without_words_join_their_neighbour():
    from vectorize_core.chunks import Splitter, has_words

    table = "\n".join(["| Name | Value |", "|------|-------|", "| --- | --- |"] * 3)
    text = f"Intro words here to start with.\n\n{table}\n\nThe closing paragraph has words too."
    splitter = Splitter(lambda t: len(t.split()), tokens=6, overlap=0, room=40)
    spans = splitter.spans(text)
    assert all(has_words(text[s:e]) for s, e in spans), [text[s:e] for s, e in spans]
    assert all(len(text[s:e].split()) <= 40 for s, e in spans)  # the model still reads each whole
    covered = "".join(text[s:e] for s, e in spans)
    assert "|------|" in covered  # joined to a neighbour, not lost (it fits)
    # Where joining would pass what the model reads, a piece without words is dropped instead.
    tight = Splitter(lambda t: len(t.split()), tokens=6, overlap=0, room=6)
    assert all(has_words(text[s:e]) for s, e in tight.spans(text))
    # A text of no words at all keeps its pieces (a row with text has chunks).
    assert Splitter(lambda t: len(t.split()), tokens=2, overlap=0).spans("| -- | -- | -- |")


def test_dry_run_checks_the_chunk_size_as_the_run_does(run_cli, url, conn):
    from conftest import table_checksum

    conn.execute("CREATE TABLE doc (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO doc VALUES (1, 'a b c')")
    before = table_checksum(conn, "doc")
    real = run_cli("encode", "--url", url, "-t", "doc", "-c", "body", "--chunk", "--chunk-tokens", "300")
    dry = run_cli("encode", "--url", url, "-t", "doc", "-c", "body", "--chunk", "--chunk-tokens", "300", "--dry-run")
    assert real.exit_code == dry.exit_code == 2
    assert dry.stderr.splitlines()[-1] == real.stderr.splitlines()[-1]
    assert "the model reads 254 tokens of text at a time" in dry.stderr
    assert "converting the model" not in dry.stderr  # a dry run loads no model
    assert table_checksum(conn, "doc") == before
    assert run_cli("encode", "--url", url, "-t", "doc", "-c", "body", "--chunk", "--dry-run").exit_code == 0


def test_an_interrupted_reencode_advises_the_command_that_finishes_it(url, conn, docs, counting):
    from vectorize_core import connect, encode
    from vectorize_core.errors import Interrupted

    with connect(url) as db:
        encode(db, table="doc", column="body", model="chunkwords", chunk=True)
        stop = threading.Event()
        counting.before_encode = lambda batch: stop.set()
        with pytest.raises(Interrupted) as caught:
            encode(db, table="doc", column="body", model="chunkwords", reencode=True, interrupt=stop, batch_size=2)
    assert "run it again without --reencode" in str(caught.value)
    assert "--reencode would clear the column again" in str(caught.value)
