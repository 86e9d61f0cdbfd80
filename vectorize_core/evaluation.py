"""Retrieval quality against judged queries (BEIR / TREC files), and an index's recall against exact search.

The metrics follow trec_eval (through pytrec_eval, which the BEIR toolkit uses). For one query, ``ranked`` is
the list of retrieved document ids, best first, and ``relevant`` maps judged document ids to a graded
relevance. A document is *relevant* when its relevance is > 0; R is the number of relevant documents.

* nDCG@k = DCG@k / IDCG@k with DCG@k = sum over ranks r <= k of gain(d_r) / log2(r + 1). The gain is the
  relevance itself (linear, as trec_eval's ``ndcg_cut``); unjudged documents and relevance <= 0 give 0.
  IDCG@k is the DCG of the ideal ordering of all the query's judgments, cut at k.
* Recall@k = (relevant documents in the top k) / R  (trec_eval ``recall_k``).
* MRR@k = 1 / rank of the first relevant document in the top k, else 0  (BEIR's ``MRR@k``).
* MAP@k = sum of precision@r over the ranks r <= k that hold a relevant document, divided by R, not by
  min(k, R)  (trec_eval ``map_cut_k``).

Every metric is 0 when R = 0. ``evaluate`` averages only over queries with R > 0, like BEIR; such a query
missing from the run scores 0 everywhere (trec_eval ``-c``).

Order: trec_eval ranks a run by score and breaks ties by document id, descending. Here the list order is
authoritative: the caller passes lists already in rank order. A document repeated in a list counts once,
at its first rank, so a list is treated as duplicate-free.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from .errors import BadInput

Ranking = Sequence[str]
Judgments = Mapping[str, int]

# (metric, cutoff) pairs reported by ``evaluate``; the keys read "ndcg@10" and so on.
DEFAULT_CUTOFFS: tuple[tuple[str, int], ...] = (
    ("ndcg", 10),
    ("recall", 10),
    ("recall", 100),
    ("mrr", 10),
    ("map", 100),
)

_INTEGER = re.compile(r"[+-]?[0-9]+")
_COLUMN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


class BadEvalFile(BadInput):
    """A queries or qrels file cannot be read; the message names the file and the line."""


# ---------------------------------------------------------------------------------------------------------
# Files


def _lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text) for each non-blank line, decoded strictly as UTF-8."""
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise BadEvalFile(f"{path} line {number}: not valid UTF-8 (byte {exc.start})") from None
                if number == 1:
                    line = line.removeprefix("\ufeff")
                if line.strip():
                    yield number, line.rstrip("\r\n")
    except OSError as exc:
        raise BadEvalFile(f"{path}: {exc.strerror or exc}") from None


def _is_tsv(path: str | Path, lines: list[tuple[int, str]]) -> bool:
    suffix = Path(path).suffix.lower()
    if suffix in (".tsv", ".txt"):
        return True
    if suffix in (".jsonl", ".json"):
        return False
    return bool(lines) and not lines[0][1].lstrip().startswith("{")


def _json_query(path: str | Path, number: int, line: str) -> tuple[str, str]:
    where = f"{path} line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadEvalFile(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise BadEvalFile(f"{where}: expected a JSON object with '_id' and 'text'")
    for field in ("_id", "text"):
        if field not in record:
            raise BadEvalFile(f"{where}: missing '{field}'")
    query_id, text = record["_id"], record["text"]
    if isinstance(query_id, bool) or not isinstance(query_id, (str, int)):
        raise BadEvalFile(f"{where}: '_id' must be a string or an integer")
    if not isinstance(text, str):
        raise BadEvalFile(f"{where}: 'text' must be a string")
    return str(query_id), text


def _tsv_query(path: str | Path, number: int, line: str) -> tuple[str, str]:
    query_id, tab, text = line.partition("\t")
    if not tab:
        raise BadEvalFile(f"{path} line {number}: expected 'id<TAB>text', found no tab")
    if not query_id.strip():
        raise BadEvalFile(f"{path} line {number}: empty query id")
    return query_id.strip(), text.strip()


def read_queries(path: str | Path) -> dict[str, str]:
    """Query id -> text, from BEIR JSON Lines ({"_id", "text"}) or a two-column TSV (id<TAB>text).

    TSV is chosen for a .tsv/.txt file, or when the first non-blank line does not start with '{'.
    Blank lines are skipped; a repeated id keeps its last text (as BEIR's loader does).
    """
    lines = list(_lines(path))
    parse = _tsv_query if _is_tsv(path, lines) else _json_query
    return dict(parse(path, number, line) for number, line in lines)


def _qrels_fields(line: str) -> list[str]:
    # BEIR files are tab-separated (an id may then hold a space); TREC files use any whitespace.
    return [field.strip() for field in line.split("\t")] if "\t" in line else line.split()


