"""import-vectors in every format (#25): JSON Lines and CSV through simdjson (in worker processes
for large files) and pyarrow's CSV reader, Parquet in record batches. Every validation in every
format: exit 2 naming the line (Parquet: the row), nothing written; values stored bit for bit
through binary COPY (PostgreSQL) and text COPY (CockroachDB's form). Real embedded PostgreSQL."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pgvector.psycopg import register_vector

from conftest import make_items, table_checksum
from vectorize_core import dialects, importer
from vectorize_core.formats import common, parquet

N = 30
DIM = 4
GOOD = [0.5, -1.25, 3.0, 1e-3]


@pytest.fixture
def items(conn):
    return make_items(conn, N)


@pytest.fixture(params=["one-process", "workers"])
def parsing(request, monkeypatch):
    """Every text-format test twice: parsed here, and by worker processes a few lines a chunk."""
    if request.param == "workers":
        monkeypatch.setattr(common, "PARALLEL_BYTES", 0)
        monkeypatch.setattr(common, "TEXT_BLOCK", 100)
    return request.param


def stored_float32(conn) -> dict[int, list[int]]:
    register_vector(conn)
    rows = conn.cursor(binary=True).execute("SELECT id, body_vector FROM items WHERE body_vector IS NOT NULL")
    return {i: v.to_numpy().view(np.uint32).tolist() for i, v in rows}


def awkward(n: int) -> np.ndarray:
    """Values a text round trip could get wrong (the extremes of float4 are refused for their length
    in a file with no checks: test_jsonl_float4_extremes_are_read_then_refused_for_their_length)."""
    vectors = np.random.default_rng(5).standard_normal((n, DIM)).astype(np.float32)
    vectors[0] = [123.456789, -98.7654321, 1e-45, -0.0]
    vectors[1] = [np.finfo(np.float32).tiny, (2**24 + 1) / 2**20, 1 / 3, 0.1]  # the second rounds as a float4
    return vectors


def write_jsonl(path, vectors, start=1):
    """Numbers as float32's shortest text (orjson), one object a line."""
    import orjson

    lines = [
        b'{"id": %d, "vector": %s}' % (i, orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY))
        for i, v in enumerate(vectors, start)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def write_csv(path, vectors, delimiter=","):
    rows = [f"id{delimiter}vector"] + [
        f'{i}{delimiter}"{json.dumps(v)}"' for i, v in enumerate(np.asarray(vectors, dtype=np.float32).tolist(), 1)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def import_file(run_cli, url, path, *extra):
    return run_cli("import-vectors", "--url", url, "-t", "items", "-c", "body", "-f", path, *extra)


@pytest.mark.parametrize("binary", [True, False], ids=["binary-copy", "text-copy"])
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_values_are_stored_bit_for_bit(run_cli, url, items, tmp_path, monkeypatch, parsing, binary, fmt):
    monkeypatch.setattr(dialects.Dialect, "binary_vector_copy", binary)
    vectors = awkward(N)
    if fmt == "jsonl":
        path = write_jsonl(tmp_path / "v.jsonl", vectors)
    elif fmt == "csv":
        path = write_csv(tmp_path / "v.csv", vectors)
    else:
        path = write_parquet(tmp_path / "v.parquet", vectors)
    result = import_file(run_cli, url, path)
    assert result.exit_code == 0, result.output
    assert f"Imported {N} vectors of {DIM} dimensions" in result.stdout
    assert stored_float32(items) == {i: v.view(np.uint32).tolist() for i, v in enumerate(vectors, 1)}
    assert items.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'vectorize_import%'").fetchone()[0] == 0


def jsonl_with(bad_line: str, at: int = 20) -> str:
    lines = [json.dumps({"id": i, "vector": GOOD}) for i in range(1, N + 1)]
    lines[at - 1] = bad_line
    return "\n".join(lines) + "\n"


JSONL_CASES = [
    ('{"id": 20, "vector": [1, 2, 3]}', "line 20: vector has 3 numbers; the first had 4"),
    ('{"id": 20, "vector": [1, 2, "x", 4]}', 'line 20: vector holds "x", not a number'),
    ('{"id": 20, "vector": [1, 2, true, 4]}', "line 20: vector holds true, not a number"),
    ('{"id": 20, "vector": [1, 2, null, 4]}', "line 20: vector holds null, not a number"),
    ('{"id": 20, "vector": [1, NaN, 3, 4]}', "line 20: vector holds nan, not a finite number"),
    ('{"id": 20, "vector": [1, -Infinity, 3, 4]}', "line 20: vector holds -inf, not a finite number"),
    ('{"id": 20, "vector": [1, 1e39, 3, 4]}', "line 20: vector holds 1e+39, beyond what a float4 holds"),
    ('{"id": 20, "vector": [1, 1e400, 3, 4]}', "line 20: vector holds inf, not a finite number"),
    ('{"id": 20, "vector": []}', "line 20: empty vector"),
    ('{"id": 20, "vector": [[1, 2], [3, 4]]}', "line 20: vector holds [1, 2], not a number"),
    ('{"id": 20}', "line 20: 'vector' must be an array of numbers"),
    ('{"vector": [1, 2, 3, 4]}', "line 20: missing key column 'id'"),
    ('{"id": null, "vector": [1, 2, 3, 4]}', "line 20: key column 'id' is null"),
    ('{"id": 3, "vector": [1, 2, 3, 4]}', "line 20: key 3 repeats line 3"),
    ('{"id": "x", "vector": [1, 2, 3, 4]}', "line 20: invalid input syntax for type integer"),
    ('{"id": 20, "vector": [1, 2', "line 20: not valid JSON"),
    ("[1, 2, 3, 4]", "line 20: expected a JSON object"),
]


def test_jsonl_invalid_utf8_blank_lines_and_a_bom(run_cli, url, items, tmp_path, parsing):
    path = tmp_path / "v.jsonl"
    good = [json.dumps({"id": i, "vector": GOOD}).encode() for i in range(1, N + 1)]
    path.write_bytes(b"\xef\xbb\xbf" + b"\n\n".join(good) + b"\n\n")  # a BOM, blank lines between
    result = import_file(run_cli, url, path)
    assert result.exit_code == 0, result.output
    assert len(stored_float32(items)) == N
    good[24] = b'{"id": 25, "vector": [1, 2, 3, 4], "note": "caf\xe9"}'
    path.write_bytes(b"\n".join(good) + b"\n")
    result = import_file(run_cli, url, path)
    assert result.exit_code == 2 and "v.jsonl line 25: not valid UTF-8" in result.stderr


def test_jsonl_float4_extremes_are_read_then_refused_for_their_length(run_cli, url, items, tmp_path, parsing):
    """float4's largest value (as its shortest text says it) and an integer beyond 64 bits are
    read as numbers; a vector holding them is refused for its length, which pgvector's float4
    distances would overflow, not for its numbers."""
    path = tmp_path / "v.jsonl"
    lines = jsonl_with('{"id": 20, "vector": [3.4028235e38, -3.4028235e38, 1e-45, 0]}').splitlines()
    lines[21] = '{"id": 22, "vector": [18446744073709551616, 1, 2, 3]}'  # beyond 64 bits: json reads it
    path.write_text("\n".join(lines) + "\n")
    result = import_file(run_cli, url, path)
    assert result.exit_code == 2
    assert "2 damaged lines (lines 20 and 22: its length overflows float4 distances)" in result.stderr, result.stderr


def test_stdin_goes_the_same_way(run_cli, url, items, parsing):
    from click.testing import CliRunner

    import vectorize

    args = ["import-vectors", "--url", url, "-t", "items", "-c", "body", "-f", "-"]
    result = CliRunner().invoke(vectorize.cli, args, input=jsonl_with('{"id": 20, "vector": [1, 2, 3, 4]}'))
    assert result.exit_code == 0, result.output
    assert len(stored_float32(items)) == N
    bad = CliRunner().invoke(vectorize.cli, args, input=jsonl_with('{"id": 20, "vector": [1, 2, 3]}'))
    assert bad.exit_code == 2 and "line 20: vector has 3 numbers" in bad.stderr


def csv_with(bad_row: str, at: int = 20, delimiter: str = ",") -> str:
    rows = [f"id{delimiter}vector"] + [f'{i}{delimiter}"{json.dumps(GOOD)}"' for i in range(1, N + 1)]
    rows[at] = bad_row  # row `at` is line at + 1
    return "\n".join(rows) + "\n"


CSV_CASES = [
    ('20,"[1, 2, 3]"', "line 21: vector has 3 numbers; the first had 4"),
    ('20,"[1, 2, ""x"", 4]"', 'line 21: vector holds "x", not a number'),
    ('20,"[1, 2, true, 4]"', "line 21: vector holds true, not a number"),
    ('20,"[1, NaN, 3, 4]"', "line 21: vector holds nan, not a finite number"),
    ('20,"[1, 1e39, 3, 4]"', "line 21: vector holds 1e+39, beyond what a float4 holds"),
    ("20,", "line 21: 'vector' must be an array of numbers"),
    ('20,"[1, 2"', "line 21: 'vector' is not a JSON array"),
    # An empty field is the empty string (a text key's, which round trips): an integer key cannot read it.
    (',"[1, 2, 3, 4]"', 'line 21: invalid input syntax for type integer: ""'),
    ('3,"[1, 2, 3, 4]"', "line 21: key 3 repeats line 4"),
    ('x,"[1, 2, 3, 4]"', "line 21: invalid input syntax for type integer"),
]


@pytest.mark.parametrize(
    "name, content, fragment",
    [("v.jsonl", jsonl_with(line), fragment) for line, fragment in JSONL_CASES]
    + [("v.csv", csv_with(row), fragment) for row, fragment in CSV_CASES],
    ids=[f"jsonl-{i}" for i in range(len(JSONL_CASES))] + [f"csv-{i}" for i in range(len(CSV_CASES))],
)
def test_text_validation_names_the_line_and_writes_nothing(run_cli, url, items, tmp_path, parsing, name, content,
                                                           fragment):  # fmt: skip
    path = tmp_path / name
    path.write_text(content)
    before = table_checksum(items, "items")
    result = import_file(run_cli, url, path)
    assert result.exit_code == 2, result.output
    assert f"{name} {fragment}" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert table_checksum(items, "items") == before
    assert items.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'vectorize_import%'").fetchone()[0] == 0


def test_csv_header_delimiters_blank_lines_and_invalid_utf8(run_cli, url, items, tmp_path, parsing):
    path = tmp_path / "v.csv"
    path.write_text("id,other\n1,x\n")
    result = import_file(run_cli, url, path)
    assert result.exit_code == 2 and "v.csv line 1: the header has no column 'vector'" in result.stderr
    path.write_text(csv_with('20;"[1, 2, 3, 4]"', delimiter=";").replace("\n21;", "\n\n21;"))  # ';' and a blank line
    result = import_file(run_cli, url, path)
    assert result.exit_code == 0, result.output
    assert len(stored_float32(items)) == N
    path.write_bytes(csv_with('20,"[1, 2, 3, 4]"').encode().replace(b"\n25,", b"\n\xff25,"))
    result = import_file(run_cli, url, path)
    assert result.exit_code == 2 and "v.csv line 26" in result.stderr, result.output


def test_csv_with_a_line_break_in_a_value_is_read_by_the_exact_reader(run_cli, url, conn, tmp_path, parsing):
    conn.execute("CREATE TABLE notes (code text PRIMARY KEY, body text)")
    conn.execute("INSERT INTO notes SELECT 'c' || g, 'note' FROM generate_series(1, 30) g")
    conn.execute("INSERT INTO notes VALUES (E'two\\nlines', 'note')")
    rows = (
        ["code,vector"] + [f'c{i},"{json.dumps(GOOD)}"' for i in range(1, 31)] + [f'"two\nlines","{json.dumps(GOOD)}"']
    )
    rows.append(f'c5,"{json.dumps(GOOD)}"')  # repeats line 6, after the value spanning lines 32-33
    path = tmp_path / "n.csv"
    path.write_text("\n".join(rows) + "\n")
    result = run_cli("import-vectors", "--url", url, "-t", "notes", "-c", "body", "-f", path)
    assert result.exit_code == 2 and "n.csv line 34: key c5 repeats line 6" in result.stderr, result.output
    path.write_text("\n".join(rows[:-1]) + "\n")
    result = run_cli("import-vectors", "--url", url, "-t", "notes", "-c", "body", "-f", path)
    assert result.exit_code == 0, result.output
    assert conn.execute("SELECT count(body_vector) FROM notes").fetchone()[0] == 31


# -- Parquet ------------------------------------------------------------------------------------


def write_parquet(path, vectors, *, ids=None, kind=None, mutate=None):
    """id int64 and 'vector' (a fixed-size list of float32 unless kind says)."""
    ids = list(range(1, len(vectors) + 1)) if ids is None else ids
    values = [None if v is None else list(v) for v in vectors]
    kind = kind or pa.list_(pa.float32(), DIM)
    if kind.value_type == pa.float32():
        values = [None if v is None else np.asarray(v, dtype=np.float32) for v in values]
    table = pa.table({"id": pa.array(ids, pa.int64()), "vector": pa.array(values, type=kind)})
    pq.write_table(table if mutate is None else mutate(table), path, row_group_size=7)
    return path


@pytest.mark.parametrize(
    "kind",
    [pa.list_(pa.float64()), pa.large_list(pa.float32()), pa.list_(pa.float32(), DIM), pa.list_(pa.float64(), DIM)],
    ids=["list-float64", "large-list-float32", "fixed-float32", "fixed-float64"],
)
def test_parquet_lists_of_floats(run_cli, url, items, tmp_path, kind, monkeypatch):
    monkeypatch.setattr(parquet, "PARQUET_BATCH", 5)
    vectors = awkward(N)
    result = import_file(run_cli, url, write_parquet(tmp_path / "v.parquet", vectors, kind=kind))
    assert result.exit_code == 0, result.output
    expected = vectors.astype(np.float32) if kind.value_type == pa.float32() else vectors.astype(np.float64)
    assert stored_float32(items) == {
        i: v.astype(np.float32).view(np.uint32).tolist() for i, v in enumerate(expected, 1)
    }


def at(row: int, value):
    def mutate(vectors):
        vectors = [list(map(float, v)) for v in vectors]
        vectors[row - 1] = value
        return vectors

    return mutate


@pytest.mark.parametrize(
    "make, kind, fragment",
    [
        (at(13, None), pa.list_(pa.float32()), "v.parquet row 13: vector is null"),
        (at(13, [1.0, 2.0, 3.0]), pa.list_(pa.float32()), "v.parquet row 13: vector has 3 numbers; the first had 4"),
        (at(13, [1.0, None, 3.0, 4.0]), pa.list_(pa.float64()), "v.parquet row 13: vector holds null"),
        (at(13, [1.0, float("nan"), 3.0, 4.0]), pa.list_(pa.float32()), "v.parquet row 13: NaN or infinity"),
        (at(13, [1.0, float("-inf"), 3.0, 4.0]), pa.list_(pa.float64()), "v.parquet row 13: NaN or infinity"),
        (at(13, [1.0, 1e39, 3.0, 4.0]), pa.list_(pa.float64()), "v.parquet row 13: beyond a float4"),
        (at(1, None), pa.list_(pa.float32()), "v.parquet row 1: vector is null"),
        (at(1, []), pa.list_(pa.float32()), "v.parquet row 1: empty vector"),
        (None, pa.list_(pa.int64()), "v.parquet row 1: 'vector' is a list of int64, not of float32 or float64"),
        (None, pa.list_(pa.string()), "v.parquet row 1: 'vector' is a list of string, not of float32"),
        (None, pa.list_(pa.float16()), "v.parquet row 1: 'vector' is a list of halffloat"),
        (None, pa.string(), "v.parquet row 1: 'vector' is string, not a list of float32 or float64"),
    ],
    ids=[
        "null",
        "wrong-length",
        "null-number",
        "nan",
        "inf",
        "beyond-float4",
        "first-null",
        "first-empty",
        "int",
        "string",
        "float16",
        "json-text",
    ],
)
def test_parquet_validation_names_the_row_and_writes_nothing(
    run_cli, url, items, tmp_path, monkeypatch, make, kind, fragment
):
    monkeypatch.setattr(parquet, "PARQUET_BATCH", 5)  # row 13 is in the third batch
    vectors = awkward(N)
    if make is not None:
        values = make(vectors)
    elif kind == pa.string():
        values = [json.dumps(GOOD)] * N
    elif kind.value_type == pa.string():
        values = [[str(x) for x in v] for v in vectors]
    elif kind.value_type == pa.float16():
        values = [np.asarray(GOOD, np.float16)] * N
    else:
        values = [[1, 2, 3, 4]] * N
    table = pa.table({"id": pa.array(range(1, N + 1), pa.int64()), "vector": pa.array(values, type=kind)})
    path = tmp_path / "v.parquet"
    pq.write_table(table, path, row_group_size=7)
    before = table_checksum(items, "items")
    result = import_file(run_cli, url, path)
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert table_checksum(items, "items") == before
    assert items.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'vectorize_import%'").fetchone()[0] == 0


@pytest.mark.parametrize(
    "ids, kind, fragment",
    [
        ([*range(1, 13), None, *range(14, N + 1)], pa.int64(), "v.parquet row 13: key column 'id' is null"),
        ([*range(1, 13), 3, *range(14, N + 1)], pa.int64(), "v.parquet row 13: key 3 repeats row 3"),
        (
            [str(i) for i in range(1, 13)] + ["x"] + [str(i) for i in range(14, N + 1)],
            pa.string(),
            "v.parquet row 13: invalid input syntax for type integer",
        ),  # fmt: skip
    ],
    ids=["null-key", "repeated-key", "unreadable-key"],
)
def test_parquet_keys_are_checked_naming_the_row(run_cli, url, items, tmp_path, monkeypatch, ids, kind, fragment):
    monkeypatch.setattr(parquet, "PARQUET_BATCH", 5)
    vectors = awkward(N)
    table = pa.table({"id": pa.array(ids, kind), "vector": pa.array(list(vectors), type=pa.list_(pa.float32(), DIM))})
    pq.write_table(table, tmp_path / "v.parquet")
    before = table_checksum(items, "items")
    result = import_file(run_cli, url, tmp_path / "v.parquet")
    assert result.exit_code == 2 and fragment in result.stderr, result.output
    assert table_checksum(items, "items") == before


def test_parquet_missing_columns_and_not_parquet(run_cli, url, items, tmp_path):
    pq.write_table(pa.table({"key": [1], "vector": [[1.0, 2.0]]}), tmp_path / "v.parquet")
    result = import_file(run_cli, url, tmp_path / "v.parquet")
    assert result.exit_code == 2 and "v.parquet: no column 'id' (it has key, vector)" in result.stderr
    (tmp_path / "w.parquet").write_text("not parquet")
    result = import_file(run_cli, url, tmp_path / "w.parquet")
    assert result.exit_code == 2 and "w.parquet: not a whole Parquet file" in result.stderr


def test_parquet_text_keys_and_progress(url, conn, tmp_path, monkeypatch):
    monkeypatch.setattr(parquet, "PARQUET_BATCH", 4)
    conn.execute("CREATE TABLE notes (code text, part int, body text, PRIMARY KEY (code, part))")
    keys = [("a,b", 1), ('quote "q"', 2), ("tab\there", 3), ("back\\slash", 4), ("plain", 5), ("ünï", 6)]
    for code, part in keys:
        conn.execute("INSERT INTO notes VALUES (%s, %s, 'x')", (code, part))
    table = pa.table(
        {
            "code": [k[0] for k in keys],
            "part": pa.array([k[1] for k in keys], pa.int32()),
            "vector": pa.array([[float(p), 1.0] for _, p in keys], pa.list_(pa.float64())),
        }
    )
    pq.write_table(table, tmp_path / "n.parquet")
    from vectorize_core import connect

    events = []
    with connect(url) as db:
        result = importer.import_vectors(
            db, table="notes", column="body", file=str(tmp_path / "n.parquet"), progress=events.append
        )
    assert result.updated == 6 and result.missing == 0
    rows = dict(conn.execute("SELECT code, body_vector::text FROM notes").fetchall())
    assert rows == {code: f"[{part},1]" for code, part in keys}
    loading = [e for e in events if e.phase == "loading"]
    assert loading[-1].finished and loading[-1].done == loading[-1].total == 6
    assert any(0 < e.done < 6 and e.total == 6 for e in loading)  # the rows are known up front
