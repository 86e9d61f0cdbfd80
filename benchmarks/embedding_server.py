"""Encoding through an OpenAI-compatible embedding server: rows/s against the server's latency
and the requests in flight.

The server is the tests' fake (tests/openai_server.py), run as a process of its own: it answers
each request after `latency` seconds plus 1 ms a text, any number of requests at once, with a
384-dimensional vector a text (exact, from the text's hash). An encode of 20,000 short rows is
timed from the server's first request to the return of encode() (the last vector written; the
index is not built), and every stored vector is checked against the server's.

    python benchmarks/embedding_server.py            # the headline, the grid, and the old fill
    python benchmarks/embedding_server.py --quick    # the headline only

Writes .bench/embedding_server.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_DIR, ROOT, fresh_db, log, psql, server_url  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
import modules  # noqa: E402
from openai_server import EmbeddingServer  # noqa: E402
from vectorize_core import connect, encode  # noqa: E402
from vectorize_core.request import EncodeRequest  # noqa: E402

ROWS = 20_000
PER_TEXT = 0.001
DIMENSION = 384
LATENCIES = (0.1, 0.5, 1.0)
IN_FLIGHT = (1, 4, 16, 32)
DEFAULT_IN_FLIGHT = modules.get("openai:x").requests_in_flight
# The fill before requests in flight (one request at a time, a connection each): the encoder as
# it was at this commit, run through today's fill (which gives an encoder without encode_many the
# old serial path: 128 texts a call).
OLD_COMMIT = "fcbf3b8"
OLD_ROWS = 5_000
RUNS: list[str] = []
WORDS = ["harbour", "ship", "train", "weather", "market", "river", "bridge", "city", "garden", "station"]


def texts(n: int) -> list[str]:
    """Short rows, like titles or messages: 6-12 words."""
    rng = np.random.default_rng(0)
    return [f"row {i}: " + " ".join(rng.choice(WORDS, int(rng.integers(6, 13)))) for i in range(n)]


class FakeServer:
    """tests/openai_server.py as a process of its own (its GIL is not the client's)."""

    def __init__(self, latency: float):
        command = [sys.executable, str(ROOT / "tests" / "openai_server.py"), "--latency", str(latency)]
        command += ["--per-text", str(PER_TEXT), "--dimension", str(DIMENSION)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.base_url = self.process.stdout.readline().strip()

    def stats(self, reset: bool = False) -> dict:
        path = "/reset" if reset else "/stats"
        with urllib.request.urlopen(self.base_url.removesuffix("/v1") + path) as response:  # noqa: S310
            return json.loads(response.read())

    def close(self) -> None:
        self.process.terminate()
        self.process.wait()


def load(url: str, rows: list[str]) -> None:
    with psql(url) as conn:
        conn.execute("DROP TABLE IF EXISTS docs")
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
        with conn.cursor() as cur, cur.copy("COPY docs (id, body) FROM STDIN") as copy:
            for i, text in enumerate(rows):
                copy.write_row((i, text))


def check_exact(url: str, rows: list[str]) -> int:
    """Rows whose stored vector is not, float for float, the server's for the row's text."""
    reference = EmbeddingServer.__new__(EmbeddingServer)
    reference.dimension = DIMENSION
    with psql(url) as conn:
        stored = conn.execute("SELECT id, body_vector::text FROM docs ORDER BY id").fetchall()
    wrong = sum(
        1
        for i, v in stored
        if v is None or not np.array_equal(np.array(json.loads(v), np.float32), reference.vector(rows[i]))
    )
    return wrong + len(rows) - len(stored)


def run(admin: str, server: FakeServer, rows: list[str], model: str, in_flight: int | None, check=False) -> dict:
    RUNS.append(model)
    url = fresh_db(admin, f"bench_embedding_server_{len(RUNS)}")  # a new name: the vector type's oid is cached
    load(url, rows)
    server.stats(reset=True)
    request = EncodeRequest(
        table="docs", column="body", model=model, dimension=DIMENSION, requests_in_flight=in_flight, index="skip"
    )
    with connect(url) as db:
        result = encode(db, request)
    ended = time.time()
    after = server.stats()
    seconds = ended - after["first_request_at"]
    figures = {
        "rows": len(rows),
        "written": result.written,
        "seconds": seconds,
        "rows_s": len(rows) / seconds,
        "requests": after["requests"],
        "connections": after["connections"],
        "max_in_flight": after["max_in_flight"],
        "fill_seconds": result.seconds,
    }
    if check:
        figures["not_exact"] = check_exact(url, rows)
    return figures


def old_encoder():
    """The openai encoder of OLD_COMMIT, as a registered encoder 'old-openai'."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:modules/openai.py"], capture_output=True, text=True, check=True
    ).stdout
    module = types.ModuleType("old_openai")
    exec(compile(source, "old_openai.py", "exec"), module.__dict__)  # noqa: S102 - the project's own file
    encoder = module.OpenAIEncoder("bench-embedder", dimension=DIMENSION)
    encoder.name = "old-openai"
    modules.register(encoder)
    return encoder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="the headline figure only")
    args = parser.parse_args()
    admin = server_url()
    rows = texts(ROWS)
    model = "openai:bench-embedder"
    out: dict = {"rows": ROWS, "per_text_s": PER_TEXT, "dimension": DIMENSION, "default_in_flight": DEFAULT_IN_FLIGHT}

    for latency in (1.0,) if args.quick else LATENCIES:
        server = FakeServer(latency)
        os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = server.base_url, "sk-test-secret"
        try:
            if latency == 1.0:
                headline = run(admin, server, rows, model, None, check=True)
                log(f"headline: latency 1.0s + 1ms/text, default ({DEFAULT_IN_FLIGHT} in flight): {headline}")
                out["headline"] = headline
                if not args.quick:
                    old_encoder()
                    old = run(admin, server, rows[:OLD_ROWS], "old-openai", None)
                    log(f"old fill ({OLD_COMMIT}), {OLD_ROWS} rows: {old}")
                    out["old"] = old
            if args.quick:
                continue
            for in_flight in IN_FLIGHT:
                figures = run(admin, server, rows, model, in_flight)
                log(f"latency {latency}s, {in_flight} in flight: {figures}")
                out.setdefault("grid", []).append({"latency_s": latency, "in_flight": in_flight, **figures})
        finally:
            server.close()

    BENCH_DIR.mkdir(exist_ok=True)
    (BENCH_DIR / "embedding_server.json").write_text(json.dumps(out, indent=2))
    print(table(out))


def table(out: dict) -> str:
    lines = []
    if "grid" in out:
        lines += ["| requests in flight | " + " | ".join(f"{lat:g} s" for lat in LATENCIES) + " |"]
        lines += ["|---:|" + "---:|" * len(LATENCIES)]
        for in_flight in IN_FLIGHT:
            cells = {g["latency_s"]: g for g in out["grid"] if g["in_flight"] == in_flight}
            label = f"{in_flight} (default)" if in_flight == DEFAULT_IN_FLIGHT else str(in_flight)
            lines.append(f"| {label} | " + " | ".join(f"{cells[lat]['rows_s']:,.0f}" for lat in LATENCIES) + " |")
    h = out["headline"]
    lines.append(
        f"\nHeadline: {h['rows']:,} rows, 1.0 s + 1 ms a text, defaults: {h['rows_s']:,.0f} rows/s "
        f"({h['seconds']:.1f} s; {h['requests']} requests on {h['connections']} connections, "
        f"{h['max_in_flight']} at once; {h['not_exact']} vectors not exactly the server's)"
    )
    if "old" in out:
        o = out["old"]
        lines.append(
            f"Old fill ({OLD_COMMIT}): {o['rows']:,} rows at {o['rows_s']:,.0f} rows/s ({o['seconds']:.1f} s; "
            f"{o['requests']} requests on {o['connections']} connections)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
