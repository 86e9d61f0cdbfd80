"""Benchmarks of tables whose text repeats: licence boilerplate, read on this machine from
/usr/share/doc/*/copyright (Debian's licence files: the same paragraphs in hundreds of packages).

Measures whether search through the vector index finds what exact search finds, on a plain column
of licence paragraphs and on a chunked column of whole licence files, each with 12 planted
sentences; and what encoding the repeats costs.

Run through benchmarks/run.py (`--only repeated`), or alone: `python benchmarks/repeated.py`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chunked import NEEDLES  # noqa: E402
from common import BENCH_DIR, ROOT, fresh_db, log, server_url  # noqa: E402

from vectorize_core import connect, encode  # noqa: E402
from vectorize_core.search import search  # noqa: E402

LICENCES = Path("/usr/share/doc")
PARAGRAPHS = 16_000
LONG_ROWS = 32


def copyright_files() -> list[Path]:
    return sorted(LICENCES.glob("*/copyright"))


def licence_paragraphs(n: int) -> list[str]:
    """The first n paragraphs (of five words or more) of the machine's licence files, in order."""
    out = []
    for path in copyright_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for paragraph in text.split("\n\n"):
            paragraph = " ".join(paragraph.split())
            if len(paragraph.split()) >= 5:
                out.append(paragraph)
                if len(out) == n:
                    return out
    return out


def licence_documents(n: int) -> list[str]:
    """The n longest licence files of at most 70,000 characters (copies included: a package
    family ships one file many times), in package order."""
    texts = []
    for path in copyright_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if len(text) <= 70_000:
            texts.append((path.parent.name, text))
    longest = sorted(texts, key=lambda item: (-len(item[1]), item[0]))[:n]
    return [text for _, text in sorted(longest)]


def plant(texts: list[str], seed: int, middle: bool) -> dict[int, int]:
    """Put each needle sentence into a different text (appended to a paragraph, or in the middle
    of a long text at a paragraph break); returns {needle number: row id}."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(texts), len(NEEDLES), replace=False)
    for number, row in enumerate(rows):
        sentence = NEEDLES[number][0]
        text = texts[row]
        if middle:
            breaks = [i for i in range(len(text)) if text.startswith("\n\n", i)] or [len(text)]
            at = breaks[int(rng.integers(len(breaks)))]
            texts[row] = text[:at] + "\n\n" + sentence + text[at:]
        else:
            texts[row] = text + " " + sentence
    return {number: int(row) for number, row in enumerate(rows)}


def load(url: str, table: str, texts: list[str]) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
        with conn.cursor() as cur, cur.copy(f"COPY {table} (id, body) FROM STDIN") as copy:
            for i, text in enumerate(texts):
                copy.write_row((i, text))


def rank_of(rows: list[dict], wanted: int) -> int | None:
    for position, row in enumerate(rows, 1):
        if row["id"] == wanted:
            return position
    return None


def compare(db, table: str, planted: dict[int, int], probes: list[str]) -> dict:
    """The planted rows' ranks through the index and exactly, and the index's recall@10 against
    exact search over probe queries."""
    index_ranks, exact_ranks = [], []
    started = time.perf_counter()
    for number, row in planted.items():
        query = NEEDLES[number][1]
        index_ranks.append(rank_of(search(db, query, k=10, table=table).rows, row))
        exact_ranks.append(rank_of(search(db, query, k=10, table=table, exact=True).rows, row))
    recalls, index_seconds = [], []
    for query in probes:
        before = time.perf_counter()
        got = search(db, query, k=10, table=table).rows
        index_seconds.append(time.perf_counter() - before)
        truth = search(db, query, k=10, table=table, exact=True).rows
        recalls.append(len({r["id"] for r in got} & {r["id"] for r in truth}) / max(1, len(truth)))
    return {
        "index_first": sum(r == 1 for r in index_ranks),
        "exact_first": sum(r == 1 for r in exact_ranks),
        "index_ranks": index_ranks,
        "exact_ranks": exact_ranks,
        "probe_recall10": float(np.mean(recalls)),
        "probe_queries": len(probes),
        "index_search_p50_ms": float(np.percentile(np.array(index_seconds) * 1000, 50)),
        "seconds": time.perf_counter() - started,
    }


def probe_queries(texts: list[str], n: int = 100) -> list[str]:
    """First sentences of n random distinct texts: queries that land among the repeats."""
    rng = np.random.default_rng(11)
    distinct = sorted(set(texts))
    picked = rng.choice(len(distinct), min(n, len(distinct)), replace=False)
    return [" ".join(distinct[i].split()[:12]) for i in picked]


def index_rows(url: str, table: str) -> int | None:
    """Vectors the column's vector index holds (its table's rows)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT c.reltuples::bigint, t.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_class t ON t.oid = i.indrelid JOIN pg_am a ON a.oid = c.relam"
            " WHERE a.amname = 'hnsw' AND t.relname LIKE %s",
            (f"{table}%",),
        ).fetchone()
        if row is None:
            return None
        return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(row[1]))).fetchone()[0]


