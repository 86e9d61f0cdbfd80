"""The CockroachDB statements, pinned against docs/cockroachdb-vector-reference.md (shared design
folder). No CockroachDB server runs here, so these strings are what we can check; the integration
suite runs them for real when VECTORIZE_TEST_CRDB_URL is set."""

from __future__ import annotations

import numpy as np
import pytest
from psycopg import sql

from vectorize_core import dialects, names, search_sql
from vectorize_core.columns import column_statements
from vectorize_core.db import Column, Table
from vectorize_core.errors import UnsupportedByEngine
from vectorize_core.fill_queries import FillQueries
from vectorize_core.indexes import index_statements
from vectorize_core.target import VectorTarget

CRDB = dialects.CockroachDialect(version=(26, 2, 1))
PG = dialects.Dialect(version=(18, 6))
TABLE = sql.Identifier("public", "Pass age")


def s(composable) -> str:
    return composable.as_string()


def target(metric="cosine", key=("id",), exists=False) -> VectorTarget:
    columns = {
        "id": Column("id", 1, "int8", "bigint", -1, None),
        "body": Column("body", 2, "text", "text", -1, None),
        "a": Column("a", 3, "int8", "bigint", -1, None),
        "b": Column("b", 4, "text", "text", -1, None),
    }
    table = Table("public", "Pass age", 1, columns, key)
    return VectorTarget(table, ("body",), "body_vector", "minilm", 384, metric, exists, None)


@pytest.mark.parametrize(
    "metric, opclass", [("cosine", "vector_cosine_ops"), ("l2", "vector_l2_ops"), ("ip", "vector_ip_ops")]
)
def test_crdb_vector_index_ddl(metric, opclass):
    assert (
        s(CRDB.create_index(TABLE, "passage_idx", "body_vector", metric))
        == f'CREATE VECTOR INDEX IF NOT EXISTS "passage_idx" ON "public"."Pass age" ("body_vector" {opclass})'
    )


def test_pg_hnsw_index_ddl():
    assert (
        s(PG.create_index(TABLE, "passage_idx", "body_vector", "ip"))
        == 'CREATE INDEX IF NOT EXISTS "passage_idx" ON "public"."Pass age" USING hnsw ("body_vector" vector_ip_ops)'
    )
    # A column whose text repeats: a denser graph on PostgreSQL; C-SPANN has no such setting.
    assert s(PG.create_index(TABLE, "i", "v", "ip", dense=True)).endswith(
        'USING hnsw ("v" vector_ip_ops) WITH (m = 24)'
    )
    assert s(CRDB.create_index(TABLE, "i", "v", "l2", dense=True)) == s(CRDB.create_index(TABLE, "i", "v", "l2"))


def test_crdb_setup_needs_the_feature_flag_only_before_25_4():
    assert [s(x) for x in dialects.CockroachDialect(version=(25, 3, 2)).setup_statements()] == [
        "SET CLUSTER SETTING feature.vector_index.enabled = true"
    ]
    assert CRDB.setup_statements() == []
    assert [s(x) for x in PG.setup_statements()] == ["CREATE EXTENSION IF NOT EXISTS vector"]


def test_crdb_25_2_indexes_only_l2():
    old = dialects.CockroachDialect(version=(25, 2, 4))
    old.check_metric("l2")
    with pytest.raises(UnsupportedByEngine, match="only the l2 metric"):
        old.check_metric("cosine")
    with pytest.raises(UnsupportedByEngine, match="v25.2.1 or newer"):
        dialects.CockroachDialect(version=(24, 3, 1)).check_metric("l2")
    CRDB.check_metric("ip")


# RE2's spelling of the white-space set; psycopg quotes a string with backslashes as E'...'.
CRDB_PATTERN = (
    r"[^\x09\x0a\x0b\x0c\x0d\x1c\x1d\x1e\x1f\x20\x85\xa0\x{1680}\x{2000}\x{2001}\x{2002}\x{2003}"
    r"\x{2004}\x{2005}\x{2006}\x{2007}\x{2008}\x{2009}\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
)
CRDB_TEXT = " E'" + CRDB_PATTERN.replace("\\", "\\\\") + "'"


CONTENTS = '"public"."Pass age_body_vector_contents"'


def test_crdb_column_ddl_and_metadata_comment():
    t = target()
    statements = [s(x) for x in column_statements(_FakeDb(CRDB), t)]
    made = '{"vectorize_made": {"table": "public.Pass age", "vector_column": "body_vector", "role": "%s"}}'
    assert statements == [
        'ALTER TABLE "public"."Pass age" ADD COLUMN IF NOT EXISTS "body_vector" VECTOR(384)',
        'COMMENT ON COLUMN "public"."Pass age"."body_vector" IS '
        '\'{"vectorize": {"contents": {"columns": {"hash": "content_hash", "orphaned": "orphaned", "vector":'
        ' "content_vector"}, "table": "Pass age_body_vector_contents"}, "dimension": 384, "hash": {"column":'
        ' "body_vector_hash", "index": "Pass age_body_vector_hash"}, "index": "Pass age_body_vector_idx",'
        ' "metric": "cosine", "model": "minilm", "pending_index": "Pass age_body_vector_pending", "source": ["body"],'
        ' "source_attnums": [2], "version": 1}}\'',
        # The hash of the text the model read, beside the vector; the tool's tag on what it makes.
        'ALTER TABLE "public"."Pass age" ADD COLUMN IF NOT EXISTS "body_vector_hash" UUID',
        f'COMMENT ON COLUMN "public"."Pass age"."body_vector_hash" IS \'{made % "hash"}\'',
        'CREATE INDEX IF NOT EXISTS "Pass age_body_vector_hash" ON "public"."Pass age" ("body_vector_hash")'
        ' WHERE "body_vector_hash" IS NOT NULL',
        # One row a distinct content: what the vector index holds.
        f'CREATE TABLE IF NOT EXISTS {CONTENTS} ("content_hash" UUID NOT NULL, "content_vector" VECTOR(384) NOT NULL,'
        ' "orphaned" BOOL NOT NULL DEFAULT false, PRIMARY KEY ("content_hash"))',
        f"COMMENT ON TABLE {CONTENTS} IS '{made % 'contents'}'",
    ]
    assert [s(x) for x in index_statements(_FakeDb(CRDB), t, FillQueries(t, CRDB))] == [
        'CREATE INDEX IF NOT EXISTS "Pass age_body_vector_pending" ON "public"."Pass age" ("id")'
        f' WHERE "body_vector" IS NULL AND ("body" ~ {CRDB_TEXT})',
        f'CREATE VECTOR INDEX IF NOT EXISTS "Pass age_body_vector_idx" ON {CONTENTS} ("content_vector" vector_cosine_ops)',
    ]


