"""The SQL of search, one statement builder a ranking: through the vector index (the nearest
contents expanded to their rows or chunks), exact, a chunked column's best chunk, the full-text
leg and the fusion of hybrid search. Written once for both engines: where they differ (the
distance operator, the vector parameter, settings), the dialect says."""

from __future__ import annotations

from psycopg import sql

from . import bm25
from .dialects import Dialect, SearchSpec


def search_statement(dialect: Dialect, spec: SearchSpec, query_vector: str) -> tuple[sql.Composed, list]:
    """The ranked query and its parameters: through the vector index (the nearest contents,
    expanded to the rows holding them, which are then ranked by their own vectors), or
    'exact' (every matching row, or chunk, ranked). Ties are ranked by key in both."""
    if spec.mode == "exact" or spec.contents is None:
        if spec.chunks is not None:
            return best_chunks(dialect, spec, *exact_chunk_hits(dialect, spec, query_vector), query_vector)
        return exact_rows(dialect, spec, query_vector)
    near, near_params = near_contents(dialect, spec, query_vector)
    if spec.chunks is not None:
        return best_chunks(dialect, spec, *chunk_hits(dialect, spec, near, near_params, query_vector), query_vector)
    row_distance = query_distance(dialect, spec, "t", spec.vector_column)
    query = sql.SQL(
        "SELECT {select}, {distance} AS {alias}, near.vectorize_far FROM ({near}) AS near JOIN {table} AS t ON {on}"
        " WHERE {live} ORDER BY {alias}, {keys} LIMIT %s"
    ).format(
        select=sql.SQL(", ").join(spec.select),
        distance=row_distance,
        alias=spec.alias,
        near=near,
        table=spec.table,
        on=holds_content(dialect, spec, sql.Identifier("t", spec.hash_column), "t"),
        live=live_rows(dialect, spec),
        keys=sql.SQL(", ").join(sql.Identifier("t", k) for k in spec.keys),
    )
    return query, [query_vector, *near_params, *spec.filter_params, spec.k]


def query_distance(dialect: Dialect, spec: SearchSpec, alias: str, column: str) -> sql.Composed:
    """The distance of alias.column to the query vector (one placeholder), in the search's metric."""
    return dialect.distance(sql.Identifier(alias, column), spec.metric, dialect.vector_param(spec.dimension))


def near_contents(dialect: Dialect, spec: SearchSpec, query_vector: str) -> tuple[sql.Composed, list]:
    """The nearest `candidates` contents, by the vector index (a query with no filter but the
    prefix columns': CockroachDB turns its vector index off for any other), each with the
    distance of the farthest of them (vectorize_far): a row as near as that may hold a
    content the index did not give, so only rows nearer than it are surely in order."""
    ct = spec.contents
    columns = sql.SQL(", ").join(sql.Identifier("c", c) for c in ct.key)
    where, params = sql.SQL(""), []
    if spec.index_filter is not None:
        where, params = sql.SQL(" WHERE {}").format(spec.index_filter), list(spec.index_filter_params)
    exact = query_distance(dialect, spec, "c", ct.vector)
    dist = dialect.ranked_distance(spec, sql.Identifier("c", ct.vector))
    query = sql.SQL(
        "SELECT n0.*, max(n0.vectorize_near) OVER () AS vectorize_far FROM"
        " (SELECT {}, {} AS vectorize_near FROM {} AS c{} ORDER BY {} LIMIT %s) AS n0"
    ).format(columns, exact, ct.ident, where, dist)
    return query, [query_vector, *params, query_vector, spec.candidates or spec.k]


def holds_content(dialect: Dialect, spec: SearchSpec, hash_value: sql.Composable, alias: str) -> sql.Composed:
    """The row (or chunk) aliased `alias`, whose content hash is hash_value, holds a content of
    `near` (and under the same prefix values)."""
    ct = spec.contents
    match = [sql.SQL("{} = near.{}").format(hash_value, sql.Identifier(ct.hash))]
    match += [
        sql.SQL("{}.{} = near.{}").format(sql.Identifier(alias), sql.Identifier(p), sql.Identifier(p))
        for p in ct.prefix_columns
    ]
    return sql.SQL(" AND ").join(match)


def live_rows(dialect: Dialect, spec: SearchSpec) -> sql.Composed:
    """Rows (alias t) that have a vector and match the filter."""
    live = sql.SQL("t.{} IS NOT NULL").format(sql.Identifier(spec.vector_column))
    return live if spec.filter is None else sql.SQL("{} AND {}").format(live, spec.filter)


