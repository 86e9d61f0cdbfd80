"""`vectorize.py eval`: retrieval quality of vectorized columns on a set of judged queries.

Queries are encoded with each column's recorded encoder (and query prefix) and ranked through the
same search path as `search`: with the vector index by default (and then also exactly, to report
how much the index costs), or only exactly with ``exact=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import search_sql
from .db import Database
from .dialects import SearchSpec, vector_literal
from .errors import BadInput, NoVectorizedColumn
from .evaluation import evaluate, read_qrels, read_queries, recall_against
from .search import (
    FUSION_K,
    column_options,
    distance_name,
    fulltext_of,
    hybrid_names,
    ranked_rows,
    run_hybrid,
    run_ranked,
)
from .target import Candidate, SearchTarget, load_encoder

QUERY_BATCH = 64


@dataclass
class ColumnScores:
    vector_column: str
    model: str
    metric: str
    scores: dict  # 'queries', 'ndcg@10', 'recall@10', 'recall@100', 'mrr@10', 'map@100'
    index_recall: float | None  # recall@10 of the index against exact search (None with --exact)
    exact: bool
    ranking: str = "dense"  # dense, fulltext or hybrid (eval --hybrid shows the three)
    ranked_by: dict | None = None  # how: the vector leg, the text scoring, the fusion (ranked_by())

    def as_dict(self) -> dict:
        out = {
            "vector_column": self.vector_column,
            "ranking": self.ranking,
            "model": self.model,
            "metric": self.metric,
            **self.scores,
        }
        out["exact"] = self.exact
        out["index_recall@10"] = self.index_recall
        out["ranked_by"] = self.ranked_by
        return out


def ranked_by(ranking: str, meta: dict, exact: bool, dialect, fusion_k: float, weights) -> dict:
    """What produced a figure: the vector leg (through the index or exact; a chunked column's
    opening and best-chunk weights), the full-text scoring, the fusion's constant and weights."""
    how: dict = {}
    if ranking in ("dense", "hybrid"):
        chunks = meta.get("chunks")
        w = (chunks or {}).get("opening_weight")
        if not chunks:
            vectors = "row vector"
        elif w is None:
            vectors = "best chunk"
        else:
            vectors = f"{w:g} x opening + {1 - w:g} x best chunk"
        how["vectors"] = {"search": "exact" if exact else "index", "score": vectors}
    if ranking in ("fulltext", "hybrid"):
        terms = (meta.get("fulltext") or {}).get("terms")
        how["text"] = "bm25" if terms and dialect.bm25 else "ts_rank"
    if ranking == "hybrid":
        how["fusion"] = {"method": "reciprocal rank", "k": fusion_k, "weights": list(weights)}
    return how