def test_crdb_contents_are_added_looked_up_and_swept():
    q = FillQueries(target(), CRDB)
    keys_in = '("h"."id") IN (SELECT CAST(d."k0" AS bigint) FROM unnest(CAST(%b AS text[])) AS d("k0"))'
    # Each written row's content once; a content already there is unmarked (and locked) instead.
    assert s(q.add_contents) == (
        f'INSERT INTO {CONTENTS} AS c ("content_hash", "content_vector") SELECT DISTINCT ON ("h"."body_vector_hash")'
        f' "h"."body_vector_hash", h."body_vector" FROM "public"."Pass age" AS h WHERE {keys_in}'
        ' AND "h"."body_vector_hash" IS NOT NULL AND h."body_vector" IS NOT NULL ORDER BY "h"."body_vector_hash"'
        ' ON CONFLICT ("content_hash") DO UPDATE SET "orphaned" = false WHERE c."orphaned"'
    )
    assert s(q.known) == (
        f'SELECT "content_hash", "content_vector" FROM {CONTENTS} WHERE "content_hash" = ANY(CAST(%b AS uuid[]))'
    )
    held = (
        'EXISTS (SELECT 1 FROM "public"."Pass age" AS h WHERE h."body_vector_hash" = c."content_hash"'
        ' AND h."body_vector" IS NOT NULL)'
    )
    assert [s(x) for x in q.tidy] == [
        f'DELETE FROM {CONTENTS} AS c WHERE c."orphaned" AND NOT {held}',
        f'UPDATE {CONTENTS} AS c SET "orphaned" = true WHERE NOT c."orphaned" AND NOT {held}',
    ]
    # A column an earlier version made: each row keyed by its vector's hash, a batch of keys at a time.
    assert s(q.hash_rows) == (
        'UPDATE "public"."Pass age" AS t SET "body_vector_hash" = CAST(md5(CAST(t."body_vector" AS text)) AS uuid)'
        ' WHERE ("t"."id") IN (SELECT CAST(d."k0" AS bigint) FROM unnest(CAST(%b AS text[])) AS d("k0"))'
        ' AND t."body_vector_hash" IS NULL'
    )


def test_crdb_contents_carry_the_prefix_columns_of_the_vector_index():
    base = target()
    t = VectorTarget(base.table, ("body",), "body_vector", "minilm", 384, "cosine", False, None, prefix_columns=("a",))
    ddl = [s(x) for x in column_statements(_FakeDb(CRDB), t)]
    assert (
        f'CREATE TABLE IF NOT EXISTS {CONTENTS} ("content_hash" UUID NOT NULL, "a" bigint NOT NULL,'
        ' "content_vector" VECTOR(384) NOT NULL, "orphaned" BOOL NOT NULL DEFAULT false,'
        ' PRIMARY KEY ("content_hash", "a"))'
    ) in ddl
    q = FillQueries(t, CRDB)
    assert (
        f'CREATE VECTOR INDEX IF NOT EXISTS "Pass age_body_vector_idx" ON {CONTENTS} ("a", "content_vector"'
        " vector_cosine_ops)"
    ) in [s(x) for x in index_statements(_FakeDb(CRDB), t, q)]
    # A row without a prefix value is left out (only a search pinning the prefix reads the index);
    # a row whose prefix value changed holds its content under the new one too.
    assert 'AND "h"."a" IS NOT NULL' in s(q.add_contents)
    assert s(q.tidy[-1]).endswith(
        'NOT EXISTS (SELECT 1 FROM "public"."Pass age_body_vector_contents" AS c WHERE c."content_hash" ='
        ' h."body_vector_hash" AND c."a" = h."a") AND "h"."body_vector_hash" IS NOT NULL AND "h"."a" IS NOT NULL'
        ' AND h."body_vector" IS NOT NULL ORDER BY "h"."body_vector_hash", "h"."a"'
        ' ON CONFLICT ("content_hash", "a") DO UPDATE SET "orphaned" = false WHERE c."orphaned"'
    )


def test_has_text_is_one_set_of_white_space_in_python_and_both_regex_dialects():
    every_space = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    assert set(dialects.WHITESPACE) == every_space  # Python's str.isspace(), character by character
    assert s(CRDB.has_text([sql.Identifier("b")])) == f'"b" ~ {CRDB_TEXT}'  # RE2 spells U+XXXX \\x{XXXX}
    assert "\\u1680" in s(PG.has_text([sql.Identifier("b")]))  # PostgreSQL \\uXXXX
    assert dialects.is_blank("\u00a0\u2003 \t") and dialects.is_blank("") and dialects.is_blank(None)
    assert not dialects.is_blank("\u00a0x")


def test_crdb_trigger_statements():
    from vectorize_core import tracking

    t = target().table
    db = _FakeDb(CRDB)
    statements = [s(x) for x in tracking.trigger_statements(db, t, "v1", ["title", "body"])]
    function = '"public"."vectorize_reset_Pass age_v1_' + names.short_hash(
        "vectorize_reset_Pass age_v1", "Pass age\x00v1"
    )
    assert statements == [
        'DROP TRIGGER IF EXISTS "vectorize_v1" ON "public"."Pass age"',
        f'CREATE OR REPLACE FUNCTION {function}"() RETURNS TRIGGER LANGUAGE plpgsql AS '
        "'\nBEGIN\n  NEW.\"v1\" := NULL;\n  RETURN NEW;\nEND\n'",
        'CREATE TRIGGER "vectorize_v1" BEFORE UPDATE ON "public"."Pass age" FOR EACH ROW'
        ' WHEN ((OLD)."title" IS DISTINCT FROM (NEW)."title" OR (OLD)."body" IS DISTINCT FROM (NEW)."body")'
        f' EXECUTE FUNCTION {function}"()',
    ]
    assert CRDB.ddl_in_transaction is False and PG.ddl_in_transaction is True
    assert [s(x) for x in CRDB.untrigger_statements(t.ident, t.schema, t.name, "v1")] == [
        'DROP TRIGGER IF EXISTS "vectorize_v1" ON "public"."Pass age"',
        f'DROP FUNCTION IF EXISTS {function}"()',
    ]


def test_pg_trigger_watches_in_its_when_clause_and_resets_by_name():
    from vectorize_core import tracking

    t = target().table
    statements = [s(x) for x in tracking.trigger_statements(_FakeDb(PG), t, "v1", ["body"])]
    assert statements[0].startswith('CREATE OR REPLACE FUNCTION "public"."vectorize_reset_vector"()')
    assert "jsonb_populate_record(NEW, jsonb_build_object(TG_ARGV[0], NULL))" in statements[0]
    assert statements[1:] == [
        'DROP TRIGGER IF EXISTS "vectorize_v1" ON "public"."Pass age"',
        'CREATE TRIGGER "vectorize_v1" BEFORE UPDATE ON "public"."Pass age" FOR EACH ROW'
        ' WHEN ((OLD)."body" IS DISTINCT FROM (NEW)."body") EXECUTE FUNCTION "public"."vectorize_reset_vector"(\'v1\')',
    ]


