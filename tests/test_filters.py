"""--where filters: exact SQL for each form, refusal of bad documents, and real results on PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

from vectorize_core.db import Column, Database, Table
from vectorize_core.errors import BadInput
from vectorize_core.filters import BadFilter, compile_filter, parse_filter


def make_table(*columns: tuple[str, str, str]) -> Table:
    cols = {
        name: Column(name, i, typname, type_sql, -1, None) for i, (name, typname, type_sql) in enumerate(columns, 1)
    }
    return Table("public", "posts", 1, cols, ("id",))


POSTS = make_table(
    ("id", "int4", "integer"),
    ("title", "text", "text"),
    ("status", "varchar", "character varying(20)"),
    ("published_at", "date", "date"),
    ("created_at", "timestamptz", "timestamp with time zone"),
    ("active", "bool", "boolean"),
    ("price", "numeric", "numeric(10,2)"),
    ("score", "float8", "double precision"),
    ("ref", "uuid", "uuid"),
    ("Author Name", "text", "text"),
    ('we"ird', "text", "text"),
    ("embedding", "vector", "vector(3)"),
)


def translate(doc, alias=None):
    condition, params = compile_filter(doc, POSTS, alias)
    return condition.as_string(), params


# -- translation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc, expected_sql, expected_params",
    [
        ({}, "TRUE", []),
        ({"id": 5}, '("id" = CAST(%s AS integer))', ["5"]),
        ({"id": {"$eq": 5}}, '("id" = CAST(%s AS integer))', ["5"]),
        ({"title": "a'b"}, '("title" = CAST(%s AS text))', ["a'b"]),
        ({"title": None}, '("title" IS NULL)', []),
        ({"title": {"$eq": None}}, '("title" IS NULL)', []),
        ({"title": {"$ne": None}}, '("title" IS NOT NULL)', []),
        ({"id": {"$ne": 5}}, '("id" IS DISTINCT FROM CAST(%s AS integer))', ["5"]),
        ({"id": {"$gt": 1}}, '("id" > CAST(%s AS integer))', ["1"]),
        ({"id": {"$gte": 1}}, '("id" >= CAST(%s AS integer))', ["1"]),
        ({"id": {"$lt": 1}}, '("id" < CAST(%s AS integer))', ["1"]),
        ({"id": {"$lte": -1}}, '("id" <= CAST(%s AS integer))', ["-1"]),
        ({"title": {"$in": ["a", "b"]}}, '("title" = ANY(CAST(%s AS text[])))', [["a", "b"]]),
        ({"id": {"$nin": [1, 2]}}, '(("id" = ANY(CAST(%s AS integer[]))) IS NOT TRUE)', [["1", "2"]]),
        ({"title": {"$exists": True}}, '("title" IS NOT NULL)', []),
        ({"title": {"$exists": False}}, '("title" IS NULL)', []),
        ({"title": {"$like": "a%"}}, '("title" LIKE CAST(%s AS text))', ["a%"]),
        ({"title": {"$ilike": "%A_"}}, '("title" ILIKE CAST(%s AS text))', ["%A_"]),
        ({"active": True}, '("active" = CAST(%s AS boolean))', ["true"]),
        ({"active": False}, '("active" = CAST(%s AS boolean))', ["false"]),
        ({"published_at": {"$gte": "2025-01-01"}}, '("published_at" >= CAST(%s AS date))', ["2025-01-01"]),
        (
            {"ref": "00000000-0000-0000-0000-000000000001"},
            '("ref" = CAST(%s AS uuid))',
            ["00000000-0000-0000-0000-000000000001"],
        ),
        ({"score": {"$gt": 2.5}}, '("score" > CAST(%s AS double precision))', ["2.5"]),
        # Types with a modifier are compared unmodified: a cast to varchar(20), numeric(10,2) or
        # timestamp(p) would truncate or round the value.
        ({"status": "draft"}, '("status" = CAST(%s AS varchar))', ["draft"]),
        ({"status": {"$in": ["a"]}}, '("status" = ANY(CAST(%s AS varchar[])))', [["a"]]),
        ({"price": {"$gt": Decimal("9.999")}}, '("price" > CAST(%s AS numeric))', ["9.999"]),
        ({"price": 10}, '("price" = CAST(%s AS numeric))', ["10"]),
        (
            {"created_at": {"$lt": "2025-01-01T00:00:00Z"}},
            '("created_at" < CAST(%s AS timestamptz))',
            ["2025-01-01T00:00:00Z"],
        ),
        ({"Author Name": "Ann"}, '("Author Name" = CAST(%s AS text))', ["Ann"]),
        ({'we"ird': "x"}, '("we""ird" = CAST(%s AS text))', ["x"]),
    ],
)
def test_translation(doc, expected_sql, expected_params):
    assert translate(doc) == (expected_sql, expected_params)


def test_several_operators_on_one_column_are_anded():
    assert translate({"id": {"$gte": 1, "$lt": 10}}) == (
        '(("id" >= CAST(%s AS integer)) AND ("id" < CAST(%s AS integer)))',
        ["1", "10"],
    )


def test_several_keys_are_anded_in_order():
    assert translate({"title": "a", "id": 1, "active": None}) == (
        '(("title" = CAST(%s AS text)) AND ("id" = CAST(%s AS integer)) AND ("active" IS NULL))',
        ["a", "1"],
    )


def test_and_or():
    assert translate({"$and": [{"id": 1}, {"title": "a"}]}) == (
        '(("id" = CAST(%s AS integer)) AND ("title" = CAST(%s AS text)))',
        ["1", "a"],
    )
    assert translate({"$or": [{"id": 1}, {"title": "a"}]}) == (
        '(("id" = CAST(%s AS integer)) OR ("title" = CAST(%s AS text)))',
        ["1", "a"],
    )
    assert translate({"$or": [{"id": 1}]}) == ('("id" = CAST(%s AS integer))', ["1"])


def test_not_keeps_rows_where_the_inner_filter_is_null():
    assert translate({"$not": {"active": True}}) == ('(("active" = CAST(%s AS boolean)) IS NOT TRUE)', ["true"])


def test_nesting_keeps_parameter_order():
    doc = {
        "$or": [
            {"$and": [{"id": {"$gt": 1}}, {"title": {"$ilike": "%x%"}}]},
            {"$not": {"$or": [{"status": {"$in": ["a", "b"]}}, {"price": {"$exists": False}}]}},
        ],
        "active": True,
    }
    assert translate(doc) == (
        '(((("id" > CAST(%s AS integer)) AND ("title" ILIKE CAST(%s AS text)))'
        ' OR ((("status" = ANY(CAST(%s AS varchar[]))) OR ("price" IS NULL)) IS NOT TRUE))'
        ' AND ("active" = CAST(%s AS boolean)))',
        ["1", "%x%", ["a", "b"], "true"],
    )


def test_alias_qualifies_every_column():
    assert translate({"$or": [{"id": {"$in": [1]}}, {"Author Name": None}], "title": "a"}, alias="p") == (
        '((("p"."id" = ANY(CAST(%s AS integer[]))) OR ("p"."Author Name" IS NULL)) AND ("p"."title" = CAST(%s AS text)))',
        [["1"], "a"],
    )


def test_empty_filter_inside_and_is_true():
    assert translate({"$and": [{}, {"id": 1}]}) == ('(TRUE AND ("id" = CAST(%s AS integer)))', ["1"])


def test_user_defined_type_uses_format_type_text():
    table = make_table(("id", "int4", "integer"), ("mood", "mood", 'app."Mood"'))
    condition, params = compile_filter({"mood": {"$in": ["ok"]}}, table)
    assert condition.as_string() == '("mood" = ANY(CAST(%s AS app."Mood"[])))'
    assert params == [["ok"]]


# -- parse_filter --------------------------------------------------------------------------------


def test_parse_filter_keeps_decimals_exact():
    doc = parse_filter('{"price": {"$gt": 0.10}, "n": 12345678901234567890, "title": "x"}')
    assert doc == {"price": {"$gt": Decimal("0.10")}, "n": 12345678901234567890, "title": "x"}
    assert isinstance(doc["price"]["$gt"], Decimal)
    assert compile_filter(
        doc, make_table(("price", "numeric", "numeric"), ("n", "int8", "bigint"), ("title", "text", "text"))
    )[1] == [
        "0.10",
        "12345678901234567890",
        "x",
    ]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('{"id": }', "Expecting value"),
        ("", "Expecting value"),
        ("{'id': 1}", "double quotes"),
        ('{"id": 1} trailing', "Extra data"),
        ("[1, 2]", "got an array"),
        ('"id"', "got a string"),
        ("null", "got null"),
        ("5", "got a number"),
        ('{"score": NaN}', "NaN is not a JSON number"),
        ('{"score": -Infinity}', "-Infinity is not a JSON number"),
        ('{"id": 1, "id": 2}', "duplicate key 'id'"),
        ("[" * 100_000 + "]" * 100_000, "recursion"),
    ],
    ids=[
        "missing-value",
        "empty",
        "single-quotes",
        "trailing",
        "array",
        "string",
        "null",
        "number",
        "nan",
        "infinity",
        "duplicate-key",
        "too-deep",
    ],
)
def test_parse_filter_rejects(text, fragment):
    with pytest.raises(BadFilter) as info:
        parse_filter(text)
    message = str(info.value)
    assert message.startswith("--where is not valid JSON: ")
    assert fragment in message
    assert "\n" not in message


# -- rejection -----------------------------------------------------------------------------------

COLUMN_LIST = "columns: id, title, status, published_at, created_at, active, price, score, ref, Author Name"


@pytest.mark.parametrize(
    "doc, fragments",
    [
        ({"nosuch": 1}, ["unknown column 'nosuch' in --where", COLUMN_LIST]),
        ({"id; DROP TABLE t": 1}, ["unknown column 'id; DROP TABLE t'"]),
        ({'"id"': 1}, ["unknown column '\"id\"'"]),
        ({"ID": 1}, ["unknown column 'ID'"]),
        ({"author name": "x"}, ["unknown column 'author name'"]),
        ({"$or": [{"id": 1}, {"nosuch": 2}]}, ["unknown column 'nosuch'"]),
        ({1: "x"}, ["keys must be strings", "1"]),
        ({"id": {"$regex": "^a"}}, ["unknown operator '$regex'", "$eq, $ne"]),
        ({"$foo": 1}, ["unknown operator '$foo'"]),
        ({"$gt": 1}, ["$gt in --where must be inside a column's object"]),
        ({"$in": [1]}, ["$in in --where must be inside a column's object"]),
        ({"id": {"$and": [{"id": 1}]}}, ["$and cannot be used inside column 'id'"]),
        ({"id": {"$not": {"$eq": 1}}}, ["$not cannot be used inside column 'id'"]),
        ({"id": {"x": 1}}, ["column 'id'", "object of operators", "'x'"]),
        ({"id": {"$gt": 1, "lt": 5}}, ["column 'id'", "'lt'"]),
        ({"id": {1: 2}}, ["column 'id'", "the key 1"]),
        ({"id": {}}, ["column 'id'", "empty operator object"]),
        ({"title": {"$eq": {"a": 1}}}, ["$eq on column 'title'", "string, number or boolean, got an object"]),
        ({"title": ["a", "b"]}, ["$eq on column 'title'", "got an array"]),
        ({"id": {"$in": 1}}, ["$in on column 'id'", "non-empty array, got a number"]),
        ({"id": {"$in": []}}, ["$in on column 'id'", "non-empty array, got an array"]),
        ({"id": {"$nin": "1,2"}}, ["$nin on column 'id'", "non-empty array, got a string"]),
        ({"id": {"$in": [1, None]}}, ["$in on column 'id'", "not null"]),
        ({"id": {"$in": [1, [2]]}}, ["$in on column 'id'", "got an array"]),
        ({"id": {"$in": [1, "2"]}}, ["$in on column 'id'", 'whole number, got a string: "2"']),
        ({"$and": {"id": 1}}, ["$and in --where takes a non-empty array", "got an object"]),
        ({"$and": []}, ["$and in --where takes a non-empty array"]),
        ({"$or": [{"id": 1}, 2]}, ["$or in --where takes filter objects", "got a number"]),
        ({"$not": [{"id": 1}]}, ["$not in --where takes one filter object", "got an array"]),
        ({"title": {"$like": 5}}, ["$like on column 'title'", "needs a string, got a number: 5"]),
        ({"id": {"$like": "1%"}}, ["$like in --where needs a text column", "'id' is integer"]),
        ({"active": {"$ilike": "t%"}}, ["$ilike in --where needs a text column"]),
        ({"embedding": "[1,2,3]"}, ["cannot filter on vector column 'embedding'"]),
        ({"embedding": {"$exists": True}}, ["cannot filter on vector column 'embedding'"]),
        ({"id": "5"}, ["$eq on column 'id' (integer)", 'whole number, got a string: "5"']),
        ({"id": 2.5}, ["whole number, got a number: 2.5"]),
        ({"id": True}, ["whole number, got a boolean: true"]),
        ({"active": 1}, ["column 'active' (boolean)", "true or false, got a number"]),
        ({"active": "true"}, ["true or false, got a string"]),
        ({"price": "10"}, ["column 'price' (numeric(10,2))", "needs a number, got a string"]),
        ({"price": False}, ["needs a number, got a boolean"]),
        ({"title": 5}, ["column 'title' (text)", "needs a string, got a number"]),
        ({"published_at": 20250101}, ["column 'published_at' (date)", "needs a string, got a number"]),
        ({"id": {"$gt": None}}, ["$gt on column 'id'", "not null", "$exists"]),
        ({"id": {"$exists": "yes"}}, ["$exists on column 'id'", "true or false, got a string"]),
        ({"id": {"$exists": 1}}, ["$exists on column 'id'", "true or false, got a number"]),
    ],
)
def test_compile_filter_rejects(doc, fragments):
    with pytest.raises(BadFilter) as info:
        compile_filter(doc, POSTS)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert "\n" not in message


def test_compile_filter_rejects_a_document_that_is_not_an_object():
    with pytest.raises(BadFilter, match="must be a JSON object, got an array"):
        compile_filter([{"id": 1}], POSTS)


def test_compile_filter_rejects_absurd_nesting():
    doc: dict = {"id": 1}
    for _ in range(5000):
        doc = {"$not": doc}
    with pytest.raises(BadFilter, match="nested too deeply"):
        compile_filter(doc, POSTS)


def test_bad_filter_is_bad_input():
    assert issubclass(BadFilter, BadInput)
    assert BadFilter.exit_code == 2


# -- against PostgreSQL --------------------------------------------------------------------------

ROWS = """
INSERT INTO posts VALUES
 (1, 'Intro to SQL',  'db',   '2024-12-31', '2024-12-31 23:30:00+00', true,  10.00, 'abc', 'Ann'),
 (2, 'Vector search', 'ml',   '2025-01-01', '2025-01-01 00:30:00+00', false,  9.99, 'abd', 'Bob'),
 (3, 'Draft notes',   NULL,   '2025-03-15', NULL,                     true,   NULL,  NULL, 'Ann'),
 (4, 'sql tuning',    'db',   NULL,         '2025-06-01 12:00:00+00', NULL,  25.50, 'xyz', NULL),
 (5, NULL,            'misc', '2025-02-01', '2025-02-01 08:00:00+02', false,  0.00, 'abc', 'Cy')
