"""How rows of a chunked column are ranked, on NFCorpus and SciFact (title + text): the row's
opening vector, its best chunk, their mix; full text by ts_rank and by BM25; hybrid fusion.

    python benchmarks/ranking.py load          # the two tables, encoded -c title -c text --chunk --fulltext
    python benchmarks/ranking.py eval          # NDCG@10 of every ranking, exact and through the index

The corpora are read in place from ../shared/data/beir (research licences; never copied here).
Weights are chosen on the dev half of each benchmark's queries and reported on the test half.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BEIR, BENCH_DIR, fresh_db, log, server_url  # noqa: E402

from vectorize_core import EncodeRequest, connect, encode  # noqa: E402

DATASETS = ("nfcorpus", "scifact")


def half(qid: str) -> int:
    """The dev half (0) chose the defaults; the test half (1) and all queries are reported."""
    return int(hashlib.sha1(qid.encode()).hexdigest(), 16) % 2


def database(admin: str, name: str, fresh: bool = False) -> str:
    return fresh_db(admin, f"bench_rank_{name}") if fresh else admin.replace("/postgres?", f"/bench_rank_{name}?")


def load_table(url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, title text, text text)").format(sql.Identifier(name))
        )
        with conn.cursor().copy(sql.SQL("COPY {} (id, title, text) FROM STDIN").format(sql.Identifier(name))) as copy:
            for line in open(BEIR / name / "corpus.jsonl", encoding="utf-8"):
                d = json.loads(line)
                copy.write_row((d["_id"], d.get("title") or None, d["text"]))


def qrels_halves(name: str) -> dict[str, str]:
    """Paths of the test qrels: all, the dev half and the test half."""
    from vectorize_core.evaluation import read_qrels

    full = BEIR / name / "qrels" / "test.tsv"
    paths = {"all": str(full)}
    judged = read_qrels(str(full))
    for h, label in ((0, "dev"), (1, "test")):
        path = BENCH_DIR / f"{name}-qrels-{label}.tsv"
        with open(path, "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for qid, docs in judged.items():
                if half(qid) == h:
                    f.writelines(f"{qid}\t{doc}\t{score}\n" for doc, score in docs.items())
        paths[label] = str(path)
    return paths


def load(admin: str) -> dict:
    figures = {}
    for name in DATASETS:
        url = database(admin, name, fresh=True)
        load_table(url, name)
        with connect(url) as db:
            started = time.perf_counter()
            result = encode(db, EncodeRequest(table=name, column=("title", "text"), chunk=True, fulltext=True))
            figures[name] = {"rows": result.written, "chunks": result.chunks, "encode_s": time.perf_counter() - started}
            started = time.perf_counter()
            encode(db, EncodeRequest(table=name, column=("title", "text"), vector_column="plain_vector", fulltext=True))
            figures[name]["plain_encode_s"] = time.perf_counter() - started
        log(f"{name}: {figures[name]}")
    return figures


if __name__ == "__main__":
    BENCH_DIR.mkdir(exist_ok=True)
    admin = server_url()
    print(json.dumps({"load": load}[sys.argv[1]](admin), indent=2, default=float))
