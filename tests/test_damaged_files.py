"""Vectors arrive whole or not at all: an export carries each row's check and its row count, and
import-vectors refuses a damaged, cut or partial file (exit 2, one line naming the file and what
is wrong, the table untouched) unless told to skip the damaged rows (--skip-damaged, which names
them) or that a partial file is meant (--partial, which says both counts). A file with no checks
still has its vectors' lengths checked. Real files on disk, damaged the ways files are: a flipped
digit, a changed key, bytes overwritten, a file cut short or mid-line; real embedded PostgreSQL."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from conftest import table_checksum

N = 200
DIM = 8
FORMATS = ["jsonl", "csv", "parquet", "npy"]


def vectors_of(n: int = N, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


@pytest.fixture
def exported(run_cli, url, conn, tmp_path):
    """Table `passage` with N vectors imported from a file, and an empty twin `twin` to import
    exports into; returns export(fmt) -> the exported file's path."""
    for table in ("passage", "twin"):
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
        conn.execute(f"INSERT INTO {table} SELECT g, 'passage ' || g FROM generate_series(1, %s) g", (N,))
    source = tmp_path / "source.jsonl"
    write_jsonl(source, vectors_of())
    loaded = run_cli("import-vectors", "--url", url, "-t", "passage", "-c", "body", "-f", source)
    assert loaded.exit_code == 0, loaded.output

    def export(fmt: str):
        path = tmp_path / f"passage.{fmt}"
        result = run_cli("export-vectors", "--url", url, "-t", "passage", "-f", path)
        assert result.exit_code == 0, result.output
        return path

    return export


def write_jsonl(path, vectors: np.ndarray, start: int = 1) -> None:
    with open(path, "w") as f:
        for i, v in enumerate(vectors, start):
            f.write(json.dumps({"id": i, "vector": v.tolist()}) + "\n")


def import_into_twin(run_cli, url, path, *options):
    return run_cli("import-vectors", "--url", url, "-t", "twin", "-f", path, *options)


def twin_vectors(conn) -> dict[int, np.ndarray]:
    found = conn.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'twin' AND column_name = 'body_vector'"
    ).fetchone()[0]
    if not found:
        return {}
    rows = conn.execute("SELECT id, body_vector::text FROM twin WHERE body_vector IS NOT NULL").fetchall()
    return {k: np.array(json.loads(v), np.float32) for k, v in rows}


def refused(result, *words: str) -> str:
    """The one line a refusal prints, checked for exit 2, no traceback, and the words given."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def flip_digit(line: str) -> str:
    """A digit inside the line's first vector value changed: the line still parses."""
    start = line.index('"vector": [') + len('"vector": [') if '"vector": [' in line else line.index("[") + 1
    at = next(i for i in range(start + 3, len(line)) if line[i].isdigit())
    return line[:at] + str((int(line[at]) + 1) % 10) + line[at + 1 :]


def damage_text_file(path, line: int, how) -> None:
    lines = path.read_text().split("\n")
    lines[line - 1] = how(lines[line - 1])
    path.write_text("\n".join(lines))


# -- a file that still parses, with a flipped digit, a changed key, a value made 1.3e24 -----------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_flipped_digit_is_refused_naming_the_line_and_the_table_is_untouched(run_cli, url, conn, exported, fmt):
    path = exported(fmt)
    line = 51 if fmt == "jsonl" else 52  # the same row: the CSV has a header line
    damage_text_file(path, line, flip_digit)
    before = table_checksum(conn, "twin")
    message = refused(import_into_twin(run_cli, url, path), path.name, f"line {line}", "check does not match")
    assert "--skip-damaged" in message
    assert table_checksum(conn, "twin") == before


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_value_made_huge_in_a_file_that_parses_is_caught_by_its_check(run_cli, url, conn, exported, fmt):
    path = exported(fmt)
    line = 81 if fmt == "jsonl" else 82
    damage_text_file(path, line, lambda text: text.replace(",", "e24,", 2).replace("e24,", ",", 1))
    before = table_checksum(conn, "twin")
    refused(import_into_twin(run_cli, url, path), f"line {line}", "check does not match")
    assert table_checksum(conn, "twin") == before


def test_a_changed_key_is_damage_not_a_repeated_key(run_cli, url, conn, exported):
    path = exported("jsonl")
    damage_text_file(path, 5, lambda text: text.replace('{"id": 5,', '{"id": 6,'))
    refused(import_into_twin(run_cli, url, path), "line 5", "check does not match")
    assert twin_vectors(conn) == {}