def exact_rows(dialect: Dialect, spec: SearchSpec, query_vector: str) -> tuple[sql.Composed, list]:
    """Every matching row ranked by its vector (ties by key): the scan fenced (OFFSET 0) so
    that no index ranks it."""
    dist = query_distance(dialect, spec, "t", spec.vector_column)
    tie = [f"vectorize_key{i}" for i in range(len(spec.keys))]
    inner = sql.SQL("SELECT {}, {} AS {}, {} FROM {} AS t WHERE {} OFFSET 0").format(
        sql.SQL(", ").join(spec.select),
        dist,
        spec.alias,
        sql.SQL(", ").join(
            sql.SQL("t.{} AS {}").format(sql.Identifier(k), sql.Identifier(a))
            for k, a in zip(spec.keys, tie, strict=True)
        ),
        spec.table,
        live_rows(dialect, spec),
    )
    query = sql.SQL("SELECT {} FROM ({}) AS candidates ORDER BY {} LIMIT %s").format(
        sql.SQL(", ").join(sql.Identifier("candidates", c) for c in (*spec.columns, spec.distance_name)),
        inner,
        sql.SQL(", ").join(sql.Identifier("candidates", c) for c in (spec.distance_name, *tie)),
    )
    return query, [query_vector, *spec.filter_params, spec.k]


def chunk_hits(dialect: Dialect, spec: SearchSpec, near, near_params, query_vector: str) -> tuple[sql.Composed, list]:
    """The chunks holding the nearest contents, each with its content's distance (its vector
    is the chunk's), and the row's hash when it was split: best_chunks keeps a chunk only while
    its row still has it. Where rows are ranked by their openings too, the rows holding a nearest
    content (as a chunk or as their opening) instead, with the exact distance of every chunk of
    theirs: a row's best chunk may be none of the nearest contents."""
    ch = spec.chunks
    if spec.opening_weight is not None:
        return rows_chunk_hits(dialect, spec, near, near_params, query_vector)
    query = sql.SQL(
        "SELECT {columns}, near.vectorize_near AS vectorize_distance, near.vectorize_far FROM ({near}) AS near"
        " JOIN {chunks} AS ch ON {on}"
    ).format(
        columns=chunk_columns(dialect, ch),
        near=near,
        chunks=ch.ident,
        on=holds_content(dialect, spec, sql.Identifier("ch", ch.hash), "ch"),
    )
    return query, near_params


def rows_chunk_hits(
    dialect: Dialect, spec: SearchSpec, near, near_params, query_vector: str
) -> tuple[sql.Composed, list]:
    """The chunks holding the nearest contents, with their contents' distances; and for a row
    found by its opening alone, every chunk of it, scored. A row's best chunk is exact either way:
    a chunk whose content is not among the nearest is at least as far as every one that is."""
    ch = spec.chunks
    keys = [sql.Identifier(k) for k in ch.keys]
    columns = chunk_columns(dialect, ch)
    only_openings = sql.SQL("SELECT {keys}, max(h.vectorize_far) AS vectorize_far FROM hits AS h GROUP BY {keys}"
                            " HAVING max(h.{chunk}) < 0").format(
        keys=sql.SQL(", ").join(sql.SQL("h.{}").format(k) for k in keys), chunk=sql.Identifier(ch.chunk)
    )  # fmt: skip
    query = sql.SQL(
        "WITH hits AS (SELECT {columns}, near.vectorize_near AS vectorize_distance, near.vectorize_far"
        " FROM ({near}) AS near JOIN {chunks} AS ch ON {on})"
        " SELECT * FROM hits WHERE hits.{chunk} >= 0"
        " UNION ALL SELECT {columns}, {distance}, o.vectorize_far FROM ({only_openings}) AS o"
        " JOIN {chunks} AS ch ON {same} AND ch.{chunk} >= 0"
    ).format(
        columns=columns,
        near=near,
        chunks=ch.ident,
        on=holds_content(dialect, spec, sql.Identifier("ch", ch.hash), "ch"),
        chunk=sql.Identifier(ch.chunk),
        distance=query_distance(dialect, spec, "ch", ch.vector),
        only_openings=only_openings,
        same=sql.SQL(" AND ").join(sql.SQL("ch.{0} = o.{0}").format(k) for k in keys),
    )
    return query, [*near_params, query_vector]


