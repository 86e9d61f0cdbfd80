"""--where filters: exact SQL for each form, refusal of bad documents, and real results on PostgreSQL."""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

from conftest import fresh_database
from vectorize_core.db import Column, Database, Table
from vectorize_core.errors import BadInput
from vectorize_core.filters import BadFilter, compile_filter, parse_filter


def make_table(*columns: tuple) -> Table:
    """A table of (name, typname, type_sql[, typcategory]) columns, as the catalog would give them."""
    cols = {
        name: Column(name, i, typname, type_sql, -1, None, *category)
        for i, (name, typname, type_sql, *category) in enumerate(columns, 1)
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
    ("flags", "bit", "bit(3)", "V"),
    ("mask", "varbit", "bit varying(5)", "V"),
    ("code", "code3", "code3", "S"),  # a domain over varchar(3)
    ("small", "int2", "smallint", "N"),
    ("big", "int8", "bigint", "N"),
    ("rank", "positive_int", "app.positive_int", "N"),  # a domain over integer
    ("ok", "yes_no", "yes_no", "B"),  # a domain over boolean
    ("labels", "_varchar", "character varying(3)[]", "A"),
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
        # A bare bit is bit(1): bit(n) and varbit(n) are compared as varbit.
        ({"flags": "101"}, '("flags" = CAST(%s AS varbit))', ["101"]),
        ({"flags": {"$in": ["101"]}}, '("flags" = ANY(CAST(%s AS varbit[])))', [["101"]]),
        ({"mask": {"$gt": "1"}}, '("mask" > CAST(%s AS varbit))', ["1"]),
        # Domains and arrays leave the value untyped: the server reads it as the base type.
        ({"code": "abcdef"}, '("code" = %s)', ["abcdef"]),
        ({"code": {"$in": ["a", "b"]}}, '("code" = ANY(%s))', [["a", "b"]]),
        ({"code": {"$like": "a%"}}, '("code" LIKE %s)', ["a%"]),
        ({"labels": "{abc}"}, '("labels" = %s)', ["{abc}"]),
        ({"rank": 3}, '("rank" = %s)', ["3"]),
        ({"rank": "3"}, '("rank" = %s)', ["3"]),
        ({"ok": True}, '("ok" = CAST(%s AS yes_no))', ["true"]),
        # Whole numbers written with a fraction are whole numbers.
        ({"id": Decimal("1.0")}, '("id" = CAST(%s AS integer))', ["1"]),
        (
            {"id": {"$in": [Decimal("2.00"), 3.0, Decimal("1E+2")]}},
            '("id" = ANY(CAST(%s AS integer[])))',
            [["2", "3", "100"]],
        ),
        ({"small": -32768}, '("small" = CAST(%s AS smallint))', ["-32768"]),
        ({"big": 9223372036854775807}, '("big" = CAST(%s AS bigint))', ["9223372036854775807"]),
        # As in MongoDB: in nothing matches no row, in none of nothing every row.
        ({"id": {"$in": []}}, "FALSE", []),
        ({"id": {"$nin": []}}, "TRUE", []),
        # Field-level $not keeps the rows where the column is NULL, as the top-level one does.
        ({"id": {"$not": {"$eq": 1}}}, '(("id" = CAST(%s AS integer)) IS NOT TRUE)', ["1"]),
        (
            {"id": {"$not": {"$gt": 1, "$lt": 5}}},
            '((("id" > CAST(%s AS integer)) AND ("id" < CAST(%s AS integer))) IS NOT TRUE)',
            ["1", "5"],
        ),
        ({"id": {"$gt": 0, "$not": {"$in": []}}}, '(("id" > CAST(%s AS integer)) AND (FALSE IS NOT TRUE))', ["0"]),
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
        doc, make_table(("price", "numeric", "numeric"), ("n", "numeric", "numeric"), ("title", "text", "text"))
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

COLUMN_LIST = (
    "columns: id, title, status, published_at, created_at, active, price, score, ref, Author Name, "
    'we"ird, embedding, flags, mask, code, small, big, rank, ok, labels'
)


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
        ({"id": {"$or": [{"id": 1}]}}, ["$or cannot be used inside column 'id'"]),
        ({"id": {"$not": 1}}, ["$not on column 'id'", "object of operators", "got a number"]),
        ({"id": {"$not": [{"$eq": 1}]}}, ["$not on column 'id'", "got an array"]),
        ({"id": {"$not": {}}}, ["column 'id'", "empty operator object"]),
        ({"id": {"$not": {"id": 1}}}, ["column 'id'", "object of operators", "'id'"]),
        ({"id": {"$not": {"$ilike": "1%"}}}, ["$ilike in --where needs a text column"]),
        ({"id": {"x": 1}}, ["column 'id'", "object of operators", "'x'"]),
        ({"id": {"$gt": 1, "lt": 5}}, ["column 'id'", "'lt'"]),
        ({"id": {1: 2}}, ["column 'id'", "the key 1"]),
        ({"id": {}}, ["column 'id'", "empty operator object"]),
        ({"title": {"$eq": {"a": 1}}}, ["$eq on column 'title'", "string, number or boolean, got an object"]),
        ({"title": ["a", "b"]}, ["$eq on column 'title'", "got an array"]),
        ({"id": {"$in": 1}}, ["$in on column 'id'", "takes an array, got a number"]),
        ({"id": {"$nin": "1,2"}}, ["$nin on column 'id'", "takes an array, got a string"]),
        ({"id": {"$nin": [None]}}, ["$nin on column 'id'", "not null"]),
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
        ({"id": Decimal("1.000001")}, ["whole number, got a number: 1.000001"]),
        ({"id": Decimal("Infinity")}, ["whole number, got a number"]),
        ({"id": float("nan")}, ["whole number, got a number"]),
        ({"id": 2147483648}, ["column 'id' (integer)", "from -2147483648 to 2147483647, got a number: 2147483648"]),
        ({"id": {"$gt": -2147483649}}, ["$gt on column 'id'", "from -2147483648 to 2147483647"]),
        (
            {"small": {"$in": [1, 32768]}},
            ["$in on column 'small' (smallint)", "from -32768 to 32767, got a number: 32768"],
        ),
        (
            {"big": 99999999999999999999},
            ["column 'big' (bigint)", "to 9223372036854775807, got a number: 99999999999999999999"],
        ),
        ({"big": Decimal("1e999999")}, ["column 'big' (bigint)", "to 9223372036854775807, got a number: 1E+999999"]),
        ({"big": 1e19}, ["column 'big' (bigint)", "to 9223372036854775807"]),
        ({"flags": 101}, ["column 'flags' (bit(3))", "needs a string, got a number"]),
        ({"rank": True}, ["column 'rank' (app.positive_int)", "a number or a string, got a boolean"]),
        ({"ok": 1}, ["column 'ok' (yes_no)", "true, false or a string, got a number"]),
        ({"labels": {"$in": ["{a}"]}}, ["$in in --where needs a column that is not an array", "varying(3)[]"]),
        ({"labels": {"$nin": []}}, ["$nin in --where needs a column that is not an array"]),
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


def nested(levels: int) -> dict:
    """A filter levels objects and arrays deep: $not and $and in turn around {"id": 1}."""
    doc: dict = {"id": 1}
    depth, turn = 1, 0
    while depth < levels:
        turn += 1
        if turn % 2 and levels - depth >= 2:
            doc, depth = {"$and": [doc]}, depth + 2
        else:
            doc, depth = {"$not": doc}, depth + 1
    return doc


def nested_text(levels: int) -> str:
    """The JSON text of levels nested $not around {"id": 1} (json.dumps would itself recurse)."""
    return '{"$not": ' * (levels - 1) + '{"id": 1}' + "}" * (levels - 1)


TOO_DEEP = "--where is nested too deeply (more than 32 levels)"


@pytest.mark.parametrize("levels", [34, 300, 5000])
def test_compile_filter_rejects_deep_nesting_in_one_line(levels):
    # 300 levels are within Python's recursion limit for the compiler but not for psycopg's
    # as_string of the result: the depth is limited up front, not by catching RecursionError.
    with pytest.raises(BadFilter) as info:
        compile_filter(nested(levels), POSTS)
    assert str(info.value) == TOO_DEEP


@pytest.mark.parametrize("levels", [34, 300, 5000])
def test_parse_filter_rejects_deep_nesting_in_one_line(levels):
    with pytest.raises(BadFilter) as info:
        parse_filter(nested_text(levels))
    assert str(info.value) == TOO_DEEP


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000 + "]" * 100_000, '{"$and": ' + "[" * 100_000 + "]" * 100_000 + "}"],
    ids=["array", "inside-and"],
)
def test_parse_filter_rejects_nesting_beyond_the_json_parser(text):
    with pytest.raises(BadFilter) as info:
        parse_filter(text)
    assert str(info.value) == TOO_DEEP


