"""--where filters: a small MongoDB-style language compiled to a parameterized SQL condition.

A filter is a JSON object. Each key is a column name or a logical operator; several keys at one
level must all hold:

    {"status": "published"}                        equality
    {"deleted_at": null}                           IS NULL
    {"rating": {"$gte": 3, "$lt": 5}}              operators on one column, all must hold
    {"tag": {"$in": ["a", "b"]}}                   one of ($nin: none of)
    {"title": {"$ilike": "%draft%"}}               LIKE / ILIKE pattern (text columns only)
    {"summary": {"$exists": true}}                 IS NOT NULL ($exists: false is IS NULL)
    {"$or": [{"a": 1}, {"b": 2}]}                  any of ($and: all of)
    {"$not": {"status": "draft"}}                  the rows the inner filter does not match

Column operators: $eq $ne $gt $gte $lt $lte $in $nin $like $ilike $exists.

Values are JSON scalars of the column's kind: true/false for boolean columns, numbers for numeric
ones (whole numbers for integer ones) and strings for all others (text, dates, timestamps, uuids,
...); the server reads each string with the column type's own input syntax. null is allowed only as
a plain value, with $eq or with $ne.

Negations include rows where the column is NULL, since NULL equals nothing: $ne is IS DISTINCT
FROM, and $nin and $not keep every row the positive form does not match.

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
COLUMN_OPERATORS = [*BINARY_OPERATORS, "$in", "$nin", "$exists"]
LOGICAL_OPERATORS = ["$and", "$or", "$not"]

BOOLEAN_TYPES = {"bool"}
INTEGER_TYPES = {"int2", "int4", "int8"}
NUMBER_TYPES = INTEGER_TYPES | {"numeric", "float4", "float8"}
# Types whose format_type() text carries a modifier, e.g. character varying(20) or numeric(10,2).
TYPES_WITH_MODIFIERS = {
    "varchar",
    "bpchar",
    "numeric",
    "bit",
    "varbit",
    "time",
    "timetz",
    "timestamp",
    "timestamptz",
    "interval",
}


def parse_filter(text: str) -> dict:
    """The JSON text of --where as a dict (not yet checked against any table)."""
    try:
        doc = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:
        raise BadFilter(f"--where is not valid JSON: {_one_line(exc)}") from None
    if not isinstance(doc, dict):
        raise BadFilter(f'--where is not valid JSON: expected an object like {{"column": value}}, got {_kind(doc)}')
    return doc


def compile_filter(doc: dict, table: Table, alias: str | None = None) -> tuple[sql.Composable, list]:
    """A SQL boolean expression for doc over table's columns (qualified by alias) and its parameters."""
    if not isinstance(doc, dict):
        raise BadFilter(f"--where must be a JSON object, got {_kind(doc)}")
    compiler = _Compiler(table, alias)
    try:
        condition = compiler.document(doc)
    except RecursionError:
        raise BadFilter("--where is nested too deeply") from None
    return condition, compiler.params


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
        placeholder = self.parameter(column, op, arg)
        return sql.SQL("({} {} CAST({} AS {}))").format(
            self.ident(column), sql.SQL(BINARY_OPERATORS[op]), placeholder, _cast_type(column)
        )

    def exists(self, column: Column, arg) -> sql.Composable:
        if not isinstance(arg, bool):
            raise BadFilter(f"$exists on column {column.name!r} in --where takes true or false, got {_kind(arg)}")
        return sql.SQL("({} IS NOT NULL)" if arg else "({} IS NULL)").format(self.ident(column))

    def membership(self, column: Column, op: str, arg) -> sql.Composable:
        if not isinstance(arg, list) or not arg:
            raise BadFilter(f"{op} on column {column.name!r} in --where takes a non-empty array, got {_kind(arg)}")
        for item in arg:
            _check_value(column, op, item)
        self.params.append([_as_text(item) for item in arg])
        condition = sql.SQL("({} = ANY(CAST({} AS {}[])))").format(
            self.ident(column), sql.Placeholder(), _cast_type(column)
        )
        return condition if op == "$in" else _is_not_true(condition)

    def parameter(self, column: Column, op: str, value) -> sql.Placeholder:
        _check_value(column, op, value)
        self.params.append(_as_text(value))
        return sql.Placeholder()

    def ident(self, column: Column) -> sql.Identifier:
        return sql.Identifier(self.alias, column.name) if self.alias else sql.Identifier(column.name)


def _check_value(column: Column, op: str, value) -> None:
    """Refuse a value whose JSON kind cannot be a value of the column's type."""
    if value is None:
        raise BadFilter(
            f"{op} on column {column.name!r} in --where needs a value, not null "
            '(use {"$exists": false} to find NULLs)'
        )
    if not isinstance(value, (str, int, float, Decimal)):
        raise BadFilter(
            f"{op} on column {column.name!r} in --where takes a string, number or boolean, got {_kind(value)}"
        )
    if column.typname in BOOLEAN_TYPES:
        expected, ok = "true or false", isinstance(value, bool)
    elif column.typname in INTEGER_TYPES:
        expected, ok = "a whole number", isinstance(value, int) and not isinstance(value, bool)
    elif column.typname in NUMBER_TYPES:
        expected, ok = "a number", isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)
    else:
        expected, ok = "a string", isinstance(value, str)
    if not ok:
        raise BadFilter(
            f"{op} on column {column.name!r} ({column.type_sql}) in --where needs {expected}, "
            f"got {_kind(value)}: {_show(value)}"
        )


def _cast_type(column: Column) -> sql.SQL:
    # Casting to varchar(3), char(n), numeric(10,2) or timestamp(0) silently truncates or rounds
    # the value, so 'abcdef' would equal 'abc' and 9.999 would equal 10.00: compare against the
    # type without its modifier instead.
    if column.typname in TYPES_WITH_MODIFIERS:
        return sql.SQL(column.typname)
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


def _unknown_operator(op: str) -> BadFilter:
    known = ", ".join(COLUMN_OPERATORS + LOGICAL_OPERATORS)
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
