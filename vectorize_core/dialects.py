"""Every SQL difference between CockroachDB and PostgreSQL+pgvector, in one place.

Sources for the CockroachDB side are in docs/cockroachdb-vector-reference.md (the shared design
folder); the statements produced here are pinned by tests/test_dialects.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from psycopg import sql

from . import names
from .errors import UnsupportedByEngine

METRICS = ("cosine", "l2", "ip")

# pgvector and CockroachDB share operators and opclass names.
OPERATORS = {"cosine": "<=>", "l2": "<->", "ip": "<#>"}
OPCLASSES = {"cosine": "vector_cosine_ops", "l2": "vector_l2_ops", "ip": "vector_ip_ops"}


DEFAULT_EF_SEARCH = 100
# CockroachDB, filter on non-prefix columns: candidates fetched from the index per result wanted.
OVERFETCH = 10
# A chunked column: nearest chunks asked of the index per row wanted (a row has several).
CHUNK_FANOUT = 10
# The values CockroachDB accepts for vector_search_beam_size.
BEAM_SIZE_RANGE = (1, 2048)

# What counts as white space, for "has this row any text?". Spelled out, character by character,
# because PostgreSQL's \s, RE2's \s (CockroachDB) and Python's str.isspace() each disagree on some
# (\v, \x1c-\x1f, NBSP, the Unicode spaces): this one set is used in SQL on both engines and in
# Python, so a row the database calls blank is never sent to the model, and the other way round.
# It is exactly the set of characters for which Python's str.isspace() is true.
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def has_text_pattern(wide_escape: str) -> str:
    """A bracket expression of every character but white space, in escapes only, so the SQL stays
    on one printable line: \\xhh below U+0100 (both regex dialects read it), and above it each
    dialect's own (PostgreSQL \\uXXXX, RE2 \\x{XXXX})."""
    escaped = (f"\\x{ord(c):02x}" if ord(c) < 0x100 else wide_escape.format(ord(c)) for c in WHITESPACE)
    return "[^" + "".join(escaped) + "]"


def is_blank(text: str | None) -> bool:
    """The Python twin of Dialect.has_text, for one value."""
    return not text or not text.strip(WHITESPACE)


# pgvector's HNSW graph element beside its vector (neighbour lists of m = 16, tuple ids, level):
# 1M x 384 makes about 1.8 GB, as measured (docs/benchmarks.md).
HNSW_ELEMENT_BYTES = 300
# The HNSW graph of a column whose text repeats (its rows at least REPEATED_RATIO times its
# distinct contents): 24 links a point, not pgvector's 16. Measured on 16,000 licence paragraphs
# (4,637 distinct): planted sentences found first through the index 4 of 12 at 16, 9 of 12 at 24,
# as exact search finds them (docs/benchmarks.md). On 100,000 rows without repeats, 24 would
# build in 150 s, not 100, and search 10% slower: there the graph stays at 16.
HNSW_DENSE_M = 24
REPEATED_RATIO = 1.5
# pgvector's HNSW index: up to 2,000 dimensions of vector, 4,000 of halfvec.
HNSW_MAX_DIMENSIONS = {"vector": 2000, "halfvec": 4000}


@dataclass
class SearchSpec:
    """What a search ranks: built by the core, turned into SQL by a dialect."""

    table: sql.Composable
    columns: list[str]  # output columns besides the distance
    keys: list[str]
    vector_column: str
    metric: str
    dimension: int
    k: int
    filter: sql.Composable | None = None  # qualified with the alias t
    filter_params: list = field(default_factory=list)
    filter_on_prefix: bool = False
    mode: str = "index"  # index | exact | prefix | overfetch
    ef_search: int | None = None
    beam_size: int | None = None
    # The name of the distance in the result: 'distance', unless the table has a column of
    # that name (then ORDER BY distance would be ambiguous).
    distance_name: str = "distance"
    follower_read: bool = False  # CockroachDB: read from the nearest replica, a few seconds stale
    # The column's distinct contents (contents.ContentTable), which the vector index is on, and
    # the user's table's hash column: a search through the index ranks the nearest `candidates`
    # contents (None: k) and expands them to the rows, or chunks, holding them. None on a column
    # an earlier version made: such a column is ranked exactly.
    contents: object | None = None
    hash_column: str | None = None
    candidates: int | None = None
    # The filter on the contents table's prefix columns (alias c): the CockroachDB index's own.
    index_filter: sql.Composable | None = None
    index_filter_params: list = field(default_factory=list)
    # A chunked column: its chunk table (chunks.ChunkTable) and the output names of the best
    # chunk's number, start and end.
    chunks: object | None = None
    chunk_names: tuple[str, str, str] = ("chunk", "chunk_start", "chunk_end")
    # A chunked column whose rows have their openings among their chunks: a row ranks by w x its
    # opening's distance + (1 - w) x its best chunk's (None: by its best chunk alone).
    opening_weight: float | None = None
    # Keys selected as text (the hybrid search's vector leg hands them to the fusion as text),
    # and the key columns' types.
    text_keys: bool = False
    key_types: list[str] = field(default_factory=list)

    @property
    def select(self) -> list[sql.Composable]:
        if self.text_keys:
            return [
                sql.SQL("CAST(t.{0} AS text) AS {0}").format(sql.Identifier(c))
                if c in self.keys
                else sql.Identifier("t", c)
                for c in self.columns
            ]
        return [sql.Identifier("t", c) for c in self.columns]

    @property
    def alias(self) -> sql.Identifier:
        return sql.Identifier(self.distance_name)