def test_deep_nesting_counts_every_object_and_array():
    deep_values = {"id": {"$in": [1]}}  # the document, the operators and the array: 3 levels
    for _ in range(14):
        deep_values = {"$and": [deep_values]}  # 2 more each
    assert compile_filter(deep_values, POSTS)[0].as_string()  # 31 levels
    with pytest.raises(BadFilter, match="nested too deeply"):
        compile_filter({"$and": [{"$not": deep_values}]}, POSTS)  # 34 levels


def test_nesting_up_to_the_limit_compiles_and_composes():
    doc = nested(32)
    condition, params = compile_filter(doc, POSTS)
    assert condition.as_string().count("IS NOT TRUE") == json.dumps(doc).count("$not") > 5
    assert params == ["1"]
    assert parse_filter(json.dumps(doc)) == doc
    assert compile_filter(parse_filter(nested_text(32)), POSTS)[0].as_string().count("IS NOT TRUE") == 31


def test_a_dict_that_contains_itself_is_too_deep():
    doc: dict = {"id": 1}
    doc["$not"] = doc
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
        # MongoDB's empty lists: in nothing is no row, in none of nothing is every row (NULLs too).
        ('{"tag": {"$in": []}}', []),
        ('{"tag": {"$nin": []}}', [1, 2, 3, 4, 5]),
        ('{"$not": {"tag": {"$in": []}}}', [1, 2, 3, 4, 5]),
        ('{"$or": [{"tag": {"$in": []}}, {"id": 2}]}', [2]),
        # Field-level $not keeps the NULL rows, like the top-level $not.
        ('{"id": {"$not": {"$eq": 1}}}', [2, 3, 4, 5]),
        ('{"price": {"$not": {"$gt": 1, "$lt": 20}}}', [3, 4, 5]),
        ('{"tag": {"$not": {"$in": ["db"]}}}', [2, 3, 5]),
        ('{"code": {"$not": {"$eq": "abc"}}}', [2, 3, 4]),
        ('{"title": {"$not": {"$ilike": "%sql%"}}}', [2, 3, 5]),
        ('{"published_at": {"$not": {"$exists": true}}}', [4]),
        # Whole numbers written with a fraction match an integer column.
        ('{"id": 1.0}', [1]),
        ('{"id": {"$in": [2.00, 3, 4e0]}}', [2, 3, 4]),
        ('{"id": {"$gt": 4.000}}', [5]),
    ],
)
def test_live_filter(conn, posts, where, ids):
    assert matching_ids(conn, posts, where) == ids


