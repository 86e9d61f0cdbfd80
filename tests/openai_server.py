"""A real OpenAI-compatible /v1/embeddings server on loopback, for the tests and the benchmark.

Vectors: all-MiniLM-L6-v2 (``vectors="minilm"``, the default), or ``vectors="hash"``: a unit
vector of ``dimension`` float32 made of the text's SHAKE-256 digest, so every text has one exact
vector (``EmbeddingServer.vector(text)``) at no model cost. Answers floats,
or float32 base64 when asked (``encoding_format``), as OpenAI does.

Behaviour, as a hosted API or an inference server shows it:
- ``latency`` seconds per request plus ``per_text`` seconds per input, requests answered
  concurrently (a thread a connection, HTTP/1.1 kept alive);
- ``max_inputs``: more inputs in one request get HTTP 413 (text-embeddings-inference's answer);
- ``max_text_chars``: a longer input gets HTTP 400 with OpenAI's "maximum context length" message;
- ``rate_limit_first``: the first n requests get HTTP 429 with ``Retry-After: retry_after``;
- inputs containing FAIL get HTTP 500 every time; ``hang``: no request is ever answered;
- ``drop()`` stops listening and cuts every open connection; ``restart()`` listens again on the
  same port.

Counts what it saw: requests, TCP connections, the most requests in flight at once, when each
request arrived and was answered. ``GET /stats`` says the same as JSON, ``GET /reset`` starts
the counts again (for a server run as a process of its own:
``python tests/openai_server.py --latency 1.0 --per-text 0.001``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # many connections at once, as a real server takes them

    def handle_error(self, request, client_address):
        pass  # connections cut by drop() are expected


class EmbeddingServer:
    def __init__(
        self,
        api_key: str = "sk-test-secret",
        rate_limit_first: int = 0,
        *,
        vectors: str = "minilm",
        dimension: int = 32,
        latency: float = 0.0,
        per_text: float = 0.0,
        max_inputs: int | None = None,
        max_text_chars: int | None = None,
        retry_after: str = "0.2",
        hang: bool = False,
        port: int = 0,
    ):
        self.api_key = api_key
        self.rate_limit_first = rate_limit_first
        self.vectors = vectors
        self.dimension = dimension
        self.latency = latency
        self.per_text = per_text
        self.max_inputs = max_inputs
        self.max_text_chars = max_text_chars
        self.retry_after = retry_after
        self.hang = hang
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self.arrivals: list[tuple[float, int]] = []  # (time.monotonic(), inputs) of each request
        self.answers: list[tuple[float, int]] = []  # (time.monotonic(), status) of each answer
        self.connections = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.first_request_at: float | None = None  # time.time(), for a server in another process
        self.last_answer_at: float | None = None
        self.lock = threading.Lock()
        self.dropped = threading.Event()
        self.open: set[socket.socket] = set()
        self.port = port
        self.httpd: _HTTPServer | None = None
        self.thread: threading.Thread | None = None
        self._listen()

    # -- what the server answers -------------------------------------------------------------

    def vector(self, text: str) -> np.ndarray:
        """The server's vector for a text (hash vectors)."""
        raw = hashlib.shake_256(text.encode("utf-8")).digest(4 * self.dimension)
        v = np.frombuffer(raw, dtype="<u4").astype(np.float32) / np.float32(2**32) - np.float32(0.5)
        return (v / np.linalg.norm(v)).astype(np.float32)

    def embed(self, texts: list[str]) -> list[np.ndarray]:
        if self.vectors == "minilm":
            import modules

            return list(modules.get("minilm").encode(texts))
        return [self.vector(t) for t in texts]

    def answer(self, handler, body: dict) -> None:
        texts = body["input"]
        if isinstance(texts, str):
            texts = [texts]
        arrived = time.monotonic()
        with self.lock:
            self.requests.append(body)
            self.arrivals.append((arrived, len(texts)))
            number = len(self.requests)
            if self.first_request_at is None:
                self.first_request_at = time.time()
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if handler.headers.get("Authorization") != f"Bearer {self.api_key}":
                return handler.reply(401, {"error": {"message": "invalid api key"}})
            if number <= self.rate_limit_first:
                return handler.reply(429, {"error": {"message": "slow down"}}, {"Retry-After": self.retry_after})
            if self.hang:
                self.dropped.wait()
                return None
            status, payload = self.outcome(body, texts)
            payload = json.dumps(payload).encode()
            # The answer is ready latency + per_text a text after the request came (the work
            # above is done in that time, as a real server's would be).
            if self.dropped.wait(max(0.0, arrived + self.latency + self.per_text * len(texts) - time.monotonic())):
                return None
            handler.reply(status, payload)
        finally:
            with self.lock:
                self.in_flight -= 1

    def outcome(self, body: dict, texts: list[str]) -> tuple[int, dict]:
        if self.max_inputs is not None and len(texts) > self.max_inputs:
            message = f"batch size {len(texts)} > maximum allowed batch size {self.max_inputs}"
            return 413, {"error": message, "error_type": "Validation"}
        if self.max_text_chars is not None and any(len(t) > self.max_text_chars for t in texts):
            message = (
                f"This model's maximum context length is {self.max_text_chars} tokens, however you requested "
                "more tokens. Please reduce your prompt."
            )
            return 400, {"error": {"message": message, "type": "invalid_request_error"}}
        if any("FAIL" in text for text in texts):
            return 500, {"error": {"message": "model crashed"}}
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()
                if as_base64
                else [float(x) for x in v],
            }
            for i, v in enumerate(self.embed(texts))
        ]
        usage = {"prompt_tokens": sum(len(t) // 4 for t in texts)}
        return 200, {"object": "list", "data": data[::-1], "model": body["model"], "usage": usage}

    def stats(self) -> dict:
        with self.lock:
            return {
                "requests": len(self.requests),
                "inputs": sum(n for _, n in self.arrivals),
                "connections": self.connections,
                "max_in_flight": self.max_in_flight,
                "statuses": {str(s): self.statuses.count(s) for s in sorted(set(self.statuses))},
                "first_request_at": self.first_request_at,
                "last_answer_at": self.last_answer_at,
            }

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()
            self.statuses.clear()
            self.arrivals.clear()
            self.answers.clear()
            self.connections = self.max_in_flight = 0
            self.first_request_at = self.last_answer_at = None

    # -- listening, dropping out, coming back ------------------------------------------------

    def _listen(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # connections kept alive

            def setup(self):
                super().setup()
                self.counted = False
                with server.lock:
                    server.open.add(self.connection)

            def finish(self):
                with server.lock:
                    server.open.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def do_GET(self):  # noqa: N802 - http.server's naming
                if self.path == "/stats":
                    return self.reply(200, server.stats(), count=False)
                if self.path == "/reset":
                    server.reset_counts()
                    return self.reply(200, server.stats(), count=False)
                return self.reply(404, {"error": "not found"}, count=False)

            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path != "/v1/embeddings":
                    return self.reply(404, {"error": "not found"})
                if not self.counted:
                    self.counted = True
                    with server.lock:
                        server.connections += 1
                server.answer(self, json.loads(raw))

            def reply(self, status, payload, headers=None, count=True):
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                if count:
                    with server.lock:
                        server.statuses.append(status)
                        server.answers.append((time.monotonic(), status))
                        server.last_answer_at = time.time()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.dropped.clear()
        self.httpd = _HTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> EmbeddingServer:
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        return self

    def drop(self) -> None:
        """Stop listening and cut every open connection (requests in flight get no answer)."""
        self.dropped.set()
        if self.httpd is not None:
            if self.thread is not None and self.thread.is_alive():
                self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
        with self.lock:
            sockets = list(self.open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def restart(self) -> EmbeddingServer:
        """Listen again on the same port."""
        self._listen()
        return self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--per-text", type=float, default=0.0, help="seconds per input")
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--max-inputs", type=int)
    parser.add_argument("--api-key", default="sk-test-secret")
    args = parser.parse_args()
    server = EmbeddingServer(
        args.api_key, vectors="hash", dimension=args.dimension, latency=args.latency, per_text=args.per_text,
        max_inputs=args.max_inputs, port=args.port,
    ).start()  # fmt: skip
    print(server.base_url, flush=True)
    try:
        server.thread.join()
    except KeyboardInterrupt:
        server.drop()


if __name__ == "__main__":
    main()