# --fulltext indexes the first FULLTEXT_MAX_CHARS characters of the text, so that its generated
# column is valid for every text and never fails the application's INSERT or UPDATE. PostgreSQL
# refuses a tsvector whose lexemes and positions pass 1,048,575 bytes. Its parser puts a character
# in at most two tokens (a hyphenated word and its part; a URL and its host or path), a lexeme
# takes at most 4 bytes a character (UTF-8), and a token at most 5 more (alignment, the position
# count, one position), paid for by the character that ends it: under 8 bytes a character (7.96
# measured, on hyphenated words of 4-byte characters; tests/test_fulltext_never_fails_writes.py). 100,000
# characters make at most 800,000 bytes, with room left for case mappings that lengthen a
# character. Built-in configurations; dictionaries that expand words (synonyms, thesaurus,
# unaccent) are the user's to bound.
FULLTEXT_MAX_CHARS = 100_000
# CockroachDB keeps words of any length and then refuses to store a lexeme over 16,383 bytes: runs
# of letters and digits (its parser's words) are cut every 1,000 characters (RE2's largest repeat
# count), 4,000 bytes at most.
CRDB_WORD_CHARS = 1000


def fulltext_text(sources: list[str]) -> sql.Composed:
    # Immutable, as a generated column needs: || of texts (concat_ws is only stable), casts of
    # string-category types to text, left() (counting characters, not bytes).
    parts = sql.SQL(" || ' ' || ").join(
        sql.SQL("coalesce(CAST({} AS text), '')").format(sql.Identifier(c)) for c in sources
    )
    return sql.SQL("left({}, {})").format(parts, sql.Literal(FULLTEXT_MAX_CHARS))


def fulltext_document(language: str, text: sql.Composable) -> sql.Composed:
    return sql.SQL("to_tsvector({}, {})").format(sql.Literal(language), text)


def watched_changed(watched: list[str]) -> sql.Composed:
    # (OLD).col, not OLD.col: CockroachDB reads record fields only in that form (#114687).
    return sql.SQL(" OR ").join(
        sql.SQL("(OLD).{0} IS DISTINCT FROM (NEW).{0}").format(sql.Identifier(c)) for c in watched
    )


def vector_value(value) -> np.ndarray:
    """A vector as the database returned it: pgvector's binary form (an array) or text '[1,2,...]'."""
    if isinstance(value, str):
        return np.array(value.strip("[]").split(","), dtype=np.float32)
    if hasattr(value, "to_numpy"):  # pgvector's Vector
        value = value.to_numpy()
    return np.asarray(value, dtype=np.float32)


def vector_literal(vector) -> str:
    """Text form '[1.5,2.0,...]' of one vector: the shortest digits that round-trip float32."""
    return "[" + ",".join(map(str, np.asarray(vector, dtype=np.float32))) + "]"