def test_crdb_write_types_every_array_and_is_conditional():
    q = FillQueries(target(), CRDB)
    assert s(q.write) == (
        'UPDATE "public"."Pass age" AS t SET "body_vector" = CAST(d.vec AS VECTOR), "body_vector_hash" = d.vectorize_hash'
        " FROM unnest(CAST(%b AS text[]), CAST(%b AS text[]), CAST(%b AS uuid[]), CAST(%b AS text[]))"
        ' AS d("k0", "s0", vectorize_hash, vec)'
        ' WHERE t."id" = CAST("d"."k0" AS bigint) AND t."body_vector" IS NULL'
        ' AND CAST(t."body" AS text) IS NOT DISTINCT FROM "d"."s0" RETURNING CAST("t"."id" AS text)'
    )
    literals = CRDB.vectors_array(np.array([[0.5, -1.0, 3.25e-8]], dtype=np.float32))
    assert literals == ["[0.5,-1.0,3.25e-08]"]


def test_pg_write_binds_binary_vectors():
    q = FillQueries(target(), PG)
    assert (
        'SET "body_vector" = d.vec, "body_vector_hash" = d.vectorize_hash'
        " FROM unnest(CAST(%b AS text[]), CAST(%b AS text[]), CAST(%b AS uuid[]), CAST(%b AS vector[]))"
    ) in s(q.write)
    assert all(isinstance(v, np.ndarray) for v in PG.vectors_array(np.zeros((2, 3), np.float32)))


def test_keyset_pages_with_a_composite_key():
    q = FillQueries(target(key=("b", "a")), CRDB)
    assert s(q.next_page) == (
        'SELECT CAST("t"."b" AS text), CAST("t"."a" AS text), CAST("t"."body" AS text) FROM "public"."Pass age" AS t'
        f' WHERE "body_vector" IS NULL AND ("body" ~ {CRDB_TEXT})'
        ' AND ("t"."b", "t"."a") > (CAST(%s AS text), CAST(%s AS bigint)) ORDER BY "t"."b", "t"."a" LIMIT %s'
    )
    assert 't."b" = CAST("d"."k0" AS text) AND t."a" = CAST("d"."k1" AS bigint)' in s(q.write)


def spec(mode="index", filter=None, metric="cosine", contents=True, **kw) -> dialects.SearchSpec:
    if contents is True:
        contents = target().content_table
    return dialects.SearchSpec(
        table=TABLE, columns=["id", "body"], keys=["id"], vector_column="body_vector", metric=metric,
        dimension=384, k=5, mode=mode, filter=filter, filter_params=["p1"] if filter is not None else [],
        contents=contents, hash_column="body_vector_hash" if contents else None, key_types=["bigint"], **kw,
    )  # fmt: skip


CAT = sql.SQL("(t.{} = CAST(%s AS text))").format(sql.Identifier("cat"))
NEAR = (
    '(SELECT n0.*, max(n0.vectorize_near) OVER () AS vectorize_far FROM (SELECT "c"."content_hash",'
    ' "c"."content_vector" <=> CAST(%s AS vector(384)) AS vectorize_near'
    f' FROM {CONTENTS} AS c ORDER BY "c"."content_vector" <=> CAST(%s AS vector(384)) LIMIT %s) AS n0) AS near'
)


def test_crdb_search_ranks_the_nearest_contents_and_expands_them_to_their_rows():
    query, params = search_sql.search_statement(CRDB, spec(candidates=50), "Q")
    assert s(query) == (
        'SELECT "t"."id", "t"."body", "t"."body_vector" <=> CAST(%s AS vector(384)) AS "distance",'
        f' near.vectorize_far FROM {NEAR} JOIN "public"."Pass age" AS t ON "t"."body_vector_hash" = near."content_hash"'
        ' WHERE t."body_vector" IS NOT NULL ORDER BY "distance", "t"."id" LIMIT %s'
    )
    assert params == ["Q", "Q", "Q", 50, 5]
    # The vector query has no filter (any filter there turns CockroachDB's vector index off);
    # NULL vectors and the user's filter are dropped outside it.
    assert "WHERE" not in NEAR
    # No null_ordered_last (it may keep the optimizer from a vector search); settings are LOCAL.
    assert CRDB.search_settings(spec()) == []
    assert [s(stmt) for stmt, _ in CRDB.search_settings(spec(beam_size=64))] == [
        "SET LOCAL vector_search_beam_size = 64"
    ]


def test_crdb_filter_on_prefix_columns_stays_inside_the_vector_query():
    pinned = sql.SQL("(c.{} = CAST(%s AS int8))").format(sql.Identifier("a"))
    query, params = search_sql.search_statement(
        CRDB, spec("prefix", CAT, index_filter=pinned, index_filter_params=["p2"], candidates=50), "Q"
    )
    assert f' FROM {CONTENTS} AS c WHERE (c."a" = CAST(%s AS int8)) ORDER BY "c"."content_vector" <=>' in s(query)
    assert params == ["Q", "Q", "p2", "Q", 50, "p1", 5]


def test_crdb_other_filters_apply_to_the_rows_of_the_nearest_contents():
    query, params = search_sql.search_statement(CRDB, spec("overfetch", CAT, candidates=50), "Q")
    assert s(query).endswith(
        ' WHERE t."body_vector" IS NOT NULL AND (t."cat" = CAST(%s AS text)) ORDER BY "distance", "t"."id" LIMIT %s'
    )
    assert params == ["Q", "Q", "Q", 50, "p1", 5]


def test_exact_search_ranks_every_matching_row_in_place():
    for dialect in (CRDB, PG):
        query, params = search_sql.search_statement(dialect, spec("exact", CAT), "Q")
        assert s(query) == (
            'SELECT "candidates"."id", "candidates"."body", "candidates"."distance" FROM (SELECT "t"."id", "t"."body",'
            ' "t"."body_vector" <=> CAST(%s AS vector(384)) AS "distance", t."id" AS "vectorize_key0"'
            ' FROM "public"."Pass age" AS t WHERE t."body_vector" IS NOT NULL AND (t."cat" = CAST(%s AS text))'
            ' OFFSET 0) AS candidates ORDER BY "candidates"."distance", "candidates"."vectorize_key0" LIMIT %s'
        )
        assert params == ["Q", "p1", 5]


def test_search_mode_follows_prefix_columns_and_the_contents():
    assert CRDB.search_mode(spec()) == "index"
    assert CRDB.search_mode(spec(filter=CAT, filter_on_prefix=True)) == "prefix"
    assert CRDB.search_mode(spec(filter=CAT)) == "overfetch"
    assert PG.search_mode(spec(filter=CAT)) == "index"
    # A column an earlier version indexed row by row is ranked exactly until encode upgrades it.
    assert CRDB.search_mode(spec(contents=None)) == PG.search_mode(spec(contents=None)) == "exact"


