"""The catalog read once: what a command needs to know of the database, in three statements.

A snapshot holds the search path and the installed extensions, every relation of the user's
schemas (with the table an index is on and the comment a table carries), every vectorized column,
and the columns, generated expressions and primary keys of the tables a command works on (those
it names and every vectorized one). Tables, names and columns are then resolved from memory: a
statement repeated per page or per request is a cost the user pays on every call.

The snapshot is the Database's (db.catalog()); the core forgets it after its own DDL, and serve
keeps it, checking per request that the column it searches is still the one it read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from psycopg import sql

from .errors import NoPrimaryKey, NoSuchColumn, NoSuchTable

METADATA_KEY = "vectorize"
# Only for Column objects built by hand; columns read from the catalog go by pg_type.typcategory.
TEXT_TYPES = {"text", "varchar", "bpchar", "citext", "name"}


@dataclass(frozen=True)
class Column:
    name: str
    attnum: int
    typname: str  # pg_type.typname: 'text', 'vector', 'int8', ...
    type_sql: str  # format_type(): 'character varying(20)', 'vector(384)'
    typmod: int
    comment: str | None
    category: str = ""  # pg_type.typcategory ('S' = string; domains carry their base type's)
    generated: str = ""  # '' (ordinary), 'stored' or 'virtual'
    expression: str | None = None  # the generation expression of a generated column

    @property
    def is_text(self) -> bool:
        # The string category covers text, varchar, char(n), name, citext and any domain over
        # them, whatever they are called: the catalog decides, not a list of names.
        if self.category:
            return self.category == "S"
        return self.typname in TEXT_TYPES

    @property
    def is_vector(self) -> bool:
        return self.typname == "vector"

    @property
    def metadata(self) -> dict | None:
        """The vectorize record kept in the column comment, if this column has one."""
        if not self.comment:
            return None
        try:
            doc = json.loads(self.comment)
        except ValueError:
            return None
        if isinstance(doc, dict) and isinstance(doc.get(METADATA_KEY), dict):
            return doc[METADATA_KEY]
        return None


@dataclass(frozen=True)
class Relation:
    """A table by its schema and name: the user's, or one the tool makes beside it."""

    schema: str
    name: str

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Table(Relation):
    oid: int
    columns: dict[str, Column]
    primary_key: tuple[str, ...]

    def column(self, name: str) -> Column:
        try:
            return self.columns[name]
        except KeyError:
            raise NoSuchColumn(f"table {self.display} has no column {name!r}") from None


def split_table_name(table: str, schema: str | None) -> tuple[str | None, str]:
    """'name' or 'schema.name' (each part exactly as written); --schema may be given instead."""
    if schema is not None:
        return schema, table
    if "." in table:
        left, right = table.split(".", 1)
        return left, right
    return None, table


# Schemas no user table lives in.
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", "crdb_internal", "pg_extension")

RELATIONS = (
    "SELECT s.path, s.extensions, r.schema_name, r.name, r.kind, r.oid, r.comment, r.on_table"
    " FROM (SELECT current_schemas(false) AS path,"
    " ARRAY(SELECT CAST(extname AS text) FROM pg_catalog.pg_extension) AS extensions) AS s"
    " LEFT JOIN ("
    " SELECT CAST(n.nspname AS text) AS schema_name, CAST(c.relname AS text) AS name, CAST(c.relkind AS text) AS kind,"
    " c.oid AS oid, obj_description(c.oid, 'pg_class') AS comment, '' AS on_table"
    " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind NOT IN ('i', 'I') AND n.nspname <> ALL(%(system)s)"
    " UNION ALL SELECT CAST(schemaname AS text), CAST(indexname AS text), 'i', NULL, NULL, CAST(tablename AS text)"
    " FROM pg_catalog.pg_indexes WHERE schemaname <> ALL(%(system)s)"
    ") AS r ON true"
)

VECTORIZED = (
    "SELECT c.oid, n.nspname, c.relname, a.attname, col_description(c.oid, a.attnum)"
    " FROM pg_catalog.pg_attribute a"
    " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " JOIN pg_catalog.pg_type t ON t.oid = a.atttypid"
    " WHERE t.typname = 'vector' AND a.attnum > 0 AND NOT a.attisdropped"
    " AND c.relkind IN ('r', 'p') AND n.nspname <> ALL(%(system)s)"
    " ORDER BY n.nspname, c.relname, a.attnum"
)


def columns_query(dialect) -> sql.Composed:
    """The columns of the tables whose oids are given (%(oids)s): name, number, type, comment,
    category, generated kind and expression, and place in the primary key."""
    kind, expression, join = dialect.generated_columns_parts()
    return sql.SQL(
        "SELECT a.attrelid, a.attname, a.attnum, t.typname, format_type(a.atttypid, a.atttypmod), a.atttypmod,"
        " col_description(a.attrelid, a.attnum), t.typcategory::text, {kind}, {expression}, pk.position"
        " FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid {join}"
        " LEFT JOIN (SELECT c.oid, CAST(kcu.column_name AS text) AS column_name, kcu.ordinal_position AS position"
        " FROM information_schema.table_constraints tc JOIN information_schema.key_column_usage kcu"
        " ON kcu.constraint_schema = tc.constraint_schema AND kcu.constraint_name = tc.constraint_name"
        " AND kcu.table_name = tc.table_name"
        " JOIN pg_catalog.pg_namespace n ON n.nspname = tc.table_schema"
        " JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = tc.table_name"
        " WHERE tc.constraint_type = 'PRIMARY KEY' AND c.oid = ANY(%(oids)s)) AS pk"
        " ON pk.oid = a.attrelid AND pk.column_name = a.attname"
        " WHERE a.attrelid = ANY(%(oids)s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attrelid, a.attnum"
    ).format(kind=sql.SQL(kind), expression=sql.SQL(expression), join=sql.SQL(join))


