"""Every SQL difference between CockroachDB and PostgreSQL+pgvector, in one place.

Sources for the CockroachDB side are in docs/cockroachdb-vector-reference.md (the shared design
folder); the statements produced here are pinned by tests/test_dialects.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from psycopg import sql

from .errors import UnsupportedByEngine

METRICS = ("cosine", "l2", "ip")

# pgvector and CockroachDB share operators and opclass names.
OPERATORS = {"cosine": "<=>", "l2": "<->", "ip": "<#>"}
OPCLASSES = {"cosine": "vector_cosine_ops", "l2": "vector_l2_ops", "ip": "vector_ip_ops"}


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

    def add_vector_column(self, table: sql.Composable, column: str, dimension: int) -> sql.Composed:
        return sql.SQL("ALTER TABLE {} ADD COLUMN {} VECTOR({})").format(
            table, sql.Identifier(column), sql.Literal(int(dimension))
        )

    def comment_on_column(self, table: sql.Composable, column: str, text: str) -> sql.Composed:
        # Utility statements take no bind parameters; Literal is psycopg's safe quoting.
        return sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(table, sql.Identifier(column), sql.Literal(text))

    def check_metric(self, metric: str) -> None:
        if metric not in METRICS:
            raise UnsupportedByEngine(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")

    def create_index(self, table: sql.Composable, index_name: str, column: str, metric: str) -> sql.Composed:
        return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw ({} {})").format(
            sql.Identifier(index_name), table, sql.Identifier(column), sql.SQL(OPCLASSES[metric])
        )

    def index_build_settings(self) -> list[sql.Composable]:
        # pgvector builds HNSW far faster while the graph fits in maintenance_work_mem.
        return [sql.SQL("SET maintenance_work_mem = '1GB'")]

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

    def search_settings(self, k: int) -> list[tuple[sql.Composable, tuple]]:
        # ef_search bounds how many rows an HNSW scan can return; 100 keeps recall high.
        return [(sql.SQL("SELECT set_config('hnsw.ef_search', %s, true)"), (str(max(100, min(k, 1000))),))]

    def search_query(
        self,
        table: sql.Composable,
        select: list[sql.Composable],
        vector_column: str,
        metric: str,
        dimension: int,
    ) -> sql.Composed:
        """Rank by distance with the opclass operator, so the vector index serves the query."""
        dist = self.distance(sql.Identifier(vector_column), metric, self.vector_param(dimension))
        # pgvector's HNSW scan keeps working under this filter (it holds no NULL vectors anyway);
        # without it an exact scan would pad the result with NULL-vector rows.
        return sql.SQL("SELECT {}, {} AS distance FROM {} WHERE {} IS NOT NULL ORDER BY {} LIMIT %s").format(
            sql.SQL(", ").join(select), dist, table, sql.Identifier(vector_column), dist
        )


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

    def create_index(self, table: sql.Composable, index_name: str, column: str, metric: str) -> sql.Composed:
        return sql.SQL("CREATE VECTOR INDEX IF NOT EXISTS {} ON {} ({} {})").format(
            sql.Identifier(index_name), table, sql.Identifier(column), sql.SQL(OPCLASSES[metric])
        )

    def index_build_settings(self) -> list[sql.Composable]:
        return []

    staging_kind = ""  # temporary tables are experimental in CockroachDB

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

    def search_settings(self, k: int) -> list[tuple[sql.Composable, tuple]]:
        # CockroachDB sorts NULLs first; a brute-force plan would rank NULL vectors on top.
        return [(sql.SQL("SET null_ordered_last = true"), ())]

    def search_query(
        self,
        table: sql.Composable,
        select: list[sql.Composable],
        vector_column: str,
        metric: str,
        dimension: int,
    ) -> sql.Composed:
        # Any WHERE filter but prefix columns turns the vector index off (cockroach #146145):
        # rank in a bare subquery, drop NULL-vector rows outside it.
        dist = self.distance(sql.Identifier(vector_column), metric, self.vector_param(dimension))
        return sql.SQL(
            "SELECT * FROM (SELECT {}, {} AS distance FROM {} ORDER BY {} LIMIT %s) AS ranked"
            " WHERE distance IS NOT NULL ORDER BY distance"
        ).format(sql.SQL(", ").join(select), dist, table, dist)


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