def test_pg_search_statements():
    query, params = search_sql.search_statement(PG, spec(filter=CAT, candidates=50), "Q")
    assert s(query) == (
        'SELECT "t"."id", "t"."body", "t"."body_vector" <=> CAST(%s AS vector(384)) AS "distance",'
        f' near.vectorize_far FROM {NEAR} JOIN "public"."Pass age" AS t ON "t"."body_vector_hash" = near."content_hash"'
        ' WHERE t."body_vector" IS NOT NULL AND (t."cat" = CAST(%s AS text)) ORDER BY "distance", "t"."id" LIMIT %s'
    )
    assert params == ["Q", "Q", "Q", 50, "p1", 5]
    settings = [(s(stmt), p) for stmt, p in PG.search_settings(spec(filter=CAT, ef_search=40, candidates=50))]
    assert settings == [("SELECT set_config('hnsw.ef_search', %s, true)", ("50",))]


def test_hybrid_fusion_takes_the_vector_legs_rows_as_arrays():
    fulltext = {"column": "body_tsv", "index": "body_tsv_idx", "language": "english"}
    names = {n: n for n in ("score", "dense_rank", "text_rank", "distance")}
    query, params = search_sql.hybrid_statement(
        CRDB, spec(), [("7", 0.25), ("3", 0.5)], "words", fulltext, candidates=100, fusion_k=60, weights=(1.0, 2.0),
        names=names,
    )  # fmt: skip
    assert s(query).startswith(
        'WITH dense AS (SELECT CAST(d."k0" AS bigint) AS "id", d."vectorize_distance",'
        " row_number() OVER (ORDER BY d.vectorize_ordinal) AS vectorize_rank"
        ' FROM unnest(CAST(%s AS text[]), CAST(%s AS float8[]), CAST(%s AS int8[])) AS d("k0", "vectorize_distance",'
        " vectorize_ordinal))"
    )
    assert params[:3] == [["7", "3"], [0.25, 0.5], [1, 2]]
    assert params[3:] == ["words", "words", 100, 1.0, 60, 2.0, 60, 5]


def test_crdb_index_with_prefix_columns():
    assert (
        s(CRDB.create_index(TABLE, "i", "v", "l2", ("tenant", "cat")))
        == 'CREATE VECTOR INDEX IF NOT EXISTS "i" ON "public"."Pass age" ("tenant", "cat", "v" vector_l2_ops)'
    )


@pytest.mark.parametrize("metric, op", [("cosine", "<=>"), ("l2", "<->"), ("ip", "<#>")])
def test_search_operator_matches_the_metric(metric, op):
    for dialect in (PG, CRDB):
        query, _ = search_sql.search_statement(dialect, spec(metric=metric), "Q")
        assert f'"t"."body_vector" {op} CAST(%s AS vector(384))' in s(query)


def test_crdb_version_parsing():
    assert dialects.parse_crdb_version("CockroachDB CCL v25.4.1 (x86_64-pc-linux-gnu, built 2025/11/01)") == (25, 4, 1)
    assert dialects.parse_crdb_version("v26.3.0-alpha.1") == (26, 3, 0)
    assert dialects.parse_crdb_version("") == ()


def test_vector_literal_round_trips_float32():
    v = np.random.default_rng(1).standard_normal(384).astype(np.float32)
    parsed = np.array([float(x) for x in dialects.vector_literal(v)[1:-1].split(",")], dtype=np.float32)
    np.testing.assert_array_equal(parsed, v)


class _FakeDb:
    """Just enough of Database for statement builders: the dialect, and an empty catalog (a
    database where nothing is made yet)."""

    def __init__(self, dialect):
        self.dialect = dialect

    def catalog(self):
        from vectorize_core.catalog import Catalog

        return Catalog(self.dialect, ["public"], set(), {}, [])

    def as_string(self, composable):
        return composable.as_string()


class _FakeConn:
    """A connection that answers the few queries engine detection makes."""

    def __init__(self, params: dict, answers: dict):
        self.params, self.answers, self.last = params, answers, None
        self.info = self
        self.server_version = 180006

    def parameter_status(self, name):
        return self.params.get(name)

    def execute(self, query):
        answer = self.answers[query]
        if isinstance(answer, Exception):
            raise answer
        self.last = (answer,)
        return self

    def fetchone(self):
        return self.last


def detect(params: dict, answers: dict):
    return dialects.for_connection(_FakeConn(params, answers))


def test_cockroachdb_is_recognised_through_version_when_a_pooler_drops_crdb_version():
    d = detect(
        {},
        {"SELECT version()": "CockroachDB CCL v25.3.2 (x86_64-pc-linux-gnu)", "SHOW CLUSTER SETTING version": "25.3"},
    )
    assert isinstance(d, dialects.CockroachDialect) and d.version == (25, 3, 2) and d.active_version == (25, 3)
    pg = detect({}, {"SELECT version()": "PostgreSQL 18.6 on x86_64-pc-linux-gnu"})
    assert type(pg) is dialects.Dialect and pg.version == (18, 6)


def test_features_follow_the_clusters_active_version_during_an_upgrade():
    upgrading = detect(
        {"crdb_version": "CockroachDB CCL v25.3.1 (x86_64)"},
        {"SHOW CLUSTER SETTING version": "25.2-upgrading-to-25.3-step-004"},
    )
    assert upgrading.version == (25, 3, 1) and upgrading.features == (25, 2)
    with pytest.raises(UnsupportedByEngine, match="active version"):
        upgrading.check_metric("cosine")
    assert [s(x) for x in upgrading.setup_statements()] == ["SET CLUSTER SETTING feature.vector_index.enabled = true"]
    unreadable = detect({"crdb_version": "CockroachDB CCL v25.4.0"}, {"SHOW CLUSTER SETTING version": RuntimeError()})
    assert unreadable.features == (25, 4, 0) and unreadable.setup_statements() == []


def test_cockroachdb_25_2_0_is_refused_and_25_2_1_taken():
    with pytest.raises(UnsupportedByEngine, match="25.2.1"):
        dialects.CockroachDialect(version=(25, 2, 0)).check_metric("l2")
    dialects.CockroachDialect(version=(25, 2, 1)).check_metric("l2")


def test_crdb_reads_triggers_with_show_triggers():
    class Db:
        def fetchall(self, query):
            self.query = query
            return [("vectorize_body_vector",)]

    db = Db()
    assert CRDB.triggers(db, target().table) == {"vectorize_body_vector": []}
    assert s(db.query) == 'SELECT trigger_name FROM [SHOW TRIGGERS FROM "public"."Pass age"]'