def bench_plain(admin: str, quick: bool) -> dict:
    n = 3_000 if quick else PARAGRAPHS
    texts = licence_paragraphs(n)
    planted = plant(texts, seed=3, middle=False)
    url = fresh_db(admin, "bench_repeated_plain")
    load(url, "paragraph", texts)
    with connect(url) as db:
        started = time.perf_counter()
        encode(db, table="paragraph", column="body", model="minilm")
        seconds = time.perf_counter() - started
        log(f"plain: {len(texts)} paragraphs ({len(set(texts))} distinct) encoded in {seconds:.1f}s")
        result = compare(db, "paragraph", planted, probe_queries(texts))
    log(f"plain: planted first through the index {result['index_first']}/12, exact {result['exact_first']}/12")
    return {
        "rows": len(texts),
        "distinct": len(set(texts)),
        "encode_s": seconds,
        "index_holds": index_rows(url, "paragraph"),
        **result,
    }


def bench_chunked(admin: str, quick: bool) -> dict:
    texts = licence_documents(12 if quick else LONG_ROWS)
    planted = plant(texts, seed=4, middle=True)
    url = fresh_db(admin, "bench_repeated_chunked")
    load(url, "licence", texts)
    with connect(url) as db:
        started = time.perf_counter()
        result = encode(db, table="licence", column="body", model="minilm", chunk=True)
        seconds = time.perf_counter() - started
        log(f"chunked: {len(texts)} files ({len(set(texts))} distinct), {result.chunks} chunks in {seconds:.1f}s")
        probes = probe_queries([p for t in texts for p in t.split("\n\n") if len(p.split()) >= 5])
        compared = compare(db, "licence", planted, probes)
    log(f"chunked: planted first through the index {compared['index_first']}/12, exact {compared['exact_first']}/12")
    return {
        "rows": len(texts),
        "distinct_rows": len(set(texts)),
        "chunks": result.chunks,
        "encode_s": seconds,
        "index_holds": index_rows(url, "licence"),
        **compared,
    }


def bench_repeated(admin: str, quick: bool) -> dict:
    return {"plain": bench_plain(admin, quick), "chunked": bench_chunked(admin, quick)}


def bench_with_record(admin: str, quick: bool) -> dict:
    """This code's figures, beside the 'before' figures docs/benchmarks.json keeps (measured once,
    with this script, on the code before the index of distinct contents)."""
    recorded = json.loads((ROOT / "docs" / "benchmarks.json").read_text()).get("repeated", {})
    kept = {k: recorded[k] for k in ("before", "before_commit") if k in recorded}
    return {**kept, "after": bench_repeated(admin, quick)}


if __name__ == "__main__":
    import tempfile

    tempfile.tempdir = str(BENCH_DIR)
    which = sys.argv[1] if len(sys.argv) > 1 else "repeated"
    quick = "--quick" in sys.argv
    print(json.dumps(globals()[f"bench_{which}"](server_url(), quick), indent=2))


