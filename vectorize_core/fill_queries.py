"""The statements of a fill, built once per target: pending rows read a page at a time, the
conditional write of their vectors, their contents and chunks, and the upgrade of a column an
earlier version made."""

from __future__ import annotations

from psycopg import sql

from . import chunks, contents
from .chunks import chunk_table_of
from .target import VectorTarget


class FillQueries:
    """The statements of a fill, built once per target.

    Keys and source texts travel as text: each column's own output form, which its type reads
    back exactly (a real, a char(5), an enum, a domain, a user-defined type alike). Keys are
    compared in the key column's own type, so the primary key index finds the row; the source is
    compared as the text that was read, which is what the model saw.

    ``cut``: each source is read as its first ``cut`` characters (what the model can read of it,
    generously), so a long text costs neither transfer nor tokenizing; the write then compares
    that prefix. ``chunks``: whole texts are read (they are split), pages bounded by their bytes,
    and a row's chunks are written with its vector.
    """

    def __init__(self, target: VectorTarget, dialect, shard: tuple[int, int] | None = None, *, cut: int | None = None):
        t = target
        table = t.table
        self.cut = None if t.chunks else cut
        self.chunk_table = chunk_table_of(table, t.chunks) if t.chunks else None
        self.keys = [sql.Identifier(k) for k in table.primary_key]
        self.sources = [sql.Identifier(c) for c in t.sources]
        self.key_list = sql.SQL(", ").join(self.keys)
        self.vector = sql.Identifier(t.vector_column)
        key_types = [sql.SQL(table.columns[k].type_sql) for k in table.primary_key]
        t_keys = [sql.Identifier("t", k) for k in table.primary_key]
        # NULL, empty or only white space is no text: such rows are not sent to the model and
        # not pending, so a finished table stays finished.
        any_text = dialect.has_text(self.sources)
        any_value = sql.SQL(" OR ").join(sql.SQL("{} IS NOT NULL").format(c) for c in self.sources)
        self.pending = sql.SQL("{} IS NULL AND ({})").format(self.vector, any_text)
        pending = self.pending
        if shard is not None:
            pending = sql.SQL("{} AND {}").format(pending, dialect.shard_condition(self.keys, shard[1], shard[0] - 1))

        self.count = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table.ident, pending)
        self.count_all = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table.ident, self.pending)
        # What the pending rows would send a remote model (a dry run): rows and characters of
        # the text the model reads (cost_all: of every row with text, for a column still to make).
        every = sql.SQL("({})").format(any_text)
        if shard is not None:
            every = sql.SQL("{} AND {}").format(every, dialect.shard_condition(self.keys, shard[1], shard[0] - 1))
        characters = sql.SQL(
            "SELECT count(*), coalesce(sum(char_length(concat_ws(' ', {}))), 0) FROM {} AS t WHERE "
        ).format(sql.SQL(", ").join(self.read_text(s) for s in self.sources), table.ident)
        self.cost = characters + pending
        self.cost_all = characters + every
        self.blank = sql.SQL("SELECT count(*) FROM {} WHERE {} IS NULL AND ({}) AND NOT coalesce({}, false)").format(
            table.ident, self.vector, any_value, any_text
        )
        t_sources = [self.read_text(sql.Identifier("t", s)) for s in t.sources]
        as_text = [sql.SQL("CAST({} AS text)").format(c) for c in t_keys] + t_sources
        after = sql.SQL(" AND ({}) > ({})").format(
            sql.SQL(", ").join(t_keys),
            sql.SQL(", ").join(sql.SQL("CAST(%s AS {})").format(kt) for kt in key_types),
        )
        # Ordered by the key columns themselves (qualified: not the text columns of the same name).
        order = sql.SQL(" ORDER BY {} LIMIT %s").format(sql.SQL(", ").join(t_keys))
        if self.chunk_table is None:
            select = sql.SQL("SELECT {} FROM {} AS t WHERE {}").format(
                sql.SQL(", ").join(as_text), table.ident, pending
            )
            self.first_page = select + order
            self.next_page = select + after + order
        else:
            self.first_page = self.page_by_bytes(table, pending, t_keys, t.sources, order, sql.SQL(""))
            self.next_page = self.page_by_bytes(table, pending, t_keys, t.sources, order, after)
        self.by_key = sql.SQL("SELECT {} FROM {} AS t WHERE {}").format(
            sql.SQL(", ").join(sql.SQL("CAST({} AS text)").format(sql.Identifier("t", s)) for s in t.sources),
            table.ident,
            sql.SQL(" AND ").join(
                sql.SQL("{} = CAST(%s AS {})").format(k, kt) for k, kt in zip(t_keys, key_types, strict=True)
            ),
        )

        key_aliases = [sql.Identifier(f"k{i}") for i in range(len(self.keys))]
        source_aliases = [sql.Identifier(f"s{i}") for i in range(len(self.sources))]
        d = sql.Identifier("d")
        matches = [
            sql.SQL("t.{} = CAST({} AS {})").format(key, sql.Composed([d, sql.SQL("."), alias]), kt)
            for key, alias, kt in zip(self.keys, key_aliases, key_types, strict=True)
        ]
        # The conditional write: the text is still what was encoded, the vector still NULL.
        unchanged = [
            sql.SQL("{} IS NOT DISTINCT FROM {}").format(
                self.read_text(sql.SQL("t.{}").format(column)),
                sql.Composed([d, sql.SQL("."), alias]),
            )
            for column, alias in zip(self.sources, source_aliases, strict=True)
        ]
        # Every array parameter says its type: an all-NULL column of a page is otherwise an
        # untyped literal that unnest() cannot resolve.
        arrays = [sql.SQL("CAST(%b AS text[])")] * (len(self.keys) + len(self.sources))
        arrays += [sql.SQL("CAST(%b AS uuid[])"), dialect.vectors_param()]
        self.hash_column = sql.Identifier(t.hash["column"])
        # The rows that took their vector come back: their contents are added (and a chunked
        # column's chunks replaced) in the same transaction.
        self.write = sql.SQL(
            "UPDATE {table} AS t SET {vector} = {value}, {hash} = d.vectorize_hash"
            " FROM unnest({params}) AS d({aliases}, vectorize_hash, vec)"
            " WHERE {matches} AND t.{vector} IS NULL AND {unchanged} RETURNING {returned}"
        ).format(
            table=table.ident,
            vector=self.vector,
            value=dialect.write_vectors_value(sql.SQL("d.vec")),
            hash=self.hash_column,
            params=sql.SQL(", ").join(arrays),
            aliases=sql.SQL(", ").join(key_aliases + source_aliases),
            matches=sql.SQL(" AND ").join(matches),
            unchanged=sql.SQL(" AND ").join(unchanged),
            returned=sql.SQL(", ").join(sql.SQL("CAST({} AS text)").format(k) for k in t_keys),
        )
        self.contents = t.content_table
        won = chunks.keys_in(
            sql.Identifier("h"), table.primary_key, [c.type_sql for c in map(table.columns.get, table.primary_key)]
        )
        self.holders = contents.Holders(
            table.ident, t.hash["column"], t.vector_column, sql.SQL("h.{} IS NOT NULL").format(self.vector)
        )
        if self.chunk_table is not None:
            ct = self.chunk_table
            self.holders = contents.Holders(ct.ident, ct.hash, ct.vector)
            self.delete_chunks = chunks.delete_rows(ct)
            self.insert_chunks = chunks.insert_chunks(ct, table, dialect)
            self.delete_stale = chunks.delete_stale(ct, table, t.vector_column, t.hash["column"])
            self.requeue_unchunked = chunks.requeue_unchunked(ct, table, t.vector_column, t.hash["column"])
            self.add_openings = chunks.add_openings(ct, table, t.vector_column, t.hash["column"])
            # A row's own vector, by the hash of its whole text (another row with the same text).
            self.known_rows = sql.SQL(
                "SELECT h.vectorize_hash, v.{vector} FROM unnest(CAST(%b AS uuid[])) AS h(vectorize_hash)"
                " CROSS JOIN LATERAL (SELECT t.{vector} FROM {table} AS t WHERE t.{hash} = h.vectorize_hash"
                " AND t.{vector} IS NOT NULL LIMIT 1) AS v"
            ).format(vector=self.vector, table=table.ident, hash=self.hash_column)
        # Upgrading a column made before contents tables: rows with a vector and no hash, in key
        # order, keyed by their vector's hash (and their chunks by theirs) a batch at a time.
        unhashed = sql.SQL("SELECT {} FROM {} AS t WHERE t.{} IS NOT NULL AND t.{} IS NULL").format(
            sql.SQL(", ").join(sql.SQL("CAST({} AS text)").format(k) for k in t_keys),
            table.ident,
            self.vector,
            self.hash_column,
        )
        self.unhashed = unhashed + order
        self.unhashed_after = unhashed + after + order
        self.hash_rows = sql.SQL("UPDATE {} AS t SET {} = {} WHERE {} AND t.{} IS NULL").format(
            table.ident,
            self.hash_column,
            contents.vector_hash(sql.SQL("t.{}").format(self.vector)),
            chunks.keys_in(
                sql.Identifier("t"), table.primary_key, [table.columns[k].type_sql for k in table.primary_key]
            ),
            self.hash_column,
        )
        if self.chunk_table is not None:
            ct = self.chunk_table
            self.hash_chunks = sql.SQL(
                "UPDATE {chunks} AS c SET {hash} = {vector_hash}, {row_hash} = t.{row} FROM {table} AS t"
                " WHERE {match} AND {keys_in}"
            ).format(
                chunks=ct.ident,
                hash=sql.Identifier(ct.hash),
                vector_hash=contents.vector_hash(sql.SQL("c.{}").format(sql.Identifier(ct.vector))),
                row_hash=sql.Identifier(ct.row_hash),
                row=self.hash_column,
                table=table.ident,
                match=chunks.key_matches(ct, "t", "c"),
                keys_in=chunks.keys_in(sql.Identifier("c"), ct.keys, ct.key_types),
            )
        self.add_contents = contents.upsert(self.contents, self.holders, won)
        self.add_missing_contents = contents.upsert(
            self.contents, self.holders, contents.missing(self.contents, self.holders)
        )
        self.known = contents.known_vectors(self.contents)
        # Run before a fill, in order (see tidy()).
        self.tidy = [self.requeue_unchunked, self.delete_stale] if self.chunk_table is not None else []
        self.tidy += contents.sweep_statements(self.contents, self.holders)
        if t.prefix_columns:
            # A row whose prefix value changed holds its content under the new value too.
            self.tidy.append(
                contents.upsert(self.contents, self.holders, contents.missing(self.contents, self.holders))
            )

    def read_text(self, column: sql.Composable) -> sql.Composable:
        """A source column as the fill reads it: its text, or the first `cut` characters of it."""
        text = sql.SQL("CAST({} AS text)").format(column)
        if self.cut is None:
            return text
        return sql.SQL("left({}, {})").format(text, sql.Literal(int(self.cut)))

    def page_by_bytes(self, table, pending, t_keys, sources, order, after) -> sql.Composed:
        """Pending rows in key order, at most n (a parameter) and as many as fit `budget` bytes of
        text (the next parameter), the first row always; each row ends with how many rows the
        page could have held, so the reader knows whether the table has more."""
        originals = [sql.SQL("{} AS {}").format(k, sql.Identifier(f"o{i}")) for i, k in enumerate(t_keys)]
        texts = [
            sql.SQL("{} AS {}").format(sql.Identifier("t", s), sql.Identifier(f"x{i}")) for i, s in enumerate(sources)
        ]
        inner = sql.SQL("SELECT {} FROM {} AS t WHERE {}").format(
            sql.SQL(", ").join(originals + texts), table.ident, pending
        )
        inner = inner + after + order
        o = [sql.Identifier("p", f"o{i}") for i in range(len(t_keys))]
        x = [sql.Identifier("p", f"x{i}") for i in range(len(sources))]
        size = sql.SQL(" + ").join(sql.SQL("coalesce(octet_length(CAST({} AS text)), 0)").format(c) for c in x)
        keys_order = sql.SQL(", ").join(o)
        middle = sql.SQL(
            "SELECT {keys}, {texts}, {o}, sum({size}) OVER (ORDER BY {order}) AS vectorize_bytes,"
            " {size} AS vectorize_row_bytes, count(*) OVER () AS vectorize_rows FROM ({inner}) AS p"
        ).format(
            keys=sql.SQL(", ").join(
                sql.SQL("CAST({} AS text) AS {}").format(c, sql.Identifier(f"k{i}")) for i, c in enumerate(o)
            ),
            texts=sql.SQL(", ").join(
                sql.SQL("CAST({} AS text) AS {}").format(c, sql.Identifier(f"s{i}")) for i, c in enumerate(x)
            ),
            o=sql.SQL(", ").join(o),
            size=size,
            order=keys_order,
            inner=inner,
        )
        return sql.SQL(
            "SELECT {keys}, {texts}, m.vectorize_rows FROM ({middle}) AS m"
            " WHERE m.vectorize_bytes - m.vectorize_row_bytes < %s ORDER BY {order}"
        ).format(
            keys=sql.SQL(", ").join(sql.Identifier("m", f"k{i}") for i in range(len(t_keys))),
            texts=sql.SQL(", ").join(sql.Identifier("m", f"s{i}") for i in range(len(sources))),
            middle=middle,
            order=sql.SQL(", ").join(sql.Identifier("m", f"o{i}") for i in range(len(t_keys))),
        )


def key_columns(rows: list[tuple], nkeys: int) -> list[list]:
    """The keys of rows (or of keys), one list a key column: unnest()'s text arrays."""
    return [[row[i] for row in rows] for i in range(nkeys)]