@dataclass
class Entry:
    """A relation's name as the catalog holds it."""

    kind: str  # pg_class.relkind: 'r' a table, 'p' a partitioned one, 'i' an index, ...
    oid: int | None
    comment: str | None
    on: str  # the table an index is on ('' for other relations)


@dataclass
class Catalog:
    """What a command knows of the database, read in a few statements and answered from memory."""

    dialect: object
    search_path: list[str]
    extensions: set[str]
    relations: dict[tuple[str, str], Entry]
    vectorized_rows: list[tuple[int, str, str, str, str | None]]
    tables: dict[int, Table] = field(default_factory=dict)
    triggers: dict[int, dict[str, list[str]]] = field(default_factory=dict)

    @classmethod
    def read(cls, db) -> Catalog:
        params = {"system": list(SYSTEM_SCHEMAS)}
        rows = db.fetchall(RELATIONS, params)
        relations = {}
        for _, _, schema, name, kind, oid, comment, on in rows:
            if name is not None:
                relations[(schema, name)] = Entry(kind, oid, comment, on or "")
        path, extensions = (rows[0][0], rows[0][1]) if rows else ([], [])
        # A table made between the two statements (another encoder's contents or chunk table, a
        # moment later) is not in this snapshot: its columns are left out with it.
        vectorized = [tuple(r) for r in db.fetchall(VECTORIZED, params) if (r[1], r[2]) in relations]
        return cls(db.dialect, list(path or []), set(extensions or []), relations, vectorized)

    # -- names ------------------------------------------------------------------------------

    def relation_owner(self, schema: str, name: str) -> str | None:
        """Who holds a relation name in a schema: the table an index of that name is on, '' for a
        relation that is not an index, None when the name is free."""
        found = self.relations.get((schema, name))
        return None if found is None else found.on

    def relation_comment(self, schema: str, name: str) -> str | None:
        found = self.relations.get((schema, name))
        return None if found is None else found.comment

    def index_exists(self, table, index_name: str) -> bool:
        found = self.relations.get((table.schema, index_name))
        return found is not None and found.kind == "i" and found.on == table.name

    # -- tables -----------------------------------------------------------------------------

    def table_oid(self, table: str, schema: str | None = None) -> int:
        schema, name = split_table_name(table, schema)
        for candidate in [schema] if schema is not None else self.search_path:
            found = self.relations.get((candidate, name))
            if found is not None and found.kind in ("r", "p"):
                return found.oid
        shown = f"{schema}.{name}" if schema else name
        raise NoSuchTable(f"no table {shown!r} in the database")

    def find_table(self, db, table: str, schema: str | None = None) -> Table:
        oid = self.table_oid(table, schema)
        if oid not in self.tables:
            self.load(db, [oid, *(r[0] for r in self.vectorized_rows)])
        if oid not in self.tables:  # dropped since the snapshot was read
            shown = f"{schema}.{table}" if schema else table
            raise NoSuchTable(f"no table {shown!r} in the database")
        return self.tables[oid]

    def load(self, db, oids) -> None:
        """Read the columns of these tables (and of every vectorized one not read yet)."""
        wanted = sorted({o for o in oids if o not in self.tables})
        if not wanted:
            return
        by_table: dict[int, list] = {}
        for row in db.fetchall(columns_query(self.dialect), {"oids": wanted}):
            by_table.setdefault(row[0], []).append(row[1:])
        names = {r.oid: key for key, r in self.relations.items() if r.oid is not None}
        for oid, rows in by_table.items():
            if oid not in names:
                continue  # made after this snapshot was read
            schema, name = names[oid]
            columns = {r[0]: Column(*r[:7], r[7] or "", r[8]) for r in rows}
            key = tuple(r[0] for r in sorted((r for r in rows if r[9] is not None), key=lambda r: r[9]))
            if not key and self.dialect.name == "cockroachdb" and "rowid" in columns:
                key = ("rowid",)  # CockroachDB's hidden key of tables declared without one
            self.tables[oid] = Table(schema, name, oid, columns, key)

    def vectorized_columns(self) -> list[tuple[str, str, str, dict]]:
        """(schema, table, vector column, metadata) for every column vectorize has filled."""
        found = []
        for _oid, schema, table, column, comment in self.vectorized_rows:
            meta = Column(column, 0, "vector", "", 0, comment).metadata
            if meta is not None:
                found.append((schema, table, column, meta))
        return found


def require_key(table: Table) -> Table:
    if not table.primary_key:
        raise NoPrimaryKey(
            f"table {table.display} has no primary key; vectorize needs one to write vectors back "
            "to their rows (ALTER TABLE ... ADD PRIMARY KEY)"
        )
    return table
