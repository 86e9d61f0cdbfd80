"""openai:<model> — the /v1/embeddings API of OpenAI and of every compatible server
(vLLM, text-embeddings-inference, Ollama, llama.cpp, LiteLLM, ...).

Base URL from OPENAI_BASE_URL (default https://api.openai.com/v1), key from OPENAI_API_KEY (sent,
never printed or stored).

How it talks to the server:
- Requests go several at once (``requests_in_flight``, REQUESTS_IN_FLIGHT unless a fill asks
  otherwise) over kept-alive connections: one httpx pool per encoder, driven by an event loop on
  a thread of its own, so a page's requests overlap and Ctrl-C cancels those in flight at once.
- A call's texts are cut into requests of at most ``max_batch`` texts and ``max_chars``
  characters, spread over the requests in flight (no fewer than SPREAD_MIN texts a request).
- 429 and 5xx are retried (tenacity) after the server's Retry-After, else after an exponential
  backoff, through one gate every request shares: a refusal pauses them all, and after the pause
  requests go one at a time, one more for each answer, up to the number in flight (no burst).
- A request refused as too large (413, or a message that says too long / too many) is split in
  halves, each sent again, and the texts per request come down for the requests after it. A
  single text refused so is longer than the model reads: it is refused (the fill names its row).
- No answer at all (connection refused or cut, no answer within the timeout) for longer than
  the budget gives up with one line naming the endpoint.

Vectors come as float32 base64 (what the OpenAI SDK asks for; a server that ignores it answers
floats, which are read as well), so every stored vector is exactly the server's.

Budgets, from the environment: VECTORIZE_HTTP_TIMEOUT (seconds to wait for one answer, 60),
VECTORIZE_HTTP_RETRY_SECONDS (how long a request is retried on 429/5xx, 120; the server
unreachable: at most 30). A query (search, serve) waits less: 30, 10 and 3 seconds.
"""

from __future__ import annotations

import email.utils
import math
import os
import re
import threading
import time
from dataclasses import dataclass

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

# Requests in flight at once. 16 requests of 256 texts keep 4,096 texts at the server: enough for
# vLLM or text-embeddings-inference to batch on a GPU, about 1,000 requests a minute against a
# hosted API answering in a second (within OpenAI's lower tiers; the gate slows down on a 429),
# and 3,000 rows a second against a server taking a second a request.
REQUESTS_IN_FLIGHT = 16
MAX_BATCH = 256  # texts a request
MAX_CHARS = 400_000  # characters a request (OpenAI takes 300,000 tokens a request)
SPREAD_MIN = 32  # a call with few texts is spread over the requests in flight, so many a request at least
CONNECT_SECONDS = 10.0
BACKOFF_FIRST, BACKOFF_MOST = 0.5, 8.0


@dataclass(frozen=True)
class Patience:
    timeout: float  # seconds to wait for one answer
    retry: float  # seconds a request is retried while the server answers 429 or 5xx
    unreachable: float  # seconds without any answer from the server before giving up


def patience(query: bool = False) -> Patience:
    timeout = float(os.environ.get("VECTORIZE_HTTP_TIMEOUT", "60"))
    retry = float(os.environ.get("VECTORIZE_HTTP_RETRY_SECONDS", "120"))
    if query:
        return Patience(min(timeout, 30.0), min(retry, 10.0), min(retry, 3.0))
    return Patience(timeout, retry, min(retry, 30.0))


UNREACHABLE, THROTTLED, TOO_LARGE, REFUSED, INVALID = "unreachable", "throttled", "too large", "refused", "invalid"
# What servers say when a request holds too many texts or a text too many tokens: OpenAI, vLLM
# ("maximum context length"), text-embeddings-inference ("batch size 64 > maximum allowed batch
# size 32", "must have less than 512 tokens"), llama.cpp ("input is too large to process").
TOO_LARGE_WORDS = re.compile(
    r"too (long|large|many|big)|maximum (context|input|allowed|batch|number)|context length|exceed"
    r"|must have less than|larger than|longer than|max[_ ]?(tokens|inputs|batch)",
    re.IGNORECASE,
)
# Answers that say nothing of the texts sent: splitting the request would not help.
ENDPOINT_STATUSES = {401, 402, 403, 404, 405, 407, 429}


