"""Every SQL difference between CockroachDB and PostgreSQL+pgvector, in one place.

Sources for the CockroachDB side are in docs/cockroachdb-vector-reference.md (the shared design
folder); the statements produced here are pinned by tests/test_dialects.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from psycopg import sql

from .errors import UnsupportedByEngine

METRICS = ("cosine", "l2", "ip")

# pgvector and CockroachDB share operators and opclass names.
OPERATORS = {"cosine": "<=>", "l2": "<->", "ip": "<#>"}
OPCLASSES = {"cosine": "vector_cosine_ops", "l2": "vector_l2_ops", "ip": "vector_ip_ops"}


DEFAULT_EF_SEARCH = 100
# CockroachDB, filter on non-prefix columns: candidates fetched from the index per result wanted.
OVERFETCH = 10


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

    @property
    def select(self) -> list[sql.Composable]:
        return [sql.Identifier("t", c) for c in self.columns]


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

    @property
    def label(self) -> str:
        return f"{self.name} {'.'.join(map(str, self.version))}".strip()

    def setup_statements(self) -> list[sql.Composable]:
        return [sql.SQL("CREATE EXTENSION IF NOT EXISTS vector")]

    def vector_ready(self, db) -> bool:
        """Whether the vector type is installed in this database."""
        return db.fetchone("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'vector'") is not None

    def add_vector_column(self, table: sql.Composable, column: str, dimension: int) -> sql.Composed:
        # IF NOT EXISTS: two encoders started together must both get past this.
        return sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} VECTOR({})").format(
            table, sql.Identifier(column), sql.Literal(int(dimension))
        )

    def comment_on_column(self, table: sql.Composable, column: str, text: str) -> sql.Composed:
        # Utility statements take no bind parameters; Literal is psycopg's safe quoting.
        return sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(table, sql.Identifier(column), sql.Literal(text))

    def check_metric(self, metric: str) -> None:
        if metric not in METRICS:
            raise UnsupportedByEngine(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")

    def create_index(
        self, table: sql.Composable, index_name: str, column: str, metric: str, prefix: tuple[str, ...] = ()
    ) -> sql.Composed:
        # HNSW indexes one vector column; prefix columns are a CockroachDB feature.
        return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw ({} {})").format(
            sql.Identifier(index_name), table, sql.Identifier(column), sql.SQL(OPCLASSES[metric])
        )

    def index_build_settings(self) -> list[sql.Composable]:
        # pgvector builds HNSW far faster while the graph fits in maintenance_work_mem.
        return [sql.SQL("SET maintenance_work_mem = '1GB'")]

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
        self, table: sql.Composable, function: sql.Composable, trigger: str, body: str
    ) -> list[sql.Composable]:
        """(Re)install a BEFORE UPDATE row trigger running a PL/pgSQL body.

        Drop, replace, create: CockroachDB before v26.2 has no CREATE OR REPLACE TRIGGER and
        refuses to replace a function a trigger uses.
        """
        return [
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(trigger), table),
            sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS TRIGGER LANGUAGE plpgsql AS {}").format(
                function, sql.Literal(body)
            ),
            sql.SQL("CREATE TRIGGER {} BEFORE UPDATE ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(
                sql.Identifier(trigger), table, function
            ),
        ]

    def staging_table(
        self, staging: sql.Composable, table: sql.Composable, keys: list[sql.Composable], dimension: int
    ) -> list[sql.Composable]:
        """A scratch table with the key columns of table (their exact types) and a vector."""
        return [
            sql.SQL("CREATE {}TABLE {} AS SELECT {} FROM {} LIMIT 0").format(
                sql.SQL(self.staging_kind), staging, sql.SQL(", ").join(keys), table
            ),
            sql.SQL("ALTER TABLE {} ADD COLUMN vec VECTOR({})").format(staging, sql.Literal(int(dimension))),
        ]

    # Unlogged: a scratch table need not survive a crash, and skipping the WAL halves the work.
    staging_kind = "UNLOGGED "

    def copy_settings(self) -> list[sql.Composable]:
        """Session settings for a COPY into the staging table (run on the COPY's connection)."""
        return []

    # DDL is transactional in PostgreSQL: the trigger is swapped with no moment without one.
    ddl_in_transaction = True

    def column_bytes(self, column: sql.Composable) -> sql.Composable:
        return sql.SQL("sum(pg_column_size({}))").format(column)

    def relation_bytes(self) -> sql.Composable | None:
        return sql.SQL("SELECT pg_relation_size(%s::regclass)")

    def distance(self, column: sql.Composable, metric: str, query: sql.Composable) -> sql.Composed:
        return sql.SQL("{} {} {}").format(column, sql.SQL(OPERATORS[metric]), query)

    def vector_param(self, dimension: int) -> sql.Composed:
        """A placeholder for one query vector, bound as text: portable to every version."""
        return sql.SQL("CAST({} AS VECTOR({}))").format(sql.Placeholder(), sql.Literal(int(dimension)))

    def vectors_array(self, vectors: np.ndarray) -> list:
        """The value bound for a batch of vectors in a write (see write_vectors_value)."""
        return list(vectors)  # pgvector's binary dumper turns these into vector[]

    def write_vectors_value(self, column: sql.Composable) -> sql.Composable:
        return column

    def search_settings(self, spec: SearchSpec) -> list[tuple[sql.Composable, tuple]]:
        # ef_search bounds how many rows an HNSW scan can return; 100 keeps recall high.
        ef = max(spec.ef_search or DEFAULT_EF_SEARCH, spec.k)
        settings = [(sql.SQL("SELECT set_config('hnsw.ef_search', %s, true)"), (str(min(ef, 1000)),))]
        if spec.filter is not None and spec.mode == "index":
            # pgvector 0.8: keep scanning the graph until enough rows pass the filter.
            settings.append((sql.SQL("SELECT set_config('hnsw.iterative_scan', 'strict_order', true)"), ()))
        return settings

    def search_statement(self, spec: SearchSpec, query_vector: str) -> tuple[sql.Composed, list]:
        """The ranked query and its parameters. 'index' lets the HNSW index serve it; 'exact'
        fences the scan (OFFSET 0) so every matching row is ranked."""
        dist = self.distance(sql.Identifier("t", spec.vector_column), spec.metric, self.vector_param(spec.dimension))
        where = sql.SQL("t.{} IS NOT NULL").format(sql.Identifier(spec.vector_column))
        if spec.filter is not None:
            where = sql.SQL("{} AND {}").format(where, spec.filter)
        inner = sql.SQL("SELECT {}, {} AS distance FROM {} AS t WHERE {}").format(
            sql.SQL(", ").join(spec.select), dist, spec.table, where
        )
        params = [query_vector, *spec.filter_params, spec.k]
        if spec.mode == "exact":
            query = sql.SQL("SELECT * FROM ({} OFFSET 0) AS candidates ORDER BY distance LIMIT %s").format(inner)
        else:
            query = inner + sql.SQL(" ORDER BY distance LIMIT %s")
        return query, params

    def search_mode(self, spec: SearchSpec) -> str:
        return "index"


@dataclass(frozen=True)
class CockroachDialect(Dialect):
    name = "cockroachdb"
    # Vector-indexed tables degrade under large batch writes (CockroachDB known limitation).
    default_batch_size = 256

    def setup_statements(self) -> list[sql.Composable]:
        # VECTOR is built in; the index feature flag defaults to on only from v25.4.
        if self.version and self.version < (25, 4):
            return [sql.SQL("SET CLUSTER SETTING feature.vector_index.enabled = true")]
        return []

    def vector_ready(self, db) -> bool:
        return True  # built in; the setup statement only switches the index feature on

    def check_metric(self, metric: str) -> None:
        super().check_metric(metric)
        if self.version and self.version < (25, 2):
            raise UnsupportedByEngine(
                f"CockroachDB {self.label.split()[-1]} has no vector indexes; vectorize needs v25.2 or newer"
            )
        if metric != "l2" and self.version and self.version < (25, 3):
            raise UnsupportedByEngine(
                f"CockroachDB {self.label.split()[-1]} indexes only the l2 metric; "
                f"use --metric l2 or upgrade to v25.3+ for {metric}"
            )

    def create_index(
        self, table: sql.Composable, index_name: str, column: str, metric: str, prefix: tuple[str, ...] = ()
    ) -> sql.Composed:
        columns = [
            *(sql.Identifier(c) for c in prefix),
            sql.SQL("{} {}").format(sql.Identifier(column), sql.SQL(OPCLASSES[metric])),
        ]
        return sql.SQL("CREATE VECTOR INDEX IF NOT EXISTS {} ON {} ({})").format(
            sql.Identifier(index_name), table, sql.SQL(", ").join(columns)
        )

    def index_build_settings(self) -> list[sql.Composable]:
        return []

    staging_kind = ""  # temporary tables are experimental in CockroachDB

    def copy_settings(self) -> list[sql.Composable]:
        # An atomic COPY is one transaction: a long one can fail with RETRY_COMMIT_DEADLINE_EXCEEDED
        # (before 25.3.6 / 25.4.1). The staging table is scratch, so commit it in pieces.
        return [sql.SQL("SET copy_from_atomic_enabled = false")]

    def hash_text(self, text: sql.Composable) -> sql.Composed:
        return sql.SQL("fnv64({})").format(text)

    # autocommit_before_ddl (on since v25.1) commits an open transaction before any DDL.
    ddl_in_transaction = False

    def column_bytes(self, column: sql.Composable) -> sql.Composable:
        return sql.SQL("NULL")  # no per-value size function to rely on

    def relation_bytes(self) -> sql.Composable | None:
        return None

    def vectors_array(self, vectors: np.ndarray) -> list:
        # VECTOR[] parameters are unconfirmed on CockroachDB and binary VECTOR needs v25.3+:
        # send TEXT[] of literals and cast each element in SQL.
        return [vector_literal(v) for v in vectors]

    def write_vectors_value(self, column: sql.Composable) -> sql.Composable:
        return sql.SQL("CAST({} AS VECTOR)").format(column)

    def search_settings(self, spec: SearchSpec) -> list[tuple[sql.Composable, tuple]]:
        # CockroachDB sorts NULLs first; a brute-force plan would rank NULL vectors on top.
        settings = [(sql.SQL("SET null_ordered_last = true"), ())]
        if spec.beam_size:
            settings.append((sql.SQL("SET vector_search_beam_size = {}").format(sql.Literal(int(spec.beam_size))), ()))
        return settings

    def search_mode(self, spec: SearchSpec) -> str:
        """The vector index serves only filters that pin every prefix column (cockroach #146145)."""
        if spec.filter is None:
            return "index"
        return "prefix" if spec.filter_on_prefix else "overfetch"

    def search_statement(self, spec: SearchSpec, query_vector: str) -> tuple[sql.Composed, list]:
        t_vector = sql.Identifier("t", spec.vector_column)
        q = self.vector_param(spec.dimension)
        dist = self.distance(t_vector, spec.metric, q)
        select = sql.SQL(", ").join(spec.select)
        if spec.mode == "exact":
            # Any filter here switches the vector index off: a brute-force, exact ranking.
            where = sql.SQL("{} IS NOT NULL").format(t_vector)
            if spec.filter is not None:
                where = sql.SQL("{} AND {}").format(where, spec.filter)
            query = sql.SQL("SELECT {}, {} AS distance FROM {} AS t WHERE {} ORDER BY {} LIMIT %s").format(
                select, dist, spec.table, where, dist
            )
            return query, [query_vector, *spec.filter_params, query_vector, spec.k]
        if spec.mode == "overfetch":
            # Rank with the index alone, then filter the over-fetched candidates outside it.
            keys = [sql.Identifier(k) for k in spec.keys]
            bare = self.distance(sql.Identifier(spec.vector_column), spec.metric, q)
            join = sql.SQL(" AND ").join(sql.SQL("t.{0} = ranked.{0}").format(k) for k in keys)
            query = sql.SQL(
                "SELECT {select}, ranked.distance FROM (SELECT {keys}, {bare} AS distance FROM {table}"
                " ORDER BY {bare} LIMIT %s) AS ranked JOIN {table} AS t ON {join}"
                " WHERE ranked.distance IS NOT NULL AND {filter} ORDER BY ranked.distance LIMIT %s"
            ).format(
                select=select, keys=sql.SQL(", ").join(keys), bare=bare, table=spec.table, join=join, filter=spec.filter
            )
            return query, [query_vector, query_vector, spec.k * OVERFETCH, *spec.filter_params, spec.k]
        # 'index' and 'prefix': rank in a subquery whose only filter pins the prefix columns;
        # drop NULL-vector rows outside it (an IS NOT NULL inside turns the index off).
        where = sql.SQL(" WHERE {}").format(spec.filter) if spec.mode == "prefix" else sql.SQL("")
        query = sql.SQL(
            "SELECT * FROM (SELECT {}, {} AS distance FROM {} AS t{} ORDER BY {} LIMIT %s) AS ranked"
            " WHERE distance IS NOT NULL ORDER BY distance"
        ).format(select, dist, spec.table, where, dist)
        return query, [query_vector, *(spec.filter_params if spec.mode == "prefix" else []), query_vector, spec.k]


def parse_crdb_version(text: str) -> tuple[int, ...]:
    """'CockroachDB CCL v25.4.1 (x86_64-...)' -> (25, 4, 1)."""
    match = re.search(r"v(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not match:
        return ()
    return tuple(int(part) for part in match.groups() if part is not None)


def for_connection(conn) -> Dialect:
    crdb_version = conn.info.parameter_status("crdb_version")
    if crdb_version:
        return CockroachDialect(version=parse_crdb_version(crdb_version))
    v = conn.info.server_version
    return Dialect(version=(v // 10000, v % 10000))
