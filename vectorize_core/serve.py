"""vectorize.py serve: the search over HTTP for applications in any language, and a page to try
queries on. FastAPI on uvicorn.

    POST /search    what `vectorize.py search` takes, as JSON; its --json rows and how they were ranked
    GET  /columns   every vectorized column with its status (as `vectorize.py status --json`)
    GET  /healthz   whether the database answers
    GET  /          the page: pick a column, type a query, see the ranked rows (two columns side by side)
    GET  /openapi.json

Read-only: every connection runs with default_transaction_read_only and a statement timeout.
Every input goes through the search core and the filter compiler, as the CLI's do; errors are the
tool's own exceptions, mapped to HTTP statuses in one place (STATUS) with the CLI's one line.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import json
import os
import re
import signal
import socket
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from . import ops
from .db import Database
from .errors import (
    BadInput,
    DatabaseError,
    DatabaseUnavailable,
    NoSuchTable,
    NoVectorizedColumn,
    VectorizeError,
)
from .filters import read_json
from .output import json_value, one_line
from .search import FUSION_K, MAX_K, search
from .target import load_encoder

VERSION = "0.1.0"
STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# Bodies: a query vector of CockroachDB's 16,000 dimensions is about 350 KB of JSON.
MAX_BODY_BYTES = 1024 * 1024
STATEMENT_TIMEOUT_SECONDS = 30.0
# Connections, each serving one request at a time; searches beyond wait for one (up to POOL_WAIT).
CONNECTIONS = 4
POOL_WAIT_SECONDS = 30.0
MIN_TOKEN_LENGTH = 16

BEARER = HTTPBearer(auto_error=False, description="The token named by --token-env, when the server has one.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]

# The tool's exceptions as HTTP statuses, the first class that matches; others are 500.
STATUS: list[tuple[type[VectorizeError], int]] = [
    (NoSuchTable, 404),
    (NoVectorizedColumn, 404),
    (BadInput, 400),
    (DatabaseUnavailable, 503),
]
SQLSTATE_STATUS = {"57014": 504}  # query_canceled: the statement timeout


class SearchRequest(BaseModel):
    """What `vectorize.py search` takes. Give `query` or `query_vector` (both only with `hybrid`)."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    query: str | None = Field(None, description="Text to search for, encoded with the column's recorded model.")
    query_vector: list[float] | None = Field(None, description="A precomputed query vector instead of text.")
    table: str | None = Field(None, description="Table name, or schema.name. Default: the only vectorized column.")
    schema_: str | None = Field(None, alias="schema", description="Schema of the table (instead of schema.name).")
    column: str | None = Field(None, description="Source column whose vectors to search.")
    vector_column: str | None = Field(None, description="Vector column to search, when a column has several.")
    metric: Literal["cosine", "l2", "ip"] | None = Field(None, description="Choose among vector columns by metric.")
    where: dict[str, Any] | str | None = Field(
        None, description='Filter document, as `search --where`: {"lang": "en", "year": {"$gte": 2020}}.'
    )
    k: int = Field(10, ge=1, le=MAX_K, description="Number of rows.")
    exact: bool = Field(False, description="Rank every (matching) row exactly instead of using the index.")
    show: list[str] | None = Field(None, description="More columns to return.")
    text: bool = Field(
        True, description="False: rows without their source text (keys, distance, show columns, best chunk)."
    )
    ef_search: int | None = Field(None, ge=1, le=1000, description="PostgreSQL: hnsw.ef_search for this query.")
    beam_size: int | None = Field(None, ge=1, le=2048, description="CockroachDB: vector_search_beam_size.")
    follower_read: bool = Field(False, description="CockroachDB: read from the nearest replica (seconds stale).")
    hybrid: bool = Field(False, description="Fuse the vector ranking with full text (needs encode --fulltext).")
    fusion_k: float = Field(FUSION_K, gt=0, description="Hybrid: the reciprocal rank fusion constant.")
    dense_weight: float = Field(1.0, ge=0, description="Hybrid: vector leg weight.")
    text_weight: float = Field(1.0, ge=0, description="Hybrid: full-text leg weight.")


