"""What an encode run means, gathered and checked in one place.

The CLI, serve, the benchmarks, the tests and a user's own Python build an EncodeRequest the
same way; everything it can say wrong about itself, without a database, it says when built.
How a run is watched and stopped (progress, Ctrl-C, SIGTERM) is not part of what it means, and
goes to ``encode`` beside the request.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .errors import BadInput

ON_ERROR = ("stop", "skip")
INDEX_MODES = ("after", "now", "skip")


@dataclass(frozen=True)
class EncodeRequest:
    """Add, fill and index the vector column of ``table.column`` (several columns: joined by a
    space) with ``model``.

    ``on_error``: 'stop' on the first batch the encoder cannot encode; 'skip' leaves the rows it
    refuses pending and goes on. ``track_changes`` installs the trigger that re-queues a row when
    its text changes. ``adopt`` takes over a vector column vectorize did not make, keeping its
    vectors; ``reencode`` clears every vector of the column first. ``fulltext`` also adds a
    generated tsvector of the text (``language``: its configuration, default english).
    ``chunk`` splits each row's text into chunks of at most ``chunk_tokens`` tokens of the model
    (``chunk_overlap`` shared with the next), one vector each. ``shard=(i, n)`` encodes shard i
    of n (1-based). ``follow`` keeps polling for pending rows until stopped or idle for
    ``max_idle`` seconds. ``index``: 'after' builds the indexes once the fill is done, 'now'
    before it, 'skip' not at all; ``index_memory`` bytes for the build. ``requests_in_flight``:
    how many requests a model behind an HTTP endpoint (openai:) is sent at once (default: the
    encoder's, 16).
    """

    table: str
    column: tuple[str, ...]
    model: str = "minilm"
    schema: str | None = None
    vector_column: str | None = None
    metric: str | None = None
    prefix: str | None = None
    query_prefix: str | None = None
    backend: str | None = None
    dimension: int | None = None
    on_error: str = "stop"
    track_changes: bool = False
    prefix_columns: tuple[str, ...] = ()
    adopt: bool = False
    reencode: bool = False
    fulltext: bool = False
    language: str | None = None
    chunk: bool = False
    chunk_tokens: int | None = None
    chunk_overlap: int | None = None
    shard: tuple[int, int] | None = None
    batch_size: int | None = None
    requests_in_flight: int | None = None
    limit: int | None = None
    index: str = "after"
    index_memory: int | None = None
    dry_run: bool = False
    follow: bool = False
    max_idle: float | None = None

    def __post_init__(self):
        # A single column may be given as a string; lists become tuples so a request is hashable.
        columns = (self.column,) if isinstance(self.column, str) else tuple(self.column)
        object.__setattr__(self, "column", columns)
        object.__setattr__(self, "prefix_columns", tuple(self.prefix_columns or ()))
        if self.shard is not None:
            object.__setattr__(self, "shard", tuple(self.shard))
        self.check()

    @classmethod
    def of(cls, **options) -> EncodeRequest:
        """A request from keyword options, naming any option that is not one."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise BadInput(f"encode has no option {', '.join(map(repr, unknown))}")
        return cls(**options)

    @property
    def sources(self) -> tuple[str, ...]:
        return self.column

    def check(self) -> None:
        if not self.table:
            raise BadInput("give the table to encode (--table)")
        if not self.column:
            raise BadInput("give at least one --column")
        if len(set(self.column)) != len(self.column):
            raise BadInput(f"--column repeats a column: {', '.join(self.column)}")
        if self.adopt and self.reencode:
            raise BadInput("--adopt keeps the column's vectors and --reencode replaces them: choose one")
        if self.on_error not in ON_ERROR:
            raise BadInput(f"on_error must be 'stop' or 'skip', not {self.on_error!r}")
        if self.index not in INDEX_MODES:
            raise BadInput(f"index must be 'after', 'now' or 'skip', not {self.index!r}")
        if self.shard is not None:
            i, n = self.shard
            if not 1 <= i <= n:
                raise BadInput(f"--shard {i}/{n}: shards are numbered from 1 to {n} (1-based)")
        if self.max_idle is not None and not self.follow:
            raise BadInput("--max-idle goes with --follow.")
        for name, least in (
            ("batch_size", 1), ("limit", 0), ("dimension", 1), ("chunk_tokens", 8), ("requests_in_flight", 1)
        ):  # fmt: skip
            value = getattr(self, name)
            if value is not None and value < least:
                raise BadInput(f"--{name.replace('_', '-')} must be at least {least}, not {value}")
        if self.chunk_overlap is not None and self.chunk_overlap < 0:
            raise BadInput(f"--chunk-overlap must be at least 0, not {self.chunk_overlap}")
