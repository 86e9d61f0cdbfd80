"""import-vectors' fast load (#19): .npy values stored bit for bit through binary and text COPY,
bad .npy files refused naming the row with nothing written, progress by phase, --fulltext,
--index. Real embedded PostgreSQL."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pgvector.psycopg import register_vector

from conftest import make_items, table_checksum
from vectorize_core import connect, dialects, importer
from vectorize_core.formats import common
from vectorize_core.formats import npy as npy_format

N = 40
DIM = 6


@pytest.fixture
def items(conn):
    return make_items(conn, N)


@pytest.fixture
def small_chunks(monkeypatch):
    """Three rows per .npy chunk: the row-naming and chunk-boundary paths run on a small file."""
    monkeypatch.setattr(npy_format, "NPY_CHUNK_BYTES", 3 * DIM * 4)


def awkward_float32(n: int) -> np.ndarray:
    """Values a text round trip could get wrong: subnormals, -0.0, a number float4 rounds, and
    numbers whose shortest decimal form is long."""
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    # (float4's extremes are refused for their length in a file with no checks: test_damaged_files)
    vectors[0] = [123.456789, -98.7654321, np.finfo(np.float32).tiny, -0.0, 1e-45, 0.1]
    vectors[1] = (
        np.nextafter(np.float32(1), np.float32(2)),
        np.float32(1 / 3),
        3.4e-39,
        -2.5e-40,
        (2**24 + 1) / 2**20,
        7.5,
    )
    return vectors


def save_npy(tmp_path, vectors, keys=None, name="v.npy"):
    np.save(tmp_path / name, vectors)
    keys = range(1, len(vectors) + 1) if keys is None else keys
    (tmp_path / "k.jsonl").write_text("".join(json.dumps({"id": k}) + "\n" for k in keys))
    return tmp_path / name, tmp_path / "k.jsonl"


def stored_float32(conn, column="body_vector") -> dict[int, np.ndarray]:
    """The stored vectors as the server's own float4 bytes (binary results: no text in between)."""
    register_vector(conn)
    rows = conn.cursor(binary=True).execute(f"SELECT id, {column} FROM items WHERE {column} IS NOT NULL")
    return {i: v.to_numpy() for i, v in rows}


def import_npy(run_cli, url, npy, keys, *extra):
    return run_cli("import-vectors", "--url", url, "-t", "items", "-c", "body", "-f", npy, "--keys", keys, *extra)


def assert_bits_equal(stored: dict, vectors: np.ndarray) -> None:
    assert len(stored) == len(vectors)
    for i, expected in enumerate(vectors, 1):
        assert stored[i].dtype == np.float32
        assert stored[i].view(np.uint32).tolist() == expected.view(np.uint32).tolist(), i


@pytest.mark.parametrize("binary", [True, False], ids=["binary-copy", "text-copy"])
def test_npy_float32_values_are_stored_bit_for_bit(run_cli, url, items, tmp_path, monkeypatch, small_chunks, binary):
    # text-copy is CockroachDB's form, run here on PostgreSQL through the same dialect switch.
    monkeypatch.setattr(dialects.Dialect, "binary_vector_copy", binary)
    vectors = awkward_float32(N)
    result = import_npy(run_cli, url, *save_npy(tmp_path, vectors))
    assert result.exit_code == 0, result.output
    assert f"Imported {N} vectors of {DIM} dimensions" in result.stdout
    assert_bits_equal(stored_float32(items), vectors)
    assert items.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'vectorize_import%'").fetchone()[0] == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda v: v.astype(np.float64),
        lambda v: v.astype(">f4"),  # big-endian
        lambda v: np.asfortranarray(v),  # column after column on disk
        lambda v: np.round(v * 100).astype(np.int16),
        lambda v: v.astype(np.float16),
    ],
    ids=["float64", "big-endian", "fortran-order", "int16", "float16"],
)
def test_other_npy_layouts_store_their_float4_values(run_cli, url, items, tmp_path, small_chunks, make):
    vectors = make(np.random.default_rng(3).standard_normal((N, DIM)).astype(np.float32))
    result = import_npy(run_cli, url, *save_npy(tmp_path, vectors))
    assert result.exit_code == 0, result.output
    assert_bits_equal(stored_float32(items), np.ascontiguousarray(vectors).astype(np.float32))


def bad_value(dtype, value):
    def make(vectors):
        vectors = vectors.astype(dtype)
        vectors[10, 2] = value  # row 11: in the fourth chunk of three rows
        return vectors

    return make