def test_crdb_follower_read_is_the_first_statement_of_the_search_transaction():
    settings = [s(stmt) for stmt, _ in CRDB.search_settings(spec(beam_size=8, follower_read=True))]
    assert settings == [
        "SET TRANSACTION AS OF SYSTEM TIME follower_read_timestamp()",
        "SET LOCAL vector_search_beam_size = 8",
    ]
    CRDB.check_follower_read()
    with pytest.raises(UnsupportedByEngine, match="CockroachDB feature"):
        PG.check_follower_read()


def test_plan_verdicts():
    assert CRDB.plan_uses_index(["• limit", "  └── • vector search", "        table: t@t_v_idx"], "t_v_idx")
    assert not CRDB.plan_uses_index(["• top-k", "  └── • scan", "        table: t@t_pkey"], "t_v_idx")
    assert PG.plan_uses_index(["Limit", "  ->  Index Scan using t_v_idx on t"], "t_v_idx")
    assert PG.plan_uses_index(['  ->  Index Scan using "T v_idx" on t'], "T v_idx")
    assert not PG.plan_uses_index(["Limit", "  ->  Sort", "        ->  Seq Scan on t"], "t_v_idx")


def test_crdb_index_size_from_range_statistics():
    class Db:
        def fetchone(self, query):
            self.query = query
            return (12345,)

    db = Db()
    assert CRDB.index_bytes(db, target().table, "i") == (12345, None)
    assert s(db.query) == (
        'SELECT sum((span_stats->>\'live_bytes\')::INT8)::INT8 FROM [SHOW RANGES FROM INDEX "public"."Pass age"@"i"'
        " WITH DETAILS]"
    )
    assert "per-column" in CRDB.vector_bytes_note()


# --fulltext: the first FULLTEXT_MAX_CHARS characters, and on CockroachDB words cut to
# CRDB_WORD_CHARS (it refuses to store a lexeme over 16,383 bytes).
CRDB_TSV = (
    "to_tsvector('english', regexp_replace(left(coalesce(CAST(\"body\" AS text), ''), 100000),"
    "  E'([\\\\pL\\\\pN]{1000})',  E'\\\\1 ', 'g'))"
)
PG_TSV = "to_tsvector('english', left(coalesce(CAST(\"body\" AS text), ''), 100000))"


def test_fulltext_column_indexes_a_bounded_prefix_on_both_engines():
    assert (
        s(CRDB.fulltext_column(TABLE, "body_tsv", "english", ["body"]))
        == f'ALTER TABLE "public"."Pass age" ADD COLUMN IF NOT EXISTS "body_tsv" TSVECTOR AS ({CRDB_TSV}) STORED'
    )
    assert (
        s(PG.fulltext_column(TABLE, "body_tsv", "english", ["body"]))
        == f'ALTER TABLE "public"."Pass age" ADD COLUMN IF NOT EXISTS "body_tsv" tsvector GENERATED ALWAYS AS ({PG_TSV}) STORED'
    )
    two = s(PG.fulltext_column(TABLE, "title_tsv", "simple", ["title", "body"]))
    assert "left(coalesce(CAST(\"title\" AS text), '') || ' ' || coalesce(CAST(\"body\" AS text), ''), 100000)" in two


def test_fulltext_made_by_an_earlier_version_is_bounded_on_the_next_run():
    fulltext = {"column": "body_tsv", "index": "body_tsv_idx", "language": "english"}

    def table(expression):
        base = target().table
        columns = {
            **base.columns,
            "body_tsv": Column("body_tsv", 5, "tsvector", "tsvector", -1, None, "U", "stored", expression),
        }
        return Table(base.schema, base.name, base.oid, columns, base.primary_key)

    old = table("to_tsvector('english'::regconfig, COALESCE(body, ''::text))")
    assert [s(x) for x in PG.fulltext_upgrade(old, fulltext, ["body"])] == [
        f'ALTER TABLE "public"."Pass age" ALTER COLUMN "body_tsv" SET EXPRESSION AS ({PG_TSV})'
    ]
    assert [s(x) for x in dialects.Dialect(version=(16, 4)).fulltext_upgrade(old, fulltext, ["body"])] == [
        'ALTER TABLE "public"."Pass age" DROP COLUMN "body_tsv"',
        f'ALTER TABLE "public"."Pass age" ADD COLUMN IF NOT EXISTS "body_tsv" tsvector GENERATED ALWAYS AS ({PG_TSV}) STORED',
        'CREATE INDEX IF NOT EXISTS "body_tsv_idx" ON "public"."Pass age" USING gin ("body_tsv")',
    ]
    crdb_old = table("to_tsvector('english':::STRING, COALESCE(body::STRING, '':::STRING))")
    assert [s(x) for x in CRDB.fulltext_upgrade(crdb_old, fulltext, ["body"])] == [
        'ALTER TABLE "public"."Pass age" DROP COLUMN "body_tsv"',
        f'ALTER TABLE "public"."Pass age" ADD COLUMN IF NOT EXISTS "body_tsv" TSVECTOR AS ({CRDB_TSV}) STORED',
        'CREATE INVERTED INDEX IF NOT EXISTS "body_tsv_idx" ON "public"."Pass age" ("body_tsv")',
    ]
    # As the catalogs print the bounded expressions: nothing to do.
    pg_new = table("""to_tsvector('english'::regconfig, "left"(COALESCE(body, ''::text), 100000))""")
    crdb_new = table(
        "to_tsvector('english':::STRING, regexp_replace(left(COALESCE(body::STRING, '':::STRING), 100000:::INT8),"
        " e'([\\\\pL\\\\pN]{1000})':::STRING, e'\\\\1 ':::STRING, 'g':::STRING))"
    )
    assert PG.fulltext_upgrade(pg_new, fulltext, ["body"]) == []
    assert CRDB.fulltext_upgrade(crdb_new, fulltext, ["body"]) == []
    assert PG.fulltext_upgrade(target().table, fulltext, ["body"]) == []  # no such column (yet)
    assert PG.fulltext_upgrade(old, None, ["body"]) == []


# -- import-vectors and export-vectors (#25) ----------------------------------------------------

STAGING = sql.Identifier("public", "vectorize_import_x_keys")
STAGED_KEYS = [sql.Identifier("id"), sql.Identifier("line")]


def test_import_copies_keys_as_text_or_csv_and_vectors_binary_only_on_postgresql():
    # CockroachDB's COPY options are unparenthesised (COPY ... FROM STDIN WITH CSV); PostgreSQL's
    # take the (FORMAT ...) list. Binary VECTOR COPY fails on CockroachDB v25.2 (#157040): text.
    assert s(PG.copy_from(STAGING, STAGED_KEYS)) == 'COPY "public"."vectorize_import_x_keys" ("id", "line") FROM STDIN'
    assert s(CRDB.copy_from(STAGING, STAGED_KEYS)) == s(PG.copy_from(STAGING, STAGED_KEYS))
    assert s(PG.copy_from(STAGING, STAGED_KEYS, "csv")).endswith('("id", "line") FROM STDIN (FORMAT csv)')
    assert s(CRDB.copy_from(STAGING, STAGED_KEYS, "csv")).endswith('("id", "line") FROM STDIN WITH CSV')
    vectors = [sql.Identifier("line"), sql.Identifier("vec")]
    assert s(PG.copy_from(TABLE, vectors, "binary")).endswith('("line", "vec") FROM STDIN (FORMAT binary)')
    assert PG.binary_vector_copy and not CRDB.binary_vector_copy