@dataclass(frozen=True)
class Dialect:
    """PostgreSQL with pgvector. CockroachDB overrides what differs."""

    name = "postgresql"
    version: tuple[int, ...] = ()
    # Rows per read page and per write statement: large pages let sentence-transformers sort
    # by length across more texts; one statement per page keeps the write cost per row tiny.
    default_batch_size = 1024
    # Full text ranked by BM25 over statistics encode keeps (bm25.py).
    bm25 = True

    # How a character above U+00FF is written in a regular expression.
    wide_escape = "\\u{:04x}"

    @property
    def label(self) -> str:
        return f"{self.name} {'.'.join(map(str, self.version))}".strip()

    def has_text(self, columns: list[sql.Composable]) -> sql.Composed:
        """True when any of the columns holds a character that is not white space (NULL when all
        are NULL). Rows without text are neither sent to the model nor pending."""
        pattern = sql.Literal(has_text_pattern(self.wide_escape))
        return sql.SQL(" OR ").join(sql.SQL("{} ~ {}").format(c, pattern) for c in columns)

    def setup_statements(self) -> list[sql.Composable]:
        return [sql.SQL("CREATE EXTENSION IF NOT EXISTS vector")]

    def undo_setup_statements(self) -> list[sql.Composable]:
        """What undoes setup_statements when nothing has used them (a refused import): the
        extension, dropped only if nothing depends on it."""
        return [sql.SQL("DROP EXTENSION IF EXISTS vector RESTRICT")]

    def vector_ready(self, db) -> bool:
        """Whether the vector type is installed in this database."""
        return db.fetchone("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'vector'") is not None

    def add_vector_column(self, table: sql.Composable, column: str, dimension: int) -> sql.Composed:
        # IF NOT EXISTS: two encoders started together must both get past this.
        return sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} VECTOR({})").format(
            table, sql.Identifier(column), sql.Literal(int(dimension))
        )

    def generated_columns_parts(self) -> tuple[str, str, str]:
        """How the catalog's columns query (alias a for pg_attribute) reads a generated column:
        its kind ('' | 'stored' | 'virtual'), its expression, and the join that gives them."""
        return (
            "CASE a.attgenerated WHEN 's' THEN 'stored' WHEN 'v' THEN 'virtual' ELSE '' END",
            "CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END",
            "LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum",
        )

    def index_type(self, dimension: int) -> str | None:
        """What the vector index stores for vectors of this size: 'vector', 'halfvec' (an index on
        the column cast to half precision), or None when no index takes them."""
        for kind, most in HNSW_MAX_DIMENSIONS.items():
            if dimension <= most:
                return kind
        return None

    def index_limit_note(self, dimension: int) -> str:
        return (
            f"pgvector indexes at most {HNSW_MAX_DIMENSIONS['halfvec']:,} dimensions (as halfvec), "
            f"and these vectors have {dimension:,}"
        )

    def indexed_value(self, column: sql.Composable, dimension: int) -> sql.Composable:
        """The expression the index is built on, which searches must rank by to use it."""
        if self.index_type(dimension) == "halfvec":
            return sql.SQL("CAST({} AS halfvec({}))").format(column, sql.Literal(int(dimension)))
        return column

    def comment_on_column(self, table: sql.Composable, column: str, text: str) -> sql.Composed:
        # Utility statements take no bind parameters; Literal is psycopg's safe quoting.
        return sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(table, sql.Identifier(column), sql.Literal(text))

    def check_metric(self, metric: str) -> None:
        if metric not in METRICS:
            raise UnsupportedByEngine(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")

    def create_index(
        self,
        table: sql.Composable,
        index_name: str,
        column: str,
        metric: str,
        prefix: tuple[str, ...] = (),
        dimension: int = 0,
        dense: bool = False,
    ) -> sql.Composed:
        """``dense``: a graph of more links a point (HNSW_DENSE_M), for a column whose text repeats:
        its distinct contents gather in clusters of near copies, which a sparser graph strands."""
        # HNSW indexes one vector column; prefix columns are a CockroachDB feature. Vectors wider
        # than HNSW takes are indexed as halfvec: an expression index, searched by the same cast.
        if self.index_type(dimension) == "halfvec":
            value = sql.SQL("({})").format(self.indexed_value(sql.Identifier(column), dimension))
            opclass = OPCLASSES[metric].replace("vector_", "halfvec_")
        else:
            value, opclass = sql.Identifier(column), OPCLASSES[metric]
        options = sql.SQL(" WITH (m = {})").format(sql.Literal(HNSW_DENSE_M)) if dense else sql.SQL("")
        return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw ({} {}){}").format(
            sql.Identifier(index_name), table, value, sql.SQL(opclass), options
        )

    def index_build_settings(self, memory_bytes: int | None = None) -> list[sql.Composable]:
        # pgvector builds HNSW about ten times faster while the graph fits in maintenance_work_mem.
        megabytes = max(64, (memory_bytes or 1 << 30) >> 20)
        return [sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(f"{megabytes}MB"))]

    def index_memory_estimate(self, rows: int, dimension: int, dense: bool = False) -> int:
        """Bytes of pgvector's in-memory HNSW graph: each element holds its vector (4 bytes a value,
        2 as halfvec) and about HNSW_ELEMENT_BYTES of neighbour lists and bookkeeping (m = 16; a
        dense graph's 2 m links on its lowest layer take 6 bytes each more)."""
        width = 2 if self.index_type(dimension) == "halfvec" else 4
        links = 2 * 6 * (HNSW_DENSE_M - 16) if dense else 0
        return rows * (width * dimension + HNSW_ELEMENT_BYTES + links)

    def index_progress(self, db, pid: int, index_name: str) -> tuple[str, int, int] | None:
        """(phase, done, total) of the index build running in backend pid, read from another
        connection; None when it cannot be seen."""
        row = db.fetchone(
            "SELECT phase, tuples_done, tuples_total, blocks_done, blocks_total"
            " FROM pg_catalog.pg_stat_progress_create_index WHERE pid = %s",
            (pid,),
        )
        if row is None:
            return None
        phase, tuples_done, tuples_total, blocks_done, blocks_total = row
        if tuples_total or tuples_done:
            # HNSW's build counts tuples loaded but leaves their total 0: the caller knows it.
            return phase, tuples_done, tuples_total or 0
        return phase, blocks_done or 0, blocks_total or 0

    def shard_condition(self, keys: list[sql.Composable], shards: int, shard: int) -> sql.Composed:
        """Rows of shard `shard` of `shards`, by a hash of the primary key: deterministic on any
        machine, so N processes can split one table."""
        key_text = sql.SQL("concat_ws('|', {})").format(sql.SQL(", ").join(sql.SQL("{}::text").format(k) for k in keys))
        return sql.SQL("abs(mod({}, {})) = {}").format(
            self.hash_text(key_text), sql.Literal(int(shards)), sql.Literal(int(shard))
        )

    def hash_text(self, text: sql.Composable) -> sql.Composed:
        return sql.SQL("hashtextextended({}, 0)").format(text)

    def trigger_statements(
        self, table: sql.Composable, schema: str, table_name: str, vector_column: str, watched: list[str]
    ) -> list[sql.Composable]:
        """(Re)install the BEFORE UPDATE trigger that sets vector_column to NULL when a watched
        column changes.

        The test is the trigger's WHEN clause, which PostgreSQL stores by column number: a
        renamed source column stays watched, and the function runs only for rows whose text
        changed. The function finds the vector column by name at run time, so renaming that
        column cannot make an application's UPDATE fail.
        """
        function = self.reset_function(schema, table_name, vector_column)
        trigger = sql.Identifier(names.trigger_name(vector_column))
        body = (
            "\nBEGIN\n  NEW := jsonb_populate_record(NEW, jsonb_build_object(TG_ARGV[0], NULL));\n  RETURN NEW;\nEND\n"
        )
        return [
            sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS TRIGGER LANGUAGE plpgsql AS {}").format(
                function, sql.Literal(body)
            ),
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, table),
            sql.SQL("CREATE TRIGGER {} BEFORE UPDATE ON {} FOR EACH ROW WHEN ({}) EXECUTE FUNCTION {}({})").format(
                trigger, table, watched_changed(watched), function, sql.Literal(vector_column)
            ),
        ]

    def untrigger_statements(
        self, table: sql.Composable, schema: str, table_name: str, vector_column: str
    ) -> list[sql.Composable]:
        # The function is shared by the schema's triggers; tracking.drop_unused_function removes it.
        return [
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(names.trigger_name(vector_column)), table)
        ]

    def reset_function(self, schema: str, table_name: str, vector_column: str) -> sql.Identifier:
        # One function for every tracked column in the schema: the trigger passes the column name.
        return sql.Identifier(schema, "vectorize_reset_vector")

    def unused_function_statements(self, db, schema: str) -> list[sql.Composable]:
        """Drop the shared reset function once no trigger uses it."""
        function = self.reset_function(schema, "", "")
        used = db.fetchone(
            "SELECT count(*) FROM pg_catalog.pg_trigger WHERE tgfoid = to_regprocedure(%s)",
            (db.as_string(function) + "()",),
        )[0]
        return [] if used else [sql.SQL("DROP FUNCTION IF EXISTS {}()").format(function)]

    def triggers(self, db, table) -> dict[str, list[str]]:
        """{trigger name: its arguments} of the table's user triggers."""
        rows = db.fetchall(
            "SELECT tgname, encode(tgargs, 'escape') FROM pg_catalog.pg_trigger WHERE tgrelid = %s AND NOT tgisinternal",
            (table.oid,),
        )
        return {name: [a for a in (args or "").split("\\000") if a] for name, args in rows}

    def staging_table(
        self, staging: sql.Composable, table: sql.Composable, keys: list[sql.Composable]
    ) -> list[sql.Composable]:
        """A scratch table with the key columns of table (their exact types) and the file line."""
        return [
            sql.SQL("CREATE {}TABLE {} AS SELECT {} FROM {} LIMIT 0").format(
                sql.SQL(self.staging_kind), staging, sql.SQL(", ").join(keys), table
            ),
            sql.SQL("ALTER TABLE {} ADD COLUMN line INT8").format(staging),
        ]

    def vector_staging_table(self, staging: sql.Composable, dimension: int) -> sql.Composed:
        """A scratch table of vectors by file line (what joins them to their keys)."""
        return sql.SQL("CREATE {}TABLE {} (line INT8 PRIMARY KEY, vec VECTOR({}))").format(
            sql.SQL(self.staging_kind), staging, sql.Literal(int(dimension))
        )

    # Unlogged: a scratch table need not survive a crash, and skipping the WAL halves the work.
    staging_kind = "UNLOGGED "

    # Vectors are copied in pgvector's binary form: nothing to format, nothing for the server to parse.
    binary_vector_copy = True

    def copy_settings(self) -> list[sql.Composable]:
        """Session settings for a COPY into the staging table (run on the COPY's connection)."""
        return []

    # COPY options by form: text (the default), csv, and binary.
    copy_forms = {"text": "", "csv": " (FORMAT csv)", "binary": " (FORMAT binary)"}

    def copy_from(self, table: sql.Composable, columns: list[sql.Composable], form: str = "text") -> sql.Composed:
        """COPY table (columns) FROM STDIN, in text, csv or binary form (import-vectors' scratch tables)."""
        return sql.SQL("COPY {} ({}) FROM STDIN{}").format(
            table, sql.SQL(", ").join(columns), sql.SQL(self.copy_forms[form])
        )

    # Vectors are read back in pgvector's binary form: float4 bytes, nothing to parse.
    binary_vector_read = True

    def exported_vector(self, column: sql.Composable) -> sql.Composable:
        """The vector as export-vectors selects it (binary results on PostgreSQL)."""
        return column

    def export_page(
        self, table: sql.Composable, keys: list[sql.Composable], key_types: list[str], vector: sql.Composable,
        after: bool,
    ) -> sql.Composed:  # fmt: skip
        """One page of export-vectors in key order: the keys as text, then the vector; rows with
        no vector left out. Parameters: the last page's keys (as text, compared in their own
        types) when after, then the page size."""
        # Qualified (t.k): in ORDER BY a bare name would be the text output column of that name.
        t_keys = sql.SQL(", ").join(sql.SQL("t.{}").format(k) for k in keys)
        t_vector = sql.SQL("t.{}").format(vector)
        bound = sql.SQL("")
        if after:
            typed = sql.SQL(", ").join(sql.SQL("CAST(%s AS {})").format(sql.SQL(t)) for t in key_types)
            bound = sql.SQL(" AND ({}) > ({})").format(t_keys, typed)
        return sql.SQL("SELECT {}, {} FROM {} AS t WHERE {} IS NOT NULL{} ORDER BY {} LIMIT %s").format(
            sql.SQL(", ").join(sql.SQL("CAST(t.{} AS text)").format(k) for k in keys),
            self.exported_vector(t_vector),
            table,
            t_vector,
            bound,
            t_keys,
        )

    # DDL is transactional in PostgreSQL: the trigger is swapped with no moment without one.
    ddl_in_transaction = True

    def column_bytes(self, column: sql.Composable) -> sql.Composable:
        return sql.SQL("sum(pg_column_size({}))").format(column)

    def distance(self, column: sql.Composable, metric: str, query: sql.Composable) -> sql.Composed:
        return sql.SQL("{} {} {}").format(column, sql.SQL(OPERATORS[metric]), query)

    def vector_param(self, dimension: int, kind: str = "vector") -> sql.Composed:
        """A placeholder for one query vector, bound as text: portable to every version."""
        return sql.SQL("CAST({} AS {}({}))").format(sql.Placeholder(), sql.SQL(kind), sql.Literal(int(dimension)))

    def ranked_distance(self, spec: SearchSpec, column: sql.Composable) -> sql.Composed:
        """The distance a search orders by: the indexed expression, or the exact vector distance."""
        kind = self.index_type(spec.dimension)
        if spec.mode == "exact" or kind in (None, "vector"):
            return self.distance(column, spec.metric, self.vector_param(spec.dimension))
        return self.distance(
            self.indexed_value(column, spec.dimension), spec.metric, self.vector_param(spec.dimension, kind)
        )

    def vectors_param(self) -> sql.Composable:
        """The placeholder for the batch of vectors of a write, with its array type spelled out."""
        return sql.SQL("CAST(%b AS vector[])")  # pgvector's binary dumper sends the arrays

    def vectors_array(self, vectors: np.ndarray) -> list:
        """The value bound for a batch of vectors in a write (see write_vectors_value)."""
        return list(vectors)

    def write_vectors_value(self, column: sql.Composable) -> sql.Composable:
        return column

    # -- full text (hybrid search) -----------------------------------------------------------

    def fulltext_column(self, table: sql.Composable, column: str, language: str, sources: list[str]) -> sql.Composed:
        """A stored generated tsvector of the source text (its first FULLTEXT_MAX_CHARS
        characters): rows inserted or edited are searchable by their new words at once, with no
        trigger and no second fill."""
        return sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {} GENERATED ALWAYS AS ({}) STORED").format(
            table, sql.Identifier(column), sql.SQL(self.tsvector_type), self.fulltext_expression(language, sources)
        )

    def fulltext_expression(self, language: str, sources: list[str]) -> sql.Composed:
        return fulltext_document(language, fulltext_text(sources))

    def sets_generated_expression(self) -> bool:
        """ALTER COLUMN ... SET EXPRESSION (PostgreSQL 17+)."""
        return self.version >= (17,)

    def fulltext_bounded(self, expression: str | None) -> bool:
        """Whether a full-text column's generation expression, as the catalog prints it, has the
        bound (earlier versions indexed whole texts)."""
        text = (expression or "").replace('"', "").lower()
        return "left(" in text and str(FULLTEXT_MAX_CHARS) in text

    def fulltext_upgrade(self, table, fulltext: dict | None, sources: list[str]) -> list[sql.Composable]:
        """Statements that bound the full-text column an earlier version made over whole texts
        (none when it is bounded or absent). PostgreSQL 17+ replaces the expression in place (a
        rewrite of the table, its GIN index rebuilt); earlier ones, and CockroachDB, drop the column
        (its index with it), add it and index it again, one statement each: a run cut short between
        them adds the column and the index on the next run."""
        column = table.columns.get(fulltext["column"]) if fulltext else None
        if column is None or self.fulltext_bounded(column.expression):
            return []
        if self.sets_generated_expression():
            return [
                sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET EXPRESSION AS ({})").format(
                    table.ident,
                    sql.Identifier(fulltext["column"]),
                    self.fulltext_expression(fulltext["language"], sources),
                )
            ]
        return [
            sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(table.ident, sql.Identifier(fulltext["column"])),
            self.fulltext_column(table.ident, fulltext["column"], fulltext["language"], sources),
            self.fulltext_index(table.ident, fulltext["index"], fulltext["column"]),
        ]

    tsvector_type = "tsvector"

    def check_text_language(self, db, language: str) -> None:
        if db.fetchone("SELECT 1 FROM pg_catalog.pg_ts_config WHERE cfgname = %s", (language,)) is None:
            known = ", ".join(r[0] for r in db.fetchall("SELECT cfgname FROM pg_catalog.pg_ts_config ORDER BY 1"))
            raise UnsupportedByEngine(f"--language {language!r} is not a text search configuration here: {known}")

    def fulltext_index(self, table: sql.Composable, name: str, column: str) -> sql.Composed:
        return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin ({})").format(
            sql.Identifier(name), table, sql.Identifier(column)
        )

    def text_query(self, language: str) -> sql.Composed:
        """The query text (one placeholder) as a tsquery of its words OR-ed: plainto_tsquery's
        normalisation (stemming, stop words), with '&' turned to '|' so that a document matching
        some of the words ranks, as it does for BM25. Cast back without normalising again."""
        return sql.SQL("CAST(replace(CAST(plainto_tsquery({}, %s) AS text), '&', '|') AS tsquery)").format(
            sql.Literal(language)
        )

    def search_settings(self, spec: SearchSpec) -> list[tuple[sql.Composable, tuple]]:
        """Settings local to the search's own transaction (set_config(..., true) is SET LOCAL), so
        nothing leaks into a library user's later statements."""
        # ef_search bounds how many rows an HNSW scan can return; 100 keeps recall high.
        ef = max(spec.ef_search or DEFAULT_EF_SEARCH, spec.k, spec.candidates or 0)
        return [(sql.SQL("SELECT set_config('hnsw.ef_search', %s, true)"), (str(min(ef, 1000)),))]

    def search_mode(self, spec: SearchSpec) -> str:
        return "index" if self.index_type(spec.dimension) and spec.contents is not None else "exact"

    def check_follower_read(self) -> None:
        raise UnsupportedByEngine("--follower-read is a CockroachDB feature; PostgreSQL reads the primary")

    def plan_uses_index(self, plan: list[str], index_name: str) -> bool:
        """Whether an EXPLAIN of a search shows the vector index serving it."""
        quoted = '"' + index_name.replace('"', '""') + '"'
        return any(f"Index Scan using {name} " in line for line in plan for name in (index_name, quoted))

    def plan_uses_text_index(self, plan: list[str], index_name: str) -> bool:
        """Whether an EXPLAIN of a hybrid search shows the full-text (GIN) index serving its leg."""
        quoted = '"' + index_name.replace('"', '""') + '"'
        return any(
            f"Index Scan on {name}" in line or f"Index Scan using {name} " in line
            for line in plan
            for name in (index_name, quoted)
        )

    def index_bytes(self, db, table, index_name: str) -> tuple[int | None, str | None]:
        """The index's size in bytes, or None and why not."""
        return db.fetchone(
            "SELECT pg_relation_size(%s::regclass)", (db.as_string(sql.Identifier(table.schema, index_name)),)
        )[0], None

    def vector_bytes_note(self) -> str | None:
        return None

    def table_bytes(self, db, table: sql.Composable) -> int | None:
        """A table's bytes with its indexes and TOAST, or None where the engine does not tell."""
        return db.fetchone("SELECT pg_total_relation_size(%s::regclass)", (db.as_string(table),))[0]


