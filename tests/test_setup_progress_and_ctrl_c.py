"""The run itself: setup all or nothing, summaries of the whole run, Ctrl-C, progress without a
terminal, a later column the model never reads."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from psycopg import sql
from test_chunks import CountingEncoder, long_text

import modules
from conftest import ROOT, table_checksum
from vectorize_core import dialects


@pytest.fixture
def notes(conn):
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO notes SELECT g, 'note number ' || g || ' about things' FROM generate_series(1, 20) g")
    return "notes"


def failing_fulltext(self, table, column, language, sources):
    # A statement the server refuses mid-setup, after the vector column was added.
    return sql.SQL("ALTER TABLE {} ADD COLUMN broken int GENERATED ALWAYS AS (1 / (id - id)) STORED").format(table)


def test_a_failed_setup_changes_nothing_on_postgresql(run_cli, url, conn, notes, words, monkeypatch):
    before = table_checksum(conn, "notes")
    monkeypatch.setattr(dialects.Dialect, "fulltext_column", failing_fulltext)
    result = run_cli("encode", "--url", url, "-t", "notes", "-c", "body", "-m", "words", "--fulltext")
    assert result.exit_code == 1, result.output
    assert "nothing was changed" in result.stderr
    assert table_checksum(conn, "notes") == before  # no half-made column
    monkeypatch.undo()
    modules.register(words)
    again = run_cli("encode", "--url", url, "-t", "notes", "-c", "body", "-m", "words", "--fulltext")
    assert again.exit_code == 0, again.output


def test_a_setup_cut_off_between_statements_is_finished_by_a_rerun(run_cli, url, conn, notes, words, monkeypatch):
    """CockroachDB runs one DDL statement a transaction: a failure after the first leaves a part."""
    monkeypatch.setattr(dialects.Dialect, "ddl_in_transaction", False)
    monkeypatch.setattr(dialects.Dialect, "fulltext_column", failing_fulltext)
    result = run_cli("encode", "--url", url, "-t", "notes", "-c", "body", "-m", "words", "--fulltext")
    assert result.exit_code == 1, result.output
    status = run_cli("status", "--url", url, "--json")
    assert '"body_vector"' in status.stdout  # the part that was made says what it is
    monkeypatch.setattr(dialects.Dialect, "fulltext_column", dialects.Dialect.__dict__["fulltext_column"])
    monkeypatch.undo()
    monkeypatch.setattr(dialects.Dialect, "ddl_in_transaction", False)
    again = run_cli("encode", "--url", url, "-t", "notes", "-c", "body", "-m", "words", "--fulltext")
    assert again.exit_code == 0, again.output
    assert conn.execute("SELECT count(body_vector), count(body_tsv) FROM notes").fetchone() == (20, 20)
    dropped = run_cli("drop", "--url", url, "-t", "notes", "-c", "body", "--yes")
    assert dropped.exit_code == 0, dropped.output


def test_an_empty_vector_column_without_a_comment_is_taken_as_a_half_made_one(run_cli, url, conn, notes, words):
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.execute("ALTER TABLE notes ADD COLUMN body_vector vector(8)")
    result = run_cli("encode", "--url", url, "-t", "notes", "-c", "body", "-m", "words")
    assert result.exit_code == 0, result.output
    assert conn.execute("SELECT count(body_vector) FROM notes").fetchone()[0] == 20
    # One vector in it, and it is somebody's: refused as before.
    conn.execute("ALTER TABLE notes ADD COLUMN other_vector vector(8)")
    conn.execute("UPDATE notes SET other_vector = '[1,1,1,1,1,1,1,1]' WHERE id = 1")
    refused = run_cli(
        "encode", "--url", url, "-t", "notes", "-c", "body", "-m", "words", "--vector-column", "other_vector"
    )
    assert refused.exit_code == 2 and "--adopt" in refused.stderr


def insert_later(url: str, rows: list[tuple[int, str]], after: float = 0.4) -> threading.Thread:
    def insert():
        time.sleep(after)
        with psycopg.connect(url, autocommit=True) as other:
            for key, text in rows:
                other.execute("INSERT INTO notes VALUES (%s, %s)", (key, text))

    thread = threading.Thread(target=insert)
    thread.start()
    return thread


def test_follow_summary_describes_the_whole_run_and_why_it_ended(run_cli, url, conn, notes, words):
    assert run_cli("encode", "--url", url, "-t", "notes", "-c", "body", "-m", "words").exit_code == 0
    writer = insert_later(url, [(21, "a late note"), (22, "another late note")])
    result = run_cli(
        "encode", "--url", url, "-t", "notes", "-c", "body", "-m", "words", "--follow", "--max-idle", "1.5"
    )
    writer.join()
    assert result.exit_code == 0, result.output
    assert "Nothing to do" not in result.stdout
    assert "Encoded 2 rows" in result.stdout
    assert "(0 rows/s)" not in result.stdout  # the rate is over the time spent encoding
    assert "--max-idle" in result.stdout.strip().splitlines()[-1]


def test_a_row_changed_mid_run_and_encoded_by_a_later_poll_is_not_called_pending(run_cli, url, conn, notes, words):
    edited = []

    def edit_row_3(batch):
        if not edited and any(t.startswith("note number 3 ") for t in batch):
            edited.append(True)
            conn.execute("UPDATE notes SET body = 'note three, rewritten' WHERE id = 3")

    words.before_encode = edit_row_3
    result = run_cli("encode", "--url", url, "-t", "notes", "-c", "body", "-m", "words", "--follow", "--max-idle", "1")
    assert result.exit_code == 0, result.output
    assert conn.execute("SELECT count(*) FROM notes WHERE body_vector IS NULL").fetchone()[0] == 0
    assert "pending" not in result.stdout  # nothing is: the next poll encoded row 3's new text


# '12:00:05 encoding: 38 of 1,200 rows (6 rows/s, about 3m05s left)'; no time left once all are done.
PROGRESS_LINE = re.compile(
    r"\d\d:\d\d:\d\d encoding: (?P<done>[\d,]+) of (?P<total>[\d,]+) rows "
    r"\(\d+(\.\d\d)? rows/s(?P<left>, about (\d+s|\d+m\d\ds|\d+h\d\dm) left)?\)"
)


def progress_lines(stderr: str) -> list[tuple[int, int, bool]]:
    """(done, total, says the time left) of each progress line; any other 'encoding:' line fails."""
    found = []
    for line in stderr.splitlines():
        if re.match(r"\d\d:\d\d:\d\d encoding: ", line):
            match = PROGRESS_LINE.fullmatch(line)
            assert match, line
            found.append(
                (int(match["done"].replace(",", "")), int(match["total"].replace(",", "")), bool(match["left"]))
            )
    return found


def test_progress_lines_without_a_terminal(run_cli, url, conn, notes, words, monkeypatch):
    import vectorize

    monkeypatch.setattr(vectorize, "PROGRESS_LINE_SECONDS", 0.05)
    # Each page takes longer than the interval: every page's rows make a line.
    words.before_encode = lambda batch: time.sleep(0.1)
    result = run_cli("encode", "--url", url, "-t", "notes", "-c", "body", "-m", "words", "--batch-size", "5")
    assert result.exit_code == 0, result.output
    lines = progress_lines(result.stderr)
    assert sorted({done for done, _, _ in lines}) == [5, 10, 15, 20], result.stderr
    assert all(total == 20 for _, total, _ in lines)
    assert all(left == (done < 20) for done, _, left in lines)  # the time left, until nothing is


def test_a_progress_line_says_the_time_left_only_when_it_knows_it():
    import vectorize

    assert [vectorize.short_duration(s) for s in (0.2, 12, 59.5, 185, 3720, 90000)] == [
        "1s", "12s", "1m00s", "3m05s", "1h02m", "25h00m"
    ]  # fmt: skip
    line = vectorize.progress_line("encoding", 38, 1200, 6.0)  # 1,162 rows at 6.33 rows/s: 183.5 s
    assert re.fullmatch(r"\d\d:\d\d:\d\d encoding: 38 of 1,200 rows \(6 rows/s, about 3m04s left\)", line)
    assert vectorize.progress_line("encoding", 1200, 1200, 6.0).endswith("(200 rows/s)")  # all done
    assert vectorize.progress_line("encoding", 5, 0, 6.0).endswith("(0.83 rows/s)")  # no total to reach
    assert "left" not in vectorize.progress_line("encoding", 5, 10, 0.0)  # no time to measure a rate over


def test_chunk_progress_lines_come_while_a_single_page_is_encoded(run_cli, url, conn, counting, monkeypatch):
    """encode --chunk with the whole table one page: lines as the page's texts are encoded, not
    only once it is written (a page of long rows can take minutes)."""
    import vectorize

    conn.execute("CREATE TABLE doc (id int PRIMARY KEY, body text)")
    for i in range(1, 31):
        conn.execute("INSERT INTO doc VALUES (%s, %s)", (i, long_text(300, i)))
    monkeypatch.setattr(vectorize, "PROGRESS_LINE_SECONDS", 0.05)
    counting.before_encode = lambda batch: time.sleep(0.1)  # each encoder call outlasts the interval
    result = run_cli(
        "encode", "--url", url, "-t", "doc", "-c", "body", "-m", "chunkwords", "--chunk", "--batch-size", "1000"
    )
    assert result.exit_code == 0, result.output
    assert len(counting.batches) >= 3  # one page, several encoder calls (its chunks)
    during = [done for done, total, left in progress_lines(result.stderr) if 0 < done < total and left]
    assert len(during) >= 2, result.stderr
    assert during == sorted(set(during))  # the count goes up within the page
    assert conn.execute("SELECT count(body_vector) FROM doc").fetchone()[0] == 30


def test_a_later_column_the_model_never_reads_is_named(run_cli, url, conn):
    encoder = CountingEncoder()
    modules.register(encoder)
    try:
        conn.execute("CREATE TABLE doc (id int PRIMARY KEY, body text, title text)")
        conn.execute(
            "INSERT INTO doc VALUES (1, %s, 'short title'), (2, 'short body', 'short title')", (long_text(40, 1),)
        )
        result = run_cli("encode", "--url", url, "-t", "doc", "-c", "body", "-c", "title", "-m", "chunkwords")
        assert result.exit_code == 0, result.output
        assert "in 1 row the model read no word of title" in result.stdout
    finally:
        modules.unregister(encoder.name)


def test_ctrl_c_stops_within_seconds_exits_130_and_says_how_far_it_got(url, conn):
    """A real process encoding long rows with the default model; SIGINT mid-run."""
    # Rows of 120,000 characters (the server keeps them compressed): the model reads 256 tokens.
    text = " ".join(f"word{i} and some more prose about item {i}." for i in range(3000))
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO t SELECT g, g || %s FROM generate_series(1, 1500) g", (text,))
    env = {**os.environ, "DATABASE_URL": url, "VECTORIZE_DEBUG": ""}
    # Converted once so the run starts encoding at once (the cache is this test session's).
    warm = subprocess.run(
        [sys.executable, str(ROOT / "vectorize.py"), "list-models", "minilm"], env=env, capture_output=True, text=True
    )
    assert warm.returncode == 0, warm.stderr
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "vectorize.py"), "encode", "-t", "t", "-c", "body", "--batch-size", "256"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and written(conn) == 0:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert took < 10, took
    done = written(conn)
    assert f"interrupted: {done} rows written to public.t.body_vector" in err
    assert 0 < done < 1500


def written(conn) -> int:
    try:
        return conn.execute("SELECT count(body_vector) FROM t").fetchone()[0]
    except psycopg.errors.UndefinedColumn:
        return 0


# -- item 4: --hybrid --explain; item 11: the plan's query vector, rows without their text ---------


@pytest.fixture
def fulltext_notes(run_cli, url, conn, notes, words):
    conn.execute("UPDATE notes SET body = body || repeat(' and more words', 200) WHERE id = 7")
    assert run_cli("encode", "--url", url, "-t", "notes", "-c", "body", "-m", "words", "--fulltext").exit_code == 0
    return "notes"


def test_hybrid_explain_explains_the_hybrid_statement_with_a_verdict_for_each_leg(run_cli, url, fulltext_notes):
    result = run_cli("search", "--url", url, "note things", "-t", "notes", "--hybrid", "--explain")
    assert result.exit_code == 0, result.output
    plan = result.stdout
    assert "notes_body_tsv_idx" in plan or "body_tsv" in plan  # the text leg is in the plan
    verdict = plan.strip().splitlines()[-1]
    assert verdict.startswith("-- vector leg: ") and "; text leg: the full-text index notes_body_tsv_idx" in verdict
    plain = run_cli("search", "--url", url, "note things", "-t", "notes", "--explain")
    assert "text leg" not in plain.stdout


def test_explain_shows_the_query_vector_by_its_first_numbers(run_cli, url, conn, notes):
    encoder = CountingEncoder()
    modules.register(encoder)
    try:
        assert run_cli("encode", "--url", url, "-t", "notes", "-c", "body", "-m", "chunkwords").exit_code == 0
        result = run_cli("search", "--url", url, "note things", "-t", "notes", "--explain")
    finally:
        modules.unregister(encoder.name)
    assert result.exit_code == 0, result.output
    assert "16 numbers]" in result.stdout
    assert not re.search(r"(-?\d\.\d+,){10}", result.stdout)


def test_no_text_leaves_the_source_out_of_json_rows_and_the_api(run_cli, url, fulltext_notes):
    import json

    result = run_cli("search", "--url", url, "note things", "-t", "notes", "--json", "--no-text", "-k", "3")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 3 and all(set(row) == {"id", "distance"} for row in rows)
    hybrid = run_cli("search", "--url", url, "note", "-t", "notes", "--json", "--no-text", "--hybrid", "-k", "3")
    assert all("body" not in row and "score" in row for row in json.loads(hybrid.stdout))
    shown = run_cli("search", "--url", url, "note", "-t", "notes", "--json", "--no-text", "--show", "body", "-k", "1")
    assert "body" in json.loads(shown.stdout)[0]  # asked for by name