def test_a_damaged_or_missing_check_is_damage(run_cli, url, conn, exported):
    path = exported("jsonl")
    damage_text_file(path, 7, lambda text: text.replace('"crc32": ', '"crc32": 1'))
    damage_text_file(path, 9, lambda text: text[: text.index(', "crc32"')] + "}")
    refused(import_into_twin(run_cli, url, path), "2 damaged lines", "lines 7 and 9")


@pytest.mark.parametrize("fmt", FORMATS)
def test_skip_damaged_imports_the_others_bit_for_bit_and_names_the_damaged(run_cli, url, conn, exported, fmt, tmp_path):
    path = exported(fmt)
    damaged_ids = damage_rows(path, fmt, [13, 150])
    result = import_into_twin(run_cli, url, path, "--skip-damaged")
    assert result.exit_code == 0, result.output
    assert "2 damaged" in result.output and "left out" in result.output, result.output
    stored = twin_vectors(conn)
    original = vectors_of()
    assert sorted(stored) == [i for i in range(1, N + 1) if i not in damaged_ids]
    for key, vector in stored.items():
        assert vector.tobytes() == original[key - 1].tobytes()


def damage_rows(path, fmt: str, ids: list[int]) -> set[int]:
    """Rows of these keys given another value in a way the format still reads; returns the keys."""
    if fmt in ("jsonl", "csv"):
        for key in ids:
            damage_text_file(path, key + (fmt == "csv"), flip_digit)
        return set(ids)
    if fmt == "npy":
        data = np.load(path)
        for key in ids:
            data[key - 1, 2] = np.float32(1.3e24)
        with open(path, "r+b") as f:  # the same header, the data rewritten in place
            f.seek(-data.nbytes, 2)
            f.write(data.astype("<f4").tobytes())
        return set(ids)
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    vectors = np.array(table.column("vector").to_pylist(), np.float32)
    for key in ids:
        vectors[key - 1, 2] = np.float32(1.3e24)
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM)
    table = table.set_column(table.schema.get_field_index("vector"), table.schema.field("vector"), column)
    pq.write_table(table, path)  # the schema (and the record in its metadata) kept
    return set(ids)


# -- damaged and cut Parquet ----------------------------------------------------------------------


def test_a_parquet_file_cut_in_half_is_refused_naming_the_file(run_cli, url, conn, exported):
    path = exported("parquet")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    refused(import_into_twin(run_cli, url, path), path.name, "not a whole Parquet file")
    assert twin_vectors(conn) == {}


@pytest.mark.parametrize("where", [0.1, 0.3, 0.5, 0.6, 0.8])
def test_a_parquet_file_with_bytes_overwritten_is_refused_naming_the_file(run_cli, url, conn, exported, where):
    path = exported("parquet")
    data = bytearray(path.read_bytes())
    at = int(len(data) * where)
    data[at : at + 16] = bytes(range(16))
    path.write_bytes(bytes(data))
    before = table_checksum(conn, "twin")
    line = refused(import_into_twin(run_cli, url, path), path.name)
    assert "unexpected" not in line
    assert table_checksum(conn, "twin") == before


# -- files cut short, whole or mid-line -----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_file_cut_short_says_both_counts_and_partial_imports_what_it_holds(run_cli, url, conn, exported, fmt):
    path = exported(fmt)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: 100 + (fmt == "csv")]))
    refused(import_into_twin(run_cli, url, path), path.name, "holds 100 of the 200", "--partial")
    assert twin_vectors(conn) == {}
    result = import_into_twin(run_cli, url, path, "--partial")
    assert result.exit_code == 0, result.output
    assert "100 of the 200" in result.output
    stored = twin_vectors(conn)
    assert sorted(stored) == list(range(1, 101))
    assert all(v.tobytes() == vectors_of()[k - 1].tobytes() for k, v in stored.items())