def test_export_pages_in_key_order_reading_vectors_binary_on_postgresql_and_as_text_on_cockroachdb():
    keys, types, vector = [sql.Identifier("a"), sql.Identifier("b")], ["bigint", "text"], sql.Identifier("body_vector")
    assert s(PG.export_page(TABLE, keys, types, vector, after=False)) == (
        'SELECT CAST(t."a" AS text), CAST(t."b" AS text), t."body_vector" FROM "public"."Pass age" AS t'
        ' WHERE t."body_vector" IS NOT NULL ORDER BY t."a", t."b" LIMIT %s'
    )
    assert s(PG.export_page(TABLE, keys, types, vector, after=True)) == (
        'SELECT CAST(t."a" AS text), CAST(t."b" AS text), t."body_vector" FROM "public"."Pass age" AS t'
        ' WHERE t."body_vector" IS NOT NULL AND (t."a", t."b") > (CAST(%s AS bigint), CAST(%s AS text))'
        ' ORDER BY t."a", t."b" LIMIT %s'
    )
    # Binary VECTOR results need v25.3+ (#147844): CockroachDB's vectors are read as text.
    assert s(CRDB.export_page(TABLE, keys, types, vector, after=True)) == (
        'SELECT CAST(t."a" AS text), CAST(t."b" AS text), CAST(t."body_vector" AS text) FROM "public"."Pass age" AS t'
        ' WHERE t."body_vector" IS NOT NULL AND (t."a", t."b") > (CAST(%s AS bigint), CAST(%s AS text))'
        ' ORDER BY t."a", t."b" LIMIT %s'
    )
    assert PG.binary_vector_read and not CRDB.binary_vector_read


def test_import_staging_tables_on_both_engines():
    keys = [sql.Identifier("id")]
    assert [s(x) for x in CRDB.staging_table(STAGING, TABLE, keys)] == [
        'CREATE TABLE "public"."vectorize_import_x_keys" AS SELECT "id" FROM "public"."Pass age" LIMIT 0',
        'ALTER TABLE "public"."vectorize_import_x_keys" ADD COLUMN line INT8',
    ]
    assert s(CRDB.vector_staging_table(STAGING, 384)) == (
        'CREATE TABLE "public"."vectorize_import_x_keys" (line INT8 PRIMARY KEY, vec VECTOR(384))'
    )
    assert s(PG.vector_staging_table(STAGING, 384)).startswith('CREATE UNLOGGED TABLE "public"')


# -- encode --chunk: the chunk table, its writes and its search, on CockroachDB ---------------------


def chunked_target(prefix=()) -> VectorTarget:
    base = target()
    record = {
        "table": "Pass age_body_vector_chunks", "hash_index": "Pass age_body_vector_chunks_hash_idx", "tokens": 128,
        "overlap": 0, "counting": "tokenizer",
        "columns": {"chunk": "chunk", "start": "chunk_start", "end": "chunk_end", "vector": "chunk_vector",
                    "hash": "chunk_hash", "row_hash": "row_hash"},
        **({"prefix_columns": list(prefix)} if prefix else {}),
    }  # fmt: skip
    return VectorTarget(
        base.table, ("body",), "body_vector", "minilm", 384, "cosine", False, None, prefix_columns=tuple(prefix),
        chunks=record,
    )  # fmt: skip


CHUNKS = '"public"."Pass age_body_vector_chunks"'


def test_crdb_chunk_table_and_the_vector_index_with_prefix_columns():
    t = chunked_target(prefix=("a",))
    ddl = [s(x) for x in column_statements_for(t)]
    assert (
        f'CREATE TABLE IF NOT EXISTS {CHUNKS} ("id" bigint NOT NULL, "a" bigint NOT NULL, "chunk" INT4 NOT NULL,'
        ' "chunk_start" INT4 NOT NULL, "chunk_end" INT4 NOT NULL, "chunk_vector" VECTOR(384) NOT NULL,'
        ' "chunk_hash" UUID NOT NULL, "row_hash" UUID NOT NULL, PRIMARY KEY ("id", "chunk"))'
    ) in ddl
    assert f'CREATE INDEX IF NOT EXISTS "Pass age_body_vector_chunks_hash_idx" ON {CHUNKS} ("chunk_hash")' in ddl
    statements = [s(x) for x in index_statements(FakeDb(CRDB), t, FillQueries(t, CRDB))]
    # The vector index is on the distinct contents of the chunks (led by the prefix columns).
    assert (
        f'CREATE VECTOR INDEX IF NOT EXISTS "Pass age_body_vector_idx" ON {CONTENTS} ("a", "content_vector"'
        " vector_cosine_ops)"
    ) in statements
    assert not any('ON "public"."Pass age" ("body_vector"' in x for x in statements)


def test_crdb_chunk_writes_are_conditional_and_replace_only_the_rows_that_took_their_vector():
    q = FillQueries(chunked_target(prefix=("a",)), CRDB)
    assert s(q.write).endswith(
        ' WHERE t."id" = CAST("d"."k0" AS bigint) AND t."body_vector" IS NULL'
        ' AND CAST(t."body" AS text) IS NOT DISTINCT FROM "d"."s0" RETURNING CAST("t"."id" AS text)'
    )
    assert s(q.delete_chunks) == (
        f'DELETE FROM {CHUNKS} AS c WHERE ("c"."id") IN'
        ' (SELECT CAST(d."k0" AS bigint) FROM unnest(CAST(%b AS text[])) AS d("k0"))'
    )
    assert s(q.insert_chunks) == (
        f'INSERT INTO {CHUNKS} ("id", "a", "chunk", "chunk_start", "chunk_end", "chunk_hash", "row_hash",'
        ' "chunk_vector") SELECT CAST(d."k0" AS bigint), "t"."a", d.n, d.s, d.e, d.h, d.r, CAST(d.vec AS VECTOR)'
        " FROM unnest(CAST(%b AS text[]), CAST(%b AS int4[]), CAST(%b AS int4[]), CAST(%b AS int4[]),"
        ' CAST(%b AS uuid[]), CAST(%b AS uuid[]), CAST(%b AS text[])) AS d("k0", n, s, e, h, r, vec)'
        ' JOIN "public"."Pass age" AS t ON t."id" = CAST(d."k0" AS bigint)'
    )
    assert s(q.add_contents).startswith(
        f'INSERT INTO {CONTENTS} AS c ("content_hash", "a", "content_vector") SELECT DISTINCT ON ("h"."chunk_hash",'
        f' "h"."a") "h"."chunk_hash", "h"."a", h."chunk_vector" FROM {CHUNKS} AS h WHERE ("h"."id") IN'
    )
    # A row holds its chunks while its key is theirs, its vector set, its text the text split.
    holds = '"t"."id" = "c"."id" AND t."body_vector" IS NOT NULL AND t."body_vector_hash" = c."row_hash"'
    assert [s(x) for x in q.tidy[:2]] == [
        'UPDATE "public"."Pass age" AS t SET "body_vector" = NULL WHERE t."body_vector" IS NOT NULL'
        f" AND NOT EXISTS (SELECT 1 FROM {CHUNKS} AS c WHERE {holds})",
        f'DELETE FROM {CHUNKS} AS c WHERE NOT EXISTS (SELECT 1 FROM "public"."Pass age" AS t WHERE {holds})',
    ]
    assert s(q.known_rows) == (
        'SELECT h.vectorize_hash, v."body_vector" FROM unnest(CAST(%b AS uuid[])) AS h(vectorize_hash)'
        ' CROSS JOIN LATERAL (SELECT t."body_vector" FROM "public"."Pass age" AS t'
        ' WHERE t."body_vector_hash" = h.vectorize_hash AND t."body_vector" IS NOT NULL LIMIT 1) AS v'
    )


