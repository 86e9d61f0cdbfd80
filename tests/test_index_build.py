"""When and how the indexes are built: progress while they build, --index skip / now, the
`index` command, and memory sized to the graph. Real embedded PostgreSQL."""

from __future__ import annotations

import json

import pytest

from vectorize import parse_size
from vectorize_core import connect, encode
from vectorize_core.dialects import HNSW_ELEMENT_BYTES, Dialect
from vectorize_core.indexes import build_index


@pytest.fixture
def doc(conn):
    conn.execute("CREATE TABLE doc (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO doc SELECT g, repeat('w ', g % 9 + 1) || g FROM generate_series(1, 3000) g")
    return conn


def hnsw_indexes(conn) -> list[str]:
    return [r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%hnsw%'")]


def test_progress_is_reported_while_the_indexes_build(url, doc, words):
    seen = []
    with connect(url) as db:
        result = encode(db, table="doc", column="body", model="words", on_index=seen.append)
    assert result.index_created and result.index_seconds > 0
    started = [p.index for p in seen if p.phase == "started"]
    done = [p.index for p in seen if p.phase == "done"]
    assert started == done == ["doc_body_vector_pending", "doc_body_vector_contents_idx"]
    # Between its start and its end, each event is about the index being built.
    assert [p.index for p in seen] == sorted([p.index for p in seen], key=started.index)


def test_index_skip_then_the_index_command(run_cli, url, doc, words):
    result = run_cli("encode", "--url", url, "-t", "doc", "-c", "body", "-m", "words", "--index", "skip")
    assert result.exit_code == 0, result.output
    assert "no index built (--index skip)" in result.stdout and "vectorize.py index" in result.stdout
    assert hnsw_indexes(doc) == []
    (status,) = json.loads(run_cli("status", "--url", url, "--json").stdout)
    assert status["index"] is None and status["embedded"] == 3000
    built = run_cli("index", "--url", url, "-t", "doc", "-c", "body")
    assert built.exit_code == 0, built.output
    assert "Indexes of public.doc.body_vector ready" in built.stdout
    assert (
        "Building index doc_body_vector_contents_idx ..." in built.stderr
        and "Index doc_body_vector_contents_idx built in" in built.stderr
    )
    assert hnsw_indexes(doc) == ["doc_body_vector_contents_idx"]
    assert "Nothing to do" in run_cli("index", "--url", url, "-t", "doc", "-c", "body").stdout


def test_index_now_builds_before_the_fill(url, doc, words):
    order = []
    words.before_encode = lambda batch: order.append("encode")
    with connect(url) as db:
        encode(db, table="doc", column="body", model="words", index="now", on_index=lambda p: order.append(p.phase))
    assert order.index("done") < order.index("encode")
    with connect(url) as db:
        assert not build_index(db, table="doc", column="body").index_created  # nothing missing


def test_memory_is_sized_to_the_graph():
    pg = Dialect(version=(18, 6))
    assert pg.index_memory_estimate(1_000_000, 384) == 1_000_000 * (4 * 384 + HNSW_ELEMENT_BYTES)  # ~1.8 GB
    assert pg.index_memory_estimate(1000, 3000) == 1000 * (2 * 3000 + HNSW_ELEMENT_BYTES)  # halfvec
    assert [s.as_string() for s in pg.index_build_settings(2_295_000_000)] == ["SET maintenance_work_mem = '2188MB'"]
    assert parse_size("4GB") == 4 << 30 and parse_size("512 MB") == 512 << 20 and parse_size("1.5g") == 3 << 29


def test_a_bad_index_memory_is_bad_usage(run_cli, url):
    result = run_cli("index", "--url", url, "-t", "doc", "-c", "body", "--index-memory", "lots")
    assert result.exit_code == 2 and "512MB" in result.stderr
