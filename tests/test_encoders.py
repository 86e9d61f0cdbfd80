"""Encoders users bring: st:<model>, openai:<model> against a real loopback server, third-party
plugins through entry points, prefixes, several source columns, long text (the backends: test_backends.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import modules
from conftest import ROOT, column_metadata, cosine
from openai_server import EmbeddingServer

TEXTS = ["Wall Street and the stock exchange", "A kitten asleep in the sun", "Rain over the North Sea"]


def minilm_folder() -> str:
    from modules.minilm import model_source

    return model_source()


@pytest.fixture
def passage(conn):
    conn.execute("CREATE TABLE passage (id int PRIMARY KEY, passage text)")
    for i, text in enumerate(TEXTS, 1):
        conn.execute("INSERT INTO passage VALUES (%s, %s)", (i, text))


def stored(conn, column="passage_vector", table="passage"):
    rows = conn.execute(f"SELECT id, {column}::text FROM {table} ORDER BY id").fetchall()
    return {i: (None if v is None else np.array(json.loads(v), dtype=np.float32)) for i, v in rows}


def metadata(conn, column="passage_vector", table="passage"):
    return column_metadata(conn, table, column)


def test_st_family_by_local_folder_records_the_name_as_given(run_cli, url, conn, passage):
    name = f"st:{minilm_folder()}"
    result = run_cli("encode", "--url", url, "-t", "passage", "-c", "passage", "-m", name)
    assert result.exit_code == 0, result.output
    assert metadata(conn)["model"] == name and metadata(conn)["dimension"] == 384
    expected = modules.get("minilm").encode(TEXTS)
    for i, vector in stored(conn).items():
        assert cosine(vector, expected[i - 1]) > 0.999
    found = json.loads(run_cli("search", "--url", url, "a cat sleeping", "-k", "1", "--json").stdout)
    assert found[0]["id"] == 2


def test_st_family_unknown_model_is_bad_input(run_cli, url, conn, passage, tmp_path):
    result = run_cli("encode", "--url", url, "-t", "passage", "-c", "passage", "-m", f"st:{tmp_path / 'nothing'}")
    assert result.exit_code == 2
    assert "cannot load model" in result.stderr
    assert (
        conn.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'passage'::regclass AND attnum > 0"
        ).fetchone()[0]
        == 2
    )


@pytest.fixture
def openai_env(monkeypatch):
    def start(**kwargs):
        server = EmbeddingServer(**kwargs).__enter__()
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
        monkeypatch.setenv("VECTORIZE_HTTP_RETRY_SECONDS", "3")
        started.append(server)
        return server

    started = []
    yield start
    for server in started:
        server.__exit__(None, None, None)


def test_openai_compatible_endpoint_learns_dimension_and_stores_its_vectors(run_cli, url, conn, passage, openai_env):
    server = openai_env(rate_limit_first=1)  # the first request gets 429 + Retry-After
    result = run_cli("encode", "--url", url, "-t", "passage", "-c", "passage", "-m", "openai:local-minilm")
    assert result.exit_code == 0, result.output
    assert 429 in server.statuses and server.statuses[-1] == 200
    assert metadata(conn)["dimension"] == 384  # learned from the first response
    expected = modules.get("minilm").encode(TEXTS)
    for i, vector in stored(conn).items():
        assert cosine(vector, expected[i - 1]) > 0.999
    assert server.api_key not in result.output

    found = json.loads(run_cli("search", "--url", url, "ocean weather", "-k", "1", "--json").stdout)
    assert found[0]["id"] == 3
    assert server.requests[-1]["input"] == ["ocean weather"]


def test_openai_failure_names_the_rows_and_stops(run_cli, url, conn, passage, openai_env):
    conn.execute("INSERT INTO passage VALUES (4, 'this one will FAIL')")
    openai_env()
    result = run_cli("encode", "--url", url, "-t", "passage", "-c", "passage", "-m", "openai:local-minilm")
    assert result.exit_code == 1
    assert "HTTP 500" in result.stderr and "id=4" in result.stderr
    assert "sk-test-secret" not in result.output


def test_openai_failure_with_on_error_skip_leaves_those_rows_pending(
    run_cli, url, conn, passage, openai_env, monkeypatch
):
    monkeypatch.setattr("vectorize_core.pipeline.ENCODE_CHUNK", 1)
    conn.execute("INSERT INTO passage VALUES (4, 'this one will FAIL')")
    openai_env()
    args = ("encode", "--url", url, "-t", "passage", "-c", "passage", "-m", "openai:local-minilm", "--on-error", "skip")
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert "1 row could not be encoded" in result.stderr and "id=4" in result.stderr
    vectors = stored(conn)
    assert vectors[4] is None and all(vectors[i] is not None for i in (1, 2, 3))


def test_openai_batches_by_count_and_characters():
    encoder = modules.get("openai:x").configure(dimension=3)
    encoder.max_batch, encoder.max_chars = 3, 10
    texts = ["aaaa", "bbbb", "cc", "d", "e", "ffffffffffff", ""]
    requests = [[texts[i] for i in request] for request in encoder.plan(texts)]
    # 4+4+2 chars fill the budget of 10; 3 texts fill the count; an empty text counts as one character
    assert requests == [["aaaa", "bbbb", "cc"], ["d", "e"], ["ffffffffffff"], [""]]
    # Spread over the requests in flight, 32 texts a request at least; a 413's cap lowers the count.
    encoder.max_batch, encoder.max_chars = 256, 400_000
    assert [len(r) for r in encoder.plan(["x"] * 4096, 16)] == [256] * 16
    assert [len(r) for r in encoder.plan(["x"] * 100, 16)] == [32, 32, 32, 4]
    assert [len(r) for r in encoder.plan(["x"] * 100, 16, cap=10)] == [10] * 10
    assert encoder.planned_requests(4096, 40_960, 16) == 16


def test_retry_after_parsing():
    from modules.openai import parse_retry_after

    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") <= 0.0


def test_third_party_plugin_through_entry_points(tmp_path, url, conn):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT / "tests" / "plugins" / "vectorize_tiny")],
        check=True, capture_output=True,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(target), "DATABASE_URL": url}
    listing = subprocess.run(
        [sys.executable, str(ROOT / "vectorize.py"), "list-models", "--json"], env=env, capture_output=True, text=True
    )
    assert "tiny" in {m["name"] for m in json.loads(listing.stdout)}

    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO t VALUES (1, 'abc 123'), (2, 'hello world')")
    run = subprocess.run(
        [sys.executable, str(ROOT / "vectorize.py"), "encode", "-t", "t", "-c", "body", "-m", "tiny"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    rows = dict(conn.execute("SELECT id, body_vector::text FROM t").fetchall())
    assert json.loads(rows[1]) == [7, 1, 1, 3] and json.loads(rows[2]) == [11, 3, 1, 0]


def test_list_models_name_shows_details(run_cli):
    result = run_cli("list-models", "minilm", "--json")
    details = json.loads(result.stdout)
    assert details["dimension"] == 384 and details["max_length"] == 256 and details["metric"] == "cosine"
    assert details["source"].endswith("model")
    result = run_cli("list-models", "nosuch")
    assert result.exit_code == 2 and "minilm" in result.stderr


def test_prefixes_are_recorded_and_applied(run_cli, url, conn, words):
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO t VALUES (1, 'aa bbb'), (2, 'cccc')")
    args = ("encode", "--url", url, "-t", "t", "-c", "body", "-m", "words", "--prefix", "passage: ")
    assert run_cli(*args, "--query-prefix", "q: ").exit_code == 0
    meta = metadata(conn, "body_vector", "t")
    assert meta["prefix"] == "passage: " and meta["query_prefix"] == "q: "
    vectors = stored(conn, "body_vector", "t")
    np.testing.assert_array_equal(vectors[1], words.vector("passage: aa bbb"))
    words.batches.clear()
    found = json.loads(run_cli("search", "--url", url, "cccc", "-k", "1", "--json").stdout)
    assert words.batches == [["q: cccc"]]
    assert found[0]["id"] == 2
    result = run_cli("encode", "--url", url, "-t", "t", "-c", "body", "-m", "words", "--prefix", "other: ")
    assert result.exit_code == 2 and "--prefix" in result.stderr


def test_several_source_columns_are_joined(run_cli, url, conn, words):
    conn.execute("CREATE TABLE doc (id int PRIMARY KEY, title text, body text)")
    conn.execute("INSERT INTO doc VALUES (1, 'Big title', 'the body'), (2, NULL, 'only body'), (3, NULL, NULL)")
    result = run_cli("encode", "--url", url, "-t", "doc", "-c", "title", "-c", "body", "-m", "words")
    assert result.exit_code == 0, result.output
    assert metadata(conn, "title_vector", "doc")["source"] == ["title", "body"]
    vectors = stored(conn, "title_vector", "doc")
    np.testing.assert_array_equal(vectors[1], words.vector("Big title the body"))
    np.testing.assert_array_equal(vectors[2], words.vector("only body"))
    assert vectors[3] is None
    found = json.loads(run_cli("search", "--url", url, "Big title the body", "-k", "1", "--json").stdout)
    assert found[0] == {"id": 1, "title": "Big title", "body": "the body", "distance": 0.0}


def test_long_text_is_reported_as_truncated(run_cli, url, conn):
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO t VALUES (1, %s), (2, 'short')", (" ".join(["word"] * 400),))
    result = run_cli("encode", "--url", url, "-t", "t", "-c", "body")
    assert result.exit_code == 0, result.output
    assert "1 row was longer than the model reads" in result.stdout


def test_openai_chunks_are_measured_in_characters_and_encode_says_so(run_cli, url, conn, openai_env):
    openai_env()
    body = " ".join(f"Sentence {i} of a long article about harbours and ships." for i in range(60))
    conn.execute("CREATE TABLE article (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO article VALUES (1, %s)", (body,))
    result = run_cli("encode", "--url", url, "-t", "article", "-c", "body", "-m", "openai:local-minilm", "--chunk")
    assert result.exit_code == 0, result.output
    assert (
        "Note: openai:local-minilm has no tokenizer here: chunks are measured at 4 characters a token" in result.stderr
    )
    spans = conn.execute("SELECT chunk_start, chunk_end FROM article_body_vector_chunks ORDER BY chunk").fetchall()
    assert len(spans) > 1 and all(end - start <= 64 * 4 for start, end in spans)  # 64 tokens of 4 characters
    assert " ".join(body[s:e] for s, e in spans).split() == body.split()


def test_the_word_by_word_token_count_equals_the_tokenizers_own():
    """Chunking counts a BERT tokenizer's tokens word by word (each word once): the same count as
    the tokenizer's own for prose, code and hostile Unicode alike."""
    import pydoc
    import random

    from tokenizers import Tokenizer

    from modules._sentence_transformers import word_counter

    encoder = modules.get("minilm")
    fast, _, _ = encoder.token_counter()
    tokenizer = Tokenizer.from_str(encoder.load().tokenizer.to_str())
    tokenizer.no_truncation()

    def exact(text):
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    rng = random.Random(7)
    alphabet = list("abcXYZ019 .,;:!?-'\"()[]{}/\\\t\n\r") + [
        "\u00a0", "\u2003", "\u3000", "\u1680", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\u2028", "\u200b",
        "é", "ß", "İ", "ﬁ", "東", "京", "한", "🙂", "\u0301", "\x00", "\ufeff", "ǅ",
    ]  # fmt: skip
    texts = ["def f(x):\n    return x ** 2  # square", "Überraschung: naïve café owners' résumés, 東京 and Zürich!"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 300))) for _ in range(2000)]
    prose = pydoc.render_doc(json, renderer=pydoc.plaintext) + pydoc.render_doc(os.path, renderer=pydoc.plaintext)
    texts += [prose[i : i + rng.randint(10, 2000)] for i in range(0, len(prose) - 2000, 97)]
    counted = word_counter(exact)
    assert [counted(t) for t in texts] == [exact(t) for t in texts]
    assert fast(prose) == exact(prose)  # the encoder's counter is the word-by-word one
