"""--where filters: a small MongoDB-style language compiled to a parameterized SQL condition.

A filter is a JSON object. Each key is a column name or a logical operator; several keys at one
level must all hold:

    {"status": "published"}                        equality
    {"deleted_at": null}                           IS NULL
    {"rating": {"$gte": 3, "$lt": 5}}              operators on one column, all must hold
    {"tag": {"$in": ["a", "b"]}}                   one of ($nin: none of)
    {"title": {"$ilike": "%draft%"}}               LIKE / ILIKE pattern (text columns only)
    {"summary": {"$exists": true}}                 IS NOT NULL ($exists: false is IS NULL)
    {"rating": {"$not": {"$gt": 1, "$lt": 5}}}     the rows the column's operators do not match
    {"$or": [{"a": 1}, {"b": 2}]}                  any of ($and: all of)
    {"$not": {"status": "draft"}}                  the rows the inner filter does not match

Column operators: $eq $ne $gt $gte $lt $lte $in $nin $like $ilike $exists $not. As in MongoDB,
{"$in": []} matches no row and {"$nin": []} every row.

Values are JSON scalars of the column's kind: true/false for boolean columns, numbers for numeric
ones and strings for all others (text, dates, timestamps, uuids, bit strings, ...); the server reads
each string with the column type's own input syntax. A domain over a boolean or numeric type takes
true/false or a number as well as a string. null is allowed only as a plain value, with $eq or with
$ne. What Python can tell a column cannot hold is refused here: an integer column (int2, int4,
int8) takes whole numbers within its range, and 1.0 or 2.00 is the whole number 1 or 2.

Each value is compared in the column's type without its modifier, so that nothing is truncated or
rounded to fit: 'abcdef' does not equal the 'abc' of a varchar(3), nor 9.999 the 10.00 of a
numeric(10,2). A bit(n) or varbit(n) column is compared as varbit, since a bare bit means bit(1).
A domain of a category whose types take modifiers (string, numeric, bit string, date/time,
interval), whose base type only the catalog knows and may carry a modifier of its own (a domain over
varchar(3) or bit(3)), and an array get no cast at all: the server reads the value as the column's
base type, without modifier (psycopg sends a str parameter as of unknown type; a driver that types
it as text would need a cast added). Such a value is not checked against the domain's constraints,
and whether it suits an integer domain (a whole number within range) is the server's to tell.
Domains of other categories (over boolean, uuid, ...) are cast to as named, their CHECK included. An
array column takes an array literal string with $eq and the like, not $in or $nin.

Negations include rows where the column is NULL, since NULL equals nothing: $ne is IS DISTINCT
FROM, and $nin and both forms of $not keep every row the positive form does not match.

A document may be nested at most 32 (MAX_DEPTH) objects and arrays deep, the document itself
included, so that neither this compiler nor psycopg's composition of the SQL runs out of stack.

Column names always become quoted identifiers and values always become parameters; nothing from the
document is formatted into the SQL text. Every mistake is reported as BadFilter before a query runs.
"""

from __future__ import annotations

import json
from decimal import Decimal

from psycopg import sql

from .db import Column, Table
from .errors import BadInput


class BadFilter(BadInput):
    """The --where document is not a valid filter."""


BINARY_OPERATORS = {
    "$eq": "=",
    "$ne": "IS DISTINCT FROM",
    "$gt": ">",
    "$gte": ">=",
    "$lt": "<",
    "$lte": "<=",
    "$like": "LIKE",
    "$ilike": "ILIKE",
}
LIST_OPERATORS = {"$in", "$nin"}
PATTERN_OPERATORS = {"$like", "$ilike"}
COLUMN_OPERATORS = [*BINARY_OPERATORS, "$in", "$nin", "$exists", "$not"]
LOGICAL_OPERATORS = ["$and", "$or", "$not"]
# Objects and arrays, the document itself included: deep enough for any real filter, shallow enough
# that compiling it and composing its SQL (both recursive) stay far from Python's recursion limit.
MAX_DEPTH = 32