@dataclass(frozen=True)
class CockroachDialect(Dialect):
    name = "cockroachdb"
    wide_escape = "\\x{{{:04x}}}"  # RE2
    # Vector-indexed tables degrade under large batch writes (CockroachDB known limitation).
    default_batch_size = 256
    # Its full text has no ts_stat and no unnest of a tsvector: ranked by ts_rank.
    bm25 = False

    # The cluster's active version (SHOW CLUSTER SETTING version): during an upgrade it lags the
    # binary's, and features are gated on it. `version` is the binary's (crdb_version).
    active_version: tuple[int, ...] = ()

    @property
    def features(self) -> tuple[int, ...]:
        return self.active_version or self.version

    def undo_setup_statements(self) -> list[sql.Composable]:
        return []  # a cluster setting switched on is left on: other databases may use it

    def setup_statements(self) -> list[sql.Composable]:
        # VECTOR is built in; the index feature flag defaults to on only from v25.4.
        if self.features and self.features < (25, 4):
            return [sql.SQL("SET CLUSTER SETTING feature.vector_index.enabled = true")]
        return []

    def vector_ready(self, db) -> bool:
        """Whether the vector index feature is on, when switching it on was refused (a user
        without admin rights or MODIFYCLUSTERSETTING): it may have been done by an admin."""
        try:
            row = db.fetchone("SHOW CLUSTER SETTING feature.vector_index.enabled")
        except Exception:  # noqa: BLE001 - reading it needs a privilege too: then it is not known to be on
            return False
        return bool(row and row[0] in (True, "true"))

    def check_metric(self, metric: str) -> None:
        super().check_metric(metric)
        shown = ".".join(map(str, self.features))
        if self.version == (25, 2, 0):
            raise UnsupportedByEngine(
                "CockroachDB v25.2.0 fails to build a vector index over rows without a vector (fixed in "
                "v25.2.1); vectorize needs v25.2.1 or newer"
            )
        if self.features and self.features < (25, 2):
            raise UnsupportedByEngine(f"CockroachDB {shown} has no vector indexes; vectorize needs v25.2.1 or newer")
        if metric != "l2" and self.features and self.features < (25, 3):
            raise UnsupportedByEngine(
                f"CockroachDB {shown} (the cluster's active version) indexes only the l2 metric; "
                f"use --metric l2, or finalize the upgrade to v25.3+ for {metric}"
            )

    def create_index(
        self,
        table: sql.Composable,
        index_name: str,
        column: str,
        metric: str,
        prefix: tuple[str, ...] = (),
        dimension: int = 0,
        dense: bool = False,
    ) -> sql.Composed:
        # C-SPANN has no graph degree to set: its partitions are sized by the index's own settings.
        columns = [
            *(sql.Identifier(c) for c in prefix),
            sql.SQL("{} {}").format(sql.Identifier(column), sql.SQL(OPCLASSES[metric])),
        ]
        return sql.SQL("CREATE VECTOR INDEX IF NOT EXISTS {} ON {} ({})").format(
            sql.Identifier(index_name), table, sql.SQL(", ").join(columns)
        )

    def index_build_settings(self, memory_bytes: int | None = None) -> list[sql.Composable]:
        return []

    def index_progress(self, db, pid: int, index_name: str) -> tuple[str, int, int] | None:
        # A vector index backfill is a schema-change job with a fraction completed.
        row = db.fetchone(
            "SELECT fraction_completed FROM [SHOW JOBS] WHERE job_type = 'NEW SCHEMA CHANGE'"
            " AND status = 'running' AND description LIKE %s ORDER BY created DESC LIMIT 1",
            (f"%{index_name}%",),
        )
        if row is None or row[0] is None:
            return None
        return "backfilling", int(float(row[0]) * 1000), 1000

    staging_kind = ""  # temporary tables are experimental in CockroachDB
    # Binary COPY of VECTOR fails on v25.2 (#157040): text, which every version reads.
    binary_vector_copy = False

    def copy_settings(self) -> list[sql.Composable]:
        # An atomic COPY is one transaction: a long one can fail with RETRY_COMMIT_DEADLINE_EXCEEDED
        # (before 25.3.6 / 25.4.1). The staging table is scratch, so commit it in pieces.
        return [sql.SQL("SET copy_from_atomic_enabled = false")]

    # CockroachDB's COPY options are the unparenthesised kind (WITH CSV); binary VECTOR is not
    # read on v25.2 (binary_vector_copy), so only keys and text go this way.
    copy_forms = {"text": "", "csv": " WITH CSV", "binary": " WITH BINARY"}

    # Binary VECTOR results need v25.3+ (#147844): read the text form, which every version writes.
    binary_vector_read = False

    def exported_vector(self, column: sql.Composable) -> sql.Composable:
        return sql.SQL("CAST({} AS text)").format(column)

    def hash_text(self, text: sql.Composable) -> sql.Composed:
        return sql.SQL("fnv64({})").format(text)

    # autocommit_before_ddl (on since v25.1) commits an open transaction before any DDL.
    ddl_in_transaction = False

    def column_bytes(self, column: sql.Composable) -> sql.Composable:
        return sql.SQL("NULL")  # no per-value size function to rely on

    def vectors_param(self) -> sql.Composable:
        return sql.SQL("CAST(%b AS text[])")

    def vectors_array(self, vectors: np.ndarray) -> list:
        # VECTOR[] parameters are unconfirmed on CockroachDB and binary VECTOR needs v25.3+:
        # send TEXT[] of literals and cast each element in SQL.
        return [vector_literal(v) for v in vectors]

    def generated_columns_parts(self) -> tuple[str, str, str]:
        # Computed columns, stored or virtual alike (information_schema does not tell them apart).
        return (
            "CASE WHEN coalesce(ic.generation_expression, '') <> '' THEN 'stored' ELSE '' END",
            "nullif(ic.generation_expression, '')",
            "LEFT JOIN pg_catalog.pg_class gc ON gc.oid = a.attrelid"
            " LEFT JOIN pg_catalog.pg_namespace gn ON gn.oid = gc.relnamespace"
            " LEFT JOIN information_schema.columns ic ON ic.table_schema = gn.nspname AND ic.table_name = gc.relname"
            " AND ic.column_name = a.attname",
        )

    def index_type(self, dimension: int) -> str | None:
        # VECTOR(n) takes up to 16,000 dimensions, and no smaller limit is documented for indexes.
        return "vector"

    def ranked_distance(self, spec: SearchSpec, column: sql.Composable) -> sql.Composed:
        return self.distance(column, spec.metric, self.vector_param(spec.dimension))

    def write_vectors_value(self, column: sql.Composable) -> sql.Composable:
        return sql.SQL("CAST({} AS VECTOR)").format(column)

    def reset_function(self, schema: str, table_name: str, vector_column: str) -> sql.Identifier:
        # Trigger functions take no arguments before v26.2: one function per vector column.
        return sql.Identifier(schema, names.function_name(table_name, vector_column))

    def trigger_statements(
        self, table: sql.Composable, schema: str, table_name: str, vector_column: str, watched: list[str]
    ) -> list[sql.Composable]:
        # Drop, replace, create: before v26.2 there is no CREATE OR REPLACE TRIGGER, and a function
        # a trigger uses cannot be replaced.
        function = self.reset_function(schema, table_name, vector_column)
        trigger = sql.Identifier(names.trigger_name(vector_column))
        body = sql.SQL("\nBEGIN\n  NEW.{} := NULL;\n  RETURN NEW;\nEND\n").format(sql.Identifier(vector_column))
        return [
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, table),
            sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS TRIGGER LANGUAGE plpgsql AS {}").format(
                function, sql.Literal(body.as_string())
            ),
            sql.SQL("CREATE TRIGGER {} BEFORE UPDATE ON {} FOR EACH ROW WHEN ({}) EXECUTE FUNCTION {}()").format(
                trigger, table, watched_changed(watched), function
            ),
        ]

    def untrigger_statements(
        self, table: sql.Composable, schema: str, table_name: str, vector_column: str
    ) -> list[sql.Composable]:
        return [
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(names.trigger_name(vector_column)), table),
            sql.SQL("DROP FUNCTION IF EXISTS {}()").format(self.reset_function(schema, table_name, vector_column)),
        ]

    def unused_function_statements(self, db, schema: str) -> list[sql.Composable]:
        return []  # each column's function goes with its trigger

    def triggers(self, db, table) -> dict[str, list[str]]:
        # pg_trigger is empty before v25.3; SHOW TRIGGERS works on every version with triggers.
        rows = db.fetchall(sql.SQL("SELECT trigger_name FROM [SHOW TRIGGERS FROM {}]").format(table.ident))
        return {name: [] for (name,) in rows}

    def search_settings(self, spec: SearchSpec) -> list[tuple[sql.Composable, tuple]]:
        # No null_ordered_last: it may keep the optimizer from planning a vector search. NULL
        # vectors are not in the index, and the outer IS NOT NULL drops them from other plans.
        settings = []
        if spec.follower_read:
            # First in the transaction: every read of it is served by the nearest replica.
            settings.append((sql.SQL("SET TRANSACTION AS OF SYSTEM TIME follower_read_timestamp()"), ()))
        if spec.beam_size:
            settings.append(
                (sql.SQL("SET LOCAL vector_search_beam_size = {}").format(sql.Literal(int(spec.beam_size))), ())
            )
        return settings

    def check_follower_read(self) -> None:
        pass

    tsvector_type = "TSVECTOR"

    def check_text_language(self, db, language: str) -> None:
        pass  # CockroachDB's configurations are built in; an unknown one fails the ADD COLUMN

    def fulltext_column(self, table: sql.Composable, column: str, language: str, sources: list[str]) -> sql.Composed:
        # A stored computed column (CockroachDB spells it AS (...) STORED).
        return sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} TSVECTOR AS ({}) STORED").format(
            table, sql.Identifier(column), self.fulltext_expression(language, sources)
        )

    def fulltext_expression(self, language: str, sources: list[str]) -> sql.Composed:
        # Words cut to CRDB_WORD_CHARS: regexp_replace is immutable there, \pL and \pN are the
        # letters and numbers its parser reads as words.
        words = sql.SQL("regexp_replace({}, {}, {}, 'g')").format(
            fulltext_text(sources), sql.Literal(f"([\\pL\\pN]{{{CRDB_WORD_CHARS}}})"), sql.Literal("\\1 ")
        )
        return fulltext_document(language, words)

    def fulltext_bounded(self, expression: str | None) -> bool:
        return super().fulltext_bounded(expression) and "regexp_replace(" in (expression or "").lower()

    def sets_generated_expression(self) -> bool:
        return False  # a computed column's expression cannot be altered

    def fulltext_index(self, table: sql.Composable, name: str, column: str) -> sql.Composed:
        # GIN on tsvector is an inverted index (v23.1+).
        return sql.SQL("CREATE INVERTED INDEX IF NOT EXISTS {} ON {} ({})").format(
            sql.Identifier(name), table, sql.Identifier(column)
        )

    def plan_uses_index(self, plan: list[str], index_name: str) -> bool:
        # EXPLAIN shows a "vector search" node when the vector index serves the query.
        return any("vector search" in line for line in plan)

    def plan_uses_text_index(self, plan: list[str], index_name: str) -> bool:
        # An inverted index scan names it as table@index.
        return any(f"@{index_name}" in line for line in plan)

    def index_bytes(self, db, table, index_name: str) -> tuple[int | None, str | None]:
        # Range statistics of the index's span (SHOW RANGES ... WITH DETAILS: admin or ZONECONFIG).
        query = sql.SQL(
            "SELECT sum((span_stats->>'live_bytes')::INT8)::INT8 FROM [SHOW RANGES FROM INDEX {}@{} WITH DETAILS]"
        ).format(table.ident, sql.Identifier(index_name))
        try:
            return db.fetchone(query)[0], None
        except Exception as exc:  # noqa: BLE001 - a privilege or a version without span_stats
            return None, f"index size unavailable: {exc}"

    def vector_bytes_note(self) -> str | None:
        return "CockroachDB keeps no per-column sizes: the vectors are part of the table's primary index"

    def table_bytes(self, db, table: sql.Composable) -> int | None:
        return None  # range statistics need admin; status says sizes are unavailable

    def search_mode(self, spec: SearchSpec) -> str:
        """The vector index serves only filters that pin every prefix column (cockroach #146145):
        others are applied to the rows of the nearest contents it gives (over-fetched)."""
        if spec.contents is None:
            return "exact"
        if spec.filter is None:
            return "index"
        return "prefix" if spec.filter_on_prefix else "overfetch"


