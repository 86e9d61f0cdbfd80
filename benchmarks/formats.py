#!/usr/bin/env python3
"""Vectors in and out by format, at a million rows, through the CLI (#25).

    python benchmarks/formats.py                     # 1,000,000 x 384; writes its section of docs/benchmarks.md
    python benchmarks/formats.py --rows 20000        # a quick look (not for the report)
    python benchmarks/formats.py --only in:jsonl     # one measurement: in:npy, in:jsonl, in:csv,
                                                     # in:parquet, out (all four), roundtrip, parsers

Each measurement is a new `vectorize.py` process timed from outside, with its peak RSS from GNU
time, as row 9b of benchmarks/run.py measures import-vectors (whose helpers this reuses): in, the
load of each format into a fresh million-row table (--index skip: the load, not the HNSW build);
out, `export-vectors` of that column to each format; then the round trip: the Parquet export
imported with no other option into a fresh database, its stored vectors compared in SQL with the
source's (an md5 over every vector's text in key order) and exact searches on both compared.
Runs on the benchmarks' private embedded PostgreSQL (.bench/), one measurement at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    BENCH_DIR,
    ROOT,
    embedding_like,
    fresh_db,
    log,
    psql,
    run_import_cli,
    server_url,
    write_vector_files,
)

OUT_FORMATS = ["parquet", "jsonl", "csv", "npy"]
MARK_START, MARK_END = "<!-- formats: benchmarks/formats.py -->", "<!-- /formats -->"


def write_parquet(npy: Path, path: Path) -> None:
    """The .npy's vectors with their ids as Parquet (id int64, vector fixed-size list of float32),
    100,000 rows a row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.load(npy, mmap_mode="r")
    n, dim = vectors.shape
    schema = pa.schema([("id", pa.int64()), ("vector", pa.list_(pa.float32(), dim))])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, n, 100_000):
            chunk = np.ascontiguousarray(vectors[start : start + 100_000])
            flat = pa.FixedSizeListArray.from_arrays(pa.array(chunk.reshape(-1)), dim)
            writer.write_batch(pa.record_batch([pa.array(np.arange(start, start + len(chunk))), flat], schema=schema))


def vector_files(directory: Path, n: int) -> dict[str, Path]:
    """run.py's 9b files (v.npy + k.jsonl, v.jsonl, v.csv) and v.parquet, made unless the
    directory holds them for n rows already."""
    directory.mkdir(parents=True, exist_ok=True)
    names = ("v.npy", "k.jsonl", "v.jsonl", "v.csv", "v.parquet")
    paths = {name: directory / name for name in names}
    made = paths["v.npy"].exists() and np.load(paths["v.npy"], mmap_mode="r").shape[0] == n
    if not (made and all(p.exists() for p in paths.values())):
        started = time.perf_counter()
        paths.update(write_vector_files(directory, n))
        write_parquet(paths["v.npy"], paths["v.parquet"])
        log(f"wrote the vector files in {time.perf_counter() - started:.0f}s")
    return paths


def make_table(url: str, table: str, n: int) -> None:
    from psycopg import sql

    ident = sql.Identifier(table)
    with psql(url) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, body text)").format(ident))
        conn.execute(
            sql.SQL("INSERT INTO {} SELECT g, 'row ' || g FROM generate_series(0, %s) g").format(ident), (n - 1,)
        )
        conn.execute(sql.SQL("ANALYZE {}").format(ident))


def drop_table(url: str, table: str) -> None:
    from psycopg import sql

    with psql(url) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def timed_cli(args: list[str], directory: Path) -> dict:
    """One `vectorize.py` process (any command), timed from outside, peak RSS from GNU time; the
    figures of its summary line ('... in 12.3s (81234 rows/s)')."""
    rss_file = directory / "rss"
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-o", str(rss_file), "-f", "%M", sys.executable, str(ROOT / "vectorize.py"), *args],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {done.stderr.strip()}")
    log(done.stderr.strip() + "\n" + done.stdout.strip())
    found = re.search(r" in ([\d.]+)s \((\d+) rows/s\)", done.stdout)
    return {
        "wall_s": wall,
        "seconds": float(found.group(1)),
        "rows_s": float(found.group(2)),
        "peak_rss_mb": int(rss_file.read_text().split()[-1]) / 1024,
        "summary": done.stdout.strip(),
    }