"""


@pytest.fixture
def posts(conn, url) -> Table:
    conn.execute(
        "CREATE TABLE posts (id int PRIMARY KEY, title text, tag text, published_at date,"
        ' created_at timestamptz, active boolean, price numeric(10,2), code varchar(3), "Author Name" text)'
    )
    conn.execute(ROWS)
    with Database.connect(url) as db:
        return db.find_table("posts")


def matching_ids(conn, table: Table, where: str) -> list[int]:
    condition, params = compile_filter(parse_filter(where), table)
    query = sql.SQL("SELECT id FROM {} WHERE {} ORDER BY id").format(table.ident, condition)
    return [row[0] for row in conn.execute(query, params)]


@pytest.mark.parametrize(
    "where, ids",
    [
        ("{}", [1, 2, 3, 4, 5]),
        ('{"published_at": {"$gte": "2025-01-01"}}', [2, 3, 5]),
        ('{"published_at": {"$lt": "2025-01-01"}}', [1]),
        ('{"tag": {"$in": ["db", "ml"]}}', [1, 2, 4]),
        ('{"tag": {"$nin": ["db"]}}', [2, 3, 5]),
        ('{"tag": {"$ne": "db"}}', [2, 3, 5]),
        ('{"tag": null}', [3]),
        ('{"price": {"$exists": false}}', [3]),
        ('{"created_at": {"$exists": true}}', [1, 2, 4, 5]),
        ('{"title": {"$ilike": "%sql%"}}', [1, 4]),
        ('{"title": {"$like": "%sql%"}}', [4]),
        ('{"$or": [{"tag": "ml"}, {"title": {"$like": "Draft%"}}]}', [2, 3]),
        ('{"$not": {"active": true}}', [2, 4, 5]),
        ('{"$not": {"$or": [{"tag": "db"}, {"active": false}]}}', [3]),
        ('{"active": true}', [1, 3]),
        ('{"active": false}', [2, 5]),
        ('{"price": {"$gt": 9.99, "$lte": 25.5}}', [1, 4]),
        ('{"price": {"$gt": 9.999}}', [1, 4]),
        ('{"price": 0}', [5]),
        ('{"code": "abc"}', [1, 5]),
        ('{"code": "abcdef"}', []),
        ('{"code": {"$in": ["abcdef", "xyz"]}}', [4]),
        ('{"created_at": {"$lt": "2025-01-01T00:00:00Z"}}', [1]),
        ('{"created_at": {"$gte": "2025-02-01 07:00:00+01"}}', [4, 5]),
        ('{"Author Name": "Ann", "active": true}', [1, 3]),
        ('{"id": {"$in": [1, 3, 99]}}', [1, 3]),
        ('{"id": {"$nin": [1, 3]}}', [2, 4, 5]),
        ('{"$and": [{"tag": "db"}, {"price": {"$lt": 20}}]}', [1]),
        ('{"title": "x\'; DROP TABLE posts; --"}', []),
    ],
)
def test_live_filter(conn, posts, where, ids):
    assert matching_ids(conn, posts, where) == ids


def test_live_values_are_never_sql(conn, posts):
    assert matching_ids(conn, posts, '{"title": {"$in": ["Intro to SQL", "\'); DELETE FROM posts; --"]}}') == [1]
    assert conn.execute("SELECT count(*) FROM posts").fetchone()[0] == 5


def test_live_alias_disambiguates_a_self_join(conn, posts):
    condition, params = compile_filter({"tag": "db", "price": {"$gt": 20}}, posts, alias="p")
    query = sql.SQL(
        "SELECT p.id, q.id FROM posts AS p JOIN posts AS q ON q.tag = p.tag AND q.id <> p.id WHERE {}"
    ).format(condition)
    assert conn.execute(query, params).fetchall() == [(4, 1)]


def test_live_bad_date_is_refused_by_the_server_not_misread(conn, posts):
    # The one class of mistake left to the server: a string the column type cannot parse.
    condition, params = compile_filter({"published_at": "2025-13-45"}, posts)
    with pytest.raises(psycopg.DataError, match="out of range"):
        conn.execute(sql.SQL("SELECT id FROM posts WHERE {}").format(condition), params)
