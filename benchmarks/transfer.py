#!/usr/bin/env python3
"""A chunked column between databases, on SciFact (title + text, encoded --chunk by
`benchmarks/ranking.py load`): export-vectors of its chunk records (openings included) to JSON
Lines and Parquet, each imported into a fresh database holding the same table (loaded again from
the corpus), the restored column compared in SQL with the source's (chunk rows, row vectors,
text hashes, contents) and 50 searches compared; then the JSON Lines export with a digit flipped
in 20 random lines (refused, naming them; with --skip-damaged the 20 rows left out) and cut in
half (refused with both counts; with --partial, the rows whose chunks all arrived restored).

    python benchmarks/ranking.py load      # once: the SciFact table, encoded --chunk
    python benchmarks/transfer.py          # prints its figures as JSON (docs/benchmarks.md has them)

The corpus is read in place from ../shared/data/beir (research licence; never copied here).
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BEIR, ROOT, fresh_db, log, server_url  # noqa: E402
from ranking import database, load_table  # noqa: E402

NAME = "scifact"
COLUMN = "title_vector"
QUERIES = 50


def cli(*args: str) -> tuple[subprocess.CompletedProcess, float, float]:
    """One vectorize.py process: its result, wall seconds and peak RSS (MB, by GNU time)."""
    with tempfile.NamedTemporaryFile() as rss:
        started = time.perf_counter()
        done = subprocess.run(
            ["/usr/bin/time", "-o", rss.name, "-f", "%M", sys.executable, str(ROOT / "vectorize.py"), *args],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        peak = int(Path(rss.name).read_text().split()[-1]) / 1024
    return done, wall, peak


def column_state(url: str, skip: list[str] | None = None) -> dict:
    """The chunked column as SQL sees it: digests of its chunk rows, row vectors and hashes, and
    contents (rows in `skip` left out of the first two)."""
    import psycopg
    from psycopg import sql

    skip = skip or []
    with psycopg.connect(url) as conn:
        comment = conn.execute(
            "SELECT col_description(attrelid, attnum) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s",
            (NAME, COLUMN),
        ).fetchone()[0]
        meta = json.loads(comment)["vectorize"]
        cols = {k: sql.Identifier(v) for k, v in meta["chunks"]["columns"].items()}
        digest = "SELECT count(*), md5(string_agg(concat_ws(':', {}), ',' ORDER BY {})) FROM {} WHERE id <> ALL(%s)"
        chunk_rows = conn.execute(
            sql.SQL(digest).format(
                sql.SQL(", ").join(
                    [sql.Identifier("id"), *(cols[k] for k in ("chunk", "start", "end", "hash", "row_hash"))]
                    + [sql.SQL("CAST({} AS text)").format(cols["vector"])]
                ),
                sql.SQL("id, {}").format(cols["chunk"]),
                sql.Identifier(meta["chunks"]["table"]),
            ),
            (skip,),
        ).fetchone()
        rows = conn.execute(
            sql.SQL(digest).format(
                sql.SQL("id, CAST({} AS text), {}").format(
                    sql.Identifier(COLUMN), sql.Identifier(meta["hash"]["column"])
                ),
                sql.SQL("id"),
                sql.Identifier(NAME),
            ),
            (skip,),
        ).fetchone()
        contents = conn.execute(
            sql.SQL(
                "SELECT count(*), md5(string_agg(CAST(content_hash AS text) || CAST(content_vector AS text), ','"
                " ORDER BY content_hash)) FROM {}"
            ).format(sql.Identifier(meta["contents"]["table"]))
        ).fetchone()
    return {"chunks": list(chunk_rows), "rows": list(rows), "contents": list(contents)}


def searches(url: str, queries: list[str]) -> list:
    from vectorize_core import connect
    from vectorize_core.search import search

    with connect(url) as db:
        found = [search(db, q, table=NAME, vector_column=COLUMN, k=10) for q in queries]
    return [[(r["id"], round(r[f.distance_key], 6)) for r in f.rows] for f in found]


def target_database(admin: str, name: str) -> str:
    url = fresh_db(admin, name)
    load_table(url, NAME)
    return url


def import_into(admin: str, name: str, path: Path, *options: str) -> tuple[str, dict]:
    url = target_database(admin, name)
    done, wall, peak = cli("import-vectors", "--url", url, "-f", str(path), *options)
    said = (done.stdout + done.stderr).strip()
    log(said)
    return url, {"exit": done.returncode, "wall_s": round(wall, 1), "peak_rss_mb": round(peak), "said": said}


def summary(said: str) -> str:
    """The line a run ends with: its summary or its error."""
    return next((line for line in said.splitlines() if line.startswith(("Imported", "Error"))), said)


def flip_digits(source: Path, target: Path, count: int, seed: int = 7) -> list[int]:
    """A copy of a JSON Lines export with one digit changed inside the vector of `count` random
    lines (the lines still parse); returns their line numbers."""
    lines = source.read_bytes().split(b"\n")
    chosen = sorted(random.Random(seed).sample(range(len(lines) - 1), count))
    for number in chosen:
        line = lines[number]
        at = line.index(b'"vector": [') + 14
        while not chr(line[at]).isdigit():
            at += 1
        lines[number] = line[:at] + str((int(chr(line[at])) + 1) % 10).encode() + line[at + 1 :]
    target.write_bytes(b"\n".join(lines))
    target.with_name(target.name + ".vectorize.json").write_text(
        source.with_name(source.name + ".vectorize.json").read_text()
    )
    return [n + 1 for n in chosen]


def main() -> dict:
    admin = server_url()
    source = database(admin, NAME)
    queries = [json.loads(line)["text"] for line in open(BEIR / NAME / "queries.jsonl", encoding="utf-8")][:QUERIES]
    expected_state, expected_found = column_state(source), searches(source, queries)
    figures: dict = {"source": expected_state}
    work = Path(tempfile.mkdtemp(prefix="vectorize-transfer-"))
    for fmt in ("jsonl", "parquet"):
        path = work / f"{NAME}.{fmt}"
        done, wall, peak = cli(
            "export-vectors", "--url", source, "-t", NAME, "--vector-column", COLUMN, "-f", str(path)
        )
        if done.returncode:
            raise RuntimeError(done.stderr)
        log(done.stdout.strip())
        records = int(re.search(r"Exported (\d+)", done.stdout).group(1))
        url, imported = import_into(admin, f"bench_transfer_{fmt}", path)
        figures[fmt] = {
            "records": records,
            "export_wall_s": round(wall, 1),
            "export_peak_rss_mb": round(peak),
            "file_mb": round(path.stat().st_size / 2**20, 1),
            "import": {k: v for k, v in imported.items() if k != "said"},
            "same_state": column_state(url) == expected_state,
            "same_searches": searches(url, queries) == expected_found,
        }
        log(json.dumps(figures[fmt]))
    damaged = work / "damaged.jsonl"
    flipped = flip_digits(work / f"{NAME}.jsonl", damaged, 20)
    _, refused = import_into(admin, "bench_transfer_damaged", damaged)
    url, skipped = import_into(admin, "bench_transfer_damaged", damaged, "--skip-damaged")
    figures["damaged"] = {
        "lines_flipped": flipped,
        "refused_exit": refused["exit"],
        "refusal_names_all": all(str(n) in refused["said"] for n in flipped[:5])
        and "20 damaged lines" in refused["said"],
        "skip_exit": skipped["exit"],
        "skip_said": summary(skipped["said"]),
    }
    cut = work / "cut.jsonl"
    data = (work / f"{NAME}.jsonl").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    cut.with_name("cut.jsonl.vectorize.json").write_text((work / f"{NAME}.jsonl.vectorize.json").read_text())
    _, refused = import_into(admin, "bench_transfer_cut", cut)
    url, partial = import_into(admin, "bench_transfer_cut", cut, "--partial")
    figures["cut"] = {
        "refused": summary(refused["said"]),
        "partial_exit": partial["exit"],
        "partial_said": summary(partial["said"]),
    }
    log(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