def digest(url: str, table: str) -> tuple[int, str]:
    """The stored vectors compared in SQL: md5 of every vector's text (the shortest text of each
    float4), in key order."""
    from psycopg import sql

    with psql(url) as conn:
        return conn.execute(
            sql.SQL(
                "SELECT count(body_vector), md5(string_agg(id || ':' || md5(body_vector::text), ',' ORDER BY id)) FROM {}"
            ).format(sql.Identifier(table))
        ).fetchone()


def exact_search(url: str, table: str, query: np.ndarray) -> list:
    done = subprocess.run(
        [sys.executable, str(ROOT / "vectorize.py"), "search", "--url", url, "-t", table, "--exact", "-k", "10",
         "--json", "--query-vector", json.dumps(query.tolist())],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [(r["id"], r["distance"]) for r in json.loads(done.stdout)]


def when() -> dict:
    """When a measurement ended, and the machine's load then (other work shares its cores)."""
    return {"at": time.strftime("%Y-%m-%d %H:%M"), "load_1min": os.getloadavg()[0]}


def measure_in(url: str, name: str, paths: dict[str, Path], directory: Path, n: int) -> dict:
    table = f"formats_{name}"
    make_table(url, table, n)
    args = {
        "npy": ["-f", str(paths["v.npy"]), "--keys", str(paths["k.jsonl"])],
        "jsonl": ["-f", str(paths["v.jsonl"])],
        "csv": ["-f", str(paths["v.csv"])],
        "parquet": ["-f", str(paths["v.parquet"])],
    }[name]
    run = run_import_cli(url, table, [*args, "--index", "skip"], directory)
    run["file_mb"] = Path(args[1]).stat().st_size / 2**20
    run.update(when())
    log(f"in {name}: {run['load_rows_s']:,.0f} rows/s, RSS {run['peak_rss_mb']:.0f} MB")
    return run


def measure_out(url: str, table: str, directory: Path) -> dict:
    out = {}
    for name in OUT_FORMATS:
        path = directory / f"export.{name}"
        run = timed_cli(["export-vectors", "--url", url, "-t", table, "-f", str(path)], directory)
        run["file_mb"] = path.stat().st_size / 2**20
        run.update(when())
        out[name] = run
        log(f"out {name}: {run['rows_s']:,.0f} rows/s, RSS {run['peak_rss_mb']:.0f} MB, {run['file_mb']:,.0f} MB")
        if name != "parquet":  # the Parquet export is kept for the round trip
            for f in directory.glob("export.*"):
                if f.suffix != ".parquet":
                    f.unlink()
    return out


def measure_roundtrip(admin: str, url: str, table: str, directory: Path, n: int) -> dict:
    path = directory / "export.parquet"
    if not path.exists():
        timed_cli(["export-vectors", "--url", url, "-t", table, "-f", str(path)], directory)
    other = fresh_db(admin, "bench_formats_restored")
    make_table(other, table, n)
    run = timed_cli(["import-vectors", "--url", other, "-f", str(path), "--index", "skip"], directory)
    source, restored = digest(url, table), digest(other, table)
    queries = embedding_like(5, seed=4242)
    same_search = all(exact_search(url, table, q) == exact_search(other, table, q) for q in queries)
    log(f"round trip: {source} vs {restored}; the same exact search results: {same_search}")
    return {
        "import": run,
        "source_digest": list(source),
        "restored_digest": list(restored),
        "identical_vectors": source == restored and source[0] == n,
        "identical_search": same_search,
        "queries": len(queries),
        **when(),
    }


def measure_parsers(url: str, jsonl: Path, lines: int = 20_000) -> dict:
    """The options for JSON Lines, on its first lines: CPU microseconds a line for each parser
    (to float32 rows), and the rows a second of the server parsing the vectors' text itself
    (text COPY into a vector column, which is the whole cost there)."""
    import orjson
    import pyarrow.json as pa_json
    import simdjson

    with open(jsonl, "rb") as f:
        raw = [f.readline() for _ in range(lines)]

    def simd(line):
        doc = simdjson.Parser().parse(line)
        return np.frombuffer(doc["vector"].as_buffer(of_type="d"), np.float64)

    parsers = {
        "json (standard library)": lambda: np.array([json.loads(x)["vector"] for x in raw], np.float32),
        "orjson": lambda: np.array([orjson.loads(x)["vector"] for x in raw], np.float32),
        "pyarrow.json": lambda: pa_json.read_json(__import__("io").BytesIO(b"".join(raw))),
        "simdjson (as_buffer)": lambda: np.array([simd(x) for x in raw], np.float32),
    }
    out = {}
    for name, parse in parsers.items():
        started = time.process_time()
        parse()
        out[name] = (time.process_time() - started) / lines * 1e6
    texts = b"".join(b"%d\t%s\n" % (i, x[x.index(b"[") : x.rindex(b"]") + 1]) for i, x in enumerate(raw))
    with psql(url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE TEMPORARY TABLE parse_probe (line int8, vec vector(384))")
        started = time.perf_counter()
        with conn.cursor().copy("COPY parse_probe (line, vec) FROM STDIN") as copy:
            copy.write(texts)
        server = lines / (time.perf_counter() - started)
    log(f"parsers (us a line): {out}; the server parsing the text: {server:,.0f} rows/s")
    return {"us_per_line": out, "server_text_rows_s": server, "lines": lines, **when()}


def section(f: dict) -> str:
    """The Markdown section of docs/benchmarks.md for these figures."""
    rows = f["rows"]
    lines = [
        MARK_START,
        "## Vectors in and out by format (`benchmarks/formats.py`)",
        "",
        f"{rows:,} x 384 float32 (embedding-like, as in 9b), each a new `vectorize.py` process; rows/s from its "
        "summary (the load: everything but the index build, `--index skip`), peak RSS from GNU time.",
        "",
        "| format | in: rows/s | in: peak RSS | file | out: rows/s | out: peak RSS | file |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ["npy", "jsonl", "csv", "parquet"]:
        i, o = f.get("in", {}).get(name), f.get("out", {}).get(name)
        cells = (
            [f"{i['load_rows_s']:,.0f}", f"{i['peak_rss_mb']:.0f} MB", f"{i['file_mb']:,.0f} MB"] if i else ["-"] * 3
        )
        cells += [f"{o['rows_s']:,.0f}", f"{o['peak_rss_mb']:.0f} MB", f"{o['file_mb']:,.0f} MB"] if o else ["-"] * 3
        label = {"npy": ".npy + keys", "jsonl": "JSON Lines", "csv": "CSV", "parquet": "Parquet"}[name]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    phases = [
        f"{name}: " + ", ".join(f"{p} {s:.1f} s" for p, s in f["in"][name]["phases_s"].items())
        for name in f.get("in", {})
        if f["in"][name].get("phases_s")
    ]
    if phases:
        lines += ["", "Phases of the loads: " + "; ".join(phases) + "."]
    runs = [
        f"{way} {name} {r['at']} (load {r['load_1min']:.1f})"
        for way in ("in", "out")
        for name, r in f.get(way, {}).items()
        if "at" in r
    ]
    if runs:
        lines += [
            "",
            "Runs, each ended at (the machine's 1-minute load average then, 2 cores): " + "; ".join(runs) + ".",
        ]
    if "parsers" in f:
        pa = f["parsers"]
        each = ", ".join(f"{name} {us:.1f}" for name, us in pa["us_per_line"].items())
        lines += [
            "",
            f"The options for JSON Lines, on its first {pa['lines']:,} lines (CPU microseconds a line of 384 numbers, "
            f"to float32 rows, all threads): {each}; the server parsing the vectors' text itself (text COPY into a "
            f"vector column): {pa['server_text_rows_s']:,.0f} rows/s on its one core. import-vectors uses "
            "simdjson, in worker processes for a large file, and sends float4 by binary COPY.",
        ]
    if "roundtrip" in f:
        rt = f["roundtrip"]
        lines += [
            "",
            f"Round trip: the Parquet export imported with no other option into a fresh database "
            f"({rt['import']['rows_s']:,.0f} rows/s): stored vectors identical in SQL: **{rt['identical_vectors']}** "
            f"({rt['source_digest'][0]:,} vectors, md5 {rt['source_digest'][1]}); the same results for "
            f"{rt['queries']} exact searches: **{rt['identical_search']}**.",
        ]
    if f.get("quick"):
        lines += ["", "A quick run: fewer rows than the report's."]
    lines += [MARK_END, ""]
    return "\n".join(lines)


def write_section(figures: dict, path: Path) -> None:
    text = path.read_text() if path.exists() else ""
    if MARK_START in text:
        head, rest = text.split(MARK_START, 1)
        text = head + section(figures) + rest.split(MARK_END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section(figures)
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--only", help="comma-separated: in:npy,in:jsonl,in:csv,in:parquet,out,roundtrip,parsers")
    parser.add_argument("--files", metavar="DIR", help="keep the input files here and reuse them next time")
    parser.add_argument("--out", help="figures file  [default: docs/benchmarks.json; .bench/ for fewer rows]")
    args = parser.parse_args()
    quick = args.rows < 1_000_000
    args.out = args.out or str(BENCH_DIR / "formats-quick.json" if quick else ROOT / "docs" / "benchmarks.json")
    steps = args.only.split(",") if args.only else [
        "in:npy", "in:jsonl", "in:csv", "in:parquet", "out", "roundtrip", "parsers"
    ]  # fmt: skip
    n = args.rows
    admin = server_url()
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    figures = results.get("formats", {}) if results.get("formats", {}).get("rows") == n else {}
    figures.update(rows=n, quick=quick)
    url = admin.replace("/postgres?", "/bench_formats?")  # as the in: steps left it
    with tempfile.TemporaryDirectory(dir=BENCH_DIR) as tmp:
        directory = Path(tmp)
        if any(s.startswith("in:") for s in steps):
            url = fresh_db(admin, "bench_formats")
            paths = vector_files(Path(args.files) if args.files else directory, n)
            for step in steps:
                if step.startswith("in:"):
                    name = step[3:]
                    figures.setdefault("in", {})[name] = measure_in(url, name, paths, directory, n)
                    if name != "parquet":
                        drop_table(url, f"formats_{name}")  # the disk for the next one
        table = "formats_parquet"  # the Parquet import is the column exported
        if "out" in steps:
            figures["out"] = measure_out(url, table, directory)
        if "parsers" in steps:
            figures["parsers"] = measure_parsers(url, Path(args.files or directory) / "v.jsonl")
        if "roundtrip" in steps:
            figures["roundtrip"] = measure_roundtrip(admin, url, table, directory, n)
    # Read again: other benchmarks may have written their figures to the file meanwhile.
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    results["formats"] = figures
    Path(args.out).write_text(json.dumps(results, indent=2, default=float))
    if not quick:
        write_section(figures, ROOT / "docs" / "benchmarks.md")
        log("wrote its section of docs/benchmarks.md")
    else:
        print(section(figures))


if __name__ == "__main__":
    tempfile.tempdir = str(BENCH_DIR)
    main()