def test_crdb_chunked_pages_are_bounded_by_bytes():
    q = FillQueries(chunked_target(), CRDB)
    text = s(q.next_page)
    assert 'sum(coalesce(octet_length(CAST("p"."x0" AS text)), 0)) OVER (ORDER BY "p"."o0")' in text
    assert "count(*) OVER () AS vectorize_rows" in text
    assert text.endswith('WHERE m.vectorize_bytes - m.vectorize_row_bytes < %s ORDER BY "m"."o0"')
    assert "left(" not in text  # a chunked fill reads whole texts


def test_crdb_chunk_search_has_no_filter_inside_the_vector_query():
    from vectorize_core.chunks import chunk_table_of

    t = chunked_target(prefix=("a",))
    ct = chunk_table_of(t.table, t.chunks)
    contents = t.content_table
    query, params = search_sql.search_statement(
        CRDB, spec("overfetch", CAT, chunks=ct, contents=contents, candidates=50), "Q"
    )
    text = s(query)
    assert (
        ' FROM (SELECT "ch"."id", "ch"."chunk", "ch"."chunk_start", "ch"."chunk_end", "ch"."row_hash",'
        " near.vectorize_near AS vectorize_distance, near.vectorize_far FROM (SELECT n0.*,"
        ' max(n0.vectorize_near) OVER () AS vectorize_far FROM (SELECT "c"."content_hash", "c"."a",'
        ' "c"."content_vector" <=> CAST(%s AS vector(384)) AS vectorize_near'
        ' FROM "public"."Pass age_body_vector_contents" AS c'
        ' ORDER BY "c"."content_vector" <=> CAST(%s AS vector(384)) LIMIT %s) AS n0) AS near'
        f' JOIN {CHUNKS} AS ch ON "ch"."chunk_hash" = near."content_hash" AND "ch"."a" = near."a") AS hit'
    ) in text
    assert 'row_number() OVER (PARTITION BY "hit"."id" ORDER BY hit.vectorize_distance, hit."chunk")' in text
    # The row holds the chunk (same key, the text that was split), has a vector, matches the filter.
    assert text.endswith(
        ' JOIN "public"."Pass age" AS t ON t."id" = "best"."id" AND t."body_vector_hash" = "best"."row_hash"'
        ' WHERE best.vectorize_pick = 1 AND t."body_vector" IS NOT NULL AND (t."cat" = CAST(%s AS text))'
        ' ORDER BY "distance", "t"."id" LIMIT %s'
    )
    assert params == ["Q", "Q", 50, "p1", 5]
    # A filter that pins the prefix columns is the vector query's only filter.
    pinned = sql.SQL("(c.{} = CAST(%s AS int8))").format(sql.Identifier("a"))
    query, params = search_sql.search_statement(
        CRDB, spec("prefix", CAT, chunks=ct, contents=contents, index_filter=pinned, index_filter_params=["p2"],
             candidates=50), "Q",
    )  # fmt: skip
    assert ' AS c WHERE (c."a" = CAST(%s AS int8)) ORDER BY "c"."content_vector" <=>' in s(query)
    assert params == ["Q", "p2", "Q", 50, "p1", 5]
    # Exact: every chunk of every matching row that holds its chunks.
    query, params = search_sql.search_statement(CRDB, spec("exact", CAT, chunks=ct, contents=contents), "Q")
    assert (
        f' FROM {CHUNKS} AS ch JOIN "public"."Pass age" AS t ON t."id" = "ch"."id"'
        ' AND t."body_vector_hash" = "ch"."row_hash" WHERE t."body_vector" IS NOT NULL'
        ' AND (t."cat" = CAST(%s AS text)) AND ch."chunk" >= 0) AS hit'
    ) in s(query)
    assert params == ["Q", "p1", 5]


class FakeDb(_FakeDb):
    """What index_statements asks of a database: its dialect (and an empty catalog)."""


def column_statements_for(t: VectorTarget):
    return column_statements(FakeDb(CRDB), t)


def test_crdb_plain_fill_reads_and_compares_a_prefix_of_the_text():
    q = FillQueries(target(), CRDB, cut=4096)
    assert 'CAST("t"."id" AS text), left(CAST("t"."body" AS text), 4096) FROM "public"."Pass age" AS t' in s(
        q.first_page
    )
    assert s(q.write).endswith(
        ' AND t."body_vector" IS NULL AND left(CAST(t."body" AS text), 4096) IS NOT DISTINCT FROM "d"."s0"'
        ' RETURNING CAST("t"."id" AS text)'
    )
    assert (
        s(q.by_key)
        == 'SELECT CAST("t"."body" AS text) FROM "public"."Pass age" AS t WHERE "t"."id" = CAST(%s AS bigint)'
    )


