"""A real OpenAI-compatible /v1/embeddings server on loopback, serving all-MiniLM-L6-v2.

Fault injection for tests: inputs containing FAIL get HTTP 500 every time; the first
`rate_limit_first` requests get 429 with Retry-After.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import modules


class EmbeddingServer:
    def __init__(self, api_key: str = "sk-test-secret", rate_limit_first: int = 0):
        self.api_key = api_key
        self.rate_limit_first = rate_limit_first
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                if self.path != "/v1/embeddings":
                    return self.reply(404, {"error": "not found"})
                if self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self.reply(401, {"error": {"message": "invalid api key"}})
                if len(server.requests) <= server.rate_limit_first:
                    return self.reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.2"})
                if any("FAIL" in text for text in body["input"]):
                    return self.reply(500, {"error": {"message": "model crashed"}})
                vectors = modules.get("minilm").encode(body["input"])
                data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
                self.reply(200, {"object": "list", "data": data[::-1], "model": body["model"]})  # any order

            def reply(self, status, payload, headers=None):
                server.statuses.append(status)
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
