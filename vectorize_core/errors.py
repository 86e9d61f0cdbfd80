"""The tool's own exceptions.

The core raises only these (or lets a bug surface as itself); the CLI turns them into one line on
stderr and an exit code in a single place. ``exit_code`` is 2 for bad usage or bad input (the
database was not changed) and 1 for runtime failures.
"""

from __future__ import annotations


class VectorizeError(Exception):
    """Base class: a failure the user can act on, shown as one line."""

    exit_code = 1


class BadInput(VectorizeError):
    """The request cannot be carried out as given; nothing was changed."""

    exit_code = 2


class NoSuchTable(BadInput):
    pass


class NoSuchColumn(BadInput):
    pass


class NotTextColumn(BadInput):
    pass


class NoPrimaryKey(BadInput):
    pass


class UnknownModel(BadInput):
    pass


class DimensionMismatch(BadInput):
    pass


class ModelMismatch(BadInput):
    """The vector column was filled by another encoder, metric or source."""


class NoVectorizedColumn(BadInput):
    pass


class AmbiguousVectorColumn(BadInput):
    pass


class UnsupportedByEngine(BadInput):
    """The database engine (or its version) cannot do what was asked."""


class DatabaseUnavailable(VectorizeError):
    """Could not reach the database, or lost it for longer than the retry budget."""


class DatabaseError(VectorizeError):
    """The database refused an operation (permissions, constraints, ...)."""

    def __init__(self, message: str, sqlstate: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate


class EncoderError(VectorizeError):
    """The encoder failed or returned something that is not a batch of vectors."""


class Interrupted(VectorizeError):
    """The user stopped a run; what was written stays written."""

    exit_code = 130
