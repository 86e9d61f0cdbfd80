"""encode --chunk: long texts split into chunks the model reads whole, ranked as rows, on a real
embedded PostgreSQL+pgvector."""

from __future__ import annotations

import hashlib
import json
import threading

import numpy as np
import pytest
from psycopg import sql

import modules
from conftest import cosine, stored_vectors


class CountingEncoder:
    """Deterministic test encoder with a tokenizer: a token is a word, the model reads 12.

    A text's vector is made of hashes of its words (summed, normalised): texts sharing words are
    near, and a chunk holding a rare word is nearest to a query of that word."""

    name = "chunkwords"
    description = "test encoder: hashed words, 12 tokens read"
    dimension = 16
    metric = "cosine"
    max_length = 12

    def __init__(self):
        self.batches: list[list[str]] = []
        self.before_encode = None

    def token_counter(self):
        return (lambda text: len(text.split())), 0, None

    @staticmethod
    def vector(text: str) -> np.ndarray:
        total = np.zeros(16, dtype=np.float32)
        for word in text.split()[:12]:  # what the model reads
            digest = hashlib.sha256(word.lower().strip(".,").encode()).digest()
            total += np.frombuffer(digest[:16], dtype=np.uint8).astype(np.float32) - 127.5
        norm = np.linalg.norm(total)
        return total / norm if norm else total

    def encode(self, batch):
        self.batches.append(list(batch))
        if self.before_encode is not None:
            self.before_encode(list(batch))
        return np.stack([self.vector(t) for t in batch]) if batch else np.zeros((0, 16), np.float32)


@pytest.fixture
def counting():
    encoder = CountingEncoder()
    modules.register(encoder)
    yield encoder
    modules.unregister(encoder.name)


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
        sql.SQL("SELECT {}, chunk, chunk_start, chunk_end, chunk_vector::text FROM {} ORDER BY 1, 2").format(
            sql.Identifier(key), sql.Identifier(table)
        )
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
    for key, number, start, end, vector in rows:
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
