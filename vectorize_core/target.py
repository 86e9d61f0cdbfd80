"""Which vector column an operation is about, and what the database says about it.

Resolves table, source column, vector column, encoder and metric, and validates all of them
before anything is changed, so bad input leaves the database untouched.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import modules

from .db import METADATA_KEY, Database, Table
from .errors import (
    AmbiguousVectorColumn,
    BadInput,
    DimensionMismatch,
    ModelMismatch,
    NotTextColumn,
    NoVectorizedColumn,
    UnknownModel,
)

METADATA_VERSION = 1


def load_encoder(name: str):
    try:
        return modules.get(name)
    except modules.UnknownEncoder as exc:
        known = ", ".join(exc.known) or "none"
        raise UnknownModel(f"unknown model {name!r}; known models: {known}") from None


def default_vector_column(source: str) -> str:
    return f"{source}_vector"


def index_name_for(table: str, vector_column: str) -> str:
    """<table>_<vector column>_idx, shortened with a hash to fit PostgreSQL's 63 bytes."""
    name = f"{table}_{vector_column}_idx"
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    head = name.encode()[:50].decode(errors="ignore")
    return f"{head}_{digest}_idx"


@dataclass(frozen=True)
class VectorTarget:
    table: Table
    source: str
    vector_column: str
    model: str
    dimension: int
    metric: str
    column_exists: bool
    has_metadata: bool

    @property
    def index_name(self) -> str:
        return index_name_for(self.table.name, self.vector_column)

    @property
    def display(self) -> str:
        return f"{self.table.display}.{self.vector_column}"

    def metadata_json(self) -> str:
        record = {
            "version": METADATA_VERSION,
            "source": [self.source],
            "model": self.model,
            "dimension": self.dimension,
            "metric": self.metric,
        }
        return json.dumps({METADATA_KEY: record}, sort_keys=True)


def resolve_for_encode(
    db: Database,
    *,
    table: str,
    column: str,
    model: str,
    schema: str | None = None,
    vector_column: str | None = None,
    metric: str | None = None,
) -> tuple[VectorTarget, object]:
    """Validate an encode request; returns the target and its encoder. Changes nothing."""
    info = db.find_table(table, schema)
    source = info.column(column)
    if not source.is_text:
        raise NotTextColumn(
            f"column {column!r} of {info.display} is {source.type_sql}, not text; "
            "vectorize encodes text columns (text, varchar, char)"
        )
    encoder = load_encoder(model)
    dimension = int(encoder.dimension)
    vector_column = vector_column or default_vector_column(column)
    if vector_column == column or vector_column in info.primary_key:
        raise BadInput(f"--vector-column {vector_column!r} would overwrite a column vectorize reads")

    existing = info.columns.get(vector_column)
    meta = existing.metadata if existing else None
    if meta is not None:
        check_same_fill(meta, info.display, vector_column, column, model, metric)
        metric = metric or meta.get("metric")
    if existing is not None:
        if not existing.is_vector:
            raise DimensionMismatch(
                f"column {vector_column!r} of {info.display} exists as {existing.type_sql}, "
                f"not vector({dimension}); choose another --vector-column"
            )
        if existing.typmod != dimension:
            size = existing.typmod if existing.typmod > 0 else "no fixed size"
            raise DimensionMismatch(
                f"column {vector_column!r} of {info.display} holds vectors of {size} dimensions "
                f"but model {model!r} makes {dimension}; choose another --vector-column"
            )
    metric = metric or encoder.metric
    db.dialect.check_metric(metric)
    target = VectorTarget(
        table=info,
        source=column,
        vector_column=vector_column,
        model=model,
        dimension=dimension,
        metric=metric,
        column_exists=existing is not None,
        has_metadata=meta is not None,
    )
    return target, encoder


def check_same_fill(meta: dict, table: str, vector_column: str, column: str, model: str, metric: str | None):
    """Refuse to mix a second model, metric or source into a column filled by another."""
    where = f"{table}.{vector_column}"
    if meta.get("model") != model:
        raise ModelMismatch(
            f"{where} was filled by model {meta.get('model')!r}, not {model!r}; "
            "use another --vector-column for a second model"
        )
    if meta.get("source") != [column]:
        raise ModelMismatch(f"{where} holds vectors of {', '.join(meta.get('source') or [])}, not {column!r}")
    if metric is not None and meta.get("metric") != metric:
        raise ModelMismatch(
            f"{where} is indexed for the {meta.get('metric')} metric, not {metric}; "
            "use another --vector-column for a second metric"
        )


@dataclass(frozen=True)
class SearchTarget:
    table: Table
    vector_column: str
    metadata: dict

    @property
    def source(self) -> list[str]:
        return list(self.metadata["source"])

    @property
    def display(self) -> str:
        return f"{self.table.display}.{self.vector_column}"


def resolve_for_search(
    db: Database,
    *,
    table: str | None = None,
    schema: str | None = None,
    column: str | None = None,
    vector_column: str | None = None,
) -> SearchTarget:
    """Pick the vectorized column to search: the only one, or the one the options narrow to."""
    found = db.vectorized_columns()
    if table is not None:
        info = db.find_table(table, schema)
        found = [f for f in found if (f[0], f[1]) == (info.schema, info.name)]
    if column is not None:
        found = [f for f in found if f[3].get("source", [None])[0] == column]
    if vector_column is not None:
        found = [f for f in found if f[2] == vector_column]
    if not found:
        scope = f" in table {table!r}" if table else " in the database"
        what = f" for column {column!r}" if column else ""
        raise NoVectorizedColumn(
            f"no vectorized column{what}{scope}; run `vectorize.py encode --table T --column C` first"
        )
    if len(found) > 1:
        names = ", ".join(f"{s}.{t}.{v} ({', '.join(m.get('source', []))})" for s, t, v, m in found)
        raise AmbiguousVectorColumn(f"several vectorized columns: {names}; choose with --table and --column")
    schema_name, table_name, vcol, meta = found[0]
    info = db.find_table(table_name, schema_name)
    return SearchTarget(info, vcol, meta)
