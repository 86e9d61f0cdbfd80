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
import os
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
    """The benchmark's database of a corpus (RANKING_DATABASE_SUFFIX: a copy, e.g. '_before')."""
    name = f"bench_rank_{name}{os.environ.get('RANKING_DATABASE_SUFFIX', '')}"
    return fresh_db(admin, name) if fresh else admin.replace("/postgres?", f"/{name}?")


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


def stored(url: str, name: str):
    """Row ids, opening vectors, and each row's chunk vectors (real chunks only), as numpy."""
    import numpy as np
    import psycopg
    from pgvector.psycopg import register_vector
    from psycopg import sql

    with psycopg.connect(url) as conn:
        register_vector(conn)
        ids, openings = [], []
        rows = sql.SQL("SELECT id, title_vector FROM {} ORDER BY id").format(sql.Identifier(name))
        for key, vector in conn.execute(rows):
            ids.append(key)
            openings.append(vector.to_numpy() if hasattr(vector, "to_numpy") else vector)
        index = {key: i for i, key in enumerate(ids)}
        owners, chunks = [], []
        chunk_table = sql.Identifier(f"{name}_title_vector_chunks")
        for key, vector in conn.execute(
            sql.SQL("SELECT id, chunk_vector FROM {} WHERE chunk >= 0").format(chunk_table)
        ):
            owners.append(index[key])
            chunks.append(vector.to_numpy() if hasattr(vector, "to_numpy") else vector)
    return ids, np.array(openings, dtype=np.float32), np.array(owners), np.array(chunks, dtype=np.float32)


def tune(admin: str, datasets=DATASETS) -> dict:
    """NDCG@10 of w x opening + (1 - w) x best chunk (cosine similarities), exact, for w from 0
    to 1, on the dev and test halves: the weight is chosen on dev."""
    import numpy as np

    import modules
    from vectorize_core.evaluation import evaluate, read_qrels, read_queries

    encoder = modules.get("minilm")
    out = {}
    for name in datasets:
        url = database(admin, name)
        ids, openings, owners, chunks = stored(url, name)
        paths = qrels_halves(name)
        judged = {label: read_qrels(path) for label, path in paths.items()}
        queries = {q: t for q, t in read_queries(BEIR / name / "queries.jsonl").items() if q in judged["all"]}
        qids = list(queries)
        vectors = np.asarray(encoder.encode([queries[q] for q in qids]), dtype=np.float32)
        row_sim = vectors @ openings.T  # normalized vectors: cosine similarity
        chunk_sim = vectors @ chunks.T
        best = np.full_like(row_sim, -2.0)
        for q in range(len(qids)):
            np.maximum.at(best[q], owners, chunk_sim[q])
        figures = {}
        for w in [round(x * 0.05, 2) for x in range(21)]:
            score = w * row_sim + (1 - w) * best
            top = np.argsort(-score, axis=1, kind="stable")[:, :10]
            run = {qid: [ids[i] for i in top[q]] for q, qid in enumerate(qids)}
            figures[w] = {label: evaluate(run, judged[label])["ndcg@10"] for label in judged}
        chosen = max(figures, key=lambda w: figures[w]["dev"])
        out[name] = {"by_weight": figures, "chosen_on_dev": chosen, "at_chosen": figures[chosen]}
        log(f"{name}: chosen w={chosen} {figures[chosen]}; w=0 {figures[0.0]}; w=1 {figures[1.0]}")
    return out


def measure(admin: str, datasets=DATASETS) -> dict:
    """NDCG@10 of every ranking eval reports (dense, full text, hybrid; exact and through the
    index) of the chunked and the plain column, on all queries and on each half."""
    from vectorize_core.evaluate import eval_columns
    from vectorize_core.evaluation import read_qrels

    out = {}
    for name in datasets:
        url = database(admin, name)
        paths = qrels_halves(name)
        figures: dict = {}
        counts = {label: sum(1 for rels in read_qrels(paths[label]).values() if any(r > 0 for r in rels.values()))
                  for label in ("dev", "test")}  # fmt: skip
        with connect(url) as db:
            for label in ("dev", "test"):  # all queries: their mean, weighted by the judged queries
                path = paths[label]
                for exact in (True, False):
                    scores = eval_columns(
                        db, table=name, column=("title", "text"), queries=str(BEIR / name / "queries.jsonl"),
                        qrels=path, exact=exact, hybrid=True, k=100,
                    )  # fmt: skip
                    for sc in scores:
                        mode = "exact" if exact else "index"
                        figures[f"{sc.vector_column}/{sc.ranking}/{mode}/{label}"] = sc.scores["ndcg@10"]
                        figures[f"{sc.vector_column}/{sc.ranking}/ranked_by"] = getattr(sc, "ranked_by", None)
        for key in [k for k in figures if k.endswith("/dev")]:
            test = key[: -len("dev")] + "test"
            figures[key[: -len("dev")] + "all"] = (figures[key] * counts["dev"] + figures[test] * counts["test"]) / (
                counts["dev"] + counts["test"]
            )
        out[name] = figures
        log(f"{name}: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()})}")
    return out


def timing(admin: str, datasets=DATASETS) -> dict:
    """Milliseconds a search takes per query without the model (its vector given), k = 10,
    through the index: dense and hybrid, on the chunked and the plain column (200 queries)."""
    import modules
    from vectorize_core.dialects import vector_literal
    from vectorize_core.evaluation import read_queries
    from vectorize_core.search import hybrid_statements, ranked, run_ranked, search_spec
    from vectorize_core.target import resolve_for_search

    out = {}
    for name in datasets:
        figures: dict = {}
        with connect(database(admin, name)) as db:
            queries = read_queries(BEIR / name / "queries.jsonl")
            texts = [queries[q] for q in sorted(queries)][: int(os.environ.get("RANKING_TIMING_QUERIES", "200"))]
            vectors = modules.get("minilm").encode(texts)
            for column in ("title_vector", "plain_vector"):
                target = resolve_for_search(db, table=name, vector_column=column)
                spec = search_spec(db, target, 10)
                dense, hybrid, exact_fallbacks = [], [], 0
                for text, vector in zip(texts, vectors, strict=True):
                    literal = vector_literal(vector)
                    started = time.perf_counter()
                    _, how = ranked(db, spec, literal)
                    dense.append(time.perf_counter() - started)
                    exact_fallbacks += how == "exact"
                    started = time.perf_counter()
                    _, query, params = hybrid_statements(db, target, spec, literal, text, None, 60.0, (1.0, 1.0))
                    run_ranked(db, spec, query, params)
                    hybrid.append(time.perf_counter() - started)
                for leg, times in (("dense", dense), ("hybrid", hybrid)):
                    times.sort()
                    figures[f"{column}/{leg}/ms_p50"] = 1000 * times[len(times) // 2]
                    figures[f"{column}/{leg}/ms_mean"] = 1000 * sum(times) / len(times)
                figures[f"{column}/dense/exact_fallbacks"] = exact_fallbacks
        out[name] = figures
        log(f"{name}: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()})}")
    return out


if __name__ == "__main__":
    BENCH_DIR.mkdir(exist_ok=True)
    admin = server_url()
    command = {"load": load, "tune": tune, "measure": measure, "timing": timing}[sys.argv[1]]
    print(json.dumps(command(admin, *([sys.argv[2:]] if sys.argv[2:] else [])), indent=2, default=float))