class Ranking(BaseModel):
    """Which column answered and how its rows were ranked."""

    table: str
    vector_column: str
    columns: list[str] = Field(description="The source column(s) of the vectors.")
    model: str | None
    metric: str
    mode: str = Field(description="index, exact, prefix, overfetch (CockroachDB) or hybrid.")
    notice: str | None = Field(description="When the vector index did not serve the search, and why.")
    key_columns: list[str]
    text_columns: list[str]
    extra_columns: list[str] = Field(description="Columns asked for with show.")
    distance_key: str = Field(description="The rows' distance field: 'distance' unless the table has such a column.")
    score_key: str | None = Field(description="Hybrid: the fused score's field.")
    rank_keys: list[str] | None = Field(description="Hybrid: the vector and text ranks' fields.")
    chunk_keys: list[str] | None = Field(
        None,
        description="A chunked column (encode --chunk): the fields of the best chunk's number, start, end and "
        "text (start and end count characters of the source columns joined by a space).",
    )


class SearchResponse(BaseModel):
    rows: list[dict[str, Any]] = Field(description="As `vectorize.py search --json` prints them, nearest first.")
    ranking: Ranking
    took_ms: float = Field(description="Time in the server, model and SQL included.")


class ColumnsResponse(BaseModel):
    columns: list[dict[str, Any]] = Field(description="As `vectorize.py status --json` prints them.")


class Health(BaseModel):
    status: Literal["ok"]
    engine: str


class ErrorResponse(BaseModel):
    error: str = Field(description="One line, as the CLI prints it after 'Error: '.")


ERRORS = {
    400: {"model": ErrorResponse, "description": "Bad input: nothing was run."},
    401: {"model": ErrorResponse, "description": "The server has a token and the request did not carry it."},
    404: {"model": ErrorResponse, "description": "No such table, or no vectorized column there."},
    413: {"model": ErrorResponse, "description": f"Body larger than {MAX_BODY_BYTES:,} bytes."},
    503: {"model": ErrorResponse, "description": "The database cannot be reached."},
    504: {"model": ErrorResponse, "description": "The statement timeout passed."},
}


# -- exposure: where the server listens, and who may ask it -------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may well resolve to an outside address


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token, or with a short one."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise BadInput(
            f"the token is {len(token)} characters; use at least {MIN_TOKEN_LENGTH}, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe())'`"
        )
    if token is None and not is_loopback(host):
        raise BadInput(
            f"refusing to serve on {host} without a token: anyone who reaches it could read every vectorized "
            "table; put a secret in an environment variable and name it with --token-env, or bind 127.0.0.1"
        )


def token_from_env(name: str) -> str:
    """The token held by the environment variable ``name`` (--token-env)."""
    token = os.environ.get(name, "")
    if not token.strip():
        raise BadInput(f"--token-env {name}: the environment variable {name} is not set, or empty")
    return token


