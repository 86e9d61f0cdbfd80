"""docs/benchmarks.md from the figures in docs/benchmarks.json."""

from __future__ import annotations

from pathlib import Path


def ok(value: float, target: float, higher_is_better: bool = True) -> str:
    met = value >= target if higher_is_better else value <= target
    return "met" if met else "**not met**"


def write_report(r: dict, path: Path) -> None:
    m = r.get("machine", {})
    lines = [
        "# Benchmarks",
        "",
        "Made by `make bench` (`benchmarks/run.py`); raw figures in `docs/benchmarks.json`.",
        "",
        f"Machine: {m.get('cores')} cores ({m.get('cpu')}), no GPU. Python {m.get('python')}, {m.get('postgres')}, "
        f"pgvector {m.get('pgvector extension')} (embedded), pgvector-python {m.get('pgvector')}, torch {m.get('torch')}, sentence-transformers "
        f"{m.get('sentence-transformers')}, transformers {m.get('transformers')}, openvino {m.get('openvino')}, "
        f"psycopg {m.get('psycopg')}.",
        "",
        "| # | what | measured | target | ratio to target |",
        "|---|---|---|---|---|",
    ]
    rows = []
    if "encode" in r:
        e = r["encode"]
        rows.append(
            f"| 1 | `encode` with no backend flag ({e['backend']}), whole process, against a bare "
            f"sentence-transformers process, {e['rows']} texts of 20-120 words, median of {e['pairs']} pairs run in turn "
            f"| cached model: {e['encode_rows_s']:.1f} vs {e['bare_rows_s']:.1f} rows/s: **{e['ratio']:.2f}x** (pair by "
            f"pair: {', '.join(f'{x:.2f}' for x in e['run_ratios'])}); first run, conversion included: "
            f"{e['first_encode_rows_s']:.1f} vs {e['first_bare_rows_s']:.1f} rows/s = {e['first_ratio']:.2f}x; "
            f"min cosine to torch's vectors {e['min_cosine']:.6f} | >= 2.0x, cosine >= 0.9999 | {e['ratio'] / 2:.2f} "
            f"({ok(e['ratio'], 2)}{'' if e['min_cosine'] >= 0.9999 else ', cosine NOT met'}) |"
        )
    if "import" in r:
        i = r["import"]
        rows.append(
            f"| 3 | import-vectors of {i['rows']:,} x 384 (JSON Lines, stored and HNSW-indexed) vs bare binary COPY into a "
            f"scratch table + the same index | import-vectors {i['import_s']:.1f} s, bare {i['bare_total_s']:.1f} s (COPY alone "
            f"{i['bare_copy_s']:.1f} s): **{i['ratio']:.2f}** of bare speed | >= 0.5 | {i['ratio'] / 0.5:.2f} ({ok(i['ratio'], 0.5)}) |"
        )
    if "search" in r:
        s = r["search"]
        rows.append(
            f"| 4 | search on {s['rows']:,} rows x 384 with HNSW (ef_search 100), 200 queries | SQL alone p50 "
            f"{s['sql_p50_ms']:.1f} ms, p95 {s['sql_p95_ms']:.1f} ms; with query encoding (warm) p50 {s['e2e_p50_ms']:.1f} ms, "
            f"p95 {s['e2e_p95_ms']:.1f} ms; recall@10 vs exact **{s['recall10']:.3f}** | recall >= 0.95 | "
            f"{s['recall10'] / 0.95:.3f} ({ok(s['recall10'], 0.95)}) |"
        )
    if "hybrid" in r:
        h = r["hybrid"]
        rows.append(
            f"| 4b | search --hybrid on {h['rows']:,} rows of real passages x 384 (HNSW + GIN, RRF k=60, 100 candidates "
            f"per leg), 200 NFCorpus queries | SQL p50 {h['hybrid_sql_p50_ms']:.1f} ms, p95 **{h['hybrid_sql_p95_ms']:.1f} ms**; "
            f"full-text leg on its GIN index: {h['text_leg_uses_gin']}, vector leg on HNSW: {h['vector_leg_uses_hnsw']} "
            f"| p95 <= 100 ms | {100 / h['hybrid_sql_p95_ms']:.2f} ({ok(100, h['hybrid_sql_p95_ms'])}) |"
        )
    if "serve" in r:
        v = r["serve"]
        extra = v["text_p50_ms"] - v["sql_p50_ms"] - v["encode_p50_ms"]  # HTTP, catalog, JSON
        rows.append(
            f"| 4c | `vectorize.py serve`, warm, POST /search on {v['rows']:,} rows x 384 (HNSW), {v['queries']} NFCorpus "
            f"text queries encoded by MiniLM in the server | one client: p50 **{v['text_p50_ms']:.1f} ms**, p95 "
            f"{v['text_p95_ms']:.1f} ms ({v['requests_s_1_client']:.0f} requests/s), against SQL alone p50 "
            f"{v['sql_p50_ms']:.1f} ms + encoding alone {v['encode_p50_ms']:.1f} ms; query vectors p50 {v['vector_p50_ms']:.1f} "
            f"ms; {v['clients']} clients at once: **{v['requests_s']:.0f} requests/s**, p50 {v['concurrent_p50_ms']:.1f} ms, "
            f"p95 {v['concurrent_p95_ms']:.1f} ms | p50 within 10 ms of SQL + encoding (here {extra:+.1f} ms) "
            f"| {10 / max(extra, 0.1):.2f} ({ok(10, extra)}) |"
        )
    if "million" in r:
        m = r["million"]
        rows.append(
            f"| 9 | {m['rows']:,} rows x 384 (cheap in-process encoder): fill, then `vectorize.py index` (memory sized to "
            f"the graph, pgvector's 2 parallel workers) | fill {m['fill_rows_s']:,.0f} rows/s; HNSW build **{m['index_build_s']:.0f} s** "
            f"with {m['progress_events']} progress reports; search p50 {m['search_p50_ms']:.1f} ms, p95 "
            f"{m['search_p95_ms']:.1f} ms, recall@10 vs exact **{m['recall10']:.3f}** at ef_search 100 | fill >= 25,000 rows/s, "
            f"recall >= 0.95 | fill {ok(m['fill_rows_s'], 25000)}, recall {ok(m['recall10'], 0.95)} |"
        )
    if "import-million" in r:
        im = r["import-million"]
        npy, jl, cs = im["npy"], im["jsonl"], im["csv"]
        total = npy["load_s"] + (npy["index_s"] or 0)
        rows.append(
            f"| 9b | `vectorize.py import-vectors` of {im['rows']:,} x 384 float32 into a {im['rows']:,}-row table, as a "
            f"process: .npy ({npy['file_mb']:,.0f} MB) + keys, then the HNSW build | load **{npy['load_rows_s']:,.0f} rows/s** "
            f"({npy['load_s']:.1f} s: {', '.join(f'{p} {s:.1f} s' for p, s in npy['phases_s'].items())}), index "
            f"{npy['index_s'] or 0:.0f} s, together {total:.0f} s; client peak RSS **{npy['peak_rss_mb']:.0f} MB**. JSON Lines "
            f"{jl['load_rows_s']:,.0f} rows/s ({jl['file_mb']:,.0f} MB, RSS {jl['peak_rss_mb']:.0f} MB), CSV "
            f"{cs['load_rows_s']:,.0f} rows/s ({cs['peak_rss_mb']:.0f} MB) | load >= 20,000 rows/s, RSS well below the "
            f"file, load + index <= 1,000 s | load {ok(npy['load_rows_s'], 20000)}, RSS "
            f"{ok(npy['peak_rss_mb'], npy['file_mb'] / 2, higher_is_better=False)}, total {ok(total, 1000, False)} |"
        )
    if "index-configs" in r and "import-million" in r:
        ic, tool_s = r["index-configs"], r["import-million"]["npy"]["index_s"] or 0
        subset = ", ".join(f"{w} workers {ic[f'subset_workers{w}_s']:.0f} s" for w in (0, 1, 2))
        fixed = (
            f"{ic['fixed_1gb_1m_s']:.0f} s"
            if ic.get("fixed_1gb_1m_s")
            else f"not done after {ic['fixed_1gb_cut_off_s']:,} s ({ic['fixed_1gb_tuples'] or 0:,} tuples loaded)"
        )
        rows.append(
            f"| 9c | HNSW build of the same 1,000,000 x 384: the tool's settings (import-million's build) against "
            f"pgvector's best found by hand (4GB; workers chosen on {ic['subset_rows']:,} rows: {subset}) | tool "
            f"**{tool_s:.0f} s**, best by hand ({ic['best_workers']} workers) {ic['best_1m_s']:.0f} s: "
            f"**{ic['best_1m_s'] / tool_s:.2f}** of the best's speed; the fixed maintenance_work_mem = 1GB of before: "
            f"{fixed} | >= 0.9 | {ok(ic['best_1m_s'] / tool_s, 0.9)} |"
        )
    if "write" in r:
        w = r["write"]
        rows.append(
            f"| 5 | the write path alone: {w['rows']:,} rows with a fixed 384-dim in-process encoder | **{w['rows_s']:,.0f} "
            f"rows/s** | >= 20,000 rows/s | {w['rows_s'] / 20000:.2f} ({ok(w['rows_s'], 20000)}) |"
        )
    if "memory" in r:
        mem = r["memory"]
        rows.append(
            f"| 6 | peak RSS of encode's fill, 10,000 vs {mem.get('largest', 100_000):,} rows | "
            + " vs ".join(f"{mem[k]:.0f} MB" for k in sorted(rss_keys(mem), key=lambda k: int(k.split("_")[1])))
            + f": **{mem['growth'] * 100:+.1f}%** from the smallest to the largest | < 10% | "
            f"{ok(mem['growth'], 0.10, higher_is_better=False)} |"
        )
    if "startup" in r:
        st = r["startup"]
        rows.append(
            f"| 7 | start-up | `--help` **{st['--help'] * 1000:.0f} ms**, `list-models` **{st['list-models'] * 1000:.0f} ms** "
            f"| < 500 ms | {ok(max(st['--help'], st['list-models']), 0.5, higher_is_better=False)} |"
        )
    if "nfcorpus" in r:
        n = r["nfcorpus"]
        ex, ix = n["exact"], n["ef100_index"]
        rows.append(
            f"| 8 | BEIR NFCorpus, all-MiniLM-L6-v2, doc = title + text: NDCG@10 of exact search | **{ex['ndcg@10']:.5f}** "
            f"(published {n['published_ndcg10']}, difference {n['delta']:+.5f}); with the HNSW index at ef_search 100: "
            f"{ix['ndcg@10']:.5f}, at pgvector's default 40: {n['ef40_index']['ndcg@10']:.5f} | within 0.005 | "
            f"{ok(-abs(n['delta']), -0.005)} |"
        )
    lines += rows
    if "nfcorpus" in r:
        n = r["nfcorpus"]
        lines += [
            "",
            "## NFCorpus in detail",
            "",
            f"{n['exact']['queries']} test queries; encode of 3,633 documents took {n['encode_s']:.0f} s "
            f"({n['truncated']} documents longer than the model's 256 tokens, truncated by it).",
            "",
            "| search | NDCG@10 | Recall@10 | Recall@100 | MRR@10 | MAP@100 | index recall@10 vs exact |",
            "|---|---|---|---|---|---|---|",
            row("exact", n["exact"], None),
            row("HNSW, ef_search 100 (our default)", n["ef100_index"], n["ef100_index_recall10"]),
            row("HNSW, ef_search 40 (pgvector's default), k = 10", n["ef40_index"], n["ef40_index_recall10"]),
        ]
        if "torch_exact" in n:
            lines.append(row("exact, the same documents encoded by torch", n["torch_exact"], None))
            delta = n["exact"]["ndcg@10"] - n["torch_exact"]["ndcg@10"]
            lines += [
                "",
                f"Default backend ({n.get('backend', '')}) against torch: NDCG@10 difference {delta:+.5f} "
                f"(target: within 0.002, {ok(-abs(delta), -0.002)}).",
            ]
        lines += [
            "",
            "MTEB's published figures for this model on NFCorpus: NDCG@10 0.31594, Recall@10 0.15499, "
            "Recall@100 0.31151, MAP@100 0.14244.",
        ]
    lines += chunk_lines(r)
    if "repeated" in r:
        from repeated import section as repeated_section  # benchmarks/repeated.py: text that repeats

        lines += ["", repeated_section(r["repeated"])]
    if "formats" in r:
        from formats import section  # benchmarks/formats.py: vectors in and out by format

        lines += ["", section(r["formats"])]
    lines += [
        "",
        "## How each figure is made",
        "",
        "1. Each run a new process, timed from outside: `vectorize.py encode` of a fresh table of the texts (fill "
        "and index build) against `python -c` loading sentence-transformers and MiniLM and encoding the same texts "
        "(batch 32), in turn. The first pair starts from an empty model cache; cosine of the stored vectors against "
        "`SentenceTransformer.encode` of the same texts.",
        "3. Unit vectors of low intrinsic dimension (24 latent factors + noise, like sentence embeddings) written "
        "as JSON Lines; bare = binary COPY of the same float32 vectors into a scratch table, then "
        "`CREATE INDEX ... USING hnsw` with the same settings.",
        "4. SQL alone: the search statement for 200 query vectors near the data; recall against the same "
        "queries ranked exactly. With encoding: a NFCorpus query text encoded by MiniLM, then the statement.",
        "4c. A `vectorize.py serve` process on the same machine, warmed by 10 queries; the rows' vectors are "
        "embedding-like stand-ins adopted as MiniLM's (`encode --adopt`), the queries real NFCorpus texts encoded "
        "by MiniLM in the server. Latency from the client (httpx, keep-alive), one request at a time, then the same "
        "queries from 4 threads with a connection each. SQL alone and encoding alone timed in the benchmark process.",
        "5. `encode` with an in-process encoder returning one fixed vector: fill time only (no index).",
        "6. `encode` in a fresh process with the same fixed encoder; its peak RSS (`VmHWM`) at exit, median of 3 "
        "(`ru_maxrss` would include the benchmark process's own size, which survives fork and exec).",
        "7. Median of 7 runs of the command in a new process.",
        "8. `encode` then `eval` (exact, and through the index) of the 323 test queries; ids are the BEIR ids.",
        "9b. Embedding-like vectors (as in 3) written as .npy + JSON Lines keys, JSON Lines and CSV (numbers as a "
        "float32 array's `tolist()` prints them); each file imported by a new `vectorize.py import-vectors` process "
        "into a fresh table; load and index times from its output, peak RSS from GNU time.",
        "9c. `CREATE INDEX ... USING hnsw (v vector_cosine_ops)` (m 16, ef_construction 64) timed from the client: "
        "max_parallel_maintenance_workers 0, 1 and 2 with maintenance_work_mem 4GB on the first 200,000 rows, the "
        "fastest at 1M; then 1GB and 2 workers (the fixed setting of before) at 1M under a statement timeout, its "
        "progress read from pg_stat_progress_create_index.",
    ]
    path.write_text("\n".join(lines) + "\n")


