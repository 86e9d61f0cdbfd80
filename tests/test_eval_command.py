"""vectorize.py eval: metrics of a vectorized column on judged queries, through the search path."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

import modules
from vectorize_core.evaluation import evaluate


class HashedEncoder:
    """Deterministic pseudo-random vectors: distances without ties, so the exact order is known."""

    name = "hashed"
    description = "test encoder: a random vector seeded by the text"
    dimension = 16
    metric = "l2"

    @staticmethod
    def vector(text: str) -> np.ndarray:
        return np.random.default_rng(zlib.crc32(text.encode())).standard_normal(16).astype(np.float32)

    def encode(self, batch):
        return np.stack([self.vector(t) for t in batch])


@pytest.fixture
def hashed():
    modules.register(HashedEncoder())
    yield
    modules.unregister("hashed")


DOCS = {f"d{i}": f"document number {i}" for i in range(40)}
QUERIES = {"q1": "xxx xx", "q2": "xxxxxxx x xxxx", "q3": "x", "q4": "never judged"}
QRELS = {"q1": {"d1": 2, "d7": 1}, "q2": {"d5": 1, "d30": 1}, "q3": {"d0": 1, "d39": 0}}


@pytest.fixture
def judged(run_cli, url, conn, hashed, words, tmp_path):
    conn.execute("CREATE TABLE corpus (doc_id text PRIMARY KEY, body text)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO corpus VALUES (%s, %s)", list(DOCS.items()))
    assert run_cli("encode", "--url", url, "-t", "corpus", "-c", "body", "-m", "hashed").exit_code == 0
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    qrels = tmp_path / "test.tsv"
    qrels.write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"{q}\t{d}\t{r}\n" for q, rels in QRELS.items() for d, r in rels.items())
    )
    return queries, qrels


def exact_run(k=100):
    vectors = {d: HashedEncoder.vector(t) for d, t in DOCS.items()}
    run = {}
    for qid, text in QUERIES.items():
        q = HashedEncoder.vector(text)
        run[qid] = sorted(vectors, key=lambda d: float(np.linalg.norm(vectors[d] - q)))[:k]
    return run


def test_eval_exact_matches_metrics_of_the_exact_ranking(run_cli, url, judged):
    queries, qrels = judged
    result = run_cli(
        "eval", "--url", url, "-t", "corpus", "-c", "body", "--queries", queries, "--qrels", qrels, "--exact", "--json"
    )
    assert result.exit_code == 0, result.output
    (scores,) = json.loads(result.stdout)
    expected = evaluate(exact_run(), QRELS)
    assert scores["queries"] == 3
    for key in ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100"):
        assert scores[key] == pytest.approx(expected[key], abs=1e-9), key
    assert scores["vector_column"] == "body_vector" and scores["index_recall@10"] is None


def test_eval_with_the_index_reports_its_recall(run_cli, url, judged):
    queries, qrels = judged
    result = run_cli(
        "eval", "--url", url, "-t", "corpus", "-c", "body", "--queries", queries, "--qrels", qrels, "--json"
    )
    (scores,) = json.loads(result.stdout)
    assert 0.9 <= scores["index_recall@10"] <= 1.0
    table = run_cli("eval", "--url", url, "-t", "corpus", "-c", "body", "--queries", queries, "--qrels", qrels)
    assert "ndcg@10" in table.stdout and "body_vector" in table.stdout


def test_several_vector_columns_side_by_side(run_cli, url, judged):
    queries, qrels = judged
    assert (
        run_cli(
            "encode",
            "--url",
            url,
            "-t",
            "corpus",
            "-c",
            "body",
            "-m",
            "words",
            "--metric",
            "cosine",
            "--vector-column",
            "v_cos",
        ).exit_code
        == 0
    )
    args = (
        "eval",
        "--url",
        url,
        "-t",
        "corpus",
        "-c",
        "body",
        "--queries",
        queries,
        "--qrels",
        qrels,
        "--exact",
        "--json",
    )
    both = json.loads(run_cli(*args).stdout)
    assert [s["vector_column"] for s in both] == ["body_vector", "v_cos"]
    assert [s["metric"] for s in both] == ["l2", "cosine"]
    one = json.loads(run_cli(*args, "--vector-column", "v_cos").stdout)
    assert [s["vector_column"] for s in one] == ["v_cos"]


@pytest.mark.parametrize(
    "which, content, fragment",
    [
        ("queries", '{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": \n', "line 2"),
        ("qrels", "q1\td1\t1\nq1\td2\n", "line 2"),
        ("qrels", "q1\td1\t1\nq1\td2\tyes\n", "line 2"),
    ],
)
def test_malformed_files_exit_2_naming_the_line(run_cli, url, judged, which, content, fragment):
    queries, qrels = judged
    (queries if which == "queries" else qrels).write_text(content)
    result = run_cli("eval", "--url", url, "-t", "corpus", "-c", "body", "--queries", queries, "--qrels", qrels)
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_composite_key_needs_id_column(run_cli, url, conn, words, tmp_path):
    conn.execute("CREATE TABLE c2 (a int, b int, doc text, body text, PRIMARY KEY (a, b))")
    conn.execute("INSERT INTO c2 VALUES (1, 1, 'd1', 'xx x'), (1, 2, 'd2', 'x')")
    assert run_cli("encode", "--url", url, "-t", "c2", "-c", "body", "-m", "words").exit_code == 0
    q = tmp_path / "q.tsv"
    q.write_text("q1\tx\n")
    r = tmp_path / "r.tsv"
    r.write_text("q1\td2\t1\n")
    base = ("eval", "--url", url, "-t", "c2", "-c", "body", "--queries", q, "--qrels", r, "--exact", "--json")
    refused = run_cli(*base)
    assert refused.exit_code == 2 and "--id-column" in refused.stderr
    (scores,) = json.loads(run_cli(*base, "--id-column", "doc").stdout)
    assert scores["ndcg@10"] == pytest.approx(1.0)


def test_judgments_of_queries_not_in_the_queries_file_are_left_out(run_cli, url, judged, tmp_path):
    """One query, ranked perfectly: NDCG@10 is 1.0, whatever else the qrels judge."""
    _, qrels = judged
    run = exact_run()["q1"]
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"_id": "q1", "text": QUERIES["q1"]}) + "\n")
    perfect = tmp_path / "perfect.tsv"
    perfect.write_text(f"q1\t{run[0]}\t1\nq2\td5\t1\nq3\td0\t1\n")
    args = ("eval", "--url", url, "-t", "corpus", "-c", "body", "--queries", one, "--qrels", perfect, "--exact")
    result = run_cli(*args, "--json")
    assert result.exit_code == 0, result.output
    (scores,) = json.loads(result.stdout)
    assert scores["queries"] == 1 and scores["ndcg@10"] == pytest.approx(1.0)
    assert scores["judged_queries_left_out"] == 2
    assert "2 judged queries are not in" in run_cli(*args).stderr