def exact_chunk_hits(dialect: Dialect, spec: SearchSpec, query_vector: str) -> tuple[sql.Composed, list]:
    """Every chunk of every row that holds them and matches the filter, with its distance (the
    rows' openings are no chunk of theirs)."""
    ch = spec.chunks
    query = sql.SQL(
        "SELECT {columns}, {distance} AS vectorize_distance FROM {chunks} AS ch JOIN {table} AS t ON {holds}"
        " WHERE {live} AND ch.{chunk} >= 0"
    ).format(
        columns=chunk_columns(dialect, ch),
        distance=query_distance(dialect, spec, "ch", ch.vector),
        chunks=ch.ident,
        table=spec.table,
        holds=row_holds_chunk(dialect, spec, "ch"),
        live=live_rows(dialect, spec),
        chunk=sql.Identifier(ch.chunk),
    )
    return query, [query_vector, *spec.filter_params]


def chunk_columns(dialect: Dialect, ch) -> sql.Composed:
    columns = (*ch.keys, ch.chunk, ch.start, ch.end, *((ch.row_hash,) if ch.row_hash else ()))
    return sql.SQL(", ").join(sql.Identifier("ch", c) for c in columns)


def row_holds_chunk(dialect: Dialect, spec: SearchSpec, alias: str) -> sql.Composed:
    """The row aliased t holds the chunk aliased `alias`: same key, and (where recorded) its
    text the text that was split. A chunk left under a key that another row has now is not
    its (a row's chunks are all replaced at once: they share their row hash)."""
    ch = spec.chunks
    a = sql.Identifier(alias)
    match = sql.SQL(" AND ").join(sql.SQL("t.{0} = {1}.{0}").format(sql.Identifier(k), a) for k in ch.keys)
    if ch.row_hash is None or spec.hash_column is None:
        return match
    return sql.SQL("{} AND t.{} = {}.{}").format(
        match, sql.Identifier(spec.hash_column), a, sql.Identifier(ch.row_hash)
    )


def best_chunks(
    dialect: Dialect, spec: SearchSpec, hits: sql.Composable, params: list, query_vector: str
) -> tuple[sql.Composed, list]:
    """The rows of chunk hits, each once, by its nearest chunk (ties: the first chunk), with
    that chunk's number, start and end (and through the index vectorize_far), of rows that
    hold their chunks, have a vector and match the filter (exact hits are filtered already);
    ranked by that distance mixed with their opening's (spec.opening_weight), then by key."""
    ch = spec.chunks
    indexed = spec.mode != "exact" and spec.contents is not None
    far = sql.SQL(", best.vectorize_far") if indexed else sql.SQL("")
    live = (
        live_rows(dialect, spec) if indexed else sql.SQL("t.{} IS NOT NULL").format(sql.Identifier(spec.vector_column))
    )
    names = [sql.Identifier(n) for n in spec.chunk_names]
    hit_keys = sql.SQL(", ").join(sql.Identifier("hit", k) for k in ch.keys)
    distance, distance_params = sql.SQL("best.vectorize_distance"), []
    if spec.opening_weight is not None:
        w = float(spec.opening_weight)
        opening = query_distance(dialect, spec, "t", spec.vector_column)
        distance = sql.SQL("({} * ({}) + {} * best.vectorize_distance)").format(
            sql.Literal(w), opening, sql.Literal(1 - w)
        )
        distance_params = [query_vector]
    query = sql.SQL(
        "SELECT {select}, {distance} AS {alias}, best.{chunk} AS {chunk_name},"
        " best.{start} AS {start_name}, best.{end} AS {end_name}{far}"
        " FROM (SELECT hit.*, row_number() OVER (PARTITION BY {hit_keys}"
        " ORDER BY hit.vectorize_distance, hit.{chunk}) AS vectorize_pick FROM ({hits}) AS hit) AS best"
        " JOIN {table} AS t ON {back} WHERE best.vectorize_pick = 1 AND {live}"
        " ORDER BY {alias}, {keys} LIMIT %s"
    ).format(
        select=sql.SQL(", ").join(spec.select),
        distance=distance,
        alias=spec.alias,
        chunk=sql.Identifier(ch.chunk),
        start=sql.Identifier(ch.start),
        end=sql.Identifier(ch.end),
        chunk_name=names[0],
        start_name=names[1],
        end_name=names[2],
        live=live,
        hit_keys=hit_keys,
        far=far,
        hits=hits,
        table=spec.table,
        back=row_holds_chunk(dialect, spec, "best"),
        keys=sql.SQL(", ").join(sql.Identifier("t", k) for k in ch.keys),
    )
    return query, [*distance_params, *params, *(spec.filter_params if indexed else []), spec.k]


