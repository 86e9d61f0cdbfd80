"""Which vector column an operation is about, and what the database says about it.

Resolves table, source column, vector column, encoder and metric, and validates all of them
before anything is changed, so bad input leaves the database untouched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass

from psycopg import sql

import modules

from . import chunks, contents, names
from .chunks import vector_index_table
from .contents import ContentTable, content_table_of
from .db import METADATA_KEY, Column, Database, Table
from .errors import (
    AmbiguousVectorColumn,
    BadInput,
    DimensionMismatch,
    ModelMismatch,
    NotTextColumn,
    NoVectorizedColumn,
    UnknownModel,
)
from .request import EncodeRequest

METADATA_VERSION = 1
log = logging.getLogger("vectorize")


def load_encoder(name: str, *, backend: str | None = None, dimension: int | None = None):
    """The encoder for --model name, configured; its model is not loaded yet."""
    try:
        return modules.get(name, backend=backend, dimension=dimension)
    except modules.UnknownEncoder as exc:
        known = ", ".join(exc.known) or "none"
        raise UnknownModel(f"unknown model {name!r}; known models: {known}") from None
    except ValueError as exc:
        raise BadInput(f"model {name!r}: {exc}") from None


def describe_encoder(name: str) -> dict:
    """Details of one encoder for `list-models NAME`; a family member may load its model."""
    encoder = load_encoder(name)
    dimension = encoder_dimension(encoder, name)
    source = getattr(encoder, "source", "")
    details = {
        "name": name,
        "description": encoder.description,
        "dimension": dimension,
        "metric": encoder.metric,
        "max_length": getattr(encoder, "max_length", None),
        "source": str((source() if callable(source) else source) or ""),
    }
    planned = getattr(encoder, "planned_backend", None)
    if planned is not None:
        details["backend"] = f"{encoder.backend}: {planned()}"
    if getattr(encoder, "speed", None):
        details["speed"] = encoder.speed
    return details


def encoder_dimension(encoder, name: str) -> int:
    """The encoder's dimension; for families this may load the model or ask the endpoint."""
    try:
        return int(encoder.dimension)
    except LookupError as exc:  # the encoder says the model is nowhere to be had, in its own words
        raise UnknownModel(f"cannot load model {name!r}: {first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - loaders fail with OSError, HTTP errors, ...
        raise UnknownModel(f"cannot load model {name!r}: {type(exc).__name__}: {first_line(exc)}") from None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def default_vector_column(source: str) -> str:
    return names.default_vector_column(source)


def index_name_for(table: str, vector_column: str, suffix: str = "idx") -> str:
    """The name earlier versions gave indexes (before names were recorded in the metadata):
    <table>_<vector column>_<suffix>, shortened with a hash to fit PostgreSQL's 63 bytes."""
    name = f"{table}_{vector_column}_{suffix}"
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    head = name.encode()[: 62 - len(suffix) - 10].decode(errors="ignore")
    return f"{head}_{digest}_{suffix}"


@dataclass(frozen=True)
class VectorTarget:
    table: Table
    sources: tuple[str, ...]
    vector_column: str
    model: str
    dimension: int
    metric: str
    column_exists: bool
    existing_metadata: dict | None
    prefix: str = ""
    query_prefix: str = ""
    track_changes: bool = False
    label: str = ""  # imported vectors: what the user says made them
    prefix_columns: tuple[str, ...] = ()  # CockroachDB vector index prefix columns
    index_name: str = ""  # the vector index (chosen free in the schema, then recorded)
    pending_index_name: str = ""  # the partial index of rows waiting for a vector
    index_type: str | None = "vector"  # what the index holds: vector, halfvec, or None (too wide)
    watched: tuple[str, ...] = ()  # the columns whose change re-queues a row (--track-changes)
    reencode: bool = False  # clear every vector first
    fulltext: dict | None = None  # {"column", "index", "language"}: the tsvector for hybrid search
    chunks: dict | None = None  # encode --chunk: the chunk table's record (see chunks.py)
    # The distinct contents the vector index holds (see contents.py), and the hash column of the
    # user's table ({"column", "index"}); targets built without them get the default names.
    contents: dict | None = None
    hash: dict | None = None

    def __post_init__(self):
        # Targets built without chosen names (library callers) get the names earlier versions used.
        if not self.index_name:
            object.__setattr__(self, "index_name", index_name_for(self.table.name, self.vector_column))
        if not self.pending_index_name:
            object.__setattr__(
                self, "pending_index_name", index_name_for(self.table.name, self.vector_column, "pending")
            )
        if self.contents is None:
            name = names.fit_identifier(f"{self.table.name}_{self.vector_column}", "_contents")
            object.__setattr__(self, "contents", {"table": name, "columns": contents.column_names(self.prefix_columns)})
        if self.hash is None:
            hash_record = {
                "column": names.fit_identifier(self.vector_column, "_hash"),
                "index": index_name_for(self.table.name, self.vector_column, "hash"),
            }
            object.__setattr__(self, "hash", hash_record)

    @property
    def display(self) -> str:
        return f"{self.table.display}.{self.vector_column}"

    @property
    def index_table(self) -> Table:
        """The table the vector index is on: the contents table (this one, or a chunked
        column's chunk table, on a column made before it)."""
        return vector_index_table(self.table, self.metadata_record())

    @property
    def content_table(self) -> ContentTable | None:
        return content_table_of(self.table, self.metadata_record())

    @property
    def upgrading(self) -> bool:
        """The column exists without the contents its index is built on (an earlier version made it,
        or --adopt takes it over): its vectors are keyed and added to them before a fill."""
        return self.column_exists and not self.reencode and not (self.existing_metadata or {}).get("contents")

    @property
    def source_attnums(self) -> list[int]:
        return [self.table.columns[s].attnum for s in self.sources]

    @property
    def needs_comment(self) -> bool:
        return self.existing_metadata != self.metadata_record()

    def metadata_json(self) -> str:
        return json.dumps({METADATA_KEY: self.metadata_record()}, sort_keys=True)

    def metadata_record(self) -> dict:
        record = {
            "version": METADATA_VERSION,
            "source": list(self.sources),
            "model": self.model,
            "dimension": self.dimension,
            "metric": self.metric,
            # Column numbers survive a rename: status and encode follow a renamed source.
            "source_attnums": self.source_attnums,
            "index": self.index_name,
            "pending_index": self.pending_index_name,
        }
        if self.prefix:
            record["prefix"] = self.prefix
        if self.query_prefix:
            record["query_prefix"] = self.query_prefix
        if self.track_changes:
            record["track_changes"] = True
        if self.prefix_columns:
            record["prefix_columns"] = list(self.prefix_columns)
        if self.fulltext:
            record["fulltext"] = dict(self.fulltext)
        if self.chunks:
            record["chunks"] = dict(self.chunks)
        if self.contents:
            record["contents"] = dict(self.contents)
        if self.hash:
            record["hash"] = dict(self.hash)
        if self.model == "external":
            record["external"] = True
            if self.label:
                record["label"] = self.label
        return record


def resolve_for_encode(db: Database, request: EncodeRequest) -> tuple[VectorTarget, object]:
    """Validate an encode request against the database; returns the target and its encoder.
    Changes nothing."""
    sources, model, backend, reencode = request.sources, request.model, request.backend, request.reencode
    vector_column, metric, prefix = request.vector_column, request.metric, request.prefix
    query_prefix, dimension, track_changes = request.query_prefix, request.dimension, request.track_changes
    prefix_columns = request.prefix_columns
    # A model that does not exist is named first: advice about the column would not help.
    load_encoder(model, backend=backend)
    info = db.find_table(request.table, request.schema)
    for name in sources:
        check_text_column(info, name)
    vector_column = vector_column or vector_column_of(info, sources) or default_vector_column(sources[0])
    check_vector_column_name(info, vector_column, sources)

    existing = info.columns.get(vector_column)
    meta = existing.metadata if existing else None
    if meta is not None and not reencode:
        check_same_fill(
            meta, info.display, vector_column, sources, model, metric, prefix, current=current_sources(info, meta)
        )
    if meta is not None:
        metric = metric or (None if reencode else meta.get("metric"))
        prefix = meta.get("prefix", "") if prefix is None and not reencode else prefix
        query_prefix = meta.get("query_prefix", "") if query_prefix is None and not reencode else query_prefix
        dimension = dimension or (None if reencode else meta.get("dimension"))
        track_changes = track_changes or bool(meta.get("track_changes"))
        recorded = tuple(meta.get("prefix_columns") or ())
        if prefix_columns and tuple(prefix_columns) != recorded:
            raise ModelMismatch(f"{info.display}.{vector_column} is indexed with prefix columns {list(recorded)}")
        prefix_columns = recorded
    for name in prefix_columns:
        if name not in info.columns or info.columns[name].is_vector:
            raise BadInput(f"--prefix-column {name!r} is not a (non-vector) column of {info.display}")
    encoder = load_encoder(model, backend=backend, dimension=dimension)
    if request.dry_run and callable(getattr(encoder, "peek", None)):
        encoder.peek()  # a dry run needs the dimension and metric, not the model: its files tell
    dimension = encoder_dimension(encoder, model)
    if existing is not None:
        check_vector_column(existing, info.display, dimension, f"model {model!r} makes")
        if meta is None and not (request.adopt or reencode) and not half_made(db, info, existing):
            raise ModelMismatch(not_ours_message(info, existing, model))
    metric = metric or encoder.metric
    db.dialect.check_metric(metric)
    pending_index_name = index_names(db, info, vector_column, meta)[1]
    chunk_record = resolve_chunks(
        db, info, vector_column, meta, encoder, prefix or "", tuple(prefix_columns),
        wanted=request.chunk, tokens=request.chunk_tokens, overlap=request.chunk_overlap, reencode=reencode,
        dry_run=request.dry_run,
    )  # fmt: skip
    contents_record, hash_record, index_name = resolve_contents(db, info, vector_column, meta, tuple(prefix_columns))
    target = VectorTarget(
        table=info,
        sources=sources,
        vector_column=vector_column,
        model=model,
        dimension=dimension,
        metric=metric,
        column_exists=existing is not None,
        existing_metadata=meta,
        prefix=prefix or "",
        query_prefix=query_prefix or "",
        track_changes=track_changes,
        prefix_columns=tuple(prefix_columns),
        index_name=index_name,
        pending_index_name=pending_index_name,
        index_type=db.dialect.index_type(dimension),
        watched=watched_columns(info, sources),
        reencode=reencode,
        fulltext=resolve_fulltext(db, info, sources, meta, request.fulltext, request.language),
        chunks=chunk_record,
        contents=contents_record,
        hash=hash_record,
    )
    return target, encoder


def resolve_contents(db: Database, info: Table, vector_column: str, meta: dict | None, prefix_columns):
    """The contents table's record, the hash column's, and the vector index's name: as recorded,
    or new ones (for a new column, or one an earlier version made, which encode then upgrades);
    named free in the schema, never a relation or column another has. Checked, not made."""
    if meta and meta.get("contents") and meta.get("hash"):
        return meta["contents"], meta["hash"], meta["index"]
    salt = f"{info.schema}.{info.name}"
    tag = names.relation_tag(info.schema, info.name, vector_column, "contents")
    name = names.own_or_free(db, info.schema, f"{info.name}_{vector_column}", "_contents", salt=salt, tag=tag)
    index = names.own_or_free(db, info.schema, name, "_idx", salt=salt, on=name)
    column = names.fit_identifier(vector_column, "_hash")
    hash_tag = names.relation_tag(info.schema, info.name, vector_column, "hash")
    while column in info.columns and info.columns[column].comment != hash_tag:
        column = names.fit_identifier(f"vectorize_{column}")
    record = {"table": name, "columns": contents.column_names(prefix_columns)}
    return record, {"column": column, "index": free_index_name(db, info, vector_column, "hash")}, index


def resolve_chunks(
    db,
    info: Table,
    vector_column: str,
    meta,
    encoder,
    prefix: str,
    prefix_columns,
    *,
    wanted,
    tokens,
    overlap,
    reencode,
    dry_run,
) -> dict | None:
    """The chunk record of the column: as recorded (sizes given again must agree), or a new one
    when --chunk asks (--reencode may change the sizes); checked, not made."""
    recorded = (meta or {}).get("chunks")
    where = f"{info.display}.{vector_column}"
    if not (wanted or recorded):
        if tokens is not None or overlap is not None:
            raise BadInput("--chunk-tokens and --chunk-overlap go with --chunk")
        return None
    if meta is not None and not reencode:
        if not recorded:
            raise ModelMismatch(
                f"{where} holds one vector a row, without chunks; --reencode --chunk splits every row, "
                "or choose another --vector-column"
            )
        for given, key, flag in ((tokens, "tokens", "--chunk-tokens"), (overlap, "overlap", "--chunk-overlap")):
            if given is not None and given != recorded[key]:
                raise ModelMismatch(
                    f"{where} is split with {flag} {recorded[key]}, not {given}; --reencode splits it again"
                )
        return chunks.upgraded_record(db, info, recorded)
    # A dry run loads no model: its tokenizer is read from the model's files (the same checks).
    counting = chunks.peek_counting(encoder) if dry_run else chunks.counting_for(encoder)
    if counting is None:
        # The model's files are not on this machine: the sizes are checked when it is loaded.
        tokens = tokens or chunks.DEFAULT_CHUNK_TOKENS
        overlap = overlap or chunks.DEFAULT_OVERLAP
        how = "tokenizer"
    else:
        tokens, overlap = chunks.chunk_sizes(counting, tokens, overlap, prefix)
        how = counting.how
        if how == "characters":
            log.info(
                "%s has no tokenizer here: chunks are measured at %d characters a token",
                getattr(encoder, "name", "the model"), chunks.CHARS_PER_TOKEN,
            )  # fmt: skip
    if recorded:
        return {**chunks.upgraded_record(db, info, recorded), "tokens": tokens, "overlap": overlap, "counting": how}
    return chunks.new_record(db, info, vector_column, tokens, overlap, how, prefix_columns)


def resolve_fulltext(db: Database, info: Table, sources, meta: dict | None, wanted: bool, language: str | None):
    """The full-text record: as recorded, or a new one when --fulltext asks; checked, not made."""
    recorded = (meta or {}).get("fulltext")
    if recorded:
        if language and language != recorded["language"]:
            raise ModelMismatch(
                f"{info.display} has full text in {recorded['language']!r}; drop it to use {language!r}"
            )
        return with_terms(db, info, recorded)
    if not wanted:
        if language:
            raise BadInput("--language goes with --fulltext")
        return None
    language = language or "english"
    db.dialect.check_text_language(db, language)
    for name in sources:
        if info.columns[name].generated:
            raise BadInput(
                f"--fulltext: {name!r} is a generated column, which another generated column cannot read; "
                "give the columns it is computed from"
            )
    for other in info.columns.values():
        shared = (other.metadata or {}).get("fulltext")
        if shared and current_sources(info, other.metadata) == list(sources):
            return with_terms(
                db, info, shared
            )  # another vector column of the same text has it: one tsvector serves both
    column = names.fit_identifier(sources[0], "_tsv")
    if column in info.columns:
        raise BadInput(f"--fulltext: {info.display} already has a column {column!r} that vectorize did not make")
    index = free_index_name(db, info, column, "idx")
    return with_terms(db, info, {"column": column, "index": index, "language": language})


def with_terms(db: Database, info: Table, fulltext: dict) -> dict:
    """The full-text record with its BM25 statistics table (bm25.py), named free beside the
    table, where the engine ranks by BM25; a record from before them gains one."""
    if fulltext.get("terms") or not db.dialect.bm25:
        return fulltext
    tag = names.relation_tag(info.schema, info.name, fulltext["column"], "terms")
    terms = names.own_or_free(db, info.schema, f"{info.name}_{fulltext['column']}", "_terms", salt=info.schema, tag=tag)
    return {**fulltext, "terms": terms}


def half_made(db: Database, info: Table, existing: Column) -> bool:
    """A vector column an earlier run added and did not get to describe (on CockroachDB each DDL
    statement is its own transaction): no comment at all, and not one vector. Taking it over loses
    nothing, and the rerun finishes the setup."""
    if existing.comment is not None:
        return False
    column = sql.Identifier(existing.name)
    query = sql.SQL("SELECT 1 FROM {} WHERE {} IS NOT NULL LIMIT 1").format(info.ident, column)
    return db.fetchone(query) is None


def not_ours_message(info: Table, existing: Column, model: str) -> str:
    comment = f" (its comment: {existing.comment!r})" if existing.comment else ""
    return (
        f"column {existing.name!r} of {info.display} already exists and was not made by vectorize{comment}; "
        f"--adopt keeps its vectors and records them as made by {model!r}, --reencode replaces them all, "
        "or choose another --vector-column"
    )


def current_sources(info: Table, meta: dict) -> list[str | None]:
    """The recorded source columns by their current names: a renamed column is found by its
    column number; a dropped one is None."""
    recorded = list(meta.get("source") or [])
    attnums = list(meta.get("source_attnums") or [])
    by_attnum = {c.attnum: c.name for c in info.columns.values()}
    current: list[str | None] = []
    for i, name in enumerate(recorded):
        attnum = attnums[i] if i < len(attnums) else None
        column = info.columns.get(name)
        if column is not None and attnum in (None, column.attnum):
            current.append(name)
        else:
            current.append(by_attnum.get(attnum) if attnum is not None else None)
    return current


def source_problem(info: Table, meta: dict) -> str | None:
    """What a rename or drop of a source column did to this vector column, or None."""
    recorded = list(meta.get("source") or [])
    current = current_sources(info, meta)
    if current == recorded:
        return None
    gone = [r for r, c in zip(recorded, current, strict=True) if c is None]
    if gone:
        return f"source column {', '.join(map(repr, gone))} was dropped"
    renamed = [f"{r!r} is now {c!r}" for r, c in zip(recorded, current, strict=True) if r != c]
    return f"source column {', '.join(renamed)}"


def vector_column_of(info: Table, sources: tuple[str, ...]) -> str | None:
    """The vector column already made for these sources (under a default name, or recorded
    before a source was renamed), if there is exactly one."""
    if default_vector_column(sources[0]) in info.columns:
        return None
    found = [
        c.name
        for c in info.columns.values()
        if c.metadata is not None and current_sources(info, c.metadata) == list(sources)
    ]
    return found[0] if len(found) == 1 else None


def watched_columns(info: Table, sources) -> tuple[str, ...]:
    """The columns a change of which changes the text: the sources, or for a generated source
    the columns its expression reads (a BEFORE trigger cannot see generated values)."""
    watched: list[str] = []
    for name in sources:
        column = info.columns[name]
        found = expression_columns(column.expression, info, exclude=name) if column.generated else [name]
        watched += [c for c in found if c not in watched]
    return tuple(watched)


IDENTIFIER = re.compile(r'"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*)')
STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")


def expression_columns(expression: str | None, info: Table, exclude: str) -> list[str]:
    """Columns of info named in a generation expression, in table order. Reading names out of the
    expression text works on both engines; a word that only looks like a column (a function
    named like one) adds a column to watch, which costs a needless re-encode at most."""
    text = STRING_LITERAL.sub(" ", expression or "")
    words = {quoted.replace('""', '"') if quoted else bare for quoted, bare in IDENTIFIER.findall(text)}
    found = [c for c in info.columns if c in words and c != exclude and not info.columns[c].is_vector]
    if not found:
        raise BadInput(f"cannot tell which columns the generated column {exclude!r} of {info.display} reads")
    return found


def recorded_index_names(info: Table, vector_column: str, meta: dict) -> tuple[str, str]:
    """The vector and pending-rows index names in the metadata, or those earlier versions gave."""
    return (
        meta.get("index") or index_name_for(info.name, vector_column),
        meta.get("pending_index") or index_name_for(info.name, vector_column, "pending"),
    )


def index_names(db: Database, info: Table, vector_column: str, meta: dict | None) -> tuple[str, str]:
    """The vector index and pending-rows index names: as recorded, else free ones."""
    if meta and meta.get("index") and meta.get("pending_index"):
        return meta["index"], meta["pending_index"]
    return free_index_name(db, info, vector_column, "idx"), free_index_name(db, info, vector_column, "pending")


def free_index_name(db: Database, info: Table, vector_column: str, suffix: str) -> str:
    """<table>_<column>_<suffix> unless another table's relation has that name in the schema
    (a_b.c and a.b_c meet at a_b_c_vector_idx): then a name salted with the table's own."""
    plain = names.index_name(info.name, vector_column, suffix)
    for name in dict.fromkeys([index_name_for(info.name, vector_column, suffix), plain]):
        owner = db.relation_owner(info.schema, name)
        if owner == info.name:
            return name  # made for this column by an earlier run
    if db.relation_owner(info.schema, plain) is None:
        return plain
    return names.index_name(info.name, vector_column, suffix, salt=f"{info.schema}.{info.name}")


def check_text_column(info: Table, name: str) -> None:
    source = info.column(name)
    if not source.is_text:
        raise NotTextColumn(
            f"column {name!r} of {info.display} is {source.type_sql}, not text; "
            "vectorize encodes text columns (text, varchar, char, and types and domains of the string category)"
        )
    if source.generated == "virtual":
        raise NotTextColumn(
            f"column {name!r} of {info.display} is a VIRTUAL generated column, which PostgreSQL cannot index; "
            "make it STORED, or encode the columns it is computed from"
        )


def check_vector_column_name(info: Table, vector_column: str, sources) -> None:
    if vector_column in sources or vector_column in info.primary_key:
        raise BadInput(f"--vector-column {vector_column!r} would overwrite a column vectorize reads")


def check_vector_column(existing, table: str, dimension: int, made_by: str) -> None:
    """The existing column can hold these vectors; made_by says what makes them ('model 'x' makes')."""
    if not existing.is_vector:
        raise DimensionMismatch(
            f"column {existing.name!r} of {table} exists as {existing.type_sql}, "
            f"not vector({dimension}); choose another --vector-column"
        )
    if existing.typmod != dimension:
        size = existing.typmod if existing.typmod > 0 else "no fixed size"
        raise DimensionMismatch(
            f"column {existing.name!r} of {table} holds vectors of {size} dimensions "
            f"but {made_by} {dimension}; choose another --vector-column"
        )


def check_same_fill(
    meta,
    table,
    vector_column,
    sources,
    model,
    metric,
    prefix,
    *,
    current=None,
    replace="or --reencode to replace its vectors",
) -> None:
    """Refuse to mix a second model, metric, source or prefix into a column filled by another.

    ``current`` is the recorded sources under their current names (see current_sources): a
    column renamed since is the same source. ``replace`` says how the command at hand replaces
    the column's vectors."""
    where = f"{table}.{vector_column}"
    current = meta.get("source") or [] if current is None else current
    if meta.get("model") != model:
        raise ModelMismatch(
            f"{where} was filled by model {meta.get('model')!r}, not {model!r}; "
            f"use another --vector-column for a second model, {replace}"
        )
    if list(current) != list(sources):
        shown = ", ".join(c or f"{r} (dropped)" for r, c in zip(meta.get("source") or [], current, strict=False))
        raise ModelMismatch(f"{where} holds vectors of {shown}, not {', '.join(sources)}")
    if metric is not None and meta.get("metric") != metric:
        raise ModelMismatch(
            f"{where} is indexed for the {meta.get('metric')} metric, not {metric}; "
            "use another --vector-column for a second metric"
        )
    if prefix is not None and meta.get("prefix", "") != prefix:
        raise ModelMismatch(f"{where} was encoded with --prefix {meta.get('prefix', '')!r}, not {prefix!r}")


@dataclass(frozen=True)
class SearchTarget:
    table: Table
    vector_column: str
    metadata: dict

    @property
    def index_name(self) -> str:
        return recorded_index_names(self.table, self.vector_column, self.metadata)[0]

    @property
    def index_table(self) -> Table:
        """The table the vector index is on (see VectorTarget.index_table)."""
        return vector_index_table(self.table, self.metadata)

    @property
    def content_table(self) -> ContentTable | None:
        return content_table_of(self.table, self.metadata)

    @property
    def sources(self) -> list[str]:
        """The source columns by their current names (a renamed column is followed)."""
        current = current_sources(self.table, self.metadata)
        if None in current:
            raise BadInput(f"{self.display}: {source_problem(self.table, self.metadata)}; see `vectorize.py status`")
        return current

    @property
    def display(self) -> str:
        return f"{self.table.display}.{self.vector_column}"


def resolve_for_search(
    db: Database,
    *,
    table: str | None = None,
    schema: str | None = None,
    column: str | list[str] | tuple[str, ...] | None = None,
    vector_column: str | None = None,
    metric: str | None = None,
    dimension: int | None = None,
) -> SearchTarget:
    """Pick the vectorized column to search: the only one, or the one the options narrow to
    (see pick_vector_column). ``dimension``: a query vector's, which settles a choice between
    columns of different sizes."""
    info = db.find_table(table, schema) if table is not None else None
    found = [
        Candidate(s, t, v, m, db.find_table(t, s) if column is not None else None)
        for s, t, v, m in db.vectorized_columns()
        if info is None or (s, t) == (info.schema, info.name)
    ]
    scope = f" in table {table!r}" if table else " in the database"
    chosen = pick_vector_column(
        found, scope=scope, column=column, vector_column=vector_column, metric=metric, dimension=dimension
    )
    if info is None:  # a table named in the options is read once
        info = db.find_table(chosen.table, chosen.schema)
    return SearchTarget(info, chosen.vector_column, chosen.metadata)


@dataclass(frozen=True)
class Candidate:
    """A vectorized column as the catalog has it: where, its metadata, and (to follow renamed
    sources) its table when known."""

    schema: str
    table: str
    vector_column: str
    metadata: dict
    info: Table | None = None

    def sources(self) -> list[str]:
        recorded = list(self.metadata.get("source") or [])
        current = current_sources(self.info, self.metadata) if self.info is not None else []
        return recorded + [c for c in current if c is not None and c not in recorded]

    def fit(self, column: tuple[str, ...]) -> int:
        """How well its sources fit the --column names: 2 they are exactly its sources, 1 each is
        one of them, 0 not all are."""
        recorded = list(self.metadata.get("source") or [])
        current = current_sources(self.info, self.metadata) if self.info is not None else recorded
        if list(column) in (recorded, current):
            return 2
        return 1 if set(column) <= set(self.sources()) else 0

    def label(self) -> str:
        m = self.metadata
        return f"{self.schema}.{self.table}.{self.vector_column} ({', '.join(m.get('source', []))}, {m.get('metric')})"


def pick_vector_column(
    found: list[Candidate],
    *,
    scope: str = " in the database",
    column: str | list[str] | tuple[str, ...] | None = None,
    vector_column: str | None = None,
    metric: str | None = None,
    dimension: int | None = None,
) -> Candidate:
    """The one vectorized column the options mean, from the catalog's (no database): named by
    --vector-column and --metric; by --column, the column whose sources are exactly the ones
    named, else the only one holding them all (`-c body` finds a title+body column); among
    several, the only one of ``dimension``. Asks, listing the candidates, only when two fit."""
    columns = (column,) if isinstance(column, str) else tuple(column or ())
    if vector_column is not None:
        found = [f for f in found if f.vector_column == vector_column]
    if metric is not None:
        found = [f for f in found if f.metadata.get("metric") == metric]
    if columns:
        fits = {id(f): f.fit(columns) for f in found}
        best = max(fits.values(), default=0)
        found = [f for f in found if best and fits[id(f)] == best]
    if len(found) > 1 and dimension is not None:
        sized = [f for f in found if f.metadata.get("dimension") == dimension]
        found = sized if len(sized) == 1 else found
    if not found:
        what = f" for column {', '.join(map(repr, columns))}" if columns else ""
        what += f" named {vector_column!r}" if vector_column else ""
        what += f" with metric {metric}" if metric else ""
        raise NoVectorizedColumn(
            f"no vectorized column{what}{scope}; run `vectorize.py encode --table T --column C` first"
        )
    if len(found) > 1:
        raise AmbiguousVectorColumn(
            f"several vectorized columns fit: {', '.join(f.label() for f in found)}; "
            "choose with --table, --column, --vector-column or --metric"
        )
    return found[0]