@pytest.mark.parametrize(
    "make, fragments",
    [
        (bad_value(np.float32, np.nan), ["v.npy row 11 (k.jsonl line 11)", "NaN or infinity"]),
        (bad_value(np.float32, -np.inf), ["v.npy row 11", "NaN or infinity"]),
        (bad_value(np.float64, 1e39), ["v.npy row 11 (k.jsonl line 11)", "beyond a float4"]),
        (lambda v: v[:, 0], ["v.npy", "expected a 2-D array", "(40,)"]),
        (lambda v: v.reshape(N, 2, DIM // 2), ["v.npy", "expected a 2-D array"]),
        (lambda v: v[:, :0], ["v.npy", "expected a 2-D array", "(40, 0)"]),
        (lambda v: v[:0], ["v.npy: no vectors in the file"]),
        (lambda v: v.astype(str), ["v.npy", "expected a 2-D array of numbers"]),
        (lambda v: v[:-1], ["k.jsonl has 40 keys for 39 vectors in v.npy"]),
    ],
    ids=["nan", "inf", "beyond-float4", "1-d", "3-d", "no-dimensions", "no-rows", "strings", "keys-count"],
)
def test_a_bad_npy_exits_2_naming_its_row_with_nothing_written(
    run_cli, url, items, tmp_path, small_chunks, make, fragments
):
    npy, keys = save_npy(tmp_path, make(awkward_float32(N)), keys=range(1, N + 1))
    before = table_checksum(items, "items")
    result = import_npy(run_cli, url, npy, keys)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert table_checksum(items, "items") == before
    assert items.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'vectorize_import%'").fetchone()[0] == 0


def test_not_an_npy_file(run_cli, url, items, tmp_path):
    (tmp_path / "v.npy").write_bytes(b"not numpy at all")
    (tmp_path / "k.jsonl").write_text('{"id": 1}\n')
    result = import_npy(run_cli, url, tmp_path / "v.npy", tmp_path / "k.jsonl")
    assert result.exit_code == 2 and "v.npy: not a .npy array" in result.stderr


@pytest.mark.parametrize(
    "keys, fragment",
    [
        ([1, 2, 3, 2], "k.jsonl line 4: key 2 repeats line 2"),
        ([1, 2, "03", 3], "k.jsonl line 4: key 3 repeats line 3"),  # equal as integers
        ([1, 2, "x", 4], "k.jsonl line 3"),  # an integer column cannot read it
    ],
    ids=["repeated", "repeated-in-type", "unreadable"],
)
def test_npy_keys_are_checked_naming_the_keys_line(run_cli, url, items, tmp_path, small_chunks, keys, fragment):
    npy, keys_file = save_npy(tmp_path, awkward_float32(4), keys=keys)
    before = table_checksum(items, "items")
    result = import_npy(run_cli, url, npy, keys_file)
    assert result.exit_code == 2 and fragment in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert table_checksum(items, "items") == before


def test_npy_keys_as_csv(run_cli, url, items, tmp_path):
    vectors = awkward_float32(5)
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "k.csv").write_text("id\n" + "".join(f"{i}\n" for i in range(1, 6)))
    result = import_npy(run_cli, url, tmp_path / "v.npy", tmp_path / "k.csv")
    assert result.exit_code == 0, result.output
    assert_bits_equal(stored_float32(items), vectors)


def run_import(url, path, keys=None, **options):
    events, index_events = [], []
    with connect(url) as db:
        result = importer.import_vectors(
            db, table="items", column="body", file=str(path), keys_file=keys and str(keys),
            progress=events.append, on_index=index_events.append, **options,
        )  # fmt: skip
    return result, events, index_events


def phases_seen(events) -> list[str]:
    return list(dict.fromkeys(e.phase for e in events))


def test_progress_reports_validation_load_checks_writes_and_index(url, items, tmp_path, small_chunks):
    result, events, index_events = run_import(url, *save_npy(tmp_path, awkward_float32(N)))
    assert phases_seen(events) == ["validating", "loading", "checking", "writing"]
    for phase in phases_seen(events):
        mine = [e for e in events if e.phase == phase]
        assert mine[0].done == 0 and not mine[0].finished  # it starts
        assert mine[-1].finished and mine[-1].done == N and mine[-1].total == N  # and ends, complete
        assert [e.done for e in mine] == sorted(e.done for e in mine)
    validating = [e.done for e in events if e.phase == "validating" and not e.finished]
    assert len(validating) > 3  # chunk by chunk
    assert set(result.phase_seconds) == {"validating", "loading", "checking", "writing"}
    assert [(e.index, e.phase) for e in index_events if e.phase in ("started", "done")] == [
        ("items_body_vector_pending", "started"), ("items_body_vector_pending", "done"),
        ("items_body_vector_contents_idx", "started"), ("items_body_vector_contents_idx", "done"),
    ]  # fmt: skip
    assert result.index_created and result.index_seconds > 0 and result.updated == N


def test_text_formats_report_loading_with_an_estimated_total(url, items, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "TEXT_BLOCK", 200)  # a progress report every few lines
    path = tmp_path / "v.jsonl"
    path.write_text("".join(json.dumps({"id": i, "vector": [i, 0.5, -1]}) + "\n" for i in range(1, N + 1)))
    result, events, _ = run_import(url, path)
    assert phases_seen(events) == ["loading", "checking", "writing"]
    loading = [e for e in events if e.phase == "loading"]
    assert any(0 < e.done < N and e.total >= e.done for e in loading)
    assert loading[-1].finished and loading[-1].done == loading[-1].total == N


def test_fulltext_on_import_makes_hybrid_search_work(run_cli, url, items, tmp_path):
    items.execute("UPDATE items SET body = 'deployment failed with error ZX-7731' WHERE id = 17")
    vectors = awkward_float32(N)
    vectors[0] = [1, 2, 3, 4, 5, 6]  # plain values for the query vector
    result = import_npy(run_cli, url, *save_npy(tmp_path, vectors), "--fulltext", "--model-name", "mine")
    assert result.exit_code == 0, result.output
    assert "full text in body_tsv (english), for search --hybrid" in result.stdout
    assert items.execute("SELECT count(*) FROM items WHERE body_tsv @@ to_tsquery('english', 'zx')").fetchone()[0]
    assert items.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'items_body_tsv_idx'").fetchone()[0] == 1
    query = json.dumps(vectors[0].tolist())
    found = run_cli("search", "--url", url, "ZX-7731", "--query-vector", query, "--hybrid", "-k", "3", "--json")
    assert found.exit_code == 0, found.output
    rows = {r["id"]: r for r in json.loads(found.stdout)}
    assert rows[17]["text_rank"] == 1  # only the full text knows the code
    assert rows[1]["dense_rank"] == 1  # the vector leg finds its own vector
    meta = json.loads(items.execute("SELECT col_description('items'::regclass, 3)").fetchone()[0])["vectorize"]
    assert meta["fulltext"] == {
        "column": "body_tsv", "index": "items_body_tsv_idx", "language": "english", "terms": "items_body_tsv_terms"
    }  # fmt: skip


def test_index_skip_then_the_index_command(run_cli, url, items, tmp_path):
    npy, keys = save_npy(tmp_path, awkward_float32(N))
    skipped = import_npy(run_cli, url, npy, keys, "--index", "skip")
    assert skipped.exit_code == 0, skipped.output
    assert "no index built (--index skip)" in skipped.stdout
    built_indexes = "SELECT count(*) FROM pg_indexes WHERE indexname IN ('items_body_vector_pending', 'items_body_vector_contents_idx')"
    assert items.execute(built_indexes).fetchone()[0] == 0
    built = run_cli("index", "--url", url, "-t", "items", "-c", "body")
    assert built.exit_code == 0, built.output
    assert items.execute(built_indexes).fetchone()[0] == 2


def test_index_now_builds_before_the_vectors_are_written(url, items, tmp_path):
    order = []
    npy, keys = save_npy(tmp_path, awkward_float32(N))
    with connect(url) as db:
        importer.import_vectors(
            db, table="items", column="body", file=str(npy), keys_file=str(keys), index="now",
            progress=lambda e: order.append((e.phase, e.done)), on_index=lambda e: order.append(("index", e.phase)),
        )  # fmt: skip
    first_write = next(i for i, (phase, done) in enumerate(order) if phase == "writing" and done > 0)
    assert ("index", "done") in order[:first_write]
    assert_bits_equal(stored_float32(items), awkward_float32(N))
    assert items.execute(
        "SELECT count(*) FROM pg_indexes WHERE indexname = 'items_body_vector_contents_idx'"
    ).fetchone()[0]


def test_missing_keys_with_npy(run_cli, url, items, tmp_path):
    npy, keys = save_npy(tmp_path, awkward_float32(3), keys=[1, 2, 999])
    result = import_npy(run_cli, url, npy, keys)
    assert result.exit_code == 0 and "1 key of the file is not in the table" in result.stdout
    assert sorted(stored_float32(items)) == [1, 2]


def test_update_batches_follow_key_order_for_a_shuffled_file(url, items, tmp_path, monkeypatch):
    monkeypatch.setattr(importer, "UPDATE_BATCH", 7)
    order = np.random.default_rng(1).permutation(np.arange(1, N + 1))
    vectors = awkward_float32(N)
    run_import(url, *save_npy(tmp_path, vectors, keys=order.tolist()))
    stored = stored_float32(items)
    for row, key in enumerate(order):
        assert stored[int(key)].view(np.uint32).tolist() == vectors[row].view(np.uint32).tolist()


def test_plain_output_names_slow_phases_with_their_times(capsys):
    import vectorize
    from vectorize_core.progress import ImportProgress

    with vectorize.phase_reporter() as report:
        report(ImportProgress("checking", 0, 10))
        report(ImportProgress("checking", 10, 10, 0.2, finished=True))  # quick: not said
        report(ImportProgress("loading", 0, 100))
        report(ImportProgress("loading", 50, 100, 1.5))
        report(ImportProgress("loading", 100, 100, 3.0, finished=True))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(" loading ...")
    assert lines[1].endswith(" loading done: 100 rows in 3.0s (33 rows/s)")
