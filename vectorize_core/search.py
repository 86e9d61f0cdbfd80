"""Similarity search over a vectorized column, ranked so that the vector index serves it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from psycopg import sql

from .db import Database
from .dialects import vector_literal
from .errors import BadInput, DimensionMismatch, EncoderError
from .target import SearchTarget, load_encoder, resolve_for_search


@dataclass
class SearchResult:
    target: SearchTarget
    key_columns: list[str]
    text_columns: list[str]
    rows: list[dict]  # key and text columns by name, plus 'distance'


def search_query(db: Database, target: SearchTarget) -> sql.Composed:
    select = [sql.Identifier(c) for c in (*target.table.primary_key, *target.sources)]
    return db.dialect.search_query(
        target.table.ident,
        select,
        target.vector_column,
        target.metadata["metric"],
        int(target.metadata["dimension"]),
    )


def emit_sql(db: Database, **where) -> str:
    """The search query for application code, with its parameters explained."""
    target = resolve_for_search(db, **where)
    meta = target.metadata
    settings = [mogrify(db, stmt, params) for stmt, params in db.dialect.search_settings(10)]
    prefix = f" (prefix {meta['query_prefix']!r})" if meta.get("query_prefix") else ""
    lines = [
        f"-- {db.dialect.name}: nearest rows of {target.display}, metric {meta['metric']}, model {meta['model']}",
        f"-- parameters: the query vector as text '[x1,...,x{meta['dimension']}]' from {meta['model']}{prefix},",
        "-- the same vector again, then k. Run in one transaction with:",
        *(f"--   {setting};" for setting in settings),
        db.as_string(search_query(db, target)) + ";",
    ]
    return "\n".join(lines)


def mogrify(db: Database, statement, params) -> str:
    import psycopg

    return psycopg.ClientCursor(db.connection()).mogrify(statement, params)


def encode_query(target: SearchTarget, text: str) -> np.ndarray:
    """The query's vector, by the column's recorded encoder and query prefix."""
    meta = target.metadata
    encoder = load_encoder(meta["model"], dimension=int(meta["dimension"]))
    try:
        vector = np.asarray(encoder.encode([meta.get("query_prefix", "") + text]), dtype=np.float32)[0]
    except Exception as exc:  # noqa: BLE001
        raise EncoderError(f"model {target.metadata['model']!r} failed on the query: {exc}") from exc
    return vector


def parse_query_vector(text: str) -> np.ndarray:
    """A query vector from JSON text, or '@file.json'."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"cannot read query vector file {text[1:]}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise BadInput(f"query vector file {text[1:]} is not valid UTF-8") from None
    try:
        values = json.loads(text)
    except ValueError as exc:
        raise BadInput(f"--query-vector is not valid JSON: {exc}") from None
    if isinstance(values, dict) and "vector" in values:
        values = values["vector"]
    if not isinstance(values, list) or not values:
        raise BadInput("--query-vector must be a JSON array of numbers")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise BadInput("--query-vector must hold only numbers")
    vector = np.asarray(values, dtype=np.float32)
    if not np.isfinite(vector).all():
        raise BadInput("--query-vector holds NaN or infinity")
    return vector


def search(
    db: Database,
    text: str | None = None,
    *,
    query_vector: str | np.ndarray | None = None,
    k: int = 10,
    table: str | None = None,
    schema: str | None = None,
    column: str | None = None,
    vector_column: str | None = None,
    metric: str | None = None,
) -> SearchResult:
    """The k rows nearest to text (encoded with the column's recorded model) or to query_vector."""
    if k < 1:
        raise BadInput("k must be at least 1")
    if (text is None) == (query_vector is None):
        raise BadInput("give either a query text or --query-vector")
    if isinstance(query_vector, str):
        query_vector = parse_query_vector(query_vector)
    target = resolve_for_search(
        db, table=table, schema=schema, column=column, vector_column=vector_column, metric=metric
    )
    dimension = int(target.metadata["dimension"])
    if query_vector is None:
        if target.metadata.get("external"):
            label = f" ({target.metadata['label']})" if target.metadata.get("label") else ""
            raise BadInput(
                f"{target.display} holds imported vectors{label}; no model is known to encode text for it: "
                "search it with --query-vector"
            )
        vector = encode_query(target, text)
        if vector.shape != (dimension,):
            raise EncoderError(f"query vector has {vector.size} dimensions; the column holds {dimension}")
    else:
        vector = np.asarray(query_vector, dtype=np.float32)
        # Checked before any query: some CockroachDB releases crash on a wrong-size query vector.
        if vector.shape != (dimension,):
            raise DimensionMismatch(
                f"the query vector has {vector.size} dimensions but {target.display} holds {dimension}"
            )
    return run_search(db, target, vector, k)


def run_search(db: Database, target: SearchTarget, vector: np.ndarray, k: int) -> SearchResult:
    query = search_query(db, target)
    literal = vector_literal(vector)
    settings = db.dialect.search_settings(k)

    def run(conn):
        with conn.transaction():
            for statement, params in settings:
                conn.execute(statement, params)
            return conn.execute(query, (literal, literal, k)).fetchall()

    rows = db.run(run)
    names = [*target.table.primary_key, *target.sources, "distance"]
    return SearchResult(
        target=target,
        key_columns=list(target.table.primary_key),
        text_columns=target.sources,
        rows=[dict(zip(names, row, strict=True)) for row in rows],
    )