def base_url(host: str, port: int) -> str:
    """http://host:port, an IPv6 address in brackets."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, so that a port in use is one line (and port 0 a free port)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise VectorizeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


# -- the database: a few read-only connections ----------------------------------------------------


def session_settings(statement_timeout: float) -> dict[str, str]:
    """The same on PostgreSQL and CockroachDB: every transaction read-only, every statement bounded."""
    return {
        "default_transaction_read_only": "on",
        "statement_timeout": f"{max(1, round(statement_timeout * 1000))}ms",
    }


class Pool:
    """At most `size` connections, each serving one request at a time, opened when first needed
    and reconnecting by themselves (Database)."""

    def __init__(self, url: str, size: int, settings: dict[str, str]):
        self.url, self.settings = url, settings
        self.slots = threading.BoundedSemaphore(size)
        self.idle: list[Database] = []
        self.lock = threading.Lock()

    @contextmanager
    def borrow(self):
        if not self.slots.acquire(timeout=POOL_WAIT_SECONDS):
            raise DatabaseUnavailable(f"every database connection was busy for {POOL_WAIT_SECONDS:.0f}s")
        try:
            with self.lock:
                db = self.idle.pop() if self.idle else None
            if db is None:
                db = Database.connect(self.url, settings=self.settings)
            try:
                yield db
            finally:
                with self.lock:
                    self.idle.append(db)
        finally:
            self.slots.release()

    def close(self) -> None:
        with self.lock:
            while self.idle:
                self.idle.pop().close()


# -- the app --------------------------------------------------------------------------------------


def create_app(
    url: str | None = None,
    *,
    token: str | None = None,
    statement_timeout: float = STATEMENT_TIMEOUT_SECONDS,
    connections: int = CONNECTIONS,
) -> FastAPI:
    """The ASGI app. ``url`` None is the embedded database (started on the first request); nothing
    connects until a request needs it. Models load on the first query of each and stay loaded (one
    encoder per model)."""

    @asynccontextmanager
    async def lifespan(app):
        yield
        if app.state.pool is not None:
            app.state.pool.close()

    app = FastAPI(
        title="vectorize.py serve",
        version=VERSION,
        description="Semantic search on a table you already have: the search of `vectorize.py search` over HTTP, "
        "read-only. With `--token-env`, /search and /columns need `Authorization: Bearer <token>`.",
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN: not from a server that may be offline
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.url = url
    app.state.pool = Pool(url, connections, session_settings(statement_timeout)) if url else None
    app.state.encoders = functools.cache(load_encoder)  # one encoder per model and dimension
    expected = token.encode() if token else None

    def authorized(credentials: Credentials) -> None:
        if expected is None:
            return
        given = credentials.credentials.encode() if credentials else b""
        if not hmac.compare_digest(given, expected):
            raise HTTPException(
                401,
                "a token is needed: Authorization: Bearer <token>" if credentials is None else "wrong token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    first_use = threading.Lock()

    def pool() -> Pool:
        with first_use:
            if app.state.pool is None:
                from .embedded import default_url

                app.state.url = default_url()
                app.state.pool = Pool(app.state.url, connections, session_settings(statement_timeout))
        return app.state.pool

    app.state.get_pool = pool

    @app.post(
        "/search",
        operation_id="search",
        response_model=SearchResponse,
        responses=ERRORS,
        dependencies=[Depends(authorized)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": SearchRequest.model_json_schema()}},
            }
        },
    )
    async def search_rows(request: Request):
        """The k rows nearest to `query` (or `query_vector`) among those matching `where`: the rows of
        `vectorize.py search --json`, and how they were ranked. The body is read as JSON whatever its
        Content-Type says (`curl -d` says form)."""
        options = read_search_request(await request.body())
        return JSONResponse(await run_in_threadpool(lambda: run_search(pool(), options, app.state.encoders)))

    @app.get(
        "/columns",
        operation_id="columns",
        response_model=ColumnsResponse,
        responses=ERRORS,
        dependencies=[Depends(authorized)],
    )
    def columns(
        table: str | None = Query(None, description="Only this table's columns."),
        schema: str | None = Query(None, description="Schema of the table."),
    ):
        """Every vectorized column: model, metric, counts of embedded and pending rows, index, tracking."""
        with pool().borrow() as db:
            db.forget_catalog()  # a listing shows the columns as they are now
            found = [c.as_dict() for c in ops.status(db, table=table, schema=schema)]
        return JSONResponse({"columns": json_value(found)})

    @app.get("/healthz", operation_id="healthz", response_model=Health, responses={503: ERRORS[503]})
    def healthz():
        """Whether the database answers (no token needed)."""
        with pool().borrow() as db:
            db.fetchone("SELECT 1", retry=False)
            return {"status": "ok", "engine": db.dialect.name}

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    install_error_handlers(app)
    app.add_middleware(BoundedBody, max_bytes=MAX_BODY_BYTES)
    return app


# The page loads nothing from elsewhere and puts table contents in as text, never as markup.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def read_search_request(body: bytes) -> dict:
    """The body as search options: JSON read as filters read it (every digit of a number kept,
    no NaN, no key twice), then its fields checked by type; the search core checks the rest."""
    try:
        doc = read_json(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadInput("the request body is not UTF-8") from None
    except RecursionError:
        raise BadInput("the request body is nested too deeply") from None
    except ValueError as exc:
        raise BadInput(f"the request body is not valid JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise BadInput('the request body must be a JSON object, like {"query": "a sentence", "k": 5}')
    try:
        request = SearchRequest.model_validate(doc)
    except ValidationError as exc:
        raise BadInput(validation_message(exc.errors())) from None
    return request.model_dump(by_alias=False)


def run_search(pool: Pool, options: dict, encoders) -> dict:
    started = time.perf_counter()
    text = options.pop("query")
    options["schema"] = options.pop("schema_")
    options["weights"] = (options.pop("dense_weight"), options.pop("text_weight"))
    options["text_out"] = options.pop("text")
    with pool.borrow() as db:
        result = search(db, text, encoder_for=encoders, **options)
    t = result.target
    return {
        "rows": [{k: json_value(v) for k, v in row.items()} for row in result.rows],
        "ranking": {
            "table": t.table.display,
            "vector_column": t.vector_column,
            "columns": t.sources,
            "model": t.metadata.get("model"),
            "metric": t.metadata["metric"],
            "mode": result.mode,
            "notice": result.notice,
            "key_columns": result.key_columns,
            "text_columns": result.text_columns,
            "extra_columns": result.extra_columns,
            "distance_key": result.distance_key,
            "score_key": result.score_key,
            "rank_keys": list(result.rank_keys) if result.rank_keys else None,
            "chunk_keys": list(result.chunk_keys) if result.chunk_keys else None,
        },
        "took_ms": round((time.perf_counter() - started) * 1000, 2),
    }


# -- errors: the one place where they become statuses --------------------------------------------


def status_of(exc: VectorizeError) -> int:
    if isinstance(exc, DatabaseError) and exc.sqlstate in SQLSTATE_STATUS:
        return SQLSTATE_STATUS[exc.sqlstate]
    return next((status for kind, status in STATUS if isinstance(exc, kind)), 500)


# The CLI's options in the core's messages ('--query-vector', '--show body_vector'), as the API's
# fields: what an API client wrote. Commands quoted in backticks stay as they are: they are
# commands to run.
CLI_OPTION = re.compile(r"--([a-z][a-z-]*)")


def api_wording(message: str) -> str:
    fields = {name for name in SearchRequest.model_fields if not name.endswith("_")} | {"schema"}

    def field(match: re.Match) -> str:
        name = match.group(1).replace("-", "_")
        return f'"{name}"' if name in fields else match.group(0)

    parts = message.split("`")
    parts[::2] = [CLI_OPTION.sub(field, part) for part in parts[::2]]
    return "`".join(parts)


def validation_message(errors) -> str:
    """pydantic's first complaint as one line: 'k: Input should be less than or equal to 100000'."""
    error = errors[0]
    where = ".".join(str(part) for part in error["loc"] if part not in ("body", "query"))
    return f"{where}: {error['msg']}" if where else error["msg"]


