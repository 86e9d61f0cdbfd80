#!/usr/bin/env python3
"""Benchmarks of vectorize.py on this machine, side by side with the bare way to the same end.

    python benchmarks/run.py                  # everything; writes docs/benchmarks.md
    python benchmarks/run.py --only write,startup --quick

Runs on a private embedded PostgreSQL (in .bench/). Real data is read in place from
../shared/data/beir (never copied into the project).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from common import (  # benchmarks/common.py, which puts the project on sys.path
    BEIR,
    BENCH_DIR,
    ROOT,
    embedding_like,
    fresh_db,
    log,
    pct,
    psql,
    run_import_cli,
    server_url,
    timed_with_recall,
    write_vector_files,
)

PUBLISHED_NFCORPUS_NDCG10 = 0.31594  # MTEB, sentence-transformers/all-MiniLM-L6-v2, NFCorpus test

import modules  # noqa: E402
from vectorize_core import connect, encode  # noqa: E402
from vectorize_core.dialects import vector_literal  # noqa: E402
from vectorize_core.search import emit_sql, ranked_rows, search, search_spec  # noqa: E402
from vectorize_core.target import resolve_for_search  # noqa: E402


def corpus_texts(n: int) -> list[str]:
    """n texts of 20-120 words from NFCorpus and SciFact documents (deterministic lengths)."""
    rng = np.random.default_rng(0)
    texts = []
    for name in ("nfcorpus", "scifact"):
        with open(BEIR / name / "corpus.jsonl", encoding="utf-8") as f:
            for line in f:
                words = json.loads(line)["text"].split()
                if len(words) >= 20:
                    texts.append(" ".join(words[: int(rng.integers(20, 121))]))
                if len(texts) == n:
                    return texts
    return texts


class Fixed384:
    """The trivial in-process encoder of the write-path benchmark: the same vector for every row."""

    name = "fixed384"
    description = "benchmark encoder: one fixed 384-dimensional vector"
    dimension = 384
    metric = "cosine"
    _vector = np.random.default_rng(1).standard_normal(384).astype(np.float32)

    def encode(self, batch):
        return np.broadcast_to(self._vector, (len(batch), 384))


def load_table(url: str, table: str, texts: list[str]) -> None:
    with psql(url) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
        with conn.cursor() as cur, cur.copy(f"COPY {table} (id, body) FROM STDIN") as copy:
            for i, text in enumerate(texts):
                copy.write_row((i, text))


# -- 1. encode end to end vs the bare model ---------------------------------------------------------


def bench_encode(admin: str, quick: bool) -> dict:
    """The whole `vectorize.py encode` process against a bare sentence-transformers process that
    loads the model and encodes the same texts, in pairs run in turn (drift hits both alike):
    once with an empty model cache (OpenVINO conversion included), then cached."""
    n = 300 if quick else 1500
    pairs = 1 if quick else 4
    texts = corpus_texts(n)
    texts_file = BENCH_DIR / "encode_texts.json"
    texts_file.write_text(json.dumps(texts))
    url = fresh_db(admin, "bench_encode")
    cache = Path(tempfile.mkdtemp(prefix="model-cache-"))
    first_tool, first_bare = whole_process_encode(url, texts, cache), whole_process_bare(texts_file)
    log(f"first run (conversion included): encode {first_tool:.1f} rows/s, bare {first_bare:.1f} rows/s")
    tool, bare = [], []
    for r in range(pairs):
        tool.append(whole_process_encode(url, texts, cache))
        bare.append(whole_process_bare(texts_file))
        log(f"cached run {r + 1}: encode {tool[-1]:.1f} rows/s, bare {bare[-1]:.1f} rows/s")
    reference = modules.get("minilm", backend="torch").encode(texts)
    with psql(url) as conn:
        rows = conn.execute("SELECT id, body_vector::text FROM passage ORDER BY id").fetchall()
    stored = np.array([json.loads(v) for _, v in rows], dtype=np.float32)
    cos = (stored * reference).sum(1) / np.linalg.norm(stored, axis=1) / np.linalg.norm(reference, axis=1)
    ratios = [t / b for t, b in zip(tool, bare, strict=True)]
    return {
        "rows": n,
        "pairs": pairs,
        "backend": modules.get("minilm").planned_backend(),
        "first_encode_rows_s": first_tool,
        "first_bare_rows_s": first_bare,
        "first_ratio": first_tool / first_bare,
        "encode_rows_s": statistics.median(tool),
        "bare_rows_s": statistics.median(bare),
        "run_ratios": ratios,
        "ratio": statistics.median(ratios),
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
    }


def whole_process_bare(texts_file: Path) -> float:
    """Rows/s of a fresh process that loads sentence-transformers and MiniLM and encodes the texts."""
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from sentence_transformers import SentenceTransformer
        from modules.minilm import model_source
        texts = json.load(open({str(texts_file)!r}))
        SentenceTransformer(model_source()).encode(texts, batch_size=32)
    """)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    return len(json.loads(texts_file.read_text())) / (time.perf_counter() - started)


