"""BM25 over the full-text column, inside the database: the statistics encode keeps beside the
table (each lexeme's document frequency, the documents and their tokens) and the ranking query.

The score is Lucene's (what the published BEIR baseline ran, through Elasticsearch; Lucene
dropped the classic constant factor k1 + 1, which changes no ranking): for each query token t
found in a document d,

    idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

over the lexemes of the tsvector (the text search configuration's stemming and stop words): tf
is a lexeme's positions in the row's tsvector, |d| all its positions, N the rows with full text,
avgdl their mean length. A query token given twice counts twice. Statistics a few writes old
rank nearly the same; a lexeme they have not seen yet counts as in no document.
"""

from __future__ import annotations

from psycopg import sql

K1 = 1.2
B = 0.75
# The row of the statistics table that holds the totals: no lexeme is empty.
TOTALS = ""


def create_table(terms: sql.Composable) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (lexeme TEXT PRIMARY KEY, docs INT8 NOT NULL, tokens INT8 NOT NULL)"
    ).format(terms)


def refresh_statements(db, table: sql.Composable, tsv: str, terms: sql.Composable) -> list[tuple]:
    """(statement, params) that replace the statistics with the table's own, in one transaction:
    every lexeme's documents and tokens (ts_stat), then the totals."""
    column = sql.Identifier(tsv)
    documents = db.as_string(sql.SQL("SELECT {} FROM {}").format(column, table))
    return [
        (sql.SQL("DELETE FROM {}").format(terms), ()),
        (sql.SQL("INSERT INTO {} (lexeme, docs, tokens) SELECT word, ndoc, nentry FROM ts_stat(%s)").format(terms),
         (documents,)),
        (sql.SQL(
            "INSERT INTO {terms} (lexeme, docs, tokens) SELECT %s, (SELECT count(*) FROM {table} WHERE {column} IS NOT"
            " NULL), coalesce((SELECT sum(tokens) FROM {terms}), 0)"
        ).format(terms=terms, table=table, column=column), (TOTALS,)),
    ]  # fmt: skip


def ranking(
    table: sql.Composable,
    keys: list[str],
    tsv: str,
    terms: sql.Composable,
    language: str,
    matches: sql.Composable,
    where: sql.Composable | None,
) -> sql.Composed:
    """Keys of the rows that match (``matches``: the tsquery test, written out so the GIN index
    serves it) and ``where``, with their BM25 score as vectorize_score. Parameters: the query
    text, the totals' key, the query text again, then ``matches``' and ``where``'s."""
    # Keys travel under names of their own (a key column may be called "lexeme" or "tf").
    aliases = [sql.Identifier(f"vectorize_k{i}") for i in range(len(keys))]
    t_keys = sql.SQL(", ").join(
        sql.SQL("t.{} AS {}").format(sql.Identifier(k), a) for k, a in zip(keys, aliases, strict=True)
    )
    m_keys = sql.SQL(", ").join(sql.SQL("m.{}").format(a) for a in aliases)
    out_keys = sql.SQL(", ").join(
        sql.SQL("m.{} AS {}").format(a, sql.Identifier(k)) for k, a in zip(keys, aliases, strict=True)
    )
    column = sql.Identifier("t", tsv)
    condition = matches if where is None else sql.SQL("{} AND {}").format(matches, where)
    # Each matching row's tsvector is read once: its length, and the query's lexemes in it with
    # their counts (marked by setweight and kept by ts_filter, both in C: 1.6 times faster on
    # SciFact than unnesting every lexeme), joined to the query's by a hash join. Its tsvector
    # has weight D throughout (vectorize makes it), so 'A' marks only the query's lexemes.
    return sql.SQL(
        "SELECT {out_keys}, sum(w.weight * m.tf / (m.tf + {k1} * (1 - {b} + {b} * m.dl / w.avgdl)))"
        " AS vectorize_score"
        " FROM (SELECT q.lexeme, cardinality(q.positions) * ln(1 + (n.docs - coalesce(s.docs, 0) + 0.5)"
        " / (coalesce(s.docs, 0) + 0.5)) AS weight, greatest(n.tokens, 1) / greatest(n.docs, 1)::float8 AS avgdl"
        " FROM unnest(to_tsvector({language}, %s)) AS q"
        " CROSS JOIN (SELECT coalesce(max(docs), 0) AS docs, coalesce(max(tokens), 0) AS tokens FROM {terms}"
        " WHERE lexeme = %s) AS n LEFT JOIN {terms} AS s ON s.lexeme = q.lexeme) AS w"
        " JOIN (SELECT {t_keys}, d.dl, u.lexeme, cardinality(u.positions) AS tf FROM {table} AS t"
        " CROSS JOIN LATERAL (SELECT sum(cardinality(a.positions)) AS dl FROM unnest({column}) AS a) AS d"
        " CROSS JOIN LATERAL unnest(ts_filter(setweight({column}, 'A', tsvector_to_array(to_tsvector({language}, %s))),"
        " '{{a}}')) AS u WHERE {condition}) AS m ON m.lexeme = w.lexeme"
        " GROUP BY {m_keys}"
    ).format(
        t_keys=t_keys,
        m_keys=m_keys,
        out_keys=out_keys,
        k1=sql.Literal(K1),
        b=sql.Literal(B),
        language=sql.Literal(language),
        terms=terms,
        table=table,
        condition=condition,
        column=column,
    )