class EndpointError(RuntimeError):
    def __init__(
        self,
        message: str,
        status: int | None = None,
        retry_after: float | None = None,
        kind: str = "",
        brief: str = "",
        detail: str = "",
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.kind = kind or (UNREACHABLE if status is None else classify(status, detail))
        self.brief = brief or (f"HTTP {status}" if status else message)  # a few words, for the progress line

    @property
    def retryable(self) -> bool:
        return self.kind in (UNREACHABLE, THROTTLED)

    def given_up(self, seconds: float) -> EndpointError:
        """The same failure, saying how long it was retried (and the wait the server asked for)."""
        asked = f"; it asks to wait {self.retry_after:g}s" if self.retry_after else ""
        return EndpointError(
            f"{self} (retried for {seconds:.0f}s{asked})", self.status, self.retry_after, self.kind, self.brief
        )

    @property
    def too_long(self) -> bool:
        """The server refused the request as too large (a single text: longer than the model reads)."""
        return self.kind == TOO_LARGE

    @property
    def endpoint_wide(self) -> bool:
        """A failure of the endpoint, not of the texts sent (the fill names no rows for it)."""
        return self.kind in (UNREACHABLE, INVALID) or self.status in ENDPOINT_STATUSES


def classify(status: int, detail: str) -> str:
    if status == 413 or (status in (400, 422, 500) and TOO_LARGE_WORDS.search(detail)):
        return TOO_LARGE
    if status == 429 or status >= 500:
        return THROTTLED
    return REFUSED


class Cancelled(Exception):
    """The caller's cancel event was set: requests in flight were abandoned."""


def create(argument: str) -> OpenAIEncoder:
    if not argument:
        raise ValueError("openai: needs a model name, e.g. openai:text-embedding-3-small")
    return OpenAIEncoder(argument)


def shown(url: str) -> str:
    """A URL fit to print: no user, password or query (where keys hide)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class OpenAIEncoder:
    metric = "cosine"  # OpenAI embeddings are normalised; cosine is what their docs recommend

    def __init__(
        self,
        model: str,
        dimension: int | None = None,
        base_url: str | None = None,
        max_batch: int = MAX_BATCH,
        max_chars: int = MAX_CHARS,
        requests_in_flight: int = REQUESTS_IN_FLIGHT,
    ):
        self.model = model
        self.name = f"{family}:{model}"
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.description = f"{model} at {shown(self.base_url)}"
        self._requested_dimension = dimension
        self._dimension = dimension or KNOWN.get(model, (None, None))[0]
        self.max_length = KNOWN.get(model, (None, None))[1]
        self.max_batch = max_batch
        self.max_chars = max_chars
        self.requests_in_flight = requests_in_flight
        self._format = "base64"
        self._session: _Session | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.base_url}/embeddings"

    @property
    def source(self) -> str:
        return shown(self.url)

    def configure(self, backend=None, dimension=None):
        if backend not in (None, "torch"):
            raise ValueError(f"{self.name} runs remotely; --backend does not apply")
        return OpenAIEncoder(
            self.model,
            dimension=dimension or self._requested_dimension,
            base_url=self.base_url,
            max_batch=self.max_batch,
            max_chars=self.max_chars,
            requests_in_flight=self.requests_in_flight,
        )

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            # Unknown model: learn the size from one tiny request before any table is touched.
            self._dimension = int(self.encode(["dimension probe"]).shape[1])
        return self._dimension

    # -- the interface ---------------------------------------------------------------------

    def encode(self, batch):
        """Vectors of a few texts (a query): the shorter patience of a user waiting."""
        vectors, refused = self._run(list(batch), patience(query=True), self.requests_in_flight, False)
        if refused:
            raise next(iter(refused.values()))
        return vectors

    def encode_many(
        self, texts, *, requests_in_flight=None, on_done=None, on_wait=None, cancel=None, isolate=False
    ) -> tuple:
        """Vectors of a page of texts, its requests sent ``requests_in_flight`` at a time, and
        {index: EndpointError} of the texts the server refused on their own (``too_long``; with
        ``isolate``, any text a failing request holds is found by splitting it). Raises
        EndpointError when the endpoint fails as a whole (``endpoint_wide``) or a request fails
        for good.

        ``on_done(count)`` hears texts done as their requests come back; ``on_wait(message)``
        what the requests wait for (a 429, the server unreachable), and None when they go on;
        both are called on the caller's thread. ``cancel``: an event that abandons the
        requests in flight and raises Cancelled."""
        return self._run(
            list(texts), patience(), requests_in_flight or self.requests_in_flight, isolate, on_done, on_wait, cancel
        )

    def plan(self, texts: list[str], requests_in_flight: int = 1, cap: int | None = None) -> list[list[int]]:
        """The texts' indices, cut into requests (in order): at most max_batch texts (or the cap
        a 413 taught) and max_chars characters each, and spread over the requests in flight."""
        most = min(self.max_batch, cap or self.max_batch)
        each = max(1, min(most, max(SPREAD_MIN, math.ceil(len(texts) / max(1, requests_in_flight)))))
        requests, request, chars = [], [], 0
        for i, text in enumerate(texts):
            size = len(text) or 1
            if request and (len(request) >= each or chars + size > self.max_chars):
                requests.append(request)
                request, chars = [], 0
            request.append(i)
            chars += size
        if request:
            requests.append(request)
        return requests

    def planned_requests(self, texts: int, characters: int, requests_in_flight: int | None = None) -> int:
        """The requests one encode_many call of so many texts and characters sends (texts of
        the same length), before any 413 splits them."""
        if texts <= 0:
            return 0
        in_flight = requests_in_flight or self.requests_in_flight
        each = max(1, min(self.max_batch, max(SPREAD_MIN, math.ceil(texts / in_flight))))
        average = max(1.0, characters / texts)
        each = max(1, min(each, int(self.max_chars // average)))
        return math.ceil(texts / each)

    def close(self) -> None:
        """Close the kept-alive connections (they are closed anyway when the encoder goes)."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    # -- the machinery ---------------------------------------------------------------------

    def _session_for(self) -> _Session:
        with self._lock:
            if self._session is None:
                self._session = _Session(self)
            return self._session

    def _run(self, texts, patience_, in_flight, isolate, on_done=None, on_wait=None, cancel=None):
        import asyncio
        import queue

        import numpy as np

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32), {}
        session = self._session_for()
        events: queue.SimpleQueue = queue.SimpleQueue()
        future = asyncio.run_coroutine_threadsafe(
            session.encode_all(texts, patience_, in_flight, isolate, events.put), session.loop
        )
        future.add_done_callback(lambda _: events.put(("end", None)))
        try:
            while True:
                try:
                    kind, value = events.get(timeout=0.2)
                except queue.Empty:
                    kind = value = None
                if kind == "done" and on_done is not None:
                    on_done(value)
                elif kind == "wait" and on_wait is not None:
                    on_wait(value)
                elif kind == "end":
                    return future.result()
                if cancel is not None and cancel.is_set():
                    raise Cancelled("stopped when asked to")
        finally:
            if not future.done():
                future.cancel()