def error_response(status: int, message: str, headers=None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    async def tool_error(request, exc: VectorizeError):
        return error_response(status_of(exc), api_wording(str(exc)))

    async def http_error(request, exc: HTTPException):
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    async def invalid(request, exc: RequestValidationError):
        return error_response(400, validation_message(exc.errors()))

    async def unexpected(request, exc: Exception):
        # A bug: its traceback goes to the server's log (uvicorn's), the client gets one line
        # without the message, which could hold anything.
        return error_response(500, f"unexpected {type(exc).__name__} (see the server's log)")

    app.add_exception_handler(VectorizeError, tool_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)


class BoundedBody:
    """ASGI middleware: a body larger than max_bytes is refused with 413, by its Content-Length
    before it is read, or while it streams in (chunked)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = f"the request body is larger than {self.max_bytes:,} bytes"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await error_response(413, too_large)(scope, receive, send)
        received = 0

        async def bounded():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, too_large)
            return message

        await self.app(scope, bounded, send)


# -- running it -----------------------------------------------------------------------------------


def openapi_schema() -> dict:
    """The OpenAPI document the server serves at /openapi.json (kept in docs/openapi.json)."""
    return create_app().openapi()


def openapi_text() -> str:
    return json.dumps(openapi_schema(), indent=2, ensure_ascii=False) + "\n"


class BackgroundServer:
    """The app served by uvicorn on a thread of this process, on a free loopback port by default:
    for tests, notebooks and scripts. ``with BackgroundServer(create_app(url)) as server: server.url``"""

    def __init__(self, app, host: str = DEFAULT_HOST, port: int = 0, log_level: str = "warning"):
        import uvicorn

        self.sock = listen(host, port)
        port = self.sock.getsockname()[1]
        self.url = base_url(host, port)
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, ws="none", server_header=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise VectorizeError(f"the server on {self.url} did not start")
            time.sleep(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve(
    url: str | None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | None = None,
    statement_timeout: float = STATEMENT_TIMEOUT_SECONDS,
    on_ready=None,
) -> None:
    """Serve until SIGINT or SIGTERM. Checks the exposure, connects once (a wrong URL fails here,
    before listening), binds, then calls ``on_ready(base_url)``."""
    import uvicorn

    check_exposure(host, token)
    if not url:
        from .embedded import default_url

        url = default_url()
    if statement_timeout <= 0:
        raise BadInput("the statement timeout must be above 0 seconds")
    app = create_app(url, token=token, statement_timeout=statement_timeout)
    with app.state.pool.borrow():
        pass
    sock = listen(host, port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", ws="none", proxy_headers=False, server_header=False,
        timeout_graceful_shutdown=5,
    )  # fmt: skip
    if on_ready is not None:
        on_ready(base_url(host, port))
    # uvicorn stops on SIGINT and SIGTERM, then raises the signal again: let that end here, exit 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