BOOLEAN_TYPES = {"bool"}
INTEGER_RANGES = {
    "int2": (-(2**15), 2**15 - 1),
    "int4": (-(2**31), 2**31 - 1),
    "int8": (-(2**63), 2**63 - 1),
}
INTEGER_TYPES = set(INTEGER_RANGES)
NUMBER_TYPES = INTEGER_TYPES | {"numeric", "float4", "float8"}
# Built-in types whose modifier a cast would apply by truncating or rounding (varchar(3), char(n),
# numeric(10,2), timestamp(0), interval year, ...): values are cast to the type without it. bit
# becomes varbit, which compares with it bit for bit, because a bare bit means bit(1).
UNMODIFIED_TYPES = {
    "varchar": "varchar",
    "bpchar": "bpchar",
    "numeric": "numeric",
    "bit": "varbit",
    "varbit": "varbit",
    "time": "time",
    "timetz": "timetz",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "interval": "interval",
}
# pg_type.typcategory of the types that can carry a modifier (string, numeric, bit string,
# date/time, timespan) and of arrays, whose element type can.
MODIFIER_CATEGORIES = {"S", "N", "V", "D", "T", "A"}
# Built-in types of those categories without a modifier: casting to them as named is exact.
PLAIN_TYPES = {"text", "name", "char", "int2", "int4", "int8", "float4", "float8", "money", "oid", "date"}


def read_json(text: str):
    """JSON as filters read it: numbers with a fraction as Decimal (every digit kept), no NaN or
    Infinity, no key twice in an object. ValueError (or RecursionError) otherwise."""
    return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)


def parse_filter(text: str) -> dict:
    """The JSON text of --where as a dict (not yet checked against any table)."""
    try:
        doc = read_json(text)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:
        raise BadFilter(f"--where is not valid JSON: {_one_line(exc)}") from None
    if not isinstance(doc, dict):
        raise BadFilter(f'--where is not valid JSON: expected an object like {{"column": value}}, got {_kind(doc)}')
    _check_depth(doc)
    return doc


def compile_filter(doc: dict, table: Table, alias: str | None = None) -> tuple[sql.Composable, list]:
    """A SQL boolean expression for doc over table's columns (qualified by alias) and its parameters."""
    if not isinstance(doc, dict):
        raise BadFilter(f"--where must be a JSON object, got {_kind(doc)}")
    _check_depth(doc)  # doc may come from code rather than parse_filter
    compiler = _Compiler(table, alias)
    return compiler.document(doc), compiler.params


