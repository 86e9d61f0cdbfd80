"""Names the tool derives for the objects it makes: vector columns, indexes, triggers, functions.

Each fits PostgreSQL's identifier limit (longer names are silently truncated by the server, and two
truncated names can meet), and keeps the readable part when it fits.
"""

from __future__ import annotations

import hashlib

# PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
MAX_IDENTIFIER_BYTES = 63


def short_hash(*parts: str) -> str:
    return hashlib.sha1("\x00".join(parts).encode()).hexdigest()[:8]


def fit_identifier(head: str, suffix: str = "", *, salt: str = "") -> str:
    """head + suffix when it fits 63 bytes (and no salt asks for a distinct name); otherwise
    head cut short + '_' + a hash of the whole name (and salt) + suffix."""
    name = head + suffix
    if not salt and len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = short_hash(name, salt)
    room = MAX_IDENTIFIER_BYTES - len(suffix.encode()) - len(digest) - 1
    cut = head.encode()[:room].decode(errors="ignore")
    return f"{cut}_{digest}{suffix}"


def default_vector_column(source: str) -> str:
    return fit_identifier(source, "_vector")


def index_name(table: str, vector_column: str, suffix: str = "idx", *, salt: str = "") -> str:
    """<table>_<vector column>_<suffix>; with a salt (the table's own name and schema) when the
    plain name is taken by another table's index."""
    return fit_identifier(f"{table}_{vector_column}", f"_{suffix}", salt=salt)


def trigger_name(vector_column: str) -> str:
    """Trigger names are per table, and so are vector column names: one trigger per column."""
    return fit_identifier(f"vectorize_{vector_column}")


def function_name(table: str, vector_column: str) -> str:
    """For engines whose trigger functions cannot take arguments: one per vector column, and
    function names are per schema, so the table is part of it."""
    return fit_identifier(f"vectorize_reset_{table}_{vector_column}", salt=f"{table}\x00{vector_column}")


def own_or_free(db, schema: str, head: str, suffix: str, *, salt: str, tag: str = "", on: str = "") -> str:
    """head + suffix for a relation the tool makes, unless another holds that name in the schema:
    then the name salted with `salt`. The name is its own when the relation there is the one it
    makes: a table whose comment is `tag`, or an index on the table `on`. So a rerun, and two
    encoders started together on a new column, pick the same names."""
    name = fit_identifier(head, suffix)
    owner = db.relation_owner(schema, name)
    if owner is None or (on and owner == on) or (tag and not on and db.relation_comment(schema, name) == tag):
        return name
    return fit_identifier(head, suffix, salt=salt)


def relation_tag(schema: str, table: str, vector_column: str, role: str) -> str:
    """The comment of a table the tool makes beside a user's table: whose, and what for."""
    import json

    return json.dumps({"vectorize_made": {"table": f"{schema}.{table}", "vector_column": vector_column, "role": role}})