@pytest.fixture(scope="module")
def typed(pg_server) -> tuple[str, Table]:
    """Columns whose type carries a modifier a cast would apply: bit(n), domains over modified
    types, an array of varchar(3); and the integer types at the ends of their ranges. Only read, so
    one database serves the module."""
    url = fresh_database(pg_server.get_uri())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE DOMAIN code3 AS varchar(3)")
        conn.execute("CREATE DOMAIN flags3 AS bit(3)")
        conn.execute("CREATE DOMAIN cents AS numeric(10,2)")
        conn.execute("CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0)")
        conn.execute(
            "CREATE TABLE typed (id int PRIMARY KEY, flags bit(3), mask varbit(3), code code3, dflags flags3,"
            " amount cents, rank positive_int, small int2, big int8, labels varchar(3)[], at timestamp(0),"
            " ch char(3))"
        )
        conn.execute(
            "INSERT INTO typed VALUES"
            " (1, '101', '101', 'abc', '101', 10.00, 1, 1, 1, '{abc}', '2025-01-01 00:00:00', 'abc'),"
            " (2, '100', '1', 'ab', '100', 9.99, 2, -32768, 9223372036854775807, '{ab,cd}',"
            "  '2025-01-02 00:00:00', 'ab'),"
            " (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
        )
    with Database.connect(url) as db:
        return url, db.find_table("typed")