def test_a_file_cut_mid_line_says_so_and_partial_keeps_its_whole_lines(run_cli, url, conn, exported):
    path = exported("jsonl")
    data = path.read_bytes()
    cut = data.index(b"\n", len(data) // 2) + 30  # 30 bytes into a line
    path.write_bytes(data[:cut])
    whole = data[:cut].count(b"\n")
    refused(import_into_twin(run_cli, url, path), f"holds {whole} of the 200", "last line is cut off")
    result = import_into_twin(run_cli, url, path, "--partial")
    assert result.exit_code == 0, result.output
    assert sorted(twin_vectors(conn)) == list(range(1, whole + 1))


def test_a_file_with_more_rows_than_its_record_says_is_refused(run_cli, url, conn, exported):
    path = exported("jsonl")
    with open(path, "a") as f:
        f.write(json.dumps({"id": 1, "vector": [0.5] * DIM}) + "\n")
    refused(import_into_twin(run_cli, url, path), "holds 201", "its export record says 200")


def test_a_cut_npy_is_refused(run_cli, url, conn, exported):
    path = exported("npy")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    refused(import_into_twin(run_cli, url, path), path.name, "ends before")


# -- files with no checks: lengths, NaN, lines that cannot be read ---------------------------------


def test_a_vector_of_absurd_length_is_refused_in_a_file_with_no_checks(run_cli, url, conn, tmp_path):
    conn.execute("CREATE TABLE twin (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO twin SELECT g, 'passage ' || g FROM generate_series(1, %s) g", (N,))
    vectors = vectors_of()
    vectors[80, 3] = 1.3e24  # fits a float4: only its length tells
    vectors[90, 2] = 3e6  # a flipped exponent bit of a value near 0.05 makes about this
    path = tmp_path / "own.jsonl"
    write_jsonl(path, vectors)
    run = ("import-vectors", "--url", url, "-t", "twin", "-c", "body", "-f", path)
    refused(
        run_cli(*run), "2 damaged lines", "line 81: its length overflows float4 distances",
        "line 91: its length is over 1,000 times the file's typical",
    )  # fmt: skip
    assert twin_vectors(conn) == {}
    # The database is as it was: not even pgvector, which the refused import had installed.
    assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone()[0] == 0
    result = run_cli(*run, "--skip-damaged")
    assert result.exit_code == 0, result.output
    assert sorted(twin_vectors(conn)) == [i for i in range(1, N + 1) if i not in (81, 91)]


def test_vectors_of_ordinary_spread_lengths_are_not_damage(run_cli, url, conn, tmp_path):
    """Unnormalised vectors whose lengths differ a hundredfold are users' data, not damage."""
    conn.execute("CREATE TABLE twin (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO twin SELECT g, 'passage ' || g FROM generate_series(1, %s) g", (N,))
    vectors = vectors_of() * np.geomspace(0.1, 10, N, dtype=np.float32)[:, None]
    path = tmp_path / "own.jsonl"
    write_jsonl(path, vectors)
    result = run_cli("import-vectors", "--url", url, "-t", "twin", "-c", "body", "-f", path)
    assert result.exit_code == 0, result.output
    assert len(twin_vectors(conn)) == N


def test_skip_damaged_leaves_out_lines_that_cannot_be_read(run_cli, url, conn, exported):
    path = exported("jsonl")
    damage_text_file(path, 20, lambda text: text.replace("[", "[x", 1))
    damage_text_file(path, 30, lambda text: text.replace("]", ", NaN]", 1))
    refused(import_into_twin(run_cli, url, path), "line 20")
    result = import_into_twin(run_cli, url, path, "--skip-damaged")
    assert result.exit_code == 0, result.output
    assert "left out 2 damaged lines (line 20: " in result.output and "line 30: vector holds nan" in result.output
    assert sorted(twin_vectors(conn)) == [i for i in range(1, N + 1) if i not in (20, 30)]


# -- what an export carries -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_row_of_an_export_carries_its_check_and_the_record_its_count(run_cli, url, exported, fmt):
    """The check is one anyone can compute: zlib's CRC-32 of the key text, then the float4 bytes."""
    path = exported(fmt)
    original = vectors_of()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        rows = zip(table.column("id").to_pylist(), table.column("crc32").to_pylist(), strict=True)
        assert pq.ParquetFile(path).metadata.num_rows == N
    else:
        record = json.loads(path.with_name(path.name + ".vectorize.json").read_text())
        assert record["rows"] == N and record["check"]["field"] == "crc32"
        if fmt == "csv":
            import csv

            with path.open() as f:
                rows = [(int(r["id"]), int(r["crc32"])) for r in csv.DictReader(f)]
        else:
            keys = path.with_name("passage.keys.jsonl") if fmt == "npy" else path
            rows = [(o["id"], o["crc32"]) for o in map(json.loads, keys.read_text().splitlines())]
    for key, check in rows:
        assert check == zlib.crc32(original[key - 1].astype("<f4").tobytes(), zlib.crc32(str(key).encode()))


def test_an_npy_exports_keys_rewritten_as_csv_still_verify(run_cli, url, conn, exported):
    """The checks are values, not text: a keys file turned into CSV (checks as text) verifies."""
    path = exported("npy")
    keys = path.with_name("passage.keys.jsonl")
    rows = [json.loads(line) for line in keys.read_text().splitlines()]
    csv_keys = path.with_name("passage.keys.csv")
    csv_keys.write_text("id,crc32\n" + "".join(f"{r['id']},{r['crc32']}\n" for r in rows))
    result = import_into_twin(run_cli, url, path, "--keys", csv_keys)
    assert result.exit_code == 0, result.output
    assert len(twin_vectors(conn)) == N
