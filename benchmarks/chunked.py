"""Benchmarks of encode --chunk (issue 23): finding a fact deep in a long row, retrieval quality on
NFCorpus and SciFact, encode speed and memory by row length, and search latency.

Run through benchmarks/run.py (`--only chunks-needle,chunks-beir,chunks-cost,chunks-search`), or
this file alone for one of them: `python benchmarks/chunked.py needle`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pydoc
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BEIR, BENCH_DIR, embedding_like, fresh_db, log, pct, server_url, timed_with_recall  # noqa: E402

from vectorize_core import connect, encode  # noqa: E402
from vectorize_core.search import search  # noqa: E402

# Modules whose pydoc text makes the long rows: real English technical prose, read on this machine.
PYDOC_MODULES = [
    "os", "re", "json", "collections", "itertools", "functools", "typing", "asyncio", "argparse", "logging",
    "subprocess", "socket", "email.message", "http.client", "urllib.request", "xml.etree.ElementTree", "sqlite3",
    "decimal", "datetime", "pathlib", "string", "textwrap", "unittest", "threading", "multiprocessing", "shutil",
    "tarfile", "zipfile", "csv", "random", "statistics", "inspect", "ast", "dis", "pickle", "copy", "heapq",
    "bisect", "enum", "dataclasses", "contextlib", "io", "codecs", "struct", "array", "math", "cmath", "fractions",
    "hashlib", "hmac", "secrets", "ssl", "select", "selectors", "signal", "tempfile", "glob", "fnmatch", "locale",
    "gettext", "calendar", "time", "sched", "queue", "weakref", "types", "abc", "numbers", "operator", "pprint",
    "reprlib", "difflib", "traceback", "warnings", "importlib", "pkgutil", "zipimport", "runpy", "ftplib",
    "poplib", "imaplib", "smtplib", "uuid", "socketserver", "http.server", "http.cookies", "xmlrpc.client",
    "ipaddress", "mimetypes", "base64", "binascii", "quopri", "html", "html.parser", "configparser", "tomllib",
    "netrc", "plistlib", "gzip", "bz2", "lzma", "zlib", "filecmp", "stat", "fileinput", "linecache", "shelve",
    "dbm", "marshal", "platform", "errno", "ctypes", "concurrent.futures", "trace", "timeit", "cProfile", "pdb",
    "doctest", "tokenize", "keyword", "symtable", "token", "code", "codeop", "sysconfig", "builtins", "gc",
]  # fmt: skip

# Facts no Python documentation holds, and a question about each in other words.
NEEDLES = [
    ("The lighthouse keeper on Skerry Island feeds exactly forty-two gulls every morning.",
     "how many seagulls does the island lighthouse keeper give food to each day"),
    ("Marguerite won first prize at the county fair in 1987 with a lemon drizzle cake.",
     "who took the top award at the regional fair for a citrus sponge"),
    ("The old copper mine under Brennan Hill flooded during the storm of March 1911.",
     "when was the hill's copper mine filled with water by a storm"),
    ("Our grandmother kept seventeen goats and named every one of them after a composer.",
     "the grandmother whose goats were called after musicians"),
    ("The night train from Lisbon to Madrid was cancelled because of a strike by the drivers.",
     "why did the overnight rail service between Portugal and Spain not run"),
    ("A hummingbird beats its wings about fifty times a second while it hovers at a flower.",
     "how fast do tiny hovering birds flap when feeding on nectar"),
    ("The violinist left her Stradivarius in a taxi and the driver returned it the next day.",
     "musician forgot a precious violin in a cab and got it back"),
    ("Volcanic ash from the eruption grounded all flights over northern Europe for six days.",
     "air travel stopped across the north of Europe because of a volcano"),
    ("The bakery on Elm Street sells rye bread only on Thursdays, and it is gone by noon.",
     "which day can you buy rye loaves at the shop on Elm Street"),
    ("Penguins in the zoo were given knitted sweaters after an oil spill ruined their feathers.",
     "zoo birds wearing wool jumpers after oil damaged their plumage"),
    ("The marathon runner finished the race barefoot after losing both shoes in the mud.",
     "athlete completed the long distance run without any shoes"),
    ("Astronomers named the new comet after the schoolgirl who first spotted it in her garden.",
     "comet called after a young student who discovered it from home"),
]  # fmt: skip
DEPTHS = [100, 200, 300, 500, 1000, 2000, 3000, 5000, 8000, 10000, 12000, 15000]
ROW_WORDS = 16_000
DISTRACTORS = 14  # long rows of the same genre without a needle (what pydoc gives here suffices for 26 rows)


def pydoc_words() -> list[str]:
    words: list[str] = []
    for name in PYDOC_MODULES:
        try:
            module = importlib.import_module(name)
            words += pydoc.render_doc(module, renderer=pydoc.plaintext).split()
        except Exception:  # noqa: BLE001, S112 - a module this Python lacks: the text is long enough without it
            continue
    return words


def needle_rows() -> list[tuple[int, str, int | None]]:
    """(id, text, depth of its needle or None): one row per needle, then distractors; every row
    ROW_WORDS words of pydoc text (a different stretch each), lines kept."""
    words = pydoc_words()
    rows = []
    count = len(NEEDLES) + DISTRACTORS
    if len(words) < count * ROW_WORDS:
        raise SystemExit(f"pydoc gave {len(words)} words; {count * ROW_WORDS} needed")
    for i in range(count):
        body = words[i * ROW_WORDS : (i + 1) * ROW_WORDS]
        depth = None
        if i < len(NEEDLES):
            depth = DEPTHS[i]
            body = body[:depth] + NEEDLES[i][0].split() + body[depth:]
        # Sentences of about 20 words a line, so the splitter has sentence and line boundaries.
        text = "\n".join(" ".join(body[j : j + 20]) for j in range(0, len(body), 20))
        rows.append((i + 1, text, depth))
    return rows


def load_rows(url: str, table: str, rows: list[tuple[int, str]]) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, body text)").format(sql.Identifier(table)))
        with (
            conn.cursor() as cur,
            cur.copy(sql.SQL("COPY {} (id, body) FROM STDIN").format(sql.Identifier(table))) as copy,
        ):
            for key, text in rows:
                copy.write_row((key, text))


def needle_ranks(db, table: str, vector_column: str) -> list[int]:
    ranks = []
    for i, (_, query) in enumerate(NEEDLES):
        found = search(db, query, table=table, vector_column=vector_column, k=len(NEEDLES) + DISTRACTORS, exact=True)
        ids = [row["id"] for row in found.rows]
        ranks.append(ids.index(i + 1) + 1)
    return ranks


def bench_needle(admin: str, quick: bool, configs=((64, 0), (64, 16), (128, 0), (128, 32), (254, 0))) -> dict:
    url = fresh_db(admin, "bench_needle")
    rows = needle_rows()
    load_rows(url, "longdoc", [(k, t) for k, t, _ in rows])
    out = {"rows": len(rows), "row_words": ROW_WORDS, "depths": DEPTHS, "configs": {}}
    with connect(url) as db:
        encode(db, table="longdoc", column="body", model="minilm", vector_column="plain_vector")
        out["truncated"] = needle_ranks(db, "longdoc", "plain_vector")
        log(f"needle ranks, truncated: {out['truncated']}")
        for tokens, overlap in configs[:1] if quick else configs:
            name = f"c{tokens}_{overlap}"
            started = time.perf_counter()
            result = encode(
                db, table="longdoc", column="body", model="minilm", vector_column=name, chunk=True,
                chunk_tokens=tokens, chunk_overlap=overlap, index="skip",
            )  # fmt: skip
            seconds = time.perf_counter() - started
            ranks = needle_ranks(db, "longdoc", name)
            out["configs"][name] = {"tokens": tokens, "overlap": overlap, "ranks": ranks, "chunks": result.chunks,
                                    "encode_s": seconds, "first": sum(r == 1 for r in ranks)}  # fmt: skip
            log(f"needle ranks, {tokens} tokens, overlap {overlap}: {ranks} ({result.chunks} chunks, {seconds:.0f}s)")
    return out


def beir_table(url: str, name: str) -> tuple[str, str]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id text PRIMARY KEY, doc text)")
        with conn.cursor() as cur, cur.copy(f"COPY {name} (id, doc) FROM STDIN") as copy:  # noqa: S608 - our name
            for line in open(BEIR / name / "corpus.jsonl", encoding="utf-8"):
                d = json.loads(line)
                copy.write_row((d["_id"], (d.get("title", "") + " " + d["text"]).strip()))
    return str(BEIR / name / "queries.jsonl"), str(BEIR / name / "qrels" / "test.tsv")


def half(qid: str) -> int:
    """The dev half (0) chose the defaults; the test half (1) and all queries are reported."""
    return int(hashlib.sha1(qid.encode()).hexdigest(), 16) % 2


def bench_beir(admin: str, quick: bool) -> dict:
    from vectorize_core.evaluate import eval_columns
    from vectorize_core.evaluation import read_qrels

    out = {}
    for name in ("nfcorpus", "scifact"):
        url = fresh_db(admin, f"bench_chunks_{name}")
        queries, qrels = beir_table(url, name)
        judged = read_qrels(qrels)
        halves = {}
        for h in (0, 1):
            path = BENCH_DIR / f"{name}-qrels-half{h}.tsv"
            with open(path, "w", encoding="utf-8") as f:
                f.write("query-id\tcorpus-id\tscore\n")
                for qid, docs in judged.items():
                    if half(qid) == h:
                        f.writelines(f"{qid}\t{doc}\t{score}\n" for doc, score in docs.items())
            halves[h] = str(path)
        figures = {}
        with connect(url) as db:
            started = time.perf_counter()
            encode(db, table=name, column="doc", model="minilm", vector_column="doc_vector")
            figures["truncated_encode_s"] = time.perf_counter() - started
            started = time.perf_counter()
            result = encode(db, table=name, column="doc", model="minilm", vector_column="doc_chunks", chunk=True)
            figures["chunked_encode_s"] = time.perf_counter() - started
            figures["chunks"] = result.chunks
            figures["rows"] = result.written
            for label, path in (("all", qrels), ("dev", halves[0]), ("test", halves[1])):
                for exact in (True, False):
                    scores = eval_columns(
                        db, table=name, column="doc", queries=queries, qrels=path, exact=exact, k=100,
                        vector_columns=["doc_vector", "doc_chunks"],
                    )  # fmt: skip
                    for s in scores:
                        key = f"{s.vector_column}_{label}_{'exact' if exact else 'index'}"
                        figures[key] = s.scores["ndcg@10"]
                        if not exact:
                            figures[key + "_recall10"] = s.index_recall
        log(f"{name}: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()})}")
        out[name] = figures
    return out


def cost_child(url: str, table: str, chunk: bool) -> None:
    """One encode in this process, for its peak RSS (ru_maxrss) and time."""
    import resource

    with connect(url) as db:
        started = time.perf_counter()
        result = encode(db, table=table, column="body", model="minilm", chunk=chunk, index="skip")
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rows": result.written, "chunks": result.chunks,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))  # fmt: skip


def bench_cost(admin: str, quick: bool) -> dict:
    """Encode speed and peak RSS for rows of 1 KB, 100 KB and 2 MB, chunked and not; and what
    splitting costs as a share of encoding."""
    words = pydoc_words()
    sizes = {"1KB": (1_000, 300), "100KB": (100_000, 30), "2MB": (2_000_000, 3)}
    out = {}
    text = " ".join(words)
    for label, (size, count) in sizes.items():
        if quick:
            count = max(1, count // 3)
        url = fresh_db(admin, f"bench_cost_{label.lower()}")
        rows = [(i + 1, text[i * 7919 % (len(text) - size) :][:size]) for i in range(count)]
        figures = {"rows": count, "chars": size}
        for chunk in (False, True):
            table = f"t_{'chunked' if chunk else 'plain'}"
            load_rows(url, table, rows)
            child = subprocess.run(
                [sys.executable, __file__, "cost-child", url, table, "1" if chunk else "0"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            figures["chunked" if chunk else "plain"] = json.loads(child.stdout.strip().splitlines()[-1])
        figures["split"] = split_share([t for _, t in rows[: min(count, 30)]])
        log(f"cost {label}: {json.dumps(figures)}")
        out[label] = figures
    return out


def split_share(texts: list[str]) -> dict:
    """Seconds to split texts, and to encode their chunks, in this process (the model warm)."""
    import modules
    from vectorize_core import chunks

    encoder = modules.get("minilm")
    counting = chunks.counting_for(encoder)
    splitter = chunks.Splitter(counting.count, chunks.DEFAULT_CHUNK_TOKENS, chunks.DEFAULT_OVERLAP,
                               counting.max_token_chars)  # fmt: skip
    started = time.perf_counter()
    pieces = [text[s:e] for text in texts for s, e in splitter.spans(text)]
    split_s = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(0, len(pieces), 128):
        encoder.encode(pieces[i : i + 128])
    encode_s = time.perf_counter() - started
    tokens = sum(counting.count(p) for p in pieces)
    return {"split_s": split_s, "encode_s": encode_s, "share": split_s / encode_s, "chunks": len(pieces),
            "tokens": tokens, "tokens_per_s": tokens / encode_s}  # fmt: skip


class BenchEncoder:
    """Embedding-like vectors (benchmarks/run.py's) without a model: search latency is SQL alone.
    A token is a word; the model reads 64 of them (plus its 2 special tokens)."""

    name = "bench384"
    description = "benchmark encoder: embedding-like vectors, a token a word"
    dimension = 384
    metric = "cosine"
    max_length = 66

    def __init__(self):
        self.seed = 0

    def token_counter(self):
        return (lambda text: len(text.split())), 2, None

    def encode(self, batch):
        self.seed += 1
        return embedding_like(len(batch), seed=self.seed)


def bench_search(admin: str, quick: bool) -> dict:
    """Search latency (SQL and ranking, no model) on a chunked column of 100,000 chunks against an
    unchunked column of 100,000 rows, k = 10, with recall@10 against exact ranking."""
    import modules
    from vectorize_core.target import resolve_for_search

    rows = 1_000 if quick else 10_000
    encoder = BenchEncoder()
    modules.register(encoder)
    url = fresh_db(admin, "bench_chunk_search")
    # 10 chunks a row, each text its own (no repeats: the index holds every chunk).
    load_rows(url, "chunked", [(r + 1, " ".join(f"r{r}w{i}" for i in range(640))) for r in range(rows)])
    load_rows(url, "plain", [(i + 1, f"row {i + 1}") for i in range(rows * 10)])
    out = {}
    queries = embedding_like(200, seed=99)
    with connect(url) as db:
        for table, chunk in (("chunked", True), ("plain", False)):
            started = time.perf_counter()
            result = encode(db, table=table, column="body", model="bench384", chunk=chunk)
            target = resolve_for_search(db, table=table)
            times, hits = timed_with_recall(db, target, queries[:20])  # warm
            times, hits = timed_with_recall(db, target, queries)
            out[table] = {"rows": result.written, "chunks": result.chunks, "build_s": time.perf_counter() - started,
                          "p50_ms": pct(times, 50), "p95_ms": pct(times, 95), "recall10": float(np.mean(hits))}  # fmt: skip
            log(f"search {table}: {json.dumps(out[table])}")
    modules.unregister(encoder.name)
    return out


if __name__ == "__main__":
    if sys.argv[1] == "cost-child":
        cost_child(sys.argv[2], sys.argv[3], sys.argv[4] == "1")
    else:
        BENCH_DIR.mkdir(exist_ok=True)
        benchmarks = {"needle": bench_needle, "beir": bench_beir, "cost": bench_cost, "search": bench_search}
        print(json.dumps(benchmarks[sys.argv[1]](server_url(), "--quick" in sys.argv), indent=2, default=float))
