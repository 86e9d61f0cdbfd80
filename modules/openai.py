"""openai:<model> — the /v1/embeddings API of OpenAI and of every compatible server
(Ollama, vLLM, text-embeddings-inference, LiteLLM, ...).

Base URL from OPENAI_BASE_URL (default https://api.openai.com/v1), key from OPENAI_API_KEY (sent,
never printed or stored). Requests are batched by count and by a character budget; 429 and 5xx
answers are retried with backoff, honouring Retry-After. Uses only the standard library.
"""

from __future__ import annotations

import email.utils
import json
import os
import time
import urllib.error
import urllib.request

family = "openai"
name = "openai:<model>"
description = "any OpenAI-compatible /v1/embeddings endpoint (OPENAI_BASE_URL, OPENAI_API_KEY)"

DEFAULT_BASE_URL = "https://api.openai.com/v1"
KNOWN = {
    # model: (dimension, maximum input tokens)
    "text-embedding-3-small": (1536, 8191),
    "text-embedding-3-large": (3072, 8191),
    "text-embedding-ada-002": (1536, 8191),
}
# Models that accept the 'dimensions' request field (shortened Matryoshka embeddings).
SHORTENABLE = {"text-embedding-3-small", "text-embedding-3-large"}


class EndpointError(RuntimeError):
    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


def create(argument: str) -> OpenAIEncoder:
    if not argument:
        raise ValueError("openai: needs a model name, e.g. openai:text-embedding-3-small")
    return OpenAIEncoder(argument)


class OpenAIEncoder:
    metric = "cosine"  # OpenAI embeddings are normalised; cosine is what their docs recommend

    def __init__(
        self,
        model: str,
        dimension: int | None = None,
        base_url: str | None = None,
        max_batch: int = 256,
        max_chars: int = 400_000,
        retry_seconds: float | None = None,
    ):
        self.model = model
        self.name = f"{family}:{model}"
        self.description = f"{model} at {base_url or os.environ.get('OPENAI_BASE_URL') or DEFAULT_BASE_URL}"
        self._requested_dimension = dimension
        self._dimension = dimension or KNOWN.get(model, (None, None))[0]
        self.max_length = KNOWN.get(model, (None, None))[1]
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.max_batch = max_batch
        self.max_chars = max_chars
        self.retry_seconds = (
            retry_seconds if retry_seconds is not None else float(os.environ.get("VECTORIZE_HTTP_RETRY_SECONDS", "120"))
        )

    @property
    def source(self) -> str:
        return f"{self.base_url}/embeddings"

    def configure(self, backend=None, dimension=None):
        if backend not in (None, "torch"):
            raise ValueError(f"{self.name} runs remotely; --backend does not apply")
        return OpenAIEncoder(
            self.model,
            dimension=dimension or self._requested_dimension,
            base_url=self.base_url,
            max_batch=self.max_batch,
            max_chars=self.max_chars,
            retry_seconds=self.retry_seconds,
        )

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            # Unknown model: learn the size from one tiny request before any table is touched.
            self._dimension = len(self._request(["dimension probe"])[0])
        return self._dimension

    def encode(self, batch):
        import numpy as np

        vectors = []
        for chunk in self._chunks(list(batch)):
            vectors.extend(self._request(chunk))
        if not vectors:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.asarray(vectors, dtype=np.float32)

    def _chunks(self, texts):
        chunk, chars = [], 0
        for text in texts:
            # Empty strings are rejected by OpenAI's API; a single space embeds as 'nothing'.
            text = text or " "
            if chunk and (len(chunk) >= self.max_batch or chars + len(text) > self.max_chars):
                yield chunk
                chunk, chars = [], 0
            chunk.append(text)
            chars += len(text)
        if chunk:
            yield chunk

    def _request(self, texts: list[str]) -> list[list[float]]:
        body = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self._requested_dimension and self.model in SHORTENABLE:
            body["dimensions"] = self._requested_dimension
        deadline = time.monotonic() + self.retry_seconds
        attempt = 0
        while True:
            try:
                return self._post(body, len(texts))
            except EndpointError as exc:
                attempt += 1
                wait = exc.retry_after if exc.retry_after is not None else min(30.0, 0.5 * 2 ** (attempt - 1))
                if not exc.retryable or time.monotonic() + wait > deadline:
                    raise
                time.sleep(wait)

    def _post(self, body: dict, count: int) -> list[list[float]]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get("OPENAI_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(
            f"{self.base_url}/embeddings", data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - URL is the user's endpoint
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace").strip()
            raise EndpointError(
                f"HTTP {exc.code} from {self.source}: {detail}",
                status=exc.code,
                retry_after=parse_retry_after(exc.headers.get("Retry-After")),
            ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise EndpointError(f"cannot reach {self.source}: {getattr(exc, 'reason', exc)}") from None
        except ValueError as exc:
            raise EndpointError(f"{self.source} answered with invalid JSON: {exc}", status=0) from None
        data = sorted(payload.get("data", []), key=lambda item: item.get("index", 0))
        if len(data) != count:
            raise EndpointError(f"{self.source} returned {len(data)} embeddings for {count} inputs", status=0)
        return [item["embedding"] for item in data]


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
