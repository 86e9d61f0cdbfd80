"""import-vectors on keys compared in their own type, values beyond float4, files as spreadsheets
write them, and bounded transactions. Real embedded PostgreSQL."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import table_checksum
from vectorize_core import connect, importer
from vectorize_core.db import Database


def stored(conn) -> dict:
    return {i: None if v is None else json.loads(v) for i, v in conn.execute("SELECT id, body_vector::text FROM items")}


def run_import(run_cli, url, path, *extra):
    return run_cli("import-vectors", "--url", url, "-t", "items", "-c", "body", "--file", path, *extra)


def one_line(result, *fragments):
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def test_keys_equal_in_their_type_are_one_key(run_cli, url, items, tmp_path):
    path = tmp_path / "v.jsonl"
    path.write_text('{"id": 1, "vector": [1, 2]}\n{"id": "01", "vector": [3, 4]}\n')
    before = table_checksum(items, "items")
    one_line(run_import(run_cli, url, path), "v.jsonl line 2", "line 1")
    assert table_checksum(items, "items") == before


def test_a_key_the_type_cannot_read_names_its_line(run_cli, url, items, tmp_path):
    path = tmp_path / "v.jsonl"
    path.write_text('{"id": 1, "vector": [1, 2]}\n\n{"id": "abc", "vector": [3, 4]}\n')
    before = table_checksum(items, "items")
    one_line(run_import(run_cli, url, path), "v.jsonl line 3", "abc")
    assert table_checksum(items, "items") == before


def test_whole_numbers_written_as_floats_are_integer_keys(run_cli, url, items, tmp_path):
    path = tmp_path / "v.jsonl"
    path.write_text('{"id": 1.0, "vector": [1, 2]}\n{"id": 2, "vector": [3, 4]}\n')
    assert run_import(run_cli, url, path).exit_code == 0
    assert stored(items)[1] == [1, 2]


@pytest.mark.parametrize("value", ["1e39", "-1e39"])
def test_values_beyond_float4_are_refused_with_their_line(run_cli, url, items, tmp_path, value):
    path = tmp_path / "v.jsonl"
    path.write_text(f'{{"id": 1, "vector": [1, 2]}}\n{{"id": 2, "vector": [{value}, 4]}}\n')
    before = table_checksum(items, "items")
    one_line(run_import(run_cli, url, path), "v.jsonl line 2", "float4")
    assert table_checksum(items, "items") == before


def test_npy_beyond_float4_is_refused(run_cli, url, items, tmp_path):
    np.save(tmp_path / "v.npy", np.array([[1.0, 2.0], [1e39, 0.0]], dtype=np.float64))
    (tmp_path / "k.jsonl").write_text('{"id": 1}\n{"id": 2}\n')
    one_line(run_import(run_cli, url, tmp_path / "v.npy", "--keys", tmp_path / "k.jsonl"), "row 2", "float4")


@pytest.mark.parametrize(
    "content",
    [
        '\ufeffid,vector\r\n1,"[1, 2]"\r\n2,"[3, 4]"\r\n',  # Excel's CSV UTF-8: a BOM and CRLF
        "id;vector\n1;[1, 2]\n2;[3, 4]\n",  # European Excel: semicolons
        "id\tvector\n1\t[1, 2]\n2\t[3, 4]\n",  # tab separated
    ],
    ids=["bom-crlf", "semicolon", "tab"],
)
def test_spreadsheet_exports(run_cli, url, items, tmp_path, content):
    path = tmp_path / "v.csv"
    path.write_bytes(content.encode())
    result = run_import(run_cli, url, path)
    assert result.exit_code == 0, result.output
    assert stored(items)[1] == [1, 2] and stored(items)[2] == [3, 4]


def test_the_update_runs_in_bounded_batches(url, items, tmp_path, monkeypatch):
    monkeypatch.setattr(importer, "UPDATE_BATCH", 6)
    path = tmp_path / "v.jsonl"
    path.write_text("".join(json.dumps({"id": i, "vector": [i, -i]}) + "\n" for i in range(1, 21)))
    statements = []
    original = Database.command

    def command(self, query, params=None, **kw):  # on every connection: the batches run on two
        statements.append(self.as_string(query) if not isinstance(query, str) else query)
        return original(self, query, params, **kw)

    monkeypatch.setattr(Database, "command", command)
    with connect(url) as db:
        result = importer.import_vectors(db, table="items", column="body", file=str(path))
    assert result.updated == 20
    assert sum(s.startswith("UPDATE") for s in statements) == 4  # 6 + 6 + 6 + 2
    assert all(v == [i, -i] for i, v in stored(items).items())