def _is_header(fields: list[str]) -> bool:
    return len(fields) in (3, 4) and all(_COLUMN_NAME.fullmatch(field) for field in fields)


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Query id -> {corpus id: relevance}, from BEIR TSV or TREC qrels.

    BEIR: ``query-id<TAB>corpus-id<TAB>score``, with an optional header as the first line only (every
    column a name starting with a letter, such as ``score``). TREC: ``qid iteration docid relevance``,
    whitespace-separated.
    A repeated (query, document) pair keeps its last relevance.
    """
    qrels: dict[str, dict[str, int]] = {}
    for index, (number, line) in enumerate(_lines(path)):
        fields = _qrels_fields(line)
        if index == 0 and _is_header(fields):
            continue
        if len(fields) == 3:
            query_id, doc_id, score = fields
        elif len(fields) == 4:
            query_id, _iteration, doc_id, score = fields
        else:
            raise BadEvalFile(
                f"{path} line {number}: expected 3 columns (query-id, corpus-id, score) "
                f"or 4 (TREC: qid iteration docid relevance), found {len(fields)}"
            )
        if not query_id or not doc_id:
            raise BadEvalFile(f"{path} line {number}: empty query or document id")
        if not _INTEGER.fullmatch(score):
            raise BadEvalFile(f"{path} line {number}: relevance {score!r} is not an integer")
        qrels.setdefault(query_id, {})[doc_id] = int(score)
    return qrels


# ---------------------------------------------------------------------------------------------------------
# Metrics for one query


def _top(ranked: Ranking, k: int) -> list[str]:
    """The first k distinct ids of ``ranked``, in order (a repeated id keeps its first rank)."""
    if k < 1:
        raise ValueError(f"cutoff k must be >= 1, got {k}")
    return list(dict.fromkeys(ranked))[:k]


def _relevant_count(relevant: Judgments) -> int:
    return sum(1 for rel in relevant.values() if rel > 0)


def _dcg(gains: Sequence[float]) -> float:
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1) if gain > 0)


def ndcg_at_k(ranked: Ranking, relevant: Judgments, k: int) -> float:
    """nDCG@k with linear gain (the relevance) and discount 1/log2(rank + 1); 0 without relevant docs."""
    ideal = _dcg(sorted((rel for rel in relevant.values() if rel > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return _dcg([relevant.get(doc, 0) for doc in _top(ranked, k)]) / ideal


def recall_at_k(ranked: Ranking, relevant: Judgments, k: int) -> float:
    """Relevant documents in the top k over all relevant documents; 0 without relevant docs."""
    total = _relevant_count(relevant)
    if total == 0:
        return 0.0
    return sum(1 for doc in _top(ranked, k) if relevant.get(doc, 0) > 0) / total


def mrr_at_k(ranked: Ranking, relevant: Judgments, k: int) -> float:
    """1 / rank of the first relevant document within the top k, else 0."""
    for rank, doc in enumerate(_top(ranked, k), start=1):
        if relevant.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def average_precision_at_k(ranked: Ranking, relevant: Judgments, k: int) -> float:
    """trec_eval map_cut: sum of precision@rank at each relevant hit in the top k, over all relevant docs."""
    total = _relevant_count(relevant)
    if total == 0:
        return 0.0
    hits, precision_sum = 0, 0.0
    for rank, doc in enumerate(_top(ranked, k), start=1):
        if relevant.get(doc, 0) > 0:
            hits += 1
            precision_sum += hits / rank
    return precision_sum / total


METRICS = {
    "ndcg": ndcg_at_k,
    "recall": recall_at_k,
    "mrr": mrr_at_k,
    "map": average_precision_at_k,
}


# ---------------------------------------------------------------------------------------------------------
# Averages


def evaluate(
    run: Mapping[str, Ranking],
    qrels: Mapping[str, Judgments],
    ks: Sequence[tuple[str, int]] = DEFAULT_CUTOFFS,
) -> dict[str, float | int]:
    """Mean of each (metric, k) in ``ks`` over the queries of ``qrels`` that have a relevant document.

    Returns ``{"queries": n, "ndcg@10": ..., ...}``; a judged query absent from ``run`` scores 0. Queries
    in ``run`` but not in ``qrels`` are ignored. With no query to evaluate, every mean is 0.0.
    """
    judged = {qid: rels for qid, rels in qrels.items() if _relevant_count(rels) > 0}
    result: dict[str, float | int] = {"queries": len(judged)}
    for name, k in ks:
        metric = METRICS[name]
        scores = [metric(run.get(qid, []), rels, k) for qid, rels in judged.items()]
        result[f"{name}@{k}"] = sum(scores) / len(scores) if scores else 0.0
    return result


def recall_against(exact: Mapping[str, Ranking], approx: Mapping[str, Ranking], k: int) -> float:
    """Mean over the queries of ``exact`` of |top-k approx ∩ top-k exact| / min(k, len(exact)).

    This is the index's recall against exact (brute-force) search. A query missing from ``approx`` scores 0;
    queries whose exact list is empty are left out; with none left the result is 0.0.
    """
    scores = []
    for qid, exact_ranked in exact.items():
        truth = _top(exact_ranked, k)
        if truth:
            found = set(_top(approx.get(qid, []), k))
            scores.append(len(found.intersection(truth)) / len(truth))
    return sum(scores) / len(scores) if scores else 0.0