def text_ranking(
    dialect: Dialect, spec: SearchSpec, fulltext: dict, text: str, candidates: int
) -> tuple[sql.Composed, list]:
    """Keys of the rows matching the query's words and the filter, ranked by BM25 (where the
    column keeps its statistics: bm25.py) or else ts_rank, with their rank; at most candidates.
    The tsquery is written out where it is used (not joined from a subquery) so that the planner
    sees a constant and uses the GIN index."""
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in spec.keys)
    tsv = sql.Identifier("t", fulltext["column"])
    tsquery = dialect.text_query(fulltext["language"])
    matches = sql.SQL("{} @@ {}").format(tsv, tsquery)
    terms = fulltext.get("terms_ident")
    if terms is not None and dialect.bm25:
        scored = bm25.ranking(
            spec.table, spec.keys, fulltext["column"], terms, fulltext["language"], matches, spec.filter
        )
        query = sql.SQL(
            "SELECT {keys}, row_number() OVER (ORDER BY s.vectorize_score DESC, {keys}) AS vectorize_rank"
            " FROM ({scored}) AS s ORDER BY vectorize_rank LIMIT %s"
        ).format(keys=keys, scored=scored)
        return query, [text, bm25.TOTALS, text, text, *spec.filter_params, candidates]
    t_keys = sql.SQL(", ").join(sql.Identifier("t", k) for k in spec.keys)
    where = matches if spec.filter is None else sql.SQL("{} AND {}").format(matches, spec.filter)
    query = sql.SQL(
        "SELECT {keys}, row_number() OVER (ORDER BY ts_rank({tsv}, {tsquery}) DESC, {keys}) AS vectorize_rank"
        " FROM {table} AS t WHERE {where} ORDER BY vectorize_rank LIMIT %s"
    ).format(keys=t_keys, tsv=tsv, tsquery=tsquery, table=spec.table, where=where)
    return query, [text, text, *spec.filter_params, candidates]


def hybrid_statement(
    dialect: Dialect,
    spec: SearchSpec,
    vector_rows: list[tuple],
    text: str,
    fulltext: dict,
    *,
    candidates: int,
    fusion_k: float,
    weights: tuple[float, float],
    names: dict[str, str],
) -> tuple[sql.Composed, list]:
    """Reciprocal rank fusion of the vector leg's rows (ranked beforehand: their keys as
    text, distance, and a chunked column's best chunk) and the full-text leg, ranked here
    through its index with the filter, at most candidates rows: score = w_dense / (fusion_k +
    dense rank) + w_text / (fusion_k + text rank), a leg that misses a row adding nothing.
    ``names`` gives the output names of score, dense_rank, text_rank and distance."""
    keys = [sql.Identifier(k) for k in spec.keys]
    dense_query, dense_params = dense_rows(dialect, spec, vector_rows)
    text_query, text_params = text_ranking(dialect, spec, fulltext, text, candidates)
    either = sql.SQL(", ").join(sql.SQL("coalesce(dense.{0}, sparse.{0}) AS {0}").format(k) for k in keys)
    same = sql.SQL(" AND ").join(sql.SQL("dense.{0} = sparse.{0}").format(k) for k in keys)
    back = sql.SQL(" AND ").join(sql.SQL("t.{0} = fused.{0}").format(k) for k in keys)
    out = {name: sql.Identifier(alias) for name, alias in names.items()}
    # A chunked column's best chunk, from the vector leg (none for a row only the text found).
    chunk_names = [sql.Identifier(n) for n in spec.chunk_names] if spec.chunks is not None else []
    carried = [sql.Identifier(f"vectorize_chunk{i}") for i in range(len(chunk_names))]
    fused_chunk = sql.SQL("").join(sql.SQL(", dense.{}").format(c) for c in carried)
    out_chunk = sql.SQL("").join(
        sql.SQL(", fused.{} AS {}").format(c, n) for n, c in zip(chunk_names, carried, strict=True)
    )
    query = sql.SQL(
        "WITH dense AS ({dense_query}), sparse AS ({text_query})"
        " SELECT {select}, fused.vectorize_score AS {score}, fused.dense_rank AS {dense_rank},"
        " fused.text_rank AS {text_rank}, fused.vectorize_distance AS {distance}{out_chunk}"
        " FROM (SELECT {either}, dense.vectorize_rank AS dense_rank, sparse.vectorize_rank AS text_rank,"
        " dense.vectorize_distance{fused_chunk},"
        " coalesce(CAST(%s AS float8) / (CAST(%s AS float8) + dense.vectorize_rank), 0)"
        " + coalesce(CAST(%s AS float8) / (CAST(%s AS float8) + sparse.vectorize_rank), 0) AS vectorize_score"
        " FROM dense FULL OUTER JOIN sparse ON {same}) AS fused"
        " JOIN {table} AS t ON {back}"
        " ORDER BY fused.vectorize_score DESC, fused.dense_rank, fused.text_rank, {t_keys} LIMIT %s"
    ).format(
        dense_query=dense_query,
        text_query=text_query,
        select=sql.SQL(", ").join(spec.select),
        either=either,
        same=same,
        back=back,
        table=spec.table,
        fused_chunk=fused_chunk,
        out_chunk=out_chunk,
        t_keys=sql.SQL(", ").join(sql.Identifier("t", k) for k in spec.keys),
        **out,
    )
    params = [*dense_params, *text_params, weights[0], fusion_k, weights[1], fusion_k, spec.k]
    return query, params