def parse_crdb_version(text: str) -> tuple[int, ...]:
    """'CockroachDB CCL v25.4.1 (x86_64-...)' -> (25, 4, 1)."""
    match = re.search(r"v(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not match:
        return ()
    return tuple(int(part) for part in match.groups() if part is not None)


def for_connection(conn) -> Dialect:
    crdb_version = conn.info.parameter_status("crdb_version")
    if not crdb_version:
        # A connection pooler may drop the crdb_version parameter; version() still tells.
        (text,) = conn.execute("SELECT version()").fetchone()
        crdb_version = text if "CockroachDB" in (text or "") else None
    if crdb_version:
        return CockroachDialect(version=parse_crdb_version(crdb_version), active_version=active_version(conn))
    v = conn.info.server_version
    return Dialect(version=(v // 10000, v % 10000))


def active_version(conn) -> tuple[int, ...]:
    """The cluster's active version, e.g. '25.2' (or '25.2-upgrading-to-25.3-step-002') -> (25, 2)."""
    try:
        (text,) = conn.execute("SHOW CLUSTER SETTING version").fetchone()
    except Exception:  # noqa: BLE001 - not readable without VIEWCLUSTERSETTING: the binary's version decides
        return ()
    match = re.match(r"(\d+)\.(\d+)", str(text))
    return (int(match.group(1)), int(match.group(2))) if match else ()