def eval_columns(
    db: Database,
    *,
    table: str,
    column: str | list[str] | tuple[str, ...],
    queries: str,
    qrels: str,
    schema: str | None = None,
    vector_columns: list[str] | None = None,
    id_column: str | None = None,
    k: int = 100,
    exact: bool = False,
    ef_search: int | None = None,
    hybrid: bool = False,
    fusion_k: float | None = None,
    weights: tuple[float, float] = (1.0, 1.0),
    progress=None,
) -> list[ColumnScores]:
    """Scores of each vectorized column of table.column on the judged queries.

    ``progress(done, total)`` counts queries ranked, over all columns.
    """
    info = db.find_table(table, schema)
    sources = (column,) if isinstance(column, str) else tuple(column)
    for name in sources:
        info.column(name)
    id_column = id_column or single_key(info)
    info.column(id_column)
    judged = read_qrels(qrels)
    texts = {qid: text for qid, text in read_queries(queries).items() if qid in judged}
    if not texts:
        raise BadInput(f"none of the queries in {queries} has judgments in {qrels}")
    # Judgments of queries the queries file lacks cannot be ranked: counting them as zero would
    # lower every metric. Evaluate the queries that have both, and say how many were left out.
    left_out = len(set(judged) - set(texts))
    judged = {qid: judged[qid] for qid in texts}
    columns = columns_to_evaluate(info, sources, vector_columns)
    if hybrid:
        for name, meta in columns:
            if not meta.get("fulltext"):
                raise BadInput(f"{info.display}.{name} has no full text for --hybrid: encode it with --fulltext")
    ids = list(texts)
    total = len(ids) * len(columns) * ((1 if exact else 2) + (2 if hybrid else 0))
    done = 0
    results = []
    for vector_column, meta in columns:
        vectors = encode_queries(meta, [texts[q] for q in ids])
        runs = {}
        for mode in ["exact"] if exact else ["index", "exact"]:
            spec = SearchSpec(
                table=info.ident, columns=[id_column], keys=list(info.primary_key), vector_column=vector_column,
                metric=meta["metric"], dimension=int(meta["dimension"]), k=k, mode=mode, ef_search=ef_search,
                **column_options(info, meta),
            )  # fmt: skip
            run = {}
            for qid, vector in zip(ids, vectors, strict=True):
                run[qid] = [str(row[0]) for row in ranked_rows(db, spec, vector_literal(vector))]
                done += 1
                if progress is not None:
                    progress(done, total)
            runs[mode] = run
        ranked = runs["exact" if exact else "index"]
        scores = evaluate(ranked, judged)
        index_recall = None if exact else recall_against(runs["exact"], runs["index"], 10)
        scores["judged_queries_left_out"] = left_out
        how = ranked_by("dense", meta, exact, db.dialect, fusion_k or FUSION_K, weights)
        results.append(
            ColumnScores(vector_column, meta["model"], meta["metric"], scores, index_recall, exact, "dense", how)
        )
        if not hybrid:
            continue
        target = SearchTarget(info, vector_column, meta)
        spec = SearchSpec(
            table=info.ident, columns=[id_column], keys=list(info.primary_key), vector_column=vector_column,
            metric=meta["metric"], dimension=int(meta["dimension"]), k=k, mode="exact" if exact else "index",
            ef_search=ef_search, distance_name=distance_name(info), **column_options(info, meta),
        )  # fmt: skip
        for ranking in ("fulltext", "hybrid"):
            run = {}
            for qid, vector in zip(ids, vectors, strict=True):
                if ranking == "fulltext":
                    query, params = search_sql.text_statement(
                        db.dialect, spec, texts[qid], fulltext_of(target), hybrid_names(info)
                    )
                    rows = run_ranked(db, spec, query, params)
                else:
                    rows = run_hybrid(
                        db,
                        target,
                        spec,
                        vector,
                        texts[qid],
                        fusion_k=fusion_k or FUSION_K,
                        weights=weights,
                        candidates=k,
                    ).rows
                    rows = [(row[id_column],) for row in rows]
                run[qid] = [str(row[0]) for row in rows]
                done += 1
                if progress is not None:
                    progress(done, total)
            scores = evaluate(run, judged)
            scores["judged_queries_left_out"] = left_out
            how = ranked_by(ranking, meta, exact, db.dialect, fusion_k or FUSION_K, weights)
            results.append(
                ColumnScores(vector_column, meta["model"], meta["metric"], scores, None, exact, ranking, how)
            )
    return results


def single_key(info) -> str:
    if len(info.primary_key) != 1:
        raise BadInput(
            f"{info.display} has a primary key of {len(info.primary_key)} columns; "
            "say which column holds the corpus ids with --id-column"
        )
    return info.primary_key[0]


def columns_to_evaluate(info, column: tuple[str, ...], wanted: list[str] | None) -> list[tuple[str, dict]]:
    """The vectorized columns of these source columns: those whose sources are exactly them (every
    model's, to compare), else those holding them all (`-c body` finds a title+body column)."""
    found = [Candidate(info.schema, info.name, c.name, c.metadata, info) for c in info.columns.values() if c.metadata]
    fits = {f.vector_column: f.fit(column) for f in found}
    best = max(fits.values(), default=0)
    found = [(f.vector_column, f.metadata) for f in found if best and fits[f.vector_column] == best]
    column = ", ".join(column)
    if wanted:
        known = {name for name, _ in found}
        for name in wanted:
            if name not in known:
                raise NoVectorizedColumn(f"{info.display} has no vectorized column {name!r} for {column!r}")
        found = [(name, meta) for name, meta in found if name in wanted]
    if not found:
        raise NoVectorizedColumn(f"{info.display}.{column} has no vectorized column; run encode first")
    for name, meta in found:
        if meta.get("external"):
            raise BadInput(f"{info.display}.{name} holds imported vectors: no model is known to encode the queries")
    return found


def encode_queries(meta: dict, texts: list[str]) -> np.ndarray:
    encoder = load_encoder(meta["model"], dimension=int(meta["dimension"]))
    prefix = meta.get("query_prefix", "")
    batches = [
        np.asarray(encoder.encode([prefix + t for t in texts[i : i + QUERY_BATCH]]), dtype=np.float32)
        for i in range(0, len(texts), QUERY_BATCH)
    ]
    return np.concatenate(batches)