def rss_keys(mem: dict) -> list[str]:
    return [k for k in mem if k.startswith("rss_") and k.endswith("_mb")]


def row(name: str, s: dict, recall) -> str:
    rec = f"{recall:.3f}" if recall is not None else "-"
    return (
        f"| {name} | {s['ndcg@10']:.5f} | {s['recall@10']:.5f} | {s['recall@100']:.5f} | {s['mrr@10']:.5f} | "
        f"{s['map@100']:.5f} | {rec} |"
    )


def chunk_lines(r: dict) -> list[str]:
    """encode --chunk (benchmarks/chunked.py): needles, BEIR, cost by row length, search latency."""
    if not any(k.startswith("chunks-") for k in r):
        return []
    lines = ["", "## Long texts: encode --chunk", ""]
    if "chunks-needle" in r:
        n = r["chunks-needle"]
        lines += [
            f"Needles: {n['rows']} rows of {n['row_words']:,} words of Python's pydoc text (read on this machine); "
            f"12 of them hold one sentence of fact each, at words {', '.join(f'{d:,}' for d in n['depths'])}; one query "
            "per fact, in other words. The needle row's rank among all rows (exact ranking), at each depth:",
            "",
            "| column | ranks by depth | first | chunks | encode |",
            "|---|---|---|---|---|",
            f"| truncated (plain encode) | {' '.join(map(str, n['truncated']))} | "
            f"{sum(x == 1 for x in n['truncated'])} of 12 | - | - |",
        ]
        for c in n["configs"].values():
            lines.append(
                f"| --chunk-tokens {c['tokens']} --chunk-overlap {c['overlap']} | {' '.join(map(str, c['ranks']))} | "
                f"**{c['first']} of 12** | {c['chunks']:,} | {c['encode_s']:.0f} s |"
            )
    if "chunks-beir" in r:
        lines += [
            "",
            "BEIR NDCG@10, truncated (plain) against chunked (64 tokens, no overlap: the defaults, chosen on the dev "
            "half of NFCorpus's queries and the needles; the test half was not looked at), k = 100:",
            "",
            "| data set | queries | truncated exact | chunked exact | truncated index | chunked index | chunks | "
            "encode truncated / chunked |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, b in r["chunks-beir"].items():
            if not isinstance(b, dict):
                continue
            for label in ("all", "dev", "test"):
                lines.append(
                    f"| {name} | {label} | {b[f'doc_vector_{label}_exact']:.4f} | **{b[f'doc_chunks_{label}_exact']:.4f}** | "
                    f"{b[f'doc_vector_{label}_index']:.4f} | {b[f'doc_chunks_{label}_index']:.4f} | "
                    f"{b['chunks']:,} for {b['rows']:,} rows | {b['truncated_encode_s']:.0f} s / {b['chunked_encode_s']:.0f} s |"
                )
    if "chunks-beir" in r:
        lines += [
            "",
            "Through the index at k = 100 the chunked column ranks as exactly as it does without: the 1,000 nearest "
            "chunks (the most asked of the index) often hold fewer than 100 rows, and then every chunk is ranked. "
            "Encode times were taken while other benchmarks shared the machine.",
        ]
    if "chunks-cost" in r:
        lines += [
            "",
            "Cost by row length (MiniLM, OpenVINO; each encode a new process, its peak RSS from ru_maxrss; splitting "
            "against encoding the same chunks, in one process):",
            "",
            "| rows | plain: rows/s, peak RSS | chunked: rows/s, chunks, peak RSS | splitting / encoding | tokens/s |",
            "|---|---|---|---|---|",
        ]
        for label, c in r["chunks-cost"].items():
            if not isinstance(c, dict):
                continue
            plain, chunked, split = c["plain"], c["chunked"], c["split"]
            lines.append(
                f"| {c['rows']} x {label} | {plain['rows'] / plain['seconds']:.1f}, {plain['rss_mb']:.0f} MB | "
                f"{chunked['rows'] / chunked['seconds']:.2f}, {chunked['chunks']:,}, {chunked['rss_mb']:.0f} MB | "
                f"{split['split_s']:.1f} s / {split['encode_s']:.1f} s = **{split['share'] * 100:.1f}%** | "
                f"{split['tokens_per_s']:,.0f} |"
            )
    if "chunks-search" in r:
        cs = r["chunks-search"]
        c, p = cs["chunked"], cs["plain"]
        lines += [
            "",
            f"Search, k = 10, SQL and ranking only (embedding-like vectors, 200 queries): chunked column of "
            f"{c['chunks']:,} chunks ({c['rows']:,} rows) p50 **{c['p50_ms']:.1f} ms**, p95 {c['p95_ms']:.1f} ms, "
            f"recall@10 {c['recall10']:.3f}; plain column of {p['rows']:,} rows p50 {p['p50_ms']:.1f} ms, p95 "
            f"{p['p95_ms']:.1f} ms, recall@10 {p['recall10']:.3f}.",
        ]
    return lines
