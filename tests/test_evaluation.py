"""Retrieval metrics against hand-computed cases, and the BEIR / TREC file parsers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from vectorize_core.errors import BadInput
from vectorize_core.evaluation import (
    BadEvalFile,
    average_precision_at_k,
    evaluate,
    mrr_at_k,
    ndcg_at_k,
    read_qrels,
    read_queries,
    recall_against,
    recall_at_k,
)

SCIFACT = Path("/work/shared/data/beir/scifact")

# One query, graded: d2 has relevance 2, d4 and d9 have 1 (d9 is never retrieved), d3 is judged 0.
# R = 3 relevant documents. Ranks: d1=1 (unjudged), d2=2 (rel 2), d3=3 (rel 0), d4=4 (rel 1).
RANKED = ["d1", "d2", "d3", "d4"]
GRADED = {"d2": 2, "d4": 1, "d9": 1, "d3": 0}
# Ideal ordering of all judgments: gains 2, 1, 1 at ranks 1, 2, 3.
# IDCG = 2/log2(2) + 1/log2(3) + 1/log2(4) = 2 + 0.63093 + 0.5 = 3.13093
IDCG = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)


# --- nDCG ------------------------------------------------------------------------------------------------


def test_ndcg_graded_within_cutoff():
    # top 3: d1 (0), d2 (2), d3 (0) -> DCG = 2/log2(3) = 1.26186; IDCG@3 = 3.13093 -> 0.40303
    assert ndcg_at_k(RANKED, GRADED, 3) == pytest.approx((2 / math.log2(3)) / IDCG)
    assert ndcg_at_k(RANKED, GRADED, 3) == pytest.approx(0.40303, abs=1e-5)


def test_ndcg_graded_whole_list():
    # top 10 = all 4: DCG = 2/log2(3) + 1/log2(5) = 1.26186 + 0.43068 = 1.69254
    # IDCG@10 = 3.13093 (only three positive judgments) -> 0.54059
    assert ndcg_at_k(RANKED, GRADED, 10) == pytest.approx((2 / math.log2(3) + 1 / math.log2(5)) / IDCG)
    assert ndcg_at_k(RANKED, GRADED, 10) == pytest.approx(0.54059, abs=1e-5)


def test_ndcg_gain_is_linear_not_exponential():
    # d2 (rel 2) at rank 1, d4 (rel 1) at rank 2: DCG = 2 + 1/log2(3) = 2.63093
    # IDCG@2 = same ideal order = 2.63093 -> 1.0. Exponential gain (2^rel - 1) would give the same here,
    # so swap them: d4 first, d2 second: DCG = 1 + 2/log2(3) = 2.26186 -> 2.26186 / 2.63093 = 0.85972
    # (exponential gain would give (1 + 3/log2(3)) / (3 + 1/log2(3)) = 2.89279 / 3.63093 = 0.79671).
    rels = {"d2": 2, "d4": 1}
    assert ndcg_at_k(["d2", "d4"], rels, 2) == pytest.approx(1.0)
    assert ndcg_at_k(["d4", "d2"], rels, 2) == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert ndcg_at_k(["d4", "d2"], rels, 2) == pytest.approx(0.85972, abs=1e-5)


def test_ndcg_ideal_is_cut_at_k():
    # rel {a: 1, b: 2}, ranked [a], k = 1: DCG@1 = 1; IDCG@1 = 2 (only b, the best, fits) -> 0.5
    assert ndcg_at_k(["a"], {"a": 1, "b": 2}, 1) == pytest.approx(0.5)


def test_negative_relevance_gives_no_gain():
    # a is judged -1 (not relevant, gain 0), b is 1: DCG@2 = 1/log2(3) = 0.63093, IDCG@2 = 1 -> 0.63093
    rels = {"a": -1, "b": 1}
    assert ndcg_at_k(["a", "b"], rels, 2) == pytest.approx(1 / math.log2(3))
    assert recall_at_k(["a"], rels, 1) == 0.0
    assert mrr_at_k(["a", "b"], rels, 2) == pytest.approx(0.5)


# --- recall, MRR, MAP --------------------------------------------------------------------------------------


def test_recall_graded():
    # relevant = d2, d4, d9 (R = 3); top 3 holds d2 -> 1/3; top 10 holds d2, d4 -> 2/3
    assert recall_at_k(RANKED, GRADED, 3) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, GRADED, 10) == pytest.approx(2 / 3)


def test_mrr_graded():
    # first relevant is d2 at rank 2: MRR@1 = 0 (d1 only), MRR@3 = 1/2
    assert mrr_at_k(RANKED, GRADED, 1) == 0.0
    assert mrr_at_k(RANKED, GRADED, 3) == pytest.approx(0.5)


def test_average_precision_graded():
    # hits at rank 2 (precision 1/2) and rank 4 (precision 2/4); R = 3
    # AP@3 = (1/2) / 3 = 0.16667; AP@10 = (1/2 + 2/4) / 3 = 0.33333
    assert average_precision_at_k(RANKED, GRADED, 3) == pytest.approx(1 / 6)
    assert average_precision_at_k(RANKED, GRADED, 10) == pytest.approx(1 / 3)


def test_average_precision_divides_by_all_relevant_not_min_k_r():
    # 3 relevant, ranked [r1], k = 1: precision@1 = 1, divided by R = 3 -> 1/3 (min(k, R) would give 1)
    rels = {"r1": 1, "r2": 1, "r3": 1}
    assert average_precision_at_k(["r1"], rels, 1) == pytest.approx(1 / 3)


@pytest.mark.parametrize("metric", [ndcg_at_k, recall_at_k, mrr_at_k, average_precision_at_k])
def test_no_relevant_document_retrieved_scores_zero(metric):
    # relevant x is never retrieved: every metric is 0
    assert metric(["a", "b", "c"], {"x": 1, "a": 0}, 10) == 0.0


@pytest.mark.parametrize("metric", [ndcg_at_k, recall_at_k, mrr_at_k, average_precision_at_k])
def test_query_without_relevant_documents_scores_zero(metric):
    # only a zero judgment: R = 0, IDCG = 0 -> 0, not a division by zero
    assert metric(["a"], {"a": 0}, 10) == 0.0
    assert metric([], {}, 10) == 0.0


def test_relevant_document_beyond_the_cutoff():
    # c (rel 1) at rank 3
    ranked, rels = ["a", "b", "c"], {"c": 1}
    # k = 2: c is cut off -> all 0
    assert ndcg_at_k(ranked, rels, 2) == 0.0
    assert recall_at_k(ranked, rels, 2) == 0.0
    assert mrr_at_k(ranked, rels, 2) == 0.0
    assert average_precision_at_k(ranked, rels, 2) == 0.0
    # k = 3: DCG = 1/log2(4) = 0.5, IDCG = 1 -> 0.5; recall 1/1; MRR 1/3; AP = (1/3) / 1
    assert ndcg_at_k(ranked, rels, 3) == pytest.approx(0.5)
    assert recall_at_k(ranked, rels, 3) == 1.0
    assert mrr_at_k(ranked, rels, 3) == pytest.approx(1 / 3)
    assert average_precision_at_k(ranked, rels, 3) == pytest.approx(1 / 3)


def test_repeated_document_counts_once_at_its_first_rank():
    # Lists are treated as duplicate-free: [a, a] is [a]. Counting the copy would give recall 2/1,
    # AP (1/1 + 2/2)/1 = 2 and DCG 1 + 1/log2(3) > IDCG; counted once all are 1.
    for metric in (ndcg_at_k, recall_at_k, mrr_at_k, average_precision_at_k):
        assert metric(["a", "a"], {"a": 1}, 2) == pytest.approx(1.0)
    # and the copy does not use up a slot of the cutoff: [a, a, b] at k = 2 is [a, b] -> recall 2/2
    assert recall_at_k(["a", "a", "b"], {"a": 1, "b": 1}, 2) == pytest.approx(1.0)


def test_cutoff_must_be_positive():
    with pytest.raises(ValueError):
        recall_at_k(["a"], {"a": 1}, 0)


# --- evaluate ----------------------------------------------------------------------------------------------

QRELS = {
    "q1": {"d1": 1},
    "q2": {"d2": 2, "d3": 1},
    "q3": {"d4": 0},  # no relevant document: not evaluated
    "q4": {"d5": 1},  # missing from the run: scores 0
}
RUN = {
    "q1": ["d1", "x"],
    "q2": ["d3", "d2"],
    "q3": ["d4"],
    "q_extra": ["d1"],  # not judged: ignored
}


def test_evaluate_key_set_and_count():
    result = evaluate(RUN, QRELS)
    assert set(result) == {"queries", "ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100"}
    assert result["queries"] == 3  # q1, q2, q4


def test_evaluate_averages_over_judged_queries():
    result = evaluate(RUN, QRELS)
    # q1: d1 at rank 1 -> nDCG 1, recall 1, MRR 1, AP 1
    # q2: d3 (1) at rank 1, d2 (2) at rank 2: DCG = 1 + 2/log2(3) = 2.26186, IDCG = 2 + 1/log2(3) = 2.63093
    #     -> nDCG 0.85972; recall 2/2; MRR 1; AP = (1/1 + 2/2)/2 = 1
    # q4: absent from the run -> all 0
    q2_ndcg = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert result["ndcg@10"] == pytest.approx((1 + q2_ndcg + 0) / 3)  # 0.61991
    assert result["ndcg@10"] == pytest.approx(0.61991, abs=1e-5)
    assert result["recall@10"] == pytest.approx(2 / 3)
    assert result["recall@100"] == pytest.approx(2 / 3)
    assert result["mrr@10"] == pytest.approx(2 / 3)
    assert result["map@100"] == pytest.approx(2 / 3)


def test_evaluate_custom_cutoffs():
    # nDCG@1: q1 1/1 = 1; q2 d3 (gain 1) over ideal d2 (gain 2) = 0.5; q4 0 -> (1 + 0.5 + 0) / 3 = 0.5
    result = evaluate(RUN, QRELS, ks=[("ndcg", 1)])
    assert result == {"queries": 3, "ndcg@1": pytest.approx(0.5)}


def test_evaluate_with_nothing_to_evaluate():
    result = evaluate({"q": ["a"]}, {"q": {"a": 0}})
    assert result["queries"] == 0
    assert all(result[key] == 0.0 for key in result if key != "queries")


# --- recall against exact search ---------------------------------------------------------------------------


def test_recall_against_exact():
    exact = {"q1": ["a", "b", "c"], "q2": ["x"], "q3": ["m", "n"]}
    approx = {"q1": ["a", "c", "z"], "q2": ["y"]}  # q3 missing -> 0
    # k = 2: q1 {a,b} ∩ {a,c} = 1 of 2; q2 {x} ∩ {y} = 0 of min(2, 1) = 1; q3 0 -> (0.5 + 0 + 0) / 3
    assert recall_against(exact, approx, 2) == pytest.approx(1 / 6)
    # k = 3: q1 {a,b,c} ∩ {a,c,z} = 2 of 3; q2 0; q3 0 -> (2/3) / 3 = 2/9
    assert recall_against(exact, approx, 3) == pytest.approx(2 / 9)


def test_recall_against_itself_is_one():
    exact = {"q1": ["a", "b", "c"], "q2": ["x"]}
    # q2 has 1 exact result: the denominator is min(10, 1) = 1, so 1/1, not 1/10
    assert recall_against(exact, exact, 10) == 1.0
    assert recall_against(exact, {"q1": ["c", "b", "a"], "q2": ["x"]}, 10) == 1.0  # order within top k is free
    assert recall_against({}, {}, 10) == 0.0


# --- optional cross-check with pytrec_eval (not a dependency) ---------------------------------------------


def test_matches_pytrec_eval_when_available():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels = {"q1": GRADED, "q2": QRELS["q2"], "q3": {"d9": 1, "d1": 2}}
    run = {"q1": RANKED, "q2": RUN["q2"], "q3": ["d0", "d8", "d1", "d7", "d9"]}
    # distinct descending scores so that pytrec_eval ranks exactly as the lists do
    scored = {qid: {doc: float(len(docs) - i) for i, doc in enumerate(docs)} for qid, docs in run.items()}
    theirs = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10", "map_cut.100"}).evaluate(scored)
    for qid, docs in run.items():
        assert ndcg_at_k(docs, qrels[qid], 10) == pytest.approx(theirs[qid]["ndcg_cut_10"])
        assert recall_at_k(docs, qrels[qid], 10) == pytest.approx(theirs[qid]["recall_10"])
        assert average_precision_at_k(docs, qrels[qid], 100) == pytest.approx(theirs[qid]["map_cut_100"])


# --- parsers -----------------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_read_queries_jsonl(tmp_path):
    path = write(
        tmp_path / "queries.jsonl",
        '{"_id": "0", "text": "first query", "metadata": {}}\n\n{"_id": 7, "text": "numeric id"}\n',
    )
    assert read_queries(path) == {"0": "first query", "7": "numeric id"}


def test_read_queries_jsonl_detected_by_content(tmp_path):
    path = write(tmp_path / "queries", '\n{"_id": "a", "text": "x"}\n')
    assert read_queries(path) == {"a": "x"}


def test_read_queries_tsv(tmp_path):
    path = write(tmp_path / "queries.tsv", "1\twhat is a vector?\n\n2\ttabs\tinside text\r\n")
    assert read_queries(path) == {"1": "what is a vector?", "2": "tabs\tinside text"}


def test_read_queries_tsv_detected_by_content(tmp_path):
    path = write(tmp_path / "queries", "q1\thello\n")
    assert read_queries(path) == {"q1": "hello"}


def test_read_qrels_beir_with_header(tmp_path):
    path = write(tmp_path / "test.tsv", "query-id\tcorpus-id\tscore\n1\t31715818\t1\n1\t999\t2\n3\t14717500\t0\n")
    assert read_qrels(path) == {"1": {"31715818": 1, "999": 2}, "3": {"14717500": 0}}


def test_read_qrels_beir_without_header(tmp_path):
    path = write(tmp_path / "test.tsv", "1\t31715818\t1\n\n3\tdoc with space\t2\n")
    assert read_qrels(path) == {"1": {"31715818": 1}, "3": {"doc with space": 2}}


def test_read_qrels_trec(tmp_path):
    path = write(tmp_path / "qrels.txt", "301 0 FBIS3-10082 1\n301  0  FBIS3-10169 0\n302\t0\tLA-1\t2\n")
    assert read_qrels(path) == {"301": {"FBIS3-10082": 1, "FBIS3-10169": 0}, "302": {"LA-1": 2}}


def assert_bad(path: Path, reader, line: int, fragment: str) -> None:
    with pytest.raises(BadEvalFile) as caught:
        reader(path)
    message = str(caught.value)
    assert f"{path} line {line}:" in message
    assert fragment in message
    assert "\n" not in message
    assert isinstance(caught.value, BadInput) and caught.value.exit_code == 2


def test_queries_bad_json_names_line(tmp_path):
    path = write(
        tmp_path / "queries.jsonl",
        '{"_id": "1", "text": "a"}\n{"_id": "2", "text": "b"}\n{"_id": "3", "text": \n',
    )
    assert_bad(path, read_queries, 3, "not valid JSON")


def test_queries_missing_id_names_line(tmp_path):
    path = write(tmp_path / "queries.jsonl", '{"_id": "1", "text": "a"}\n{"text": "b"}\n')
    assert_bad(path, read_queries, 2, "missing '_id'")


def test_queries_missing_text_and_wrong_types(tmp_path):
    assert_bad(write(tmp_path / "a.jsonl", '{"_id": "1"}\n'), read_queries, 1, "missing 'text'")
    assert_bad(write(tmp_path / "b.jsonl", '["1", "a"]\n'), read_queries, 1, "JSON object")
    assert_bad(write(tmp_path / "c.jsonl", '{"_id": null, "text": "a"}\n'), read_queries, 1, "'_id'")
    assert_bad(write(tmp_path / "d.jsonl", '{"_id": "1", "text": 5}\n'), read_queries, 1, "'text'")


def test_queries_tsv_line_without_tab_names_line(tmp_path):
    path = write(tmp_path / "queries.tsv", "1\tfirst\n\n2 no tab here\n")
    assert_bad(path, read_queries, 3, "no tab")


def test_queries_invalid_utf8_names_line(tmp_path):
    path = tmp_path / "queries.jsonl"
    path.write_bytes(b'{"_id": "1", "text": "ok"}\n{"_id": "2", "text": "caf\xe9"}\n')
    assert_bad(path, read_queries, 2, "UTF-8")


def test_qrels_two_columns_names_line(tmp_path):
    path = write(tmp_path / "test.tsv", "query-id\tcorpus-id\tscore\n1\t2\t1\n1\t3\n")
    assert_bad(path, read_qrels, 3, "found 2")


def test_qrels_non_integer_score_names_line(tmp_path):
    path = write(tmp_path / "test.tsv", "1\t2\t1\n1\t3\t1.5\n")
    assert_bad(path, read_qrels, 2, "not an integer")
    assert_bad(write(tmp_path / "trec.txt", "301 0 D1 yes\n"), read_qrels, 1, "not an integer")


def test_qrels_empty_id_names_line(tmp_path):
    path = write(tmp_path / "test.tsv", "1\t2\t1\n1\t\t1\n")
    assert_bad(path, read_qrels, 2, "empty")


def test_qrels_header_only_tolerated_as_first_line(tmp_path):
    path = write(tmp_path / "test.tsv", "1\t2\t1\nquery-id\tcorpus-id\tscore\n")
    assert_bad(path, read_qrels, 2, "not an integer")


def test_qrels_invalid_utf8_names_line(tmp_path):
    path = tmp_path / "test.tsv"
    path.write_bytes(b"1\t2\t1\n\n1\t\xff\xfe\t1\n")
    assert_bad(path, read_qrels, 3, "UTF-8")


def test_missing_file_is_bad_input(tmp_path):
    with pytest.raises(BadEvalFile, match="nope.tsv"):
        read_qrels(tmp_path / "nope.tsv")


# --- the real SciFact files, when present (read in place, never copied) -------------------------------------


@pytest.mark.skipif(not (SCIFACT / "qrels" / "test.tsv").exists(), reason="BEIR SciFact not in /work/shared/data")
def test_real_scifact_files():
    queries = read_queries(SCIFACT / "queries.jsonl")
    qrels = read_qrels(SCIFACT / "qrels" / "test.tsv")
    assert len(queries) == 1109
    assert len(qrels) == 300
    assert sum(len(docs) for docs in qrels.values()) == 339
    assert set(qrels) <= set(queries)
    # a run that returns exactly the relevant documents scores 1 everywhere
    perfect = {qid: [doc for doc, rel in docs.items() if rel > 0] for qid, docs in qrels.items()}
    result = evaluate(perfect, qrels)
    assert result["queries"] == 300
    assert all(result[key] == pytest.approx(1.0) for key in result if key != "queries")