def _describe(exc: BaseException) -> str:
    """Why a connection failed, in a few words: the OS's reason when there is one."""
    seen = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno).lower()
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__


# One event loop a process, on a daemon thread: every encoder's requests run on it.
_loop = None
_loop_lock = threading.Lock()


def _event_loop():
    import asyncio

    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="vectorize-http", daemon=True).start()
        return _loop


class _Session:
    """An encoder's connections and gate, on the event loop."""

    def __init__(self, encoder: OpenAIEncoder):
        import asyncio
        import weakref

        import httpx

        self.loop = _event_loop()
        self.encoder = weakref.proxy(encoder)

        async def make():
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=64, keepalive_expiry=30)
            return httpx.AsyncClient(limits=limits), Gate(asyncio.get_running_loop())

        self.client, self.gate = asyncio.run_coroutine_threadsafe(make(), self.loop).result()
        self._finalizer = weakref.finalize(encoder, _close_later, self.loop, self.client)

    def close(self) -> None:
        self._finalizer()

    async def encode_all(self, texts, patience_: Patience, in_flight: int, isolate: bool, tell) -> tuple:
        import numpy as np

        encoder, gate = self.encoder, self.gate
        gate.begin(in_flight)
        texts = [text or " " for text in texts]  # OpenAI refuses empty strings; a space embeds as nothing
        vectors: list = [None] * len(texts)
        refused: dict[int, EndpointError] = {}

        async def send(part: list[int], quick: bool = False) -> None:
            if gate.batch_cap is not None and len(part) > gate.batch_cap:
                return await halves(part, quick)
            try:
                got = await self.post_retrying([texts[i] for i in part], patience_, quick, tell)
            except EndpointError as exc:
                if not (exc.kind == TOO_LARGE or (isolate and not exc.endpoint_wide)):
                    raise
                if len(part) == 1:
                    refused[part[0]] = exc
                    tell(("done", 1))
                    return None
                if exc.kind == TOO_LARGE:
                    gate.lower_cap(len(part) // 2)
                return await halves(part, quick or exc.kind != TOO_LARGE)
            for i, vector in zip(part, got, strict=True):
                vectors[i] = vector
            tell(("done", len(part)))
            return None

        async def halves(part: list[int], quick: bool) -> None:
            middle = len(part) // 2
            await all_or_none([send(part[:middle], quick), send(part[middle:], quick)])

        await all_or_none([send(part) for part in encoder.plan(texts, in_flight, gate.batch_cap)])
        sizes = {len(v) for v in vectors if v is not None}
        if len(sizes) > 1:
            raise EndpointError(f"{encoder.source} returned vectors of different sizes {sorted(sizes)}", kind=INVALID)
        size = sizes.pop() if sizes else (encoder._dimension or 0)  # every text refused
        out = np.zeros((len(texts), size), dtype=np.float32)
        for i, vector in enumerate(vectors):
            if vector is not None:
                out[i] = vector
        return out, refused

    async def post_retrying(self, texts: list[str], patience_: Patience, quick: bool, tell):
        """One request, retried (tenacity) while the server is unreachable or answers 429 or
        5xx, within the budgets; every wait goes through the shared gate."""
        from tenacity import AsyncRetrying, retry_if_exception

        gate = self.gate
        encoder = self.encoder
        body = {"model": encoder.model, "input": texts}
        if encoder._requested_dimension and encoder.model in SHORTENABLE:
            body["dimensions"] = encoder._requested_dimension

        def wait(state) -> float:
            exc = state.outcome.exception()
            delay, new = gate.pause(exc)
            if new:
                what = f"cannot reach {encoder.source} ({exc.brief})" if exc.kind == UNREACHABLE else exc.brief
                tell(("wait", f"{what}, retrying in {delay:.1f}s"))
            return delay

        def give_up(state) -> bool:
            exc = state.outcome.exception()
            if exc.kind == UNREACHABLE:
                return gate.silent_for() + state.upcoming_sleep > patience_.unreachable
            if quick and exc.status is not None and exc.status >= 500:
                return True  # finding the text a failing request holds: its halves are not retried
            return state.seconds_since_start + state.upcoming_sleep > patience_.retry

        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, EndpointError) and exc.retryable),
            wait=wait,
            stop=give_up,
            reraise=True,
        )
        got, sent_in, started = None, 0, time.monotonic()
        try:
            async for attempt in retrying:
                with attempt:
                    sent_in = await gate.acquire()
                    try:
                        got = await self.post(body, len(texts), patience_)
                    finally:
                        gate.release()
        except EndpointError as exc:
            if exc.retryable and time.monotonic() - started >= 1:
                raise exc.given_up(time.monotonic() - started) from None
            raise
        if gate.succeeded(sent_in):
            tell(("wait", None))
        return got

    async def post(self, body: dict, count: int, patience_: Patience):
        import base64

        import httpx
        import numpy as np
        import orjson

        encoder = self.encoder
        headers = {"Content-Type": "application/json"}
        key = os.environ.get("OPENAI_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        timeout = httpx.Timeout(patience_.timeout, connect=min(CONNECT_SECONDS, patience_.timeout))
        while True:
            body["encoding_format"] = encoder._format
            try:
                response = await self.client.post(
                    encoder.url, content=orjson.dumps(body), headers=headers, timeout=timeout
                )
            except httpx.ConnectTimeout:
                why = f"no connection within {timeout.connect:g}s"
                raise EndpointError(f"cannot reach {encoder.source}: {why}", brief=why) from None
            except httpx.TimeoutException:
                why = f"no answer within {patience_.timeout:g}s"
                raise EndpointError(f"{why} from {encoder.source} (VECTORIZE_HTTP_TIMEOUT)", brief=why) from None
            except httpx.HTTPError as exc:
                why = _describe(exc)
                raise EndpointError(f"cannot reach {encoder.source}: {why}", brief=why) from None
            self.gate.answered()
            if response.status_code < 400:
                break
            detail = " ".join(response.text[:300].split())
            if encoder._format == "base64" and response.status_code in (400, 422) and "encoding" in detail.lower():
                encoder._format = "float"  # a server that takes floats only
                continue
            raise EndpointError(
                f"HTTP {response.status_code} from {encoder.source}: {detail}",
                status=response.status_code,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                detail=detail,
            )
        try:
            payload = orjson.loads(response.content)
            data = sorted(payload["data"], key=lambda item: item.get("index", 0))
            vectors = [
                np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
                if isinstance(item["embedding"], str)
                else np.asarray(item["embedding"], dtype=np.float32)
                for item in data
            ]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EndpointError(
                f"{encoder.source} answered without readable embeddings ({type(exc).__name__}: {exc})", kind=INVALID
            ) from None
        if len(vectors) != count:
            raise EndpointError(f"{encoder.source} returned {len(vectors)} embeddings for {count} inputs", kind=INVALID)
        return vectors


async def all_or_none(coroutines) -> None:
    """Run coroutines at once; the first failure cancels the others and is raised (so is a
    cancellation from outside, after the others are cancelled)."""
    import asyncio

    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _close_later(loop, client) -> None:
    import asyncio

    if not loop.is_closed():
        try:
            asyncio.run_coroutine_threadsafe(client.aclose(), loop)
        except RuntimeError:
            pass


class Gate:
    """What every request of an encoder goes through (on the event loop): how many may be in
    flight now, and when the next may go.

    A refusal (429, 5xx, the server unreachable) pauses every request until the server's
    Retry-After, else a backoff doubling with each refusal in a row (the requests refused in the
    same pause count once); after the pause requests go one at a time, and each answer to a
    request sent since lets one more go, up to the number in flight asked for."""

    def __init__(self, loop):
        self.loop = loop
        self.wanted = REQUESTS_IN_FLIGHT
        self.allowed = REQUESTS_IN_FLIGHT
        self.active = 0
        self.resume_at = 0.0
        self.failures = 0
        self.pauses = 0  # requests sent before the last pause began do not open the gate
        self.last_answer = loop.time()
        self.batch_cap: int | None = None  # texts a request, as a 413 taught
        self._waiters: list = []

    def begin(self, wanted: int) -> None:
        self.wanted = wanted
        if not self.failures:
            self.allowed = wanted
        self.last_answer = max(self.last_answer, self.loop.time())  # a new call: the server's silence counts from now

    async def acquire(self) -> int:
        """Wait for the gate to open and a place in flight; returns the pause it was sent after."""
        while True:
            pause = self.resume_at - self.loop.time()
            if pause <= 0 and self.active < self.allowed:
                self.active += 1
                return self.pauses
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            timer = self.loop.call_later(pause, self._wake) if pause > 0 else None
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def release(self) -> None:
        self.active -= 1
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def answered(self) -> None:
        self.last_answer = self.loop.time()

    def silent_for(self) -> float:
        return self.loop.time() - self.last_answer

    def pause(self, exc: EndpointError) -> tuple[float, bool]:
        """The wait before exc's request is sent again, and whether exc began a new pause."""
        import random

        now = self.loop.time()
        new = now >= self.resume_at
        if new:
            self.failures += 1
            self.pauses += 1
            self.allowed = 1
            backoff = min(BACKOFF_MOST, BACKOFF_FIRST * 2 ** (self.failures - 1)) * (1 + random.random() / 4)  # noqa: S311
            self.resume_at = now + (exc.retry_after if exc.retry_after is not None else backoff)
        elif exc.retry_after is not None:
            self.resume_at = max(self.resume_at, now + exc.retry_after)
        return max(0.0, self.resume_at - now), new

    def succeeded(self, sent_after: int) -> bool:
        """An answer to a request sent after pause number sent_after: if that is the last pause,
        one more request may go. True when it ends a pause."""
        if sent_after != self.pauses:
            return False  # sent before the server refused: says nothing of now
        ended = self.failures > 0
        self.failures = 0
        self.allowed = min(self.wanted, self.allowed + 1)
        self._wake()
        return ended

    def lower_cap(self, texts: int) -> None:
        self.batch_cap = max(1, min(self.batch_cap or texts, texts))


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
