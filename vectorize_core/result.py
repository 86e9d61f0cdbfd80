"""What an encode run did: rows written, skipped and refused, repeats, indexes, timings; what
the CLI's summary and the API's answer are made of."""

from __future__ import annotations

from dataclasses import dataclass, field

from .target import VectorTarget


@dataclass
class EncodeResult:
    target: VectorTarget
    pending_before: int = 0
    written: int = 0
    skipped: int = 0  # rows changed (or filled by someone else) between read and write
    seconds: float = 0.0
    failed: int = 0  # rows the encoder could not encode (--on-error skip); they stay pending
    failed_keys: list[tuple] = field(default_factory=list)  # the first few of them
    failure: str = ""  # the first encoder error
    blank: int = 0  # rows whose text is empty or only whitespace: skipped, not sent to the model
    truncated: int = 0  # rows longer than the model's input limit
    chunks: int = 0  # chunks written (encode --chunk)
    repeats: int = 0  # texts (rows' and chunks') that took the vector of one encoded before: no model time
    unread_columns: int = 0  # rows whose later source columns the model never reached
    pending_after: int = 0  # rows pending when the run ended (changed, refused, or beyond --limit)
    busy_seconds: float = 0.0  # time spent filling (without --follow's idle polls)
    ended: str = ""  # why a --follow run ended
    column_created: bool = False
    index_created: bool = False
    index_note: str = ""  # why there is no vector index (too wide), or that the build outgrew its memory
    index_seconds: float = 0.0  # how long the index build took
    index_skipped: bool = False  # --index skip: build it later with `vectorize.py index`
    pending_elsewhere: int = 0  # --shard: rows other shards still have to do (index not built yet)
    tracking_installed: bool = False  # this run (re)installed the change-tracking trigger
    upgraded: int = 0  # rows of a column made by an earlier version keyed for its new index (no model)
    openings: int = 0  # rows of a column chunked by an earlier version given their openings (no model)
    cleared: int = 0  # --reencode: vectors cleared before the fill
    fulltext_added: bool = False  # --fulltext made the tsvector column this run
    statements: list[str] = field(default_factory=list)  # --dry-run only
    # --dry-run of a remote model: requests, texts, characters, tokens (estimated), endpoint, in_flight
    requests: dict | None = None

    @property
    def nothing_to_do(self) -> bool:
        return (
            self.pending_before == 0
            and self.written == 0
            and not self.skipped
            and not self.failed
            and not self.column_created
            and not self.index_created
            and not self.tracking_installed
            and not self.cleared
            and not self.fulltext_added
            and not self.upgraded
            and not self.openings
        )

    @property
    def rows_per_second(self) -> float:
        """Over the time spent encoding (--follow's idle polls left out)."""
        seconds = self.busy_seconds or self.seconds
        return self.written / seconds if seconds > 0 else 0.0
