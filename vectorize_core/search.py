"""Similarity search over a vectorized column, ranked so that the vector index serves it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

import numpy as np
from psycopg import sql

from . import search_sql
from .chunks import chunk_table_of, joined_text
from .contents import content_table_of
from .db import Database
from .dialects import BEAM_SIZE_RANGE, CHUNK_FANOUT, OVERFETCH, SearchSpec, vector_literal
from .errors import BadInput, DatabaseError, DimensionMismatch, EncoderError, NoVectorizedColumn
from .filters import BadFilter, compile_filter, parse_filter
from .target import SearchTarget, load_encoder, resolve_for_search


@dataclass
class SearchResult:
    target: SearchTarget
    key_columns: list[str]
    text_columns: list[str]
    rows: list[dict]  # key, text and --show columns by name, plus the distance (distance_key)
    extra_columns: list[str] = field(default_factory=list)
    mode: str = "index"  # how the rows were ranked: index, exact, prefix or overfetch
    distance_key: str = "distance"  # 'vectorize_distance' when the table has a column 'distance'
    notice: str | None = None  # when the vector index did not serve the search, and why
    score_key: str | None = None  # hybrid: the fused score
    rank_keys: tuple[str, str] | None = None  # hybrid: each leg's rank (None where it missed the row)
    # A chunked column: the names of the best chunk's number, start, end and text in each row.
    chunk_keys: tuple[str, str, str, str] | None = None


def output_columns(target: SearchTarget, show: list[str] | None, text: bool = True) -> list[str]:
    columns = [*target.table.primary_key, *(target.sources if text else [])]
    for name in show or []:
        target.table.column(name)  # NoSuchColumn for a column the table lacks
        if target.table.columns[name].is_vector:
            raise BadInput(f"--show {name}: vector columns are not shown")
        if name not in columns:
            columns.append(name)
    return columns


def distance_name(table, name: str = "distance") -> str:
    """name ('distance', 'score', ...), or a name no column of the table has: ORDER BY must not be
    ambiguous, nor a result row hold two values under one name."""
    while name in table.columns:
        name = f"vectorize_{name}"
    return name


# k: a bound any server takes as a LIMIT, and more rows than anyone reads (the CLI's -k has the same).
MAX_K = 100_000

# Hybrid search: reciprocal rank fusion's constant (as in the RRF paper and every hybrid
# implementation since; eval --hybrid on NFCorpus measured it, see the README), candidates per leg.
FUSION_K = 60
HYBRID_CANDIDATES = 100


def search_spec(
    db: Database,
    target: SearchTarget,
    k: int,
    *,
    where=None,
    exact=False,
    show=None,
    ef_search=None,
    beam_size=None,
    text: bool = True,
) -> SearchSpec:
    meta = target.metadata
    low, high = BEAM_SIZE_RANGE
    if beam_size is not None and not low <= beam_size <= high:
        raise BadInput(f"--beam-size must be from {low} to {high}, as CockroachDB accepts")
    spec = SearchSpec(
        table=target.table.ident,
        # A chunked column's rows carry their text for the best chunk's (cut from it), even without text.
        columns=output_columns(target, show, text or bool(meta.get("chunks"))),
        keys=list(target.table.primary_key),
        vector_column=target.vector_column,
        metric=meta["metric"],
        dimension=int(meta["dimension"]),
        k=k,
        ef_search=ef_search,
        beam_size=beam_size,
        distance_name=distance_name(target.table),
        **column_options(target.table, meta),
    )
    if where:
        doc = parse_filter(where) if isinstance(where, str) else where
        if doc:
            spec.filter, spec.filter_params = compile_filter(doc, target.table, alias="t")
            spec.filter_on_prefix = pins_prefix_columns(doc, meta.get("prefix_columns") or [])
            if spec.contents is not None and spec.filter_on_prefix:
                # The contents table carries the prefix columns: the index's own filter.
                spec.index_filter, spec.index_filter_params = compile_filter(doc, spec.contents.as_table(), alias="c")
    spec.mode = "exact" if exact else db.dialect.search_mode(spec)
    return spec


def column_options(table, meta: dict) -> dict:
    """SearchSpec's fields for a column's layout: its key types, its contents table and hash
    column (the index's), and for a chunked column its chunk table and the output names of the
    best chunk's number, start and end."""
    options = {
        "key_types": [table.columns[k].type_sql for k in table.primary_key],
        "contents": content_table_of(table, meta),
        "hash_column": (meta.get("hash") or {}).get("column"),
    }
    if meta.get("chunks"):
        options["chunks"] = chunk_table_of(table, meta["chunks"])
        options["chunk_names"] = tuple(distance_name(table, n) for n in ("chunk", "chunk_start", "chunk_end"))
        options["opening_weight"] = meta["chunks"].get("opening_weight")
    return options


def pins_prefix_columns(doc: dict, prefix: list[str]) -> bool:
    """True when the filter is exactly equality / IN on every prefix column of the index."""
    if not prefix or set(doc) != set(prefix):
        return False
    for value in doc.values():
        if isinstance(value, dict):
            if set(value) not in ({"$eq"}, {"$in"}):
                return False
        elif value is None:
            return False
    return True


def emit_sql(db: Database, *, where=None, exact=False, hybrid=False, **choose) -> str:
    """The search query for application code, with its parameters explained. Through the index
    it asks for the nearest contents first (the candidates): when their rows are fewer than k,
    ask for more, or rank exactly (what search does). --hybrid: the vector leg's query, then
    the fusion's, which takes the vector leg's rows."""
    target = resolve_for_search(db, **choose)
    meta = target.metadata
    spec = search_spec(db, target, 10, where=where, exact=exact)
    if hybrid:
        spec = replace(spec, columns=list(spec.keys), k=HYBRID_CANDIDATES, text_keys=True)
    if spec.mode != "exact":
        spec = replace(spec, candidates=first_candidates(spec))
    query, params = search_sql.search_statement(db.dialect, spec, "<query vector>")
    settings = [mogrify(db, stmt, p) for stmt, p in db.dialect.search_settings(spec)]
    prefix = f" (prefix {meta['query_prefix']!r})" if meta.get("query_prefix") else ""
    lines = [
        f"-- {db.dialect.name}: nearest rows of {target.display}, metric {meta['metric']}, model {meta['model']}",
        f"-- the query vector is text '[x1,...,x{meta['dimension']}]' from {meta['model']}{prefix}",
    ]
    if spec.mode != "exact":
        lines.append(
            f"-- through the index: the rows of the nearest {spec.candidates} distinct contents, and the farthest"
            " one's distance (vectorize_far); when fewer than k rows are nearer than it, ask for more contents"
            " (or rank exactly with --exact's query)"
        )
    lines += [
        f"-- parameters in order: {described(params)} (the last is k)",
        "-- run in one transaction with:",
        *(f"--   {setting};" for setting in settings),
        db.as_string(query) + ";",
    ]
    if hybrid:
        fused, fused_params = search_sql.hybrid_statement(
            db.dialect, replace(spec, columns=search_spec(db, target, 10).columns, k=10, text_keys=False), [], "<query text>",
            fulltext_of(target), candidates=HYBRID_CANDIDATES, fusion_k=FUSION_K, weights=(1.0, 1.0),
            names=hybrid_names(target.table),
        )  # fmt: skip
        width = len(spec.keys) + 1 + (3 if spec.chunks is not None else 0)
        lines += [
            "-- then the fusion with the full text: its first parameters are the rows above, column by column",
            f"-- (arrays of the keys as text, the distances{', the chunks' if spec.chunks is not None else ''},"
            " their order 1, 2, ...), then: " + described(fused_params[width + 1 :]) + " (the last is k)",
            db.as_string(fused) + ";",
        ]
    return "\n".join(lines)


def described(params: list) -> str:
    return ", ".join(
        p[1:-1].replace("query ", "the query ") if p in ("<query vector>", "<query text>") else repr(p) for p in params
    )


def mogrify(db: Database, statement, params) -> str:
    import psycopg

    return psycopg.ClientCursor(db.connection()).mogrify(statement, params)


def encode_query(target: SearchTarget, text: str, encoder_for=load_encoder) -> np.ndarray:
    """The query's vector, by the column's recorded encoder and query prefix. ``encoder_for(name,
    dimension=...)`` gives the encoder (serve passes a cache of them)."""
    meta = target.metadata
    encoder = encoder_for(meta["model"], dimension=int(meta["dimension"]))
    try:
        vector = np.asarray(encoder.encode([meta.get("query_prefix", "") + text]), dtype=np.float32)[0]
    except Exception as exc:  # noqa: BLE001
        raise EncoderError(f"model {target.metadata['model']!r} failed on the query: {exc}") from exc
    return vector


def current_target(db: Database, **choose) -> SearchTarget:
    """The column to search, resolved from the catalog as read, and confirmed as it is now: a
    long-lived Database (serve's, a library user's) may hold a snapshot from before a column was
    encoded again, dropped or added; then the catalog is read again."""
    try:
        target = resolve_for_search(db, **choose)
    except NoVectorizedColumn:
        db.forget_catalog()  # encoded since the catalog was read?
        return resolve_for_search(db, **choose)
    column = target.table.columns[target.vector_column]
    now = db.fetchone("SELECT col_description(%s, %s)", (target.table.oid, column.attnum))
    if replace(column, comment=now[0] if now else None).metadata != target.metadata:
        db.forget_catalog()
        target = resolve_for_search(db, **choose)
    return target


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
    return query_vector_of(values)


def query_vector_of(values) -> np.ndarray:
    """A query vector from a list of numbers (or a 1-d array): numbers only, each finite as float4."""
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if not isinstance(values, (list, tuple)) or not values:
        raise BadInput("--query-vector must be a JSON array of numbers")
    if any(isinstance(v, bool) or not isinstance(v, (int, float, Decimal)) for v in values):
        raise BadInput("--query-vector must hold only numbers")
    with np.errstate(over="ignore"):  # beyond float4's range is infinity, refused next
        vector = np.asarray([float(v) for v in values], dtype=np.float32)
    if not np.isfinite(vector).all():
        raise BadInput("--query-vector holds NaN or infinity")
    return vector


def prepare(
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
    where: str | dict | None = None,
    exact: bool = False,
    show: list[str] | None = None,
    ef_search: int | None = None,
    beam_size: int | None = None,
    follower_read: bool = False,
    text_out: bool = True,
    probe: bool = False,
    hybrid: bool = False,
    encoder_for=load_encoder,
) -> tuple[SearchTarget, SearchSpec, np.ndarray]:
    """The column, the ranked query's spec and the query vector, all checked before any query
    runs. ``probe`` allows neither text nor vector (a plan check): a unit vector stands in.
    ``hybrid`` needs the text (for the full-text leg) and takes a query vector beside it."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise BadInput(f"k must be a whole number from 1 to {MAX_K:,}")
    if hybrid and text is None:
        raise BadInput("--hybrid needs the query text (its words are searched in the full text)")
    if text is not None and query_vector is not None and not hybrid:
        raise BadInput("give either a query text or --query-vector")
    if text is None and query_vector is None and not probe:
        raise BadInput("give either a query text or --query-vector")
    if text is not None and not text.strip():
        # Blank text has no words and no meaning: ranking by it returns arbitrary rows.
        raise BadInput("the query text is empty (or only white space): give the words to search for")
    if isinstance(query_vector, str):
        query_vector = parse_query_vector(query_vector)
    elif query_vector is not None:
        query_vector = query_vector_of(query_vector)
    dimension = len(query_vector) if query_vector is not None else None
    target = current_target(
        db, table=table, schema=schema, column=column, vector_column=vector_column, metric=metric, dimension=dimension
    )
    # Everything the user wrote is checked before the model loads or any query runs.
    spec = search_spec(
        db, target, k, where=where, exact=exact, show=show, ef_search=ef_search, beam_size=beam_size, text=text_out
    )
    if follower_read:
        db.dialect.check_follower_read()
        spec.follower_read = True
    if hybrid:
        fulltext_of(target)
    dimension = spec.dimension
    if text is None and query_vector is None:
        vector = np.zeros(dimension, dtype=np.float32)
        vector[0] = 1.0
    elif query_vector is None:
        if target.metadata.get("external"):
            label = f" ({target.metadata['label']})" if target.metadata.get("label") else ""
            raise BadInput(
                f"{target.display} holds imported vectors{label}; no model is known to encode text for it: "
                "search it with --query-vector"
            )
        vector = encode_query(target, text, encoder_for)
        if vector.shape != (dimension,):
            raise EncoderError(f"query vector has {vector.size} dimensions; the column holds {dimension}")
    else:
        vector = np.asarray(query_vector, dtype=np.float32)
        # Checked before any query: some CockroachDB releases crash on a wrong-size query vector.
        if vector.shape != (dimension,):
            raise DimensionMismatch(
                f"the query vector has {vector.size} dimensions but {target.display} holds {dimension}"
            )
    check_query_vector(vector, spec.metric)
    return target, spec, vector


def search(
    db: Database,
    text: str | None = None,
    *,
    hybrid: bool = False,
    fusion_k: float = FUSION_K,
    weights: tuple[float, float] = (1.0, 1.0),
    **options,
) -> SearchResult:
    """The k rows nearest to text (encoded with the column's recorded model) or to query_vector,
    among the rows matching the ``where`` filter document (see filters.py).

    Options: query_vector, k, table, schema, column, vector_column, metric (which column), where,
    exact, show, ef_search, beam_size, follower_read (CockroachDB: served by the nearest replica,
    a few seconds stale), text_out (False: rows without their source text). The result's
    ``notice`` says when the vector index did not serve it.
    ``hybrid`` fuses the vector ranking with a full-text ranking of the text's words (reciprocal
    rank fusion: ``fusion_k``, and ``weights`` of the vector and text legs)."""
    target, spec, vector = prepare(db, text, hybrid=hybrid, **options)
    if hybrid:
        result = run_hybrid(db, target, spec, vector, text, fusion_k=fusion_k, weights=weights)
    else:
        result = run_search(db, target, spec, vector)
    if not options.get("text_out", True):
        leave_out_text(result, options.get("show") or [])
    return result


def leave_out_text(result: SearchResult, show: list[str]) -> None:
    """Rows without their source text (text_out=False): keys, distance, shown columns, and a
    chunked column's best chunk."""
    dropped = [c for c in result.text_columns if c not in show]
    for row in result.rows:
        for column in dropped:
            row.pop(column, None)
    result.text_columns = []


def encode_command(target: SearchTarget) -> str:
    """The encode command of a column (its table, sources and vector column)."""
    columns = " ".join(f"-c {c}" for c in target.sources)
    return f"vectorize.py encode -t {target.table.display} {columns} --vector-column {target.vector_column}"


def fulltext_of(target: SearchTarget) -> dict:
    """The column's full-text record, or bad input saying how to add it."""
    if not target.metadata.get("fulltext"):
        raise BadInput(
            f"{target.display} has no full text for --hybrid: add it with "
            f"`vectorize.py encode -t {target.table.display} {' '.join('-c ' + c for c in target.sources)} "
            f"--vector-column {target.vector_column} -m {target.metadata.get('model')} --fulltext`"
        )
    fulltext = dict(target.metadata["fulltext"])
    if fulltext.get("terms"):
        fulltext["terms_ident"] = sql.Identifier(target.table.schema, fulltext["terms"])
    return fulltext


def hybrid_names(table) -> dict[str, str]:
    return {n: distance_name(table, n) for n in ("score", "dense_rank", "text_rank", "distance")}


def run_hybrid(db, target, spec, vector, text, *, fusion_k, weights, candidates=None) -> SearchResult:
    if fusion_k <= 0 or min(weights) < 0:
        raise BadInput("--fusion-k must be above 0 and the leg weights at least 0")
    names = hybrid_names(target.table)
    dense_spec, query, params = hybrid_statements(db, target, spec, vector_literal(vector), text, candidates,
                                                  fusion_k, weights)  # fmt: skip
    rows = run_ranked(db, spec, query, params)
    columns = [*spec.columns, names["score"], names["dense_rank"], names["text_rank"], names["distance"]]
    columns += spec.chunk_names if spec.chunks is not None else []
    result_rows, chunk_keys = with_chunk_text(target, spec, [dict(zip(columns, row, strict=True)) for row in rows])
    return SearchResult(
        target=target,
        key_columns=list(target.table.primary_key),
        text_columns=target.sources,
        chunk_keys=chunk_keys,
        rows=result_rows,
        extra_columns=[n for n in spec.columns if n not in (*target.table.primary_key, *target.sources)],
        mode="hybrid",
        distance_key=names["distance"],
        score_key=names["score"],
        rank_keys=(names["dense_rank"], names["text_rank"]),
    )


def hybrid_statements(db, target, spec, literal, text, candidates, fusion_k, weights):
    """The vector leg ranked first, as a search for `candidates` rows (through the index, or
    exactly when the index's nearest hold fewer matching rows), and the fusion statement that
    takes its rows and ranks the text leg: (the vector leg's spec, the fusion and its parameters)."""
    candidates = max(candidates or HYBRID_CANDIDATES, spec.k)
    dense_spec = replace(spec, columns=list(spec.keys), k=candidates, text_keys=True)
    dense_rows, dense_spec.mode = ranked(db, dense_spec, literal)
    query, params = search_sql.hybrid_statement(
        db.dialect, spec, dense_rows, text, fulltext_of(target), candidates=candidates, fusion_k=fusion_k, weights=weights,
        names=hybrid_names(target.table),
    )  # fmt: skip
    return dense_spec, query, params


@dataclass
class Explained:
    target: SearchTarget
    plan: list[str]
    uses_index: bool
    verdict: str  # whether the vector index serves the search, and if not why (and the text leg's index)
    uses_text_index: bool | None = None  # --hybrid: whether the full-text index serves its leg


def explain(
    db: Database,
    text: str | None = None,
    *,
    hybrid: bool = False,
    fusion_k: float = FUSION_K,
    weights: tuple[float, float] = (1.0, 1.0),
    **options,
) -> Explained:
    """The engine's plan for a search, the very statement that search runs (with or without a
    query: a unit vector stands in; --hybrid needs the text), and whether the indexes serve it:
    on PostgreSQL an index scan on the HNSW index (and a GIN scan for the text leg), on
    CockroachDB a vector search node."""
    target, spec, vector = prepare(db, text, probe=True, hybrid=hybrid, **options)
    literal = vector_literal(vector)
    if hybrid:
        dense_spec, query, params = hybrid_statements(db, target, spec, literal, text, None, fusion_k, weights)
        plan = explained(db, dense_spec, literal) + explained(db, spec, literal, query, params)
    else:
        plan = explained(db, spec, literal)
    index = target.index_name
    uses = db.dialect.plan_uses_index(plan, index)
    if uses:
        verdict = f"the vector index {index} serves this search"
    elif not db.index_exists(target.index_table, index):
        verdict = f"NOT served by a vector index: {target.display} has none (yet)"
    else:
        verdict = f"NOT served by the vector index {index}: the plan ranks the rows without it"
    uses_text = None
    if hybrid:
        text_index = target.metadata["fulltext"]["index"]
        uses_text = db.dialect.plan_uses_text_index(plan, text_index)
        leg = "serves" if uses_text else "does NOT serve"
        verdict = f"vector leg: {verdict}; text leg: the full-text index {text_index} {leg} it"
    return Explained(target, plan, uses, verdict, uses_text)


def explained(db: Database, spec: SearchSpec, literal: str, query=None, params=None) -> list[str]:
    """The engine's plan of a ranked query: the search's own statement unless one is given
    (through the index, the first nearest contents it asks for)."""
    if query is None:
        if spec.mode != "exact":
            spec = replace(spec, candidates=first_candidates(spec))
        query, params = search_sql.search_statement(db.dialect, spec, literal)
    return [abbreviate_vectors(row[0]) for row in run_ranked(db, spec, sql.SQL("EXPLAIN ") + query, params)]


# A vector literal of a plan ('[0.0123,-0.045,...]', 384 numbers): shown by its first numbers.
VECTOR_IN_PLAN = re.compile(r"\[(-?[0-9][0-9.e+-]*(?:,-?[0-9][0-9.e+-]*){8,})\]")


def abbreviate_vectors(line: str) -> str:
    def short(match: re.Match) -> str:
        numbers = match.group(1).split(",")
        return f"[{','.join(numbers[:3])},... {len(numbers)} numbers]"

    return VECTOR_IN_PLAN.sub(short, line)


def check_query_vector(vector: np.ndarray, metric: str) -> None:
    # The cosine distance to a zero vector is NaN: no ranking, and no valid JSON either.
    if metric == "cosine" and not np.any(vector):
        raise BadInput("the query vector is all zeros, which has no cosine distance to anything")


def run_search(db: Database, target: SearchTarget, spec: SearchSpec, vector: np.ndarray) -> SearchResult:
    literal = vector_literal(vector)
    asked = spec.mode
    rows, spec.mode = ranked(db, spec, literal)
    notice = None
    if spec.contents is None:
        notice = (
            f"{target.display} was indexed by an earlier version of vectorize.py: every row was ranked exactly; "
            f"`{encode_command(target)}` rebuilds its index (no model time)"
        )
    elif asked != "exact" and spec.mode == "exact" and rows:
        notice = f"the vector index gave fewer than {spec.k} rows; every matching row was ranked exactly"
    elif asked != "exact" and not db.index_exists(target.index_table, target.index_name):
        notice = f"{target.display} has no vector index (yet): every row was ranked exactly"
    elif asked == "overfetch":
        notice = (
            "the filter does not pin the vector index's prefix columns: it was applied to the rows of the "
            "nearest contents the index gave"
        )
    names = [*spec.columns, spec.distance_name, *(spec.chunk_names if spec.chunks is not None else ())]
    result_rows, chunk_keys = with_chunk_text(target, spec, [dict(zip(names, row, strict=True)) for row in rows])
    return SearchResult(
        target=target,
        key_columns=list(target.table.primary_key),
        text_columns=target.sources,
        rows=result_rows,
        extra_columns=[n for n in spec.columns if n not in (*target.table.primary_key, *target.sources)],
        mode=spec.mode,
        distance_key=spec.distance_name,
        notice=notice,
        chunk_keys=chunk_keys,
    )


def with_chunk_text(target: SearchTarget, spec: SearchSpec, rows: list[dict]) -> tuple[list[dict], tuple | None]:
    """A chunked column's rows with the text of their best chunk (cut from the row's text, the
    sources joined as the fill joined them), and the names of the chunk's fields."""
    if spec.chunks is None:
        return rows, None
    number, start, end = spec.chunk_names
    text = distance_name(target.table, "chunk_text")
    sources = target.sources
    with_text = set(sources) <= set(spec.columns)  # rows without their text (eval) get no chunk text
    for row in rows:
        found = with_text and row.get(start) is not None
        row[text] = joined_text([row[c] for c in sources])[row[start] : row[end]] if found else None
    return rows, (number, start, end, text)


# The most nearest contents a search asks of the index before every matching row is ranked
# exactly (pgvector's HNSW returns at most hnsw.ef_search rows, and it takes 1,000 at most).
MAX_CANDIDATES = 1000


def first_candidates(spec: SearchSpec) -> int:
    """The nearest contents a search asks of the index first: k + 1 (a content is a row at least,
    and the k-th row must be nearer than the farthest content given, which k contents alone
    never prove), more when a filter is applied to them (OVERFETCH) or a row has many
    (CHUNK_FANOUT)."""
    wanted = spec.k + 1
    if spec.filter is not None and not spec.filter_on_prefix:
        wanted = spec.k * OVERFETCH
    if spec.chunks is not None:
        wanted = max(wanted * CHUNK_FANOUT, 100)
    return min(MAX_CANDIDATES, wanted)


def ranked_rows(db: Database, spec: SearchSpec, literal: str) -> list[tuple]:
    return ranked(db, spec, literal)[0]


def ranked(db: Database, spec: SearchSpec, literal: str) -> tuple[list[tuple], str]:
    """The ranked rows, and how they were ranked in the end. Through the index: the rows of the
    nearest contents, more contents asked for while they hold fewer than k (matching) rows nearer
    than the farthest of them, up to MAX_CANDIDATES; then every matching row (or chunk) is ranked
    exactly. When they hold k such rows, those are the true top k in the true order: a row not
    among them holds a content at least as far as all the contents given."""
    if spec.mode == "exact":
        query, params = search_sql.search_statement(db.dialect, spec, literal)
        return run_ranked(db, spec, query, params), spec.mode
    candidates = first_candidates(spec)
    distance = len(spec.columns)  # where a row's distance is
    while True:
        asked = replace(spec, candidates=candidates)
        query, params = search_sql.search_statement(db.dialect, asked, literal)
        found = run_ranked(db, asked, query, params)
        rows = [row[:-1] for row in found]  # less the farthest candidate's distance
        # The k-th row nearer than the farthest content the index gave: no row it did not give
        # can come before it, nor tie with it (ties are ranked by key).
        if len(rows) >= spec.k and rows[spec.k - 1][distance] < found[0][-1]:
            return rows, spec.mode
        if candidates >= MAX_CANDIDATES:
            return ranked(db, replace(spec, mode="exact"), literal)
        candidates = min(MAX_CANDIDATES, candidates * 4)


def run_ranked(db: Database, spec: SearchSpec, query, params) -> list[tuple]:
    """Run a ranked query in its own transaction, with the search's local settings."""
    settings = db.dialect.search_settings(spec)

    def run(conn):
        with conn.transaction():
            for statement, setting_params in settings:
                conn.execute(statement, setting_params)
            return conn.execute(query, params).fetchall()

    try:
        return db.run(run)
    except DatabaseError as exc:
        if spec.filter is not None and exc.sqlstate and exc.sqlstate.startswith("22"):
            # A --where value its column's type cannot read ('not a date', out of range).
            raise BadFilter(f"--where has a value its column cannot hold: {exc}") from None
        raise