def test_crdb_chunked_rows_rank_by_opening_and_best_chunk():
    """Through the index: the chunks holding the nearest contents, and every chunk of a row found
    by its opening alone, scored; the best mixed with the opening's distance."""
    from vectorize_core.chunks import chunk_table_of

    t = chunked_target(prefix=("a",))
    ct = chunk_table_of(t.table, t.chunks)
    query, params = search_sql.search_statement(
        CRDB, spec("overfetch", CAT, chunks=ct, contents=t.content_table, candidates=50, opening_weight=0.4), "Q"
    )
    text = s(query)
    assert text.startswith(
        'SELECT "t"."id", "t"."body", (0.4 * ("t"."body_vector" <=> CAST(%s AS vector(384)))'
        ' + 0.6 * best.vectorize_distance) AS "distance",'
    )
    assert (
        'FROM (WITH hits AS (SELECT "ch"."id", "ch"."chunk", "ch"."chunk_start", "ch"."chunk_end", "ch"."row_hash",'
        " near.vectorize_near AS vectorize_distance, near.vectorize_far FROM (SELECT n0.*"
    ) in text
    assert (
        ' SELECT * FROM hits WHERE hits."chunk" >= 0 UNION ALL SELECT "ch"."id", "ch"."chunk", "ch"."chunk_start",'
        ' "ch"."chunk_end", "ch"."row_hash", "ch"."chunk_vector" <=> CAST(%s AS vector(384)), o.vectorize_far'
        ' FROM (SELECT h."id", max(h.vectorize_far) AS vectorize_far FROM hits AS h GROUP BY h."id"'
        f' HAVING max(h."chunk") < 0) AS o JOIN {CHUNKS} AS ch ON ch."id" = o."id" AND ch."chunk" >= 0) AS hit'
    ) in text
    assert text.endswith(
        ' WHERE best.vectorize_pick = 1 AND t."body_vector" IS NOT NULL AND (t."cat" = CAST(%s AS text))'
        ' ORDER BY "distance", "t"."id" LIMIT %s'
    )
    assert params == ["Q", "Q", "Q", 50, "Q", "p1", 5]
    exact, exact_params = search_sql.search_statement(
        CRDB, spec("exact", CAT, chunks=ct, contents=t.content_table, opening_weight=0.4), "Q"
    )
    assert 'AND ch."chunk" >= 0) AS hit' in s(exact)
    assert exact_params == ["Q", "Q", "p1", 5]


def test_crdb_rows_of_an_earlier_chunked_column_gain_their_openings():
    q = FillQueries(chunked_target(prefix=("a",)), CRDB)
    assert s(q.add_openings) == (
        f'INSERT INTO {CHUNKS} ("id", "a", "chunk", "chunk_start", "chunk_end", "chunk_vector", "chunk_hash",'
        ' "row_hash") SELECT "t"."id", "t"."a", %s, 0, 0, "t"."body_vector",'
        ' CAST(md5(CAST("t"."body_vector" AS text)) AS uuid), t."body_vector_hash" FROM "public"."Pass age" AS t'
        ' WHERE "t"."body_vector" IS NOT NULL AND t."body_vector_hash" IS NOT NULL'
        f' AND NOT EXISTS (SELECT 1 FROM {CHUNKS} AS c WHERE "c"."id" = "t"."id" AND c."chunk" = %s)'
    )


def test_full_text_ranks_by_bm25_on_postgresql_and_by_ts_rank_on_cockroachdb():
    fulltext = {"column": "body_tsv", "language": "english", "terms_ident": sql.Identifier("public", "t_terms")}
    pg, pg_params = search_sql.text_ranking(PG, spec(), fulltext, "words", 10)
    crdb, crdb_params = search_sql.text_ranking(CRDB, spec(), fulltext, "words", 10)
    assert "ln(1 + (n.docs - coalesce(s.docs, 0) + 0.5)" in s(pg) and "ts_rank" not in s(pg)
    assert pg_params == ["words", "", "words", "words", 10]
    assert "ts_rank(" in s(crdb) and "ts_stat" not in s(crdb)
    assert crdb_params == ["words", "words", 10]


# -- a chunked column's export and import, on CockroachDB -----------------------------------------


def test_crdb_chunk_export_pages_in_key_then_chunk_order_with_each_rows_chunk_count():
    from vectorize_core.chunk_transfer import export_pages
    from vectorize_core.target import SearchTarget

    t = chunked_target()
    meta = {**t.metadata_record(), "hash": {"column": "body_vector_hash"}}
    first, later, bound = export_pages(FakeDb(CRDB), SearchTarget(t.table, "body_vector", meta))
    assert bound == 2
    assert s(later) == (
        'SELECT CAST("c"."id" AS text), "c"."chunk", "c"."chunk_start", "c"."chunk_end",'
        f' (SELECT count(*) FROM {CHUNKS} AS o WHERE o."id" = c."id" AND o."chunk" >= 0),'
        ' CAST("c"."chunk_hash" AS text), CAST("c"."row_hash" AS text), CAST("c"."chunk_vector" AS text)'
        f' FROM {CHUNKS} AS c JOIN "public"."Pass age" AS t ON "t"."id" = "c"."id" AND t."body_vector" IS NOT NULL'
        ' AND t."body_vector_hash" = c."row_hash" WHERE ("c"."id", "c"."chunk") > (CAST(%s AS bigint), CAST(%s AS int4))'
        ' ORDER BY "c"."id", "c"."chunk" LIMIT %s'
    )


def test_crdb_chunk_restore_replaces_a_batch_of_rows_chunks_and_sets_their_vector_from_the_opening():
    from vectorize_core.chunk_transfer import Restorer, add_staging_columns, chunk_fields

    t = chunked_target(prefix=("a",))
    fields = chunk_fields(["id"])
    keys, vectors = sql.Identifier("public", "s_keys"), sql.Identifier("public", "s_vectors")
    assert [s(x) for x in add_staging_columns(keys, fields)][:2] == [
        'ALTER TABLE "public"."s_keys" ADD COLUMN "chunk" INT4',
        'ALTER TABLE "public"."s_keys" ADD COLUMN "start" INT4',
    ]
    (delete, insert, update), params = Restorer(t, keys, vectors, fields).batch_statements(((3,), (9,)))
    assert params == (3, 9)
    batch = '("s"."id") > (CAST(%s AS bigint)) AND ("s"."id") <= (CAST(%s AS bigint))'
    assert s(delete) == (
        f'DELETE FROM {CHUNKS} AS c WHERE EXISTS (SELECT 1 FROM "public"."s_keys" AS s WHERE "s"."id" = "c"."id"'
        f' AND "s"."chunk" = -1 AND {batch})'
    )
    assert s(insert) == (
        f'INSERT INTO {CHUNKS} ("id", "a", "chunk", "chunk_start", "chunk_end", "chunk_hash", "row_hash",'
        ' "chunk_vector") SELECT s."id", t."a", s."chunk", s."start", s."end", s."chunk_hash", s."row_hash", v.vec'
        ' FROM "public"."s_keys" AS s JOIN "public"."s_vectors" AS v ON v.line = s.line'
        f' JOIN "public"."Pass age" AS t ON "t"."id" = "s"."id" WHERE {batch}'
    )
    assert s(update) == (
        'UPDATE "public"."Pass age" AS t SET "body_vector" = v.vec, "body_vector_hash" = s."row_hash"'
        ' FROM "public"."s_keys" AS s JOIN "public"."s_vectors" AS v ON v.line = s.line'
        f' WHERE "t"."id" = "s"."id" AND "s"."chunk" = -1 AND {batch}'
    )