def section(r: dict) -> str:
    """The Markdown section of docs/benchmarks.md: the figures of this code ('after') beside those
    of the code before the index of distinct contents ('before'), where recorded."""
    after, before = r["after"], r.get("before", {})
    lines = [
        "## Repeated text (`benchmarks/repeated.py`)",
        "",
        "Licence text read on this machine from /usr/share/doc/*/copyright: a plain column of paragraphs and a "
        "chunked column (64 tokens) of whole files, 12 sentences planted in each (one a row); all-MiniLM-L6-v2. "
        "'Planted row first' counts the 12 questions (each a paraphrase of its sentence) whose planted row ranks "
        "first; recall@10 is against exact search over 100 queries taken from the texts. 'before' is the code "
        f"before the index of distinct contents ({r.get('before_commit', 'previous commit')}), run with the same script.",
        "",
        "| column | rows (distinct) | code | index holds | planted row first: index / exact | recall@10 vs exact "
        "| search p50 | encode |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, name in (("plain", "paragraphs"), ("chunked", "whole files, chunked")):
        for label, figures in (("before", before.get(kind)), ("after", after.get(kind))):
            if not figures:
                continue
            distinct = figures.get("distinct", figures.get("distinct_rows"))
            held = f"{figures['index_holds']:,}" + (f" of {figures['chunks']:,} chunks" if "chunks" in figures else "")
            lines.append(
                f"| {name} | {figures['rows']:,} ({distinct:,}) | {label} | {held} | "
                f"{figures['index_first']} / {figures['exact_first']} of 12 | {figures['probe_recall10']:.3f} | "
                f"{figures['index_search_p50_ms']:.1f} ms | {figures['encode_s']:.1f} s |"
            )
    n = r.get("no_repeats")
    if n:
        e, p, c, m = n["encode_whole_process"], n["search_100k_plain"], n["search_100k_chunks"], n["dense_graph_100k"]
        lines += [
            "",
            "Tables without repeats, before and after (the same scripts, in turn on this machine):",
            "",
            "| what | before | after |",
            "|---|---|---|",
            f"| `encode` of {e['texts']:,} NFCorpus/SciFact texts, whole process, median of {e['pairs']} pairs run in turn "
            f"| {e['before_wall_s']:.1f} s, {e['before_peak_mib']:.0f} MiB | {e['after_wall_s']:.1f} s, "
            f"{e['after_peak_mib']:.0f} MiB ({e['wall_ratio_median']:.3f}x) |",
            f"| search, 100,000 rows x 384 (`make bench --only chunks-search`, plain), p50 / p95, recall@10 "
            f"| {p['before_p50_ms']:.1f} / {p['before_p95_ms']:.1f} ms, {p['before_recall10']:.4f} "
            f"| {p['after_p50_ms']:.1f} / {p['after_p95_ms']:.1f} ms, {p['after_recall10']:.4f} |",
            f"| search, 100,000 chunks of 10,000 rows (chunked), p50 / p95, recall@10 "
            f"| {c['before_p50_ms']:.1f} / {c['before_p95_ms']:.1f} ms, {c['before_recall10']:.4f} "
            f"| {c['after_p50_ms']:.1f} / {c['after_p95_ms']:.1f} ms, {c['after_recall10']:.4f} |",
            f"| encode and index build of those 100,000 rows / chunks | {p['before_build_s']:.0f} s / "
            f"{c['before_build_s']:.0f} s | {p['after_build_s']:.0f} s / {c['after_build_s']:.0f} s |",
            "",
            f"A denser graph (m 24) for every table was measured and not taken: on 100,000 rows without repeats it "
            f"builds in {m['m24_build_s']:.0f} s (m 16: {m['m16_build_s']:.0f} s) and searches at p50 "
            f"{m['m24_p50_ms']:.1f} ms ({m['m16_p50_ms']:.1f} ms), recall@10 {m['m24_recall10']:.3f} "
            f"({m['m16_recall10']:.3f}); only a column whose rows repeat (1.5 rows a distinct content or more) gets it.",
        ]
    return "\n".join(lines)