class _Compiler:
    def __init__(self, table: Table, alias: str | None):
        self.table = table
        self.alias = alias
        self.params: list = []

    def document(self, doc: dict) -> sql.Composable:
        if not doc:
            return sql.SQL("TRUE")
        return _all_of([self.entry(key, value) for key, value in doc.items()])

    def entry(self, key, value) -> sql.Composable:
        if not isinstance(key, str):
            raise BadFilter(f"--where keys must be strings, got {key!r}")
        if key in LOGICAL_OPERATORS:
            return self.logical(key, value)
        if key in COLUMN_OPERATORS:
            raise BadFilter(f'{key} in --where must be inside a column\'s object, like {{"column": {{"{key}": ...}}}}')
        if key.startswith("$"):
            raise _unknown_operator(key)
        return self.column_condition(self.column(key), value)

    def logical(self, op: str, value) -> sql.Composable:
        if op == "$not":
            if not isinstance(value, dict):
                raise BadFilter(f"$not in --where takes one filter object, got {_kind(value)}")
            return _is_not_true(self.document(value))
        if not isinstance(value, list) or not value:
            raise BadFilter(f"{op} in --where takes a non-empty array of filter objects, got {_kind(value)}")
        parts = []
        for doc in value:
            if not isinstance(doc, dict):
                raise BadFilter(f"{op} in --where takes filter objects, got {_kind(doc)} in its array")
            parts.append(self.document(doc))
        return _all_of(parts) if op == "$and" else _any_of(parts)

    def column(self, name: str) -> Column:
        column = self.table.columns.get(name)
        if column is None:
            raise BadFilter(f"unknown column {name!r} in --where; columns: {', '.join(self.table.columns)}")
        if column.is_vector:
            raise BadFilter(f"cannot filter on vector column {name!r} in --where")
        return column

    def column_condition(self, column: Column, value) -> sql.Composable:
        if not isinstance(value, dict):
            return self.operator(column, "$eq", value)
        if not value:
            raise BadFilter(f"column {column.name!r} in --where has an empty operator object")
        return _all_of([self.operator(column, op, arg) for op, arg in value.items()])

    def operator(self, column: Column, op, arg) -> sql.Composable:
        if not isinstance(op, str) or not op.startswith("$"):
            raise BadFilter(
                f"column {column.name!r} in --where takes a value or an object of operators such as "
                f'{{"$gt": ...}}, not the key {op!r}'
            )
        if op == "$not":
            return self.negation(column, arg)
        if op in LOGICAL_OPERATORS:
            raise BadFilter(f"{op} cannot be used inside column {column.name!r} in --where; put it at the top level")
        if op not in COLUMN_OPERATORS:
            raise _unknown_operator(op)
        if op == "$exists":
            return self.exists(column, arg)
        if op in LIST_OPERATORS:
            return self.membership(column, op, arg)
        if arg is None and op in ("$eq", "$ne"):
            return sql.SQL("({} IS NULL)" if op == "$eq" else "({} IS NOT NULL)").format(self.ident(column))
        if op in PATTERN_OPERATORS and not column.is_text:
            raise BadFilter(f"{op} in --where needs a text column; {column.name!r} is {column.type_sql}")
        return sql.SQL("({} {} {})").format(
            self.ident(column), sql.SQL(BINARY_OPERATORS[op]), self.parameter(column, op, arg)
        )

    def negation(self, column: Column, arg) -> sql.Composable:
        # MongoDB's field-level $not takes operators, not a plain value ($ne is for that).
        if not isinstance(arg, dict):
            raise BadFilter(
                f"$not on column {column.name!r} in --where takes an object of operators such as "
                f'{{"$gt": 1}}, got {_kind(arg)}'
            )
        return _is_not_true(self.column_condition(column, arg))

    def exists(self, column: Column, arg) -> sql.Composable:
        if not isinstance(arg, bool):
            raise BadFilter(f"$exists on column {column.name!r} in --where takes true or false, got {_kind(arg)}")
        return sql.SQL("({} IS NOT NULL)" if arg else "({} IS NULL)").format(self.ident(column))

    def membership(self, column: Column, op: str, arg) -> sql.Composable:
        if not isinstance(arg, list):
            raise BadFilter(f"{op} on column {column.name!r} in --where takes an array, got {_kind(arg)}")
        if column.category == "A" or column.typname.startswith("_"):
            # = ANY() would need an array of arrays, which PostgreSQL does not have.
            raise BadFilter(
                f"{op} in --where needs a column that is not an array; {column.name!r} is {column.type_sql}"
            )
        values = [_value_text(column, op, item) for item in arg]
        if not values:
            # As in MongoDB: in no value is no row, and in none of no values is every row, NULLs included.
            return sql.SQL("FALSE" if op == "$in" else "TRUE")
        self.params.append(values)
        cast = _cast_type(column)
        array = sql.Placeholder() if cast is None else sql.SQL("CAST({} AS {}[])").format(sql.Placeholder(), cast)
        condition = sql.SQL("({} = ANY({}))").format(self.ident(column), array)
        return condition if op == "$in" else _is_not_true(condition)

    def parameter(self, column: Column, op: str, value) -> sql.Composable:
        self.params.append(_value_text(column, op, value))
        cast = _cast_type(column)
        return sql.Placeholder() if cast is None else sql.SQL("CAST({} AS {})").format(sql.Placeholder(), cast)

    def ident(self, column: Column) -> sql.Identifier:
        return sql.Identifier(self.alias, column.name) if self.alias else sql.Identifier(column.name)