def whole_process_encode(url: str, texts: list[str], cache: Path) -> float:
    """Rows/s of a fresh `vectorize.py encode` process filling a fresh table of the texts."""
    load_table(url, "passage", texts)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "vectorize.py"), "encode", "--url", url, "-t", "passage", "-c", "body"],
        check=True, capture_output=True, env={**os.environ, "VECTORIZE_CACHE": str(cache)},
    )  # fmt: skip
    return len(texts) / (time.perf_counter() - started)


# -- 3. import-vectors vs bare COPY + index ---------------------------------------------------------


def bench_import(admin: str, quick: bool) -> dict:
    from vectorize_core.importer import import_vectors

    n = 20_000 if quick else 100_000
    vectors = embedding_like(n)
    url = fresh_db(admin, "bench_import")
    path = BENCH_DIR / "vectors.jsonl"
    with open(path, "w") as f:
        for i, v in enumerate(vectors):
            f.write(json.dumps({"id": i, "vector": v.tolist()}) + "\n")
    load_table(url, "items", [f"item {i}" for i in range(n)])
    with connect(url) as db:
        started = time.perf_counter()
        import_vectors(db, table="items", column="body", file=str(path))
        tool = time.perf_counter() - started
    log(f"import-vectors: {tool:.1f}s")
    with psql(url) as conn:
        from pgvector.psycopg import register_vector

        register_vector(conn)
        conn.execute("CREATE TABLE scratch (id int, v vector(384))")
        started = time.perf_counter()
        # The fastest bare way: binary COPY of the float32 arrays (pgvector's binary format).
        with conn.cursor() as cur, cur.copy("COPY scratch (id, v) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "vector"])
            for i, v in enumerate(vectors):
                copy.write_row((i, v))
        copied = time.perf_counter() - started
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("CREATE INDEX ON scratch USING hnsw (v vector_cosine_ops)")
        bare = time.perf_counter() - started
    log(f"bare COPY {copied:.1f}s + index = {bare:.1f}s")
    path.unlink()
    return {"rows": n, "import_s": tool, "bare_copy_s": copied, "bare_total_s": bare, "ratio": bare / tool}


# -- 4. search latency and recall on 100k rows ------------------------------------------------------


def bench_search(admin: str, quick: bool) -> dict:
    n = 20_000 if quick else 100_000
    url = admin.replace("/postgres?", "/bench_import?")  # the table import-vectors built
    rng = np.random.default_rng(5)
    queries = embedding_like(200, seed=9)
    with connect(url) as db:
        target = resolve_for_search(db, table="items")
        spec = search_spec(db, target, 10)
        sql_times, hits = timed_with_recall(db, target, queries)
        # end to end in a warm process: a text query through the minilm-encoded NFCorpus table
        texts = [json.loads(line)["text"] for line in open(BEIR / "nfcorpus" / "queries.jsonl", encoding="utf-8")]
        e2e = []
        nf_url = admin.replace("/postgres?", "/bench_nfcorpus?")
        with connect(nf_url) as nf:
            search(nf, "warm up", k=10, vector_column="doc_vector")
            for text in rng.choice(texts, 200, replace=False):
                started = time.perf_counter()
                search(nf, str(text), k=10, vector_column="doc_vector")
                e2e.append(time.perf_counter() - started)
        e2e_100k = []
        minilm = modules.get("minilm")
        for text in rng.choice(texts, 100, replace=False):
            started = time.perf_counter()
            vector = minilm.encode([str(text)])[0]
            ranked_rows(db, spec, vector_literal(vector))  # 100k table, 384 dims: model + SQL
            e2e_100k.append(time.perf_counter() - started)

    return {
        "rows": n,
        "sql_p50_ms": pct(sql_times, 50),
        "sql_p95_ms": pct(sql_times, 95),
        "e2e_p50_ms": pct(e2e_100k, 50),
        "e2e_p95_ms": pct(e2e_100k, 95),
        "cli_path_p50_ms": pct(e2e, 50),
        "cli_path_p95_ms": pct(e2e, 95),
        "recall10": float(np.mean(hits)),
    }


# -- 4b. hybrid search latency on 100k rows --------------------------------------------------------


class TextSeeded:
    """Embedding-like vectors seeded by the text: a cheap stand-in model for a large table."""

    name = "text_seeded"
    description = "benchmark encoder: embedding-like vectors seeded by the text"
    dimension = 384
    metric = "cosine"
    basis = np.random.default_rng(1234).standard_normal((24, 384)).astype(np.float32)

    def encode(self, batch):
        import zlib

        out = np.empty((len(batch), 384), np.float32)
        for i, text in enumerate(batch):
            rng = np.random.default_rng(zlib.crc32(text.encode()))
            v = rng.standard_normal(24).astype(np.float32) @ self.basis
            v += 0.1 * np.linalg.norm(v) / np.sqrt(384) * rng.standard_normal(384).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        return out


def bench_hybrid(admin: str, quick: bool) -> dict:
    """search --hybrid on 100k rows of real text (NFCorpus and SciFact passages, cycled with
    different lengths): the SQL alone, p50/p95, and whether the full-text leg uses its index."""
    n = 20_000 if quick else 100_000
    source = corpus_texts(10**9)
    rng = np.random.default_rng(7)
    texts = []
    for i in range(n):
        words = source[i % len(source)].split()
        start = int(rng.integers(0, max(1, len(words) - 20)))
        texts.append(" ".join(words[start : start + int(rng.integers(20, 121))]) + f" #{i}")
    url = fresh_db(admin, "bench_hybrid")
    load_table(url, "passages", texts)
    modules.register(TextSeeded())
    queries = [json.loads(line)["text"] for line in open(BEIR / "nfcorpus" / "queries.jsonl", encoding="utf-8")]
    queries = [str(q) for q in rng.choice(queries, 200, replace=False)]
    with connect(url) as db:
        started = time.perf_counter()
        encode(db, table="passages", column="body", model="text_seeded", fulltext=True)
        fill = time.perf_counter() - started
        with psql(url) as conn:
            conn.execute("VACUUM ANALYZE passages")
        from vectorize_core.search import prepare, run_hybrid

        times = []
        for query in queries:
            target, spec, vector = prepare(db, query, k=10, table="passages", hybrid=True)
            started = time.perf_counter()
            run_hybrid(db, target, spec, vector, query, fusion_k=60, weights=(1.0, 1.0))
            times.append(time.perf_counter() - started)
        emitted = emit_sql(db, hybrid=True, table="passages").strip().splitlines()[-1].rstrip(";")
        vector = vector_literal(TextSeeded().encode([queries[0]])[0])
        with psql(url) as conn:
            plan = "\n".join(
                r[0]
                for r in conn.execute(
                    "EXPLAIN " + emitted, (vector, 100, queries[0], queries[0], 100, 1.0, 60, 1.0, 60, 10)
                )
            )
    return {
        "rows": n,
        "fill_and_index_s": fill,
        "hybrid_sql_p50_ms": pct(times, 50),
        "hybrid_sql_p95_ms": pct(times, 95),
        "text_leg_uses_gin": "Bitmap Index Scan on passages_body_tsv_idx" in plan,
        "vector_leg_uses_hnsw": "Index Scan using passages_body_vector_idx" in plan,
    }


# -- 4c. vectorize.py serve: POST /search on a warm server, 100k rows -------------------------------


def bench_serve(admin: str, quick: bool) -> dict:
    """POST /search of a `vectorize.py serve` process (warm: its model loaded) on 100k rows x 384
    with HNSW, text queries that MiniLM encodes in the server: one client for p50/p95, then 4 at
    once for requests/s; query vectors too (HTTP + SQL, no encoding). Beside them, in this process,
    the SQL alone and the query encoding alone. The rows' vectors are embedding-like stand-ins
    adopted as MiniLM's (as the search benchmark's), so no 100k rows need encoding."""
    import threading

    import httpx
    from pgvector.psycopg import register_vector

    n = 20_000 if quick else 100_000
    count = 40 if quick else 400
    clients = 4
    source = corpus_texts(10**9)
    url = fresh_db(admin, "bench_serve")
    with psql(url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        conn.execute("CREATE TABLE passages (id int PRIMARY KEY, body text, body_vector vector(384))")
        with conn.cursor() as cur, cur.copy("COPY passages FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "text", "vector"])
            for i, vector in enumerate(embedding_like(n, seed=21)):
                copy.write_row((i, f"{source[i % len(source)]} #{i}", vector))
    with connect(url) as db:
        started = time.perf_counter()
        encode(db, table="passages", column="body", model="minilm", adopt=True)  # records them, builds HNSW
        index_s = time.perf_counter() - started
    with psql(url) as conn:
        conn.execute("VACUUM ANALYZE passages")
    rng = np.random.default_rng(3)
    queries = [json.loads(line)["text"] for line in open(BEIR / "nfcorpus" / "queries.jsonl", encoding="utf-8")]
    queries = [str(q) for q in rng.choice(queries, count, replace=False)]
    minilm = modules.get("minilm")
    minilm.encode(["warm up"])
    encode_times, vectors = [], []
    for query in queries:
        t0 = time.perf_counter()
        vectors.append(minilm.encode([query])[0])
        encode_times.append(time.perf_counter() - t0)
    with connect(url) as db:
        spec = search_spec(db, resolve_for_search(db, table="passages"), 10)
        sql_times = []
        for vector in vectors:
            t0 = time.perf_counter()
            ranked_rows(db, spec, vector_literal(vector))
            sql_times.append(time.perf_counter() - t0)

    command = [sys.executable, str(ROOT / "vectorize.py"), "serve", "--url", url, "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()
        if not line.startswith("Serving "):
            raise RuntimeError(f"serve did not start: {line}{server.stderr.read()}")
        threading.Thread(target=server.stderr.read, daemon=True).start()  # drain uvicorn's log
        base = line.split()[1].rstrip(":")

        def body(i: int, text: bool = True) -> dict:
            if text:
                return {"table": "passages", "query": queries[i % count], "k": 10}
            return {"table": "passages", "query_vector": vectors[i % count].tolist(), "k": 10}

        def timed(client, payload) -> tuple[float, float]:
            t0 = time.perf_counter()
            response = client.post("/search", json=payload)
            elapsed = time.perf_counter() - t0
            response.raise_for_status()
            return elapsed, response.json()["took_ms"]

        with httpx.Client(base_url=base, timeout=60) as client:
            for i in range(10):
                timed(client, body(i))  # warm: the model loads on the first text query
            text_runs = [timed(client, body(i)) for i in range(count)]
            vector_runs = [timed(client, body(i, text=False)) for i in range(count)]
        done = []

        def worker(k: int) -> None:
            with httpx.Client(base_url=base, timeout=60) as own:
                done.extend(timed(own, body(i))[0] for i in range(k, count, clients))

        started = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        concurrent_s = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)

    text_ms = [t for t, _ in text_runs]
    result = {
        "rows": n,
        "queries": count,
        "adopt_and_index_s": index_s,
        "text_p50_ms": pct(text_ms, 50),
        "text_p95_ms": pct(text_ms, 95),
        "server_took_p50_ms": pct([took for _, took in text_runs], 50, scale=1),
        "vector_p50_ms": pct([t for t, _ in vector_runs], 50),
        "vector_p95_ms": pct([t for t, _ in vector_runs], 95),
        "sql_p50_ms": pct(sql_times, 50),
        "sql_p95_ms": pct(sql_times, 95),
        "encode_p50_ms": pct(encode_times, 50),
        "requests_s_1_client": count / sum(text_ms),
        "clients": clients,
        "requests_s": len(done) / concurrent_s,
        "concurrent_p50_ms": pct(done, 50),
        "concurrent_p95_ms": pct(done, 95),
    }
    result["overhead_p50_ms"] = result["text_p50_ms"] - result["sql_p50_ms"] - result["encode_p50_ms"]
    log(
        f"serve: text p50 {result['text_p50_ms']:.1f} ms (SQL {result['sql_p50_ms']:.1f} + encoding "
        f"{result['encode_p50_ms']:.1f}), {result['requests_s']:.1f} requests/s from {clients} clients"
    )
    return result


# -- 9. a million rows: fill, index build with progress, search recall ------------------------------


class RowVectors:
    """Embedding-like vectors for texts 'row <i>', looked up by i: a cheap encoder for 1M rows."""

    name = "row_vectors"
    description = "benchmark encoder: precomputed embedding-like vectors by row number"
    dimension = 384
    metric = "cosine"

    def __init__(self, n: int):
        self.vectors = embedding_like(n, seed=11)

    def encode(self, batch):
        return self.vectors[[int(t.split()[1]) for t in batch]]


def bench_million(admin: str, quick: bool) -> dict:
    from vectorize_core.indexes import build_index

    n = 100_000 if quick else 1_000_000
    url = fresh_db(admin, "bench_million")
    with psql(url) as conn:
        conn.execute("CREATE TABLE million (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO million SELECT g, 'row ' || g FROM generate_series(0, %s) g", (n - 1,))
    encoder = RowVectors(n)
    modules.register(encoder)
    with connect(url) as db:
        started = time.perf_counter()
        result = encode(db, table="million", column="body", model="row_vectors", index="skip")
        fill = time.perf_counter() - started
        events = []
        started = time.perf_counter()
        built = build_index(db, table="million", column="body", on_index=lambda p: events.append(p))
        build = time.perf_counter() - started
        progress_events = [e for e in events if e.phase not in ("started", "done")]
        with psql(url) as conn:
            memory = conn.execute("SHOW maintenance_work_mem").fetchone()[0]
        times, hits = timed_with_recall(db, resolve_for_search(db, table="million"), embedding_like(50, seed=99))
    return {
        "rows": n,
        "fill_s": fill,
        "fill_rows_s": result.written / fill,
        "index_build_s": build,
        "index_note": built.index_note,
        "progress_events": len(progress_events),
        "last_progress": [progress_events[-1].phase, progress_events[-1].done, progress_events[-1].total]
        if progress_events
        else None,
        "session_maintenance_work_mem_default": memory,
        "search_p50_ms": pct(times, 50),
        "search_p95_ms": pct(times, 95),
        "recall10": float(np.mean(hits)),
    }


# -- 9b. import-vectors of a million rows through the CLI: load, index, client memory --------------


def bench_import_million(admin: str, quick: bool) -> dict:
    """`vectorize.py import-vectors` of a million x 384 float32 vectors into a million-row table,
    as a user runs it: .npy + keys (load, then the HNSW build), and JSON Lines and CSV (load only,
    --index skip), each into a table of its own."""
    from psycopg import sql

    n = 20_000 if quick else 1_000_000
    url = fresh_db(admin, "bench_import_million")
    out: dict = {"rows": n}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        started = time.perf_counter()
        paths = write_vector_files(directory, n)
        log(f"wrote the vector files in {time.perf_counter() - started:.0f}s")
        for name, args in [
            ("npy", ["-f", str(paths["v.npy"]), "--keys", str(paths["k.jsonl"])]),
            ("jsonl", ["-f", str(paths["v.jsonl"]), "--index", "skip"]),
            ("csv", ["-f", str(paths["v.csv"]), "--index", "skip"]),
        ]:
            table = f"million_{name}"
            ident = sql.Identifier(table)
            with psql(url) as conn:
                conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, body text)").format(ident))
                fill = sql.SQL("INSERT INTO {} SELECT g, 'row ' || g FROM generate_series(0, %s) g").format(ident)
                conn.execute(fill, (n - 1,))
                conn.execute(sql.SQL("ANALYZE {}").format(ident))
            run = run_import_cli(url, table, args, directory)
            main_file = paths["v.npy"] if name == "npy" else paths[f"v.{name}"]
            run["file_mb"] = main_file.stat().st_size / 2**20
            out[name] = run
            log(f"{name}: load {run['load_s']:.1f}s, {run['load_rows_s']:,.0f} rows/s, RSS {run['peak_rss_mb']:.0f} MB")
            if name != "npy":
                with psql(url) as conn:
                    conn.execute(sql.SQL("DROP TABLE {}").format(ident))  # the disk for the next one
    npy = out["npy"]
    out["bar"] = {
        "load_rows_s >= 20000": npy["load_rows_s"] >= 20_000,
        "peak_rss well below the .npy": npy["peak_rss_mb"] < npy["file_mb"] / 2,
        "load + index <= 1000 s": npy["load_s"] + (npy["index_s"] or 0) <= 1000,
    }
    return out


def bench_index_configs(admin: str, quick: bool) -> dict:
    """HNSW build times by hand on the vectors import-million left (run it first): parallel
    workers 0/1/2 with ample memory on a 200k-row copy to find pgvector's best here, then that
    configuration at 1M, and the fixed maintenance_work_mem = 1GB of earlier releases at 1M (cut
    off after a bound, its progress read meanwhile). The tool's own build is import-million's."""
    import psycopg

    url = admin.replace("/postgres?", "/bench_import_million?")
    subset = 20_000 if quick else 200_000
    bound_s = 60 if quick else 900
    out: dict = {"subset_rows": subset}
    with psql(url) as conn:
        conn.execute("DROP TABLE IF EXISTS index_subset")
        conn.execute("CREATE TABLE index_subset AS SELECT id, body_vector FROM million_npy WHERE id < %s", (subset,))
        for workers in (0, 1, 2):
            out[f"subset_workers{workers}_s"] = timed_build(conn, "index_subset", "4GB", workers)
            log(f"{subset:,} rows, 4GB, {workers} workers: {out[f'subset_workers{workers}_s']:.1f}s")
        best = min((0, 1, 2), key=lambda w: out[f"subset_workers{w}_s"])
        out["best_workers"] = best
        conn.execute("DROP TABLE index_subset")
        conn.execute("DROP INDEX IF EXISTS million_npy_body_vector_idx")
        out["best_1m_s"] = timed_build(conn, "million_npy", "4GB", best)
        log(f"1M rows, 4GB, {best} workers: {out['best_1m_s']:.0f}s")
        try:
            out["fixed_1gb_1m_s"] = timed_build(conn, "million_npy", "1GB", 2, bound_s)
        except psycopg.errors.QueryCanceled:
            out["fixed_1gb_1m_s"] = None
            out["fixed_1gb_cut_off_s"] = bound_s
        out["fixed_1gb_tuples"] = LAST_TUPLES.get("million_npy")
        log(f"1M rows, fixed 1GB: {out['fixed_1gb_1m_s']} s, tuples at the end {out['fixed_1gb_tuples']}")
    return out


LAST_TUPLES: dict[str, int] = {}  # tuples an HNSW build had loaded when last looked at, by table


def timed_build(conn, table: str, memory: str, workers: int, bound_s: int | None = None) -> float:
    """Seconds of CREATE INDEX ... USING hnsw on table.body_vector with these settings; with
    bound_s, cancelled then (raises QueryCanceled), the tuples loaded by then in LAST_TUPLES."""
    import threading

    conn.execute(f"DROP INDEX IF EXISTS {table}_hnsw")
    conn.execute(f"SET maintenance_work_mem = '{memory}'")
    conn.execute(f"SET max_parallel_maintenance_workers = {workers}")
    conn.execute(f"SET statement_timeout = '{bound_s or 0}s'")
    pid, done = conn.info.backend_pid, threading.Event()

    def watch():
        with psql(conn.info.dsn) as other:
            while not done.wait(5):
                row = other.execute(
                    "SELECT tuples_done FROM pg_stat_progress_create_index WHERE pid = %s", (pid,)
                ).fetchone()
                if row:
                    LAST_TUPLES[table] = row[0]

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.perf_counter()
    try:
        conn.execute(f"CREATE INDEX {table}_hnsw ON {table} USING hnsw (body_vector vector_cosine_ops)")
        return time.perf_counter() - started
    finally:
        done.set()
        watcher.join()
        conn.execute("RESET statement_timeout")


# -- 5. the write path alone ------------------------------------------------------------------------


def bench_write(admin: str, quick: bool) -> dict:
    n = 20_000 if quick else 100_000
    url = fresh_db(admin, "bench_write")
    load_table(url, "w", [f"text number {i} " + "word " * (i % 50) for i in range(n)])
    modules.register(Fixed384())
    try:
        with connect(url) as db:
            result = encode(db, table="w", column="body", model="fixed384")
    finally:
        modules.unregister("fixed384")
    log(f"write path: {result.rows_per_second:.0f} rows/s")
    return {"rows": n, "rows_s": result.rows_per_second, "fill_s": result.seconds, "target": 20_000}


# -- 6. memory is bounded by the batch --------------------------------------------------------------


def bench_memory(admin: str, quick: bool) -> dict:
    out = {}
    sizes = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    for n in sizes:
        url = fresh_db(admin, f"bench_mem_{n}")
        load_table(url, "m", [f"text number {i} " + "word " * (i % 50) for i in range(n)])
        code = textwrap.dedent(f"""
            import sys; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / "benchmarks")!r})
            import modules
            from run import Fixed384
            modules.register(Fixed384())
            import vectorize
            try:
                # The fill's memory: the index is built by the server (and one fixed vector makes a
                # pathological graph).
                vectorize.cli(["encode", "--url", {url!r}, "-t", "m", "-c", "body", "-m", "fixed384", "--index", "skip"],
                              standalone_mode=False)
            finally:
                # VmHWM, not ru_maxrss: ru_maxrss survives exec and would report the parent's size.
                print("RSS", [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0])
        """)
        peaks = []
        for _ in range(3):  # peak RSS varies by a few MB from run to run (per-thread malloc arenas)
            with psql(url) as conn:
                conn.execute("ALTER TABLE m DROP COLUMN IF EXISTS body_vector")
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            peaks.append(int(proc.stdout.split("RSS")[-1]) / 1024)
        rss_mb = statistics.median(peaks)
        out[f"rss_{n}_mb"] = rss_mb
        log(f"peak RSS at {n} rows: {rss_mb:.0f} MB")
    out["growth"] = out[f"rss_{sizes[-1]}_mb"] / out["rss_10000_mb"] - 1
    out["largest"] = sizes[-1]
    return out


# -- 7. start-up ------------------------------------------------------------------------------------


def bench_startup(admin: str, quick: bool) -> dict:
    out = {}
    for args in (["--help"], ["list-models"]):
        times = []
        for _ in range(7):
            started = time.perf_counter()
            subprocess.run([sys.executable, str(ROOT / "vectorize.py"), *args], check=True, capture_output=True)
            times.append(time.perf_counter() - started)
        out[" ".join(args)] = statistics.median(times)
    return out


# -- 8. NFCorpus NDCG@10 against MTEB's published figure -------------------------------------------


def bench_nfcorpus(admin: str, quick: bool) -> dict:
    from vectorize_core.evaluate import eval_columns

    url = fresh_db(admin, "bench_nfcorpus")
    with psql(url) as conn:
        conn.execute("CREATE TABLE nfcorpus (id text PRIMARY KEY, doc text)")
        with conn.cursor() as cur, cur.copy("COPY nfcorpus (id, doc) FROM STDIN") as copy:
            for line in open(BEIR / "nfcorpus" / "corpus.jsonl", encoding="utf-8"):
                d = json.loads(line)
                copy.write_row((d["_id"], (d.get("title", "") + " " + d["text"]).strip()))
    out = {}
    queries, qrels = str(BEIR / "nfcorpus" / "queries.jsonl"), str(BEIR / "nfcorpus" / "qrels" / "test.tsv")
    with connect(url) as db:
        started = time.perf_counter()
        result = encode(db, table="nfcorpus", column="doc", model="minilm")
        out["encode_s"] = time.perf_counter() - started
        out["truncated"] = result.truncated
        out["backend"] = modules.get("minilm").planned_backend()
        if not quick:  # the same documents through torch, for the NDCG the default backend must keep
            encode(db, table="nfcorpus", column="doc", model="minilm", backend="torch", vector_column="doc_torch")
        # k=10 for pgvector's default: with k=100 the search would raise ef_search to 100 itself.
        for ef, k in ((40, 10), (100, 100)):
            scores = eval_columns(
                db, table="nfcorpus", column="doc", queries=queries, qrels=qrels, ef_search=ef, k=k,
                vector_columns=["doc_vector"],
            )[0]  # fmt: skip
            exact = eval_columns(
                db, table="nfcorpus", column="doc", queries=queries, qrels=qrels, exact=True,
                vector_columns=["doc_vector"],
            )[0]  # fmt: skip
            out[f"ef{ef}_index"] = scores.scores
            out[f"ef{ef}_index_recall10"] = scores.index_recall
        out["exact"] = exact.scores
        if not quick:
            torch_scores = eval_columns(
                db, table="nfcorpus", column="doc", queries=queries, qrels=qrels, exact=True,
                vector_columns=["doc_torch"],
            )[0]  # fmt: skip
            out["torch_exact"] = torch_scores.scores
    out["published_ndcg10"] = PUBLISHED_NFCORPUS_NDCG10
    out["delta"] = out["exact"]["ndcg@10"] - PUBLISHED_NFCORPUS_NDCG10
    log(f"NFCorpus NDCG@10 exact {out['exact']['ndcg@10']:.5f} (published {PUBLISHED_NFCORPUS_NDCG10})")
    return out


def chunked_benchmark(name: str):
    """A benchmark of encode --chunk (benchmarks/chunked.py), by name."""

    def run(admin: str, quick: bool) -> dict:
        import chunked

        return getattr(chunked, f"bench_{name}")(admin, quick)

    return run


BENCHMARKS = {
    "startup": bench_startup,
    "write": bench_write,
    "memory": bench_memory,
    "nfcorpus": bench_nfcorpus,
    "import": bench_import,
    "search": bench_search,
    "hybrid": bench_hybrid,
    "serve": bench_serve,
    "million": bench_million,
    "index-configs": bench_index_configs,
    "import-million": bench_import_million,
    "encode": bench_encode,
    # encode --chunk: `--only chunks-needle,chunks-beir,chunks-cost,chunks-search`
    "chunks-needle": chunked_benchmark("needle"),
    "chunks-beir": chunked_benchmark("beir"),
    "chunks-cost": chunked_benchmark("cost"),
    "chunks-search": chunked_benchmark("search"),
    # Text that repeats (licence files): the index of distinct contents, against exact search.
    "repeated": lambda admin, quick: __import__("repeated").bench_with_record(admin, quick),
}


def versions() -> dict:
    import importlib.metadata as md

    with psql(server_url()) as conn:
        pg = conn.execute("SELECT version()").fetchone()[0].split(" on ")[0]
        pgvector = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()[
            0
        ]
    packages = ["torch", "sentence-transformers", "transformers", "openvino", "psycopg", "pgvector", "numpy"]
    return {
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "postgres": pg,
        "pgvector extension": pgvector,
        **{p: md.version(p) for p in packages},
    }


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated: " + ",".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one run each (not for the report)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.json"))
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    admin = server_url()
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    results["machine"] = versions()
    for name in names:
        log(f"benchmark {name}")
        started = time.perf_counter()
        results[name] = BENCHMARKS[name](admin, args.quick)
        results[name]["quick"] = args.quick
        results[name]["seconds"] = time.perf_counter() - started
        Path(args.out).write_text(json.dumps(results, indent=2, default=float))
    from report import write_report

    write_report(results, ROOT / "docs" / "benchmarks.md")
    log("wrote docs/benchmarks.md")


if __name__ == "__main__":
    tempfile.tempdir = str(BENCH_DIR)
    main()