@pytest.mark.parametrize(
    "where, ids",
    [
        # bit(3) is compared as varbit, not cast to a bare bit, which is bit(1).
        ('{"flags": "101"}', [1]),
        ('{"flags": "1010"}', []),
        ('{"flags": "1"}', []),
        ('{"flags": {"$in": ["101", "000"]}}', [1]),
        ('{"flags": {"$gt": "100"}}', [1]),
        ('{"flags": {"$ne": "101"}}', [2, 3]),
        ('{"mask": "1"}', [2]),
        ('{"mask": "1011"}', []),
        # A domain over varchar(3), bit(3) or numeric(10,2) is compared as its base type, unmodified.
        ('{"code": "abcdef"}', []),
        ('{"code": "abc"}', [1]),
        ('{"code": {"$in": ["abcdef", "ab"]}}', [2]),
        ('{"code": {"$ne": "abcdef"}}', [1, 2, 3]),
        ('{"code": {"$like": "ab%"}}', [1, 2]),
        ('{"code": {"$gt": "ab"}}', [1]),
        ('{"dflags": "1011"}', []),
        ('{"dflags": "101"}', [1]),
        ('{"dflags": {"$in": ["1011", "100"]}}', [2]),
        ('{"amount": 9.999}', []),
        ('{"amount": {"$gt": 9.999}}', [1]),
        ('{"amount": {"$in": [9.99, 10]}}', [1, 2]),
        # A domain over integer takes numbers; its CHECK does not apply to the compared value.
        ('{"rank": 2}', [2]),
        ('{"rank": {"$in": [2, 3]}}', [2]),
        ('{"rank": 0}', []),
        ('{"rank": {"$gt": -1}}', [1, 2]),
        # An array of varchar(3) is compared as varchar[].
        ('{"labels": "{abcdef}"}', []),
        ('{"labels": "{ab,cd}"}', [2]),
        # The modifiers that were already dropped stay dropped.
        ('{"at": "2025-01-01 00:00:00.4"}', []),
        ('{"at": "2025-01-01"}', [1]),
        ('{"ch": "abcd"}', []),
        ('{"ch": "ab"}', [2]),
        # The ends of each integer type's range are values it can hold.
        ('{"small": -32768}', [2]),
        ('{"small": {"$lte": 32767}}', [1, 2]),
        ('{"big": 9223372036854775807}', [2]),
        ('{"big": {"$lt": 2.0}}', [1]),
    ],
)
def test_live_filter_compares_in_the_unmodified_type(typed, where, ids):
    url, table = typed
    with psycopg.connect(url, autocommit=True) as conn:
        assert matching_ids(conn, table, where) == ids


@pytest.mark.parametrize(
    "where, fragment",
    [
        ('{"big": 99999999999999999999}', "to 9223372036854775807, got a number: 99999999999999999999"),
        ('{"big": {"$gt": -9223372036854775809}}', "from -9223372036854775808"),
        ('{"small": {"$in": [1, 40000]}}', "from -32768 to 32767, got a number: 40000"),
        ('{"id": 3e9}', "from -2147483648 to 2147483647, got a number: 3E+9"),
        ('{"id": 1.5}', "whole number, got a number: 1.5"),
    ],
)
def test_live_values_out_of_the_columns_range_are_refused(typed, where, fragment):
    with pytest.raises(BadFilter) as info:
        compile_filter(parse_filter(where), typed[1])
    assert fragment in str(info.value) and "\n" not in str(info.value)


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


# -- through the CLI -----------------------------------------------------------------------------


@pytest.fixture
def searchable(run_cli, url, conn, tmp_path) -> None:
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text, tag text, n bigint)")
    conn.execute("INSERT INTO notes VALUES (1, 'one', 'a', 1), (2, 'two', NULL, 2), (3, 'three', 'b', NULL)")
    path = tmp_path / "v.jsonl"
    path.write_text("".join(json.dumps({"id": i, "vector": [i, 0, 1]}) + "\n" for i in (1, 2, 3)))
    result = run_cli("import-vectors", "--url", url, "-t", "notes", "-c", "body", "-f", path, "--metric", "l2")
    assert result.exit_code == 0, result.output


def cli_search(run_cli, url, where):
    return run_cli("search", "--url", url, "-t", "notes", "--query-vector", "[1, 0, 1]", "--where", where, "--json")


@pytest.mark.parametrize(
    "where, fragment",
    [
        (json.dumps(nested(300)), TOO_DEEP),
        (nested_text(300), TOO_DEEP),
        ('{"n": 99999999999999999999}', "column 'n' (bigint) in --where needs a whole number from"),
        ('{"n": {"$in": [1, 1.5]}}', "needs a whole number, got a number: 1.5"),
    ],
    ids=["deep-and-not", "deep-not", "bigint-range", "fraction"],
)
def test_cli_refuses_in_one_line_before_any_query(run_cli, url, searchable, monkeypatch, where, fragment):
    def no_query(*args):
        raise AssertionError("a search query ran")

    monkeypatch.setattr("vectorize_core.search.ranked_rows", no_query)
    result = cli_search(run_cli, url, where)
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    "where, ids",
    [
        ('{"n": 1.0}', [1]),
        ('{"tag": {"$in": []}}', []),
        ('{"tag": {"$nin": []}}', [1, 2, 3]),
        ('{"tag": {"$not": {"$eq": "a"}}}', [2, 3]),
        ('{"n": {"$not": {"$gt": 1, "$lt": 5}}}', [1, 3]),
    ],
)
def test_cli_mongodb_semantics(run_cli, url, searchable, where, ids):
    result = cli_search(run_cli, url, where)
    assert result.exit_code == 0, result.output
    assert sorted(row["id"] for row in json.loads(result.stdout)) == ids