def _check_depth(doc) -> None:
    """Refuse a document nested more than MAX_DEPTH objects and arrays deep."""
    # A loop, not a recursion: the check must not itself run out of stack, and it also ends on a
    # dict that contains itself, which only code (not JSON) can build.
    pending = [(doc, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise _too_deep()
        children = value.values() if isinstance(value, dict) else value
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def _value_text(column: Column, op: str, value) -> str:
    """The text sent for value, once it is known to be one the column's type can hold."""
    if value is None:
        raise BadFilter(
            f"{op} on column {column.name!r} in --where needs a value, not null "
            '(use {"$exists": false} to find NULLs)'
        )
    if not isinstance(value, (str, int, float, Decimal)):
        raise BadFilter(
            f"{op} on column {column.name!r} in --where takes a string, number or boolean, got {_kind(value)}"
        )
    if column.typname in INTEGER_RANGES:
        return str(_integer(column, op, value))
    expected, ok = _expected_kind(column, value)
    if not ok:
        raise _wrong_value(column, op, expected, value)
    return _as_text(value)


def _expected_kind(column: Column, value) -> tuple[str, bool]:
    """What the column takes, in words, and whether value is of that kind."""
    is_number = isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)
    if column.typname in BOOLEAN_TYPES:
        return "true or false", isinstance(value, bool)
    if column.typname in NUMBER_TYPES:
        return "a number", is_number
    # Domains go by their base type's category, which the catalog gives them; strings stay allowed
    # for the built-in types of the category that read them (money, oid, regclass, ...).
    if column.category == "B":
        return "true, false or a string", isinstance(value, (bool, str))
    if column.category == "N":
        return "a number or a string", is_number or isinstance(value, str)
    return "a string", isinstance(value, str)


def _integer(column: Column, op: str, value) -> int:
    """value as a whole number within the range of the column's integer type."""
    # 1.0 and 2.00 are whole numbers, as in MongoDB, but the integer types' input syntax refuses
    # them, so they are sent as 1 and 2. The range is checked before int() so that 1e999999 never
    # becomes a million-digit integer.
    low, high = INTEGER_RANGES[column.typname]
    whole = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float):
        whole = value.is_integer()
    elif isinstance(value, Decimal):
        whole = value.is_finite() and value == value.to_integral_value()
    if not whole:
        raise _wrong_value(column, op, "a whole number", value)
    if not low <= value <= high:
        raise _wrong_value(column, op, f"a whole number from {low} to {high}", value)
    return int(value)


def _wrong_value(column: Column, op: str, expected: str, value) -> BadFilter:
    return BadFilter(
        f"{op} on column {column.name!r} ({column.type_sql}) in --where needs {expected}, "
        f"got {_kind(value)}: {_show(value)}"
    )


def _cast_type(column: Column) -> sql.SQL | None:
    """The type a value is cast to, or None to leave the value untyped."""
    # Casting to varchar(3), char(n), numeric(10,2), timestamp(0) or bit(3) silently truncates or
    # rounds the value, so 'abcdef' would equal 'abc' and 9.999 would equal 10.00: compare against
    # the type without its modifier instead.
    if column.typname in UNMODIFIED_TYPES:
        return sql.SQL(UNMODIFIED_TYPES[column.typname])
    # A domain over such a type casts the same way and only its base type avoids that, but only the
    # catalog knows it (and an array's element type). An untyped parameter compared with the
    # column is read by the server as that base type, without modifier.
    if column.category in MODIFIER_CATEGORIES and column.typname not in PLAIN_TYPES:
        return None
    return sql.SQL(column.type_sql)  # format_type() text from the catalog, not from the user


def _as_text(value) -> str:
    # Sent as text and parsed by the column type's input function, so every type is read the same
    # way whatever Python type json produced.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _all_of(parts: list[sql.Composable]) -> sql.Composable:
    return parts[0] if len(parts) == 1 else sql.SQL("({})").format(sql.SQL(" AND ").join(parts))


def _any_of(parts: list[sql.Composable]) -> sql.Composable:
    return parts[0] if len(parts) == 1 else sql.SQL("({})").format(sql.SQL(" OR ").join(parts))


def _is_not_true(condition: sql.Composable) -> sql.Composable:
    # Not NOT (...): NOT NULL is NULL, which would drop the rows where a column is NULL.
    return sql.SQL("({} IS NOT TRUE)").format(condition)


def _too_deep() -> BadFilter:
    return BadFilter(f"--where is nested too deeply (more than {MAX_DEPTH} levels)")


def _unknown_operator(op: str) -> BadFilter:
    known = ", ".join(dict.fromkeys(COLUMN_OPERATORS + LOGICAL_OPERATORS))
    return BadFilter(f"unknown operator {op!r} in --where; operators: {known}")


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float, Decimal)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _show(value) -> str:
    """A scalar as it was written in JSON."""
    return str(value) if isinstance(value, Decimal) else json.dumps(value)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    doc = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"duplicate key {key!r}")
        doc[key] = value
    return doc


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
