"""Encoding through an OpenAI-compatible embedding server (openai:<model>): requests in flight at
once over kept-alive connections, 413 split, 429 and Retry-After through one gate, the server
going away and coming back, the dry run's bill, and search and serve against a failing server.
The server is tests/openai_server.py on loopback, with hash vectors: one exact vector a text."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from conftest import stored_vectors, table_checksum
from openai_server import EmbeddingServer
from vectorize_core import connect, encode
from vectorize_core.errors import Interrupted
from vectorize_core.request import EncodeRequest

MODEL = "openai:test-embedder"


def body(i: int) -> str:
    return f"document {i} about {['ships', 'trains', 'planes', 'bicycles'][i % 4]} and the weather on day {i % 97}"


@pytest.fixture
def docs(conn):
    def make(n: int, table: str = "docs"):
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
        conn.execute(
            f"INSERT INTO {table} SELECT g, b FROM unnest(%s::int[], %s::text[]) AS d(g, b)",
            (list(range(1, n + 1)), [body(i) for i in range(1, n + 1)]),
        )
        return table

    return make


@pytest.fixture
def fake(monkeypatch):
    """start(**options): a fake embedding server the CLI is pointed at (quick retries)."""
    started = []

    def start(retry_seconds: str | None = "3", **options):
        options.setdefault("vectors", "hash")
        server = EmbeddingServer(**options).start()
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
        if retry_seconds is None:
            monkeypatch.delenv("VECTORIZE_HTTP_RETRY_SECONDS", raising=False)
        else:
            monkeypatch.setenv("VECTORIZE_HTTP_RETRY_SECONDS", retry_seconds)
        started.append(server)
        return server

    yield start
    for server in started:
        server.drop()


def encode_args(url, *more):
    return ("encode", "--url", url, "-t", "docs", "-c", "body", "-m", MODEL, "--dimension", 32, *more)


def assert_exact(conn, server, table="docs", expect_all=True):
    """Every stored vector is, float for float, the server's vector for the row's text."""
    texts = dict(conn.execute(f"SELECT id, body FROM {table}").fetchall())
    vectors = stored_vectors(conn, table, "id", "body_vector")
    written = {i: v for i, v in vectors.items() if v is not None}
    if expect_all:
        assert len(written) == len(texts)
    for i, vector in written.items():
        np.testing.assert_array_equal(vector, server.vector(texts[i]))
    return len(written)


def one_line_error(result, server):
    lines = result.stderr.strip().splitlines()
    assert len(lines) >= 1 and lines[-1].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    assert server.api_key not in result.output
    return lines[-1]


def test_every_vector_is_the_servers_and_requests_overlap_on_kept_alive_connections(run_cli, url, conn, docs, fake):
    docs(1000)
    server = fake(latency=0.05, per_text=0.0005)
    result = run_cli(*encode_args(url, "--batch-size", 100))
    assert result.exit_code == 0, result.output
    assert assert_exact(conn, server) == 1000
    stats = server.stats()
    # 10 pages of 100 rows, each spread over 4 requests (32 texts a request at least) in flight at once.
    assert stats["requests"] == 40 and stats["inputs"] == 1000
    assert stats["max_in_flight"] > 1
    assert stats["connections"] <= 4  # kept alive from page to page: not one a request
    assert server.api_key not in result.output


def test_default_pages_fill_the_requests_in_flight(run_cli, url, conn, docs, fake):
    docs(3000)
    server = fake(latency=0.5)  # long enough that all 16 overlap on a busy machine
    result = run_cli(*encode_args(url))
    assert result.exit_code == 0, result.output
    assert assert_exact(conn, server) == 3000
    stats = server.stats()
    # One page of 3000 rows (pages of 16 x 256 rows, written 1024 rows a statement): 16 requests at once.
    assert stats["requests"] == 16 and stats["max_in_flight"] == 16 and stats["connections"] == 16
    # --requests-in-flight changes it; a local model has none.
    conn.execute("UPDATE docs SET body = body || ' again', body_vector = NULL")  # texts never sent before
    server.reset_counts()
    result = run_cli(*encode_args(url, "--requests-in-flight", 2))
    assert result.exit_code == 0, result.output
    assert server.stats()["max_in_flight"] == 2
    assert_exact(conn, server)
    local = ("encode", "--url", url, "-t", "docs", "-c", "body", "--vector-column", "local_vector")
    refused = run_cli(*local, "--requests-in-flight", 4)
    assert refused.exit_code == 2 and "--requests-in-flight" in refused.stderr


def test_a_request_refused_as_too_large_is_split_and_the_size_learned(run_cli, url, conn, docs, fake):
    docs(400)
    server = fake(latency=0.02, max_inputs=10)
    result = run_cli(*encode_args(url))
    assert result.exit_code == 0, result.output
    assert assert_exact(conn, server) == 400  # the halves' vectors in their rows' order
    refused = [i for i, status in enumerate(server.statuses) if status == 413]
    assert refused and len(refused) < len(server.statuses) / 2
    # Once learned, no request is larger than the server takes.
    last_refused_arrival = max(t for t, n in server.arrivals if n > 10)
    later = [n for t, n in server.arrivals if t > last_refused_arrival]
    assert later and max(later) <= 10


def test_a_text_longer_than_the_model_reads_names_its_row_or_stays_pending(run_cli, url, conn, docs, fake):
    docs(50)
    conn.execute("UPDATE docs SET body = repeat('long words ', 40) WHERE id = 7")
    server = fake(max_text_chars=300)
    stopped = run_cli(*encode_args(url))
    assert stopped.exit_code == 1
    line = one_line_error(stopped, server)
    assert "id=7" in line and "longer than the model reads" in line and "maximum context length" in line
    assert "id=8" not in line
    skipped = run_cli(*encode_args(url, "--on-error", "skip"))
    assert skipped.exit_code == 0, skipped.output
    assert "1 row could not be encoded" in skipped.stderr and "id=7" in skipped.stderr
    vectors = stored_vectors(conn, "docs", "id", "body_vector")
    assert vectors[7] is None
    conn.execute("DELETE FROM docs WHERE id = 7")
    assert_exact(conn, server)


def test_429_pauses_every_request_for_its_retry_after_then_they_go_one_at_a_time(run_cli, url, conn, docs, fake):
    docs(600)
    server = fake(latency=0.1, rate_limit_first=4, retry_after="0.6")
    started = time.monotonic()
    result = run_cli(*encode_args(url))
    assert result.exit_code == 0, result.output
    assert assert_exact(conn, server) == 600
    assert "waiting on the server: HTTP 429" in result.stderr  # the progress line says so
    first_refusal = min(t for t, status in server.answers if status == 429)
    assert len(server.arrivals) == 20  # 16 at once, and the four refused sent again: no more
    after = sorted(t for t, _ in server.arrivals if t > first_refusal + 0.05)
    assert after and all(t - first_refusal >= 0.55 for t in after)  # the server's Retry-After, for all of them
    # No burst when the pause ends: one request, and another only when it was answered.
    assert after[1] - after[0] >= 0.09
    assert time.monotonic() - started < 30


def test_the_server_going_away_stops_the_run_in_a_minute_and_a_rerun_finishes(run_cli, url, conn, docs, fake):
    docs(3000)
    server = fake(retry_seconds=None, latency=0.1)  # the default budgets

    def drop_after_some_pages():
        while len(server.requests) < 12:
            time.sleep(0.01)
        server.drop()

    threading.Thread(target=drop_after_some_pages, daemon=True).start()
    started = time.monotonic()
    result = run_cli(*encode_args(url, "--batch-size", 100, "--requests-in-flight", 4))
    took = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert took < 60
    line = one_line_error(result, server)
    assert f"{server.base_url}/embeddings" in line and "connection refused" in line
    assert "run the same command again" in line
    written = assert_exact(conn, server, expect_all=False)
    assert 0 < written < 3000

    server.restart()
    again = run_cli(*encode_args(url, "--batch-size", 100, "--requests-in-flight", 4))
    assert again.exit_code == 0, again.output
    assert assert_exact(conn, server) == 3000


def test_dry_run_says_how_many_requests_and_characters_it_would_send(run_cli, url, conn, docs, fake):
    docs(300)
    server = fake()
    before = table_checksum(conn, "docs")
    result = run_cli(*encode_args(url, "--dry-run"))
    assert result.exit_code == 0, result.output
    characters = sum(len(body(i)) for i in range(1, 301))
    # One page of 300 rows over 16 requests in flight, 32 texts a request at least: 10 requests.
    assert (
        f"Would send 10 requests (16 at a time) with 300 texts, {characters:,} characters (about "
        f"{-(-characters // 4):,} tokens at 4 characters a token) to {server.base_url}/embeddings" in result.stderr
    )
    assert server.stats()["requests"] == 0  # nothing sent (the size was given)
    assert table_checksum(conn, "docs") == before
    # Half done: the rest.
    assert run_cli(*encode_args(url, "--limit", 100)).exit_code == 0
    result = run_cli(*encode_args(url, "--dry-run"))
    assert "with 200 texts" in result.stderr


def test_search_against_a_failing_server_says_so_in_a_line(run_cli, url, conn, docs, fake, monkeypatch):
    docs(20)
    server = fake()
    assert run_cli(*encode_args(url)).exit_code == 0
    found = run_cli("search", "--url", url, body(3), "-k", "1", "--json")
    assert found.exit_code == 0 and '"id": 3' in found.stdout

    server.hang = True  # accepts, never answers
    monkeypatch.setenv("VECTORIZE_HTTP_TIMEOUT", "1")
    started = time.monotonic()
    slow = run_cli("search", "--url", url, "ships")
    assert slow.exit_code == 1 and time.monotonic() - started < 15
    assert "no answer within 1s" in one_line_error(slow, server)

    server.drop()
    started = time.monotonic()
    gone = run_cli("search", "--url", url, "ships")
    assert gone.exit_code == 1 and time.monotonic() - started < 15
    line = one_line_error(gone, server)
    assert f"cannot reach {server.base_url}/embeddings: connection refused" in line


def test_serve_answers_a_failing_server_with_an_error_not_a_hang(url, conn, docs, fake):
    import httpx

    from vectorize_core import serve

    docs(20)
    server = fake()
    with connect(url) as db:
        encode(db, table="docs", column="body", model=MODEL, dimension=32)
    with serve.BackgroundServer(serve.create_app(url)) as running:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            ok = client.post("/search", json={"query": body(5), "k": 1})
            assert ok.status_code == 200 and ok.json()["rows"][0]["id"] == 5
            server.drop()
            started = time.monotonic()
            failed = client.post("/search", json={"query": "ships", "k": 1})
            assert time.monotonic() - started < 15
            assert failed.status_code >= 500 and "cannot reach" in failed.text


def test_ctrl_c_abandons_the_requests_in_flight_at_once(url, conn, docs, fake):
    docs(2000)
    server = fake(latency=5.0)  # every request takes five seconds
    interrupt = threading.Event()

    def press_ctrl_c():
        while not server.requests:
            time.sleep(0.01)
        time.sleep(0.2)
        interrupt.set()

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    with connect(url) as db:
        started = time.monotonic()
        with pytest.raises(Interrupted, match="0 rows written"):
            encode(db, EncodeRequest(table="docs", column="body", model=MODEL, dimension=32), interrupt=interrupt)
        assert time.monotonic() - started < 2.5
    assert stored_vectors(conn, "docs", "id", "body_vector")[1] is None