def dense_rows(dialect: Dialect, spec: SearchSpec, rows: list[tuple]) -> tuple[sql.Composed, list]:
    """The vector leg's rows (keys as text, distance, a chunked column's chunk number, start
    and end) as a relation: the keys in their own types, the distance, the rank (their order)."""
    nkeys = len(spec.keys)
    chunked = spec.chunks is not None
    arrays = [sql.SQL("CAST(%s AS text[])")] * nkeys + [sql.SQL("CAST(%s AS float8[])")]
    arrays += [sql.SQL("CAST(%s AS int4[])")] * (3 if chunked else 0)
    aliases = [sql.Identifier(f"k{i}") for i in range(nkeys)] + [sql.Identifier("vectorize_distance")]
    aliases += [sql.Identifier(f"vectorize_chunk{i}") for i in range(3)] if chunked else []
    columns = [
        sql.SQL("CAST(d.{} AS {}) AS {}").format(sql.Identifier(f"k{i}"), sql.SQL(t), sql.Identifier(k))
        for i, (k, t) in enumerate(zip(spec.keys, spec.key_types, strict=True))
    ]
    columns += [sql.SQL("d.{}").format(a) for a in aliases[nkeys:]]
    query = sql.SQL(
        "SELECT {}, row_number() OVER (ORDER BY d.vectorize_ordinal) AS vectorize_rank"
        " FROM unnest({}, CAST(%s AS int8[])) AS d({}, vectorize_ordinal)"
    ).format(sql.SQL(", ").join(columns), sql.SQL(", ").join(arrays), sql.SQL(", ").join(aliases))
    columns_of_rows = [[row[i] for row in rows] for i in range(nkeys + 1 + (3 if chunked else 0))]
    keys_text = [[None if v is None else str(v) for v in column] for column in columns_of_rows[:nkeys]]
    distances = [float(v) for v in columns_of_rows[nkeys]]
    return query, [*keys_text, distances, *columns_of_rows[nkeys + 1 :], list(range(1, len(rows) + 1))]


def text_statement(
    dialect: Dialect, spec: SearchSpec, text: str, fulltext: dict, names: dict[str, str]
) -> tuple[sql.Composed, list]:
    """The full-text leg alone (eval compares it with the others)."""
    keys = [sql.Identifier(k) for k in spec.keys]
    text_query, text_params = text_ranking(dialect, spec, fulltext, text, spec.k)
    back = sql.SQL(" AND ").join(sql.SQL("t.{0} = sparse.{0}").format(k) for k in keys)
    query = sql.SQL(
        "WITH sparse AS ({}) SELECT {}, sparse.vectorize_rank AS {} FROM sparse JOIN {} AS t ON {}"
        " ORDER BY sparse.vectorize_rank"
    ).format(text_query, sql.SQL(", ").join(spec.select), sql.Identifier(names["text_rank"]), spec.table, back)
    return query, text_params
