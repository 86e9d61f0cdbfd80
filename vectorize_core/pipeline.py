"""The encode loop: find pending rows -> encode -> conditional write.

Reads pending rows in primary-key (keyset) order, one page at a time, so memory is bounded by
the page and not the table. While the encoder works on one page, the next page is read and the
previous one written on their own connections, so database time hides behind the model. Each
page is written by one statement in its own short transaction; the write is conditional (the
row's text is still the text that was encoded and its vector is still NULL), hence idempotent
and safe to retry.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import chunks, tracking
from .chunks import joined_text
from .columns import (
    add_openings,
    clear_vectors,
    column_statements,
    drop_legacy_index,
    ensure_extension,
    refresh_terms,
    run_in_transaction,
    set_up_columns,
    upgrade_layout,
)
from .contents import content_hash
from .db import Database
from .dialects import is_blank, vector_value
from .errors import BadInput, DatabaseUnavailable, EncoderError, Interrupted
from .fill_queries import FillQueries, key_columns
from .indexes import build_indexes_when_done, index_statements, indexes_exist
from .output import plural
from .request import EncodeRequest
from .result import EncodeResult
from .target import VectorTarget, resolve_for_encode

# Texts per encoder call: the unit of progress. Pages are sorted by length first, so chunking
# costs no extra padding.
ENCODE_CHUNK = 128


class PageReader:
    """Pending rows in key order, page by page; remembers where it stopped. A chunked fill's
    pages also stop at PAGE_BYTES of text (one row at least)."""

    def __init__(self, db: Database, queries: FillQueries, page_size: int, limit: int | None):
        self.db = db
        self.q = queries
        self.page_size = page_size
        self.remaining = limit
        self.last_key: tuple | None = None
        self.done = False
        self.by_bytes = queries.chunk_table is not None

    def next_page(self) -> list[tuple]:
        if self.done or self.remaining == 0:
            return []
        n = self.page_size if self.remaining is None else min(self.page_size, self.remaining)
        budget = (chunks.PAGE_BYTES,) if self.by_bytes else ()
        if self.last_key is None:
            rows = self.db.fetchall(self.q.first_page, (n, *budget))
        else:
            rows = self.db.fetchall(self.q.next_page, (*self.last_key, n, *budget))
        # The table has no more pending rows when it gave fewer than asked for: before the byte
        # budget of a chunked fill, and the budget kept none of them back.
        seen = rows[0][-1] if self.by_bytes and rows else len(rows)
        if self.by_bytes:
            rows = [row[:-1] for row in rows]
        if seen < n and len(rows) == seen:
            self.done = True
        if rows:
            self.last_key = tuple(rows[-1][: len(self.q.keys)])
            if self.remaining is not None:
                self.remaining -= len(rows)
        return rows


def write_page(
    db: Database, queries: FillQueries, dialect, rows: list[tuple], vectors: np.ndarray, hashes: list
) -> int:
    """The rows' vectors and hashes, then the contents they hold that the contents table lacks,
    in one transaction (retried whole: it is idempotent)."""
    nkeys = len(queries.keys)
    columns = key_columns(rows, nkeys + len(queries.sources))
    params = (*columns, hashes, dialect.vectors_array(vectors))

    def write(conn) -> int:
        with conn.transaction():
            won = conn.execute(queries.write, params).fetchall()
            if won:
                conn.execute(queries.add_contents, key_columns(won, nkeys))
            return len(won)

    return db.run(write)


# Chunks per INSERT statement of a page's write (all in the page's one transaction).
CHUNKS_PER_INSERT = 2048


@dataclass
class PageChunks:
    """A page's chunks: whose row (index into the page), number, start, end, content hash, and
    the vectors."""

    owners: list[int] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    hashes: list = field(default_factory=list)
    vectors: np.ndarray | None = None


def with_openings(chunked: PageChunks, hashes: list, vectors: np.ndarray) -> PageChunks:
    """The page's chunks and, as chunk OPENING of each row, its opening: the text the model reads
    of the whole row (the row's own vector, keyed by that text's hash). Search finds a row by its
    opening through the same index as by its chunks, and ranks it by both."""
    rows = len(hashes)
    return PageChunks(
        owners=chunked.owners + list(range(rows)),
        numbers=chunked.numbers + [chunks.OPENING] * rows,
        starts=chunked.starts + [0] * rows,
        ends=chunked.ends + [0] * rows,
        hashes=chunked.hashes + list(hashes),
        vectors=np.concatenate([chunked.vectors, vectors[:rows]]) if len(chunked.owners) else vectors[:rows],
    )


@dataclass
class ChunkedPage:
    """What a chunked page's write needs: each row's own vector and the hash of its whole text,
    and its chunks."""

    vectors: np.ndarray
    row_hashes: list
    chunks: PageChunks


def write_chunked_page(
    db: Database, queries: FillQueries, dialect, rows: list[tuple], page: ChunkedPage
) -> tuple[int, int]:
    """The rows' vectors and their chunks, in one transaction: only rows whose text is still the
    text that was split and whose vector is still NULL take theirs, and only their old chunks are
    replaced by the new; then the contents of the new chunks. Retried whole on a transient
    failure (it is all or nothing). Returns the rows and the chunks written."""
    nkeys = len(queries.keys)
    columns = key_columns(rows, nkeys + len(queries.sources))
    params = (*columns, page.row_hashes, dialect.vectors_array(page.vectors))
    chunked = page.chunks

    def write(conn) -> tuple[int, int]:
        with conn.transaction():
            won = {tuple(r) for r in conn.execute(queries.write, params).fetchall()}
            if not won:
                return 0, 0
            keys = [tuple(row[:nkeys]) for row in rows]
            done = [key for key in keys if key in won]
            conn.execute(queries.delete_chunks, key_columns(done, nkeys))
            chosen = [c for c, owner in enumerate(chunked.owners) if keys[owner] in won]
            everything = len(chosen) == len(chunked.owners)
            # In slices: the statement's parameters stay small however many chunks a row has.
            for first in range(0, len(chosen), CHUNKS_PER_INSERT):
                part = chosen[first : first + CHUNKS_PER_INSERT]
                vectors_part = chunked.vectors[part[0] : part[-1] + 1] if everything else chunked.vectors[part]
                conn.execute(
                    queries.insert_chunks,
                    (
                        *([keys[chunked.owners[c]][i] for c in part] for i in range(nkeys)),
                        [chunked.numbers[c] for c in part],
                        [chunked.starts[c] for c in part],
                        [chunked.ends[c] for c in part],
                        [chunked.hashes[c] for c in part],
                        [page.row_hashes[chunked.owners[c]] for c in part],
                        dialect.vectors_array(vectors_part),
                    ),
                )
            conn.execute(queries.add_contents, key_columns(done, nkeys))
            return len(won), sum(1 for c in chosen if chunked.numbers[c] != chunks.OPENING)

    return db.run(write)


def document_text(target: VectorTarget, parts) -> str:
    """What the model reads for a row: the prefix, then the source texts that hold any."""
    return target.prefix + joined_text(parts)


class ChunkFailed(Exception):
    def __init__(self, indices: list[int], error: EncoderError):
        super().__init__(str(error))
        self.indices = indices
        self.error = error


def encode_page(encoder, target: VectorTarget, texts: list[str], on_chunk=None, skip_failures=False):
    """Vectors for texts in their order, the indices of texts that could not be encoded, and
    the first error.

    Texts go to the model shortest first, in chunks of ENCODE_CHUNK: as little padding as one
    call for the whole page, and progress between chunks. With skip_failures, a chunk the
    encoder refuses is split until the texts it refuses are found: only those stay pending.
    """
    vectors = np.zeros((len(texts), target.dimension), dtype=np.float32)
    failed: list[int] = []
    error = None
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), ENCODE_CHUNK):
        chunk = order[start : start + ENCODE_CHUNK]
        try:
            vectors[chunk] = encode_chunk(encoder, target, [texts[i] for i in chunk])
        except EncoderError as exc:
            if not skip_failures:
                raise ChunkFailed(chunk, exc) from exc
            refused = isolate_failures(encoder, target, texts, chunk, vectors)
            failed.extend(refused)
            error = error or exc
        if on_chunk is not None:
            on_chunk(len(chunk))
    return vectors, failed, error


def isolate_failures(encoder, target: VectorTarget, texts: list[str], chunk: list[int], vectors) -> list[int]:
    """Encode a refused chunk in halves, recursively: fills vectors for the texts that encode and
    returns the indices of those the encoder refuses on their own."""
    if len(chunk) == 1:
        return chunk
    refused = []
    middle = len(chunk) // 2
    for half in (chunk[:middle], chunk[middle:]):
        try:
            vectors[half] = encode_chunk(encoder, target, [texts[i] for i in half])
        except EncoderError:
            refused += isolate_failures(encoder, target, texts, half, vectors)
    return refused


def encode_chunk(encoder, target: VectorTarget, texts: list[str]) -> np.ndarray:
    try:
        vectors = np.asarray(encoder.encode(texts), dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - any encoder failure is reported the same way
        raise EncoderError(f"model {target.model!r} failed: {type(exc).__name__}: {exc}") from exc
    if vectors.shape != (len(texts), target.dimension):
        raise EncoderError(
            f"model {target.model!r} returned an array of shape {vectors.shape} "
            f"for {len(texts)} texts; expected ({len(texts)}, {target.dimension})"
        )
    return vectors


def encode(
    db: Database,
    request: EncodeRequest | None = None,
    *,
    stop: threading.Event | None = None,
    interrupt: threading.Event | None = None,
    progress=None,
    on_round=None,
    on_index=None,
    on_wait=None,
    **options,
) -> EncodeResult:
    """Carry out an EncodeRequest (or one built from keyword options, the request's fields):
    add, fill and index the vector column.

    ``progress(done, total)`` is called as rows are encoded (done counts this run's rows).
    ``stop``: an event that ends the run after the page in flight (with ``follow``, the way to
    end it). ``interrupt``: an event that, once set (Ctrl-C), stops the run after the encoder
    call in flight, keeping every page written; Interrupted says how far it got.
    ``on_round(written, result)`` is called after every poll of ``follow`` that wrote rows;
    ``on_index(progress)`` hears an IndexProgress as the indexes are built; ``on_wait(message)``
    what a remote model's requests wait for (a 429, the server unreachable), and None when they
    go on.

        encode(db, table="passage", column="passage", model="minilm")
        encode(db, EncodeRequest(table="article", column=("title", "body"), chunk=True))
    """
    if request is None:
        request = EncodeRequest.of(**options)
    elif options:
        raise BadInput(f"give the request or its options, not both ({', '.join(sorted(options))})")
    target, encoder = resolve_for_encode(db, request)
    in_flight = requests_in_flight(encoder, request)
    shard, index, limit = request.shard, request.index, request.limit
    queries = FillQueries(target, db.dialect, shard, cut=model_cut(encoder))
    write_size = request.batch_size or db.dialect.default_batch_size
    page_size = request.batch_size or remote_page_size(encoder, target, in_flight, write_size)
    result = EncodeResult(target)
    has_index = target.column_exists and indexes_exist(db, target)

    if request.dry_run:
        statements = [*db.dialect.setup_statements(), *column_statements(db, target)]
        if target.reencode:
            statements += clear_vectors(target)
        if target.track_changes:
            statements += tracking.install_statements(db, target)
        statements += queries.tidy
        statements += [queries.first_page, queries.next_page, queries.known]
        if queries.chunk_table is not None:
            statements.append(queries.known_rows)
        statements.append(queries.write)
        if queries.chunk_table is not None:
            statements += [queries.delete_chunks, queries.insert_chunks]
        statements.append(queries.add_contents)
        if not has_index:
            statements += index_statements(db, target, queries)
        result.statements = [db.as_string(s) for s in statements]
        if in_flight is not None:
            result.requests = remote_cost(db, encoder, target, queries, limit, page_size, in_flight)
        return result

    ensure_extension(db)
    if target.upgrading:
        result.upgraded = upgrade_layout(db, target, queries)
    result.openings = add_openings(db, target, queries)
    terms = (target.fulltext or {}).get("terms")
    new_terms = bool(terms) and db.catalog().relation_owner(target.table.schema, terms) is None
    set_up_columns(db, target)
    drop_legacy_index(db, target)
    result.column_created = not target.column_exists
    result.fulltext_added = bool(target.fulltext) and target.fulltext["column"] not in target.table.columns
    if target.reencode:
        result.cleared = run_in_transaction(db, clear_vectors(target))[0]
    if target.track_changes:
        result.tracking_installed = tracking.install(db, target)
    tidy(db, queries)

    if index == "now" and not has_index:
        build_indexes_when_done(db, target, queries, result, None, on_index, request.index_memory)
        has_index = True
    result.pending_before = db.fetchone(queries.count)[0]
    result.blank = db.fetchone(queries.blank)[0]
    total = result.pending_before if limit is None else min(limit, result.pending_before)
    splitter = chunk_splitter(encoder, target) if target.chunks else None
    fill = Fill(
        db, target, encoder, queries, result, skip_failures=request.on_error == "skip", stop=stop, splitter=splitter,
        interrupt=interrupt, in_flight=in_flight, write_size=write_size, on_wait=on_wait,
    )  # fmt: skip
    started = time.monotonic()
    try:
        fill.run(page_size, limit, total, progress)
    except DatabaseUnavailable as exc:
        if not target.reencode:
            raise
        raise DatabaseUnavailable(f"{exc} ({how_to_continue(target)})") from None
    finally:
        result.seconds = time.monotonic() - started
        if in_flight is not None and not request.follow and callable(getattr(encoder, "close", None)):
            encoder.close()  # its kept-alive connections

    if interrupt is not None and interrupt.is_set():
        raise Interrupted(interrupted_message(result))
    # On a first fill, building the index once over the filled column is far cheaper than
    # maintaining it row by row.
    if index == "skip":
        result.index_skipped = not has_index
    elif not has_index:
        build_indexes_when_done(db, target, queries, result, shard, on_index, request.index_memory)
    if result.written or new_terms or result.fulltext_added:
        refresh_terms(db, target)
    if request.follow:
        keep_following(db, fill, queries, page_size, request.max_idle, stop, on_round, started)
    result.pending_after = db.fetchone(queries.count)[0]
    return result


def requests_in_flight(encoder, request: EncodeRequest) -> int | None:
    """Requests a remote encoder (one with encode_many) keeps in flight; None for a local one."""
    if not callable(getattr(encoder, "encode_many", None)):
        if request.requests_in_flight is not None:
            raise BadInput(f"--requests-in-flight is for models behind an HTTP endpoint; {request.model} runs here")
        return None
    return request.requests_in_flight or getattr(encoder, "requests_in_flight", None) or 1


def remote_page_size(encoder, target: VectorTarget, in_flight: int | None, write_size: int) -> int:
    """Rows a page: a remote encoder's page fills its requests in flight (written in batches of
    write_size); a chunked page is bounded by its bytes and makes several texts a row."""
    if in_flight is None or target.chunks:
        return write_size
    return max(write_size, in_flight * getattr(encoder, "max_batch", ENCODE_CHUNK))


def remote_cost(db: Database, encoder, target: VectorTarget, queries: FillQueries, limit, page_size, in_flight):
    """What a dry run tells of a remote model: the requests, texts and characters the run would
    send for the pending rows (at most: texts the column has encoded before are not sent)."""
    every_row = not target.column_exists or target.reencode
    rows, characters = db.fetchone(queries.cost_all if every_row else queries.cost)
    rows, characters = int(rows), int(characters)
    if limit is not None and rows > limit:
        characters, rows = characters * limit // rows, limit
    characters += len(target.prefix) * rows
    texts = rows
    if target.chunks:
        # Each row's chunks (about chunk_tokens tokens of CHARS_PER_TOKEN characters) and its opening.
        per_chunk = target.chunks["tokens"] * chunks.CHARS_PER_TOKEN
        texts = rows + max(rows, math.ceil(characters / per_chunk))
        characters *= 2
    requests = 0
    for start in range(0, rows, page_size):
        page = min(page_size, rows - start)
        share = page / rows
        requests += encoder.planned_requests(round(texts * share), round(characters * share), in_flight)
    return {
        "requests": requests,
        "estimated": bool(target.chunks),  # a chunked column's chunks are not counted before splitting
        "texts": texts,
        "characters": characters,
        "tokens": math.ceil(characters / chunks.CHARS_PER_TOKEN),
        "endpoint": str(getattr(encoder, "source", "")),
        "in_flight": in_flight,
    }


def tidy(db: Database, queries: FillQueries) -> None:
    """Re-queue rows whose chunks were lost (their key changed), remove chunks no row holds, and
    sweep the contents no row or chunk holds (see contents.py)."""
    for statement in queries.tidy:
        db.command(statement, retry=True)


def chunk_splitter(encoder, target: VectorTarget) -> chunks.Splitter:
    counting = chunks.counting_for(encoder)
    record = target.chunks
    room = counting.room - (counting.count(target.prefix) if target.prefix else 0)
    return chunks.Splitter(counting.count, record["tokens"], record["overlap"], counting.max_token_chars, room)


# Polling backoff of --follow: quick after activity, at most POLL_MAX seconds apart when idle.
POLL_MIN, POLL_MAX = 0.2, 2.0
# --follow: how often chunks and contents no row holds any more are removed.
SWEEP_SECONDS = 60.0


def keep_following(db, fill, queries, page_size, max_idle, stop, on_round, started) -> None:
    """Poll for pending rows (new or changed) and encode them, until stop, or until nothing was
    written for max_idle seconds. Rows the encoder refused, or that stay pending, are not
    activity: the poll backs off."""
    stop = stop or threading.Event()
    result = fill.result
    idle_since = swept = time.monotonic()
    refreshed = result.written  # BM25 statistics, refreshed with each sweep after writes
    wait = POLL_MIN
    while not stop.is_set():
        if time.monotonic() - swept >= SWEEP_SECONDS:
            # Chunks of rows deleted (or re-queued) meanwhile, hidden from search, are removed;
            # and contents no row holds any more.
            tidy(db, queries)
            if result.written > refreshed:
                refresh_terms(db, fill.target)
                refreshed = result.written
            swept = time.monotonic()
        before = result.written
        pending = db.fetchone(queries.count)[0]
        if pending:
            fill.run(page_size, None, pending)
            result.seconds = time.monotonic() - started
        if result.written > before:
            idle_since, wait = time.monotonic(), POLL_MIN
            if on_round is not None:
                on_round(result.written - before, result)
            continue
        if max_idle is not None and time.monotonic() - idle_since >= max_idle:
            result.ended = f"stopped after {max_idle:g}s with nothing to encode (--max-idle)"
            return
        stop.wait(wait)
        wait = min(POLL_MAX, wait * 2)
    result.ended = "stopped when asked to (a signal)"


class Fill:
    """One run of the encode loop: read ahead, encode, write behind."""

    def __init__(
        self,
        db: Database,
        target: VectorTarget,
        encoder,
        queries: FillQueries,
        result,
        skip_failures=False,
        stop=None,
        splitter=None,
        interrupt=None,
        in_flight=None,
        write_size=None,
        on_wait=None,
    ):
        self.db = db
        self.stop = stop
        self.target = target
        self.encoder = encoder
        self.queries = queries
        self.result = result
        self.skip_failures = skip_failures
        self.splitter = splitter  # chunks.Splitter for a chunked column
        self.interrupt = interrupt  # set (Ctrl-C): stop after the encoder call in flight
        # A remote encoder (encode_many): a page's texts in one call, its requests in flight at once.
        self.in_flight = in_flight
        self.write_size = write_size  # rows a write statement (a remote encoder's page is larger)
        self.on_wait = on_wait
        self.count_truncated = getattr(encoder, "count_truncated", None)
        self.max_length = getattr(encoder, "max_length", None)
        self.model_cut = model_cut(encoder)  # what a chunked fill cuts a row's own text to
        # Rows the encoder refused, by key, with the text it refused: not sent again (--follow
        # polls) until their text changes.
        self.refused: dict[tuple, str] = {}
        # The vectors the last page encoded, by hash: its write may still be in flight while the
        # next page looks its texts up (one page of vectors, whatever the table's size).
        self.recent: dict = {}
        self.total = 0
        self.encoded = 0
        self.progress = None

    def run(self, page_size: int, limit: int | None, total: int, progress=None) -> None:
        self.total, self.encoded = total, 0
        self.progress = progress or self.progress
        self.report(0)
        reader = PageReader(self.db.clone(), self.queries, page_size, limit)
        writer_db = self.db.clone()
        started = time.monotonic()
        try:
            with ThreadPoolExecutor(1, "vectorize-read") as reads, ThreadPoolExecutor(1, "vectorize-write") as writes:
                self.loop(reader, reads, writes, writer_db)
        finally:
            self.result.busy_seconds += time.monotonic() - started
            reader.db.close()
            writer_db.close()

    def loop(self, reader: PageReader, reads, writes, writer_db: Database) -> None:
        next_page = reads.submit(reader.next_page)
        last_write, last_rows = None, 0
        try:
            while (rows := next_page.result()) and not (self.stop and self.stop.is_set()):
                next_page = reads.submit(reader.next_page)  # read ahead while the model works
                rows, payload = self.encode(rows)
                if last_write is not None:
                    self.account(last_write.result(), last_rows)
                    last_write = None
                if rows:
                    last_write = writes.submit(self.write, writer_db, rows, payload)
                    last_rows = len(rows)
            if last_write is not None:
                self.account(last_write.result(), last_rows)
                last_write = None
        except (KeyboardInterrupt, StopNow):
            # Finish the write in flight; abandon the page in the model.
            if last_write is not None:
                self.account(last_write.result(), last_rows)
            raise Interrupted(interrupted_message(self.result)) from None
        finally:
            next_page.cancel()

    def check_interrupt(self) -> None:
        """Between two calls of the encoder: stop now when asked to (Ctrl-C)."""
        if self.interrupt is not None and self.interrupt.is_set():
            raise StopNow

    def write(self, db: Database, rows: list[tuple], payload) -> int:
        if self.splitter is None:
            vectors, hashes = payload
            size = self.write_size or len(rows)
            return sum(
                write_page(
                    db, self.queries, self.db.dialect, rows[s : s + size], vectors[s : s + size], hashes[s : s + size]
                )
                for s in range(0, len(rows), size)
            )
        written, chunk_count = write_chunked_page(db, self.queries, self.db.dialect, rows, payload)
        self.result.chunks += chunk_count
        return written

    def texts(self, rows: list[tuple]) -> list[list[str | None]]:
        """Each row's source texts as the model reads them: a prefix cut short where the whole
        text would be read past it (so few words in so many characters that the model might read
        beyond the cut: then the whole text, read again)."""
        nkeys = len(self.queries.keys)
        parts = [list(row[nkeys:]) for row in rows]
        cut = self.queries.cut
        if cut is None or not self.max_length:
            return parts
        for i, row_parts in enumerate(parts):
            if may_read_past_cut(row_parts, cut, self.max_length):
                whole = self.db.fetchone(self.queries.by_key, rows[i][:nkeys])
                if whole is not None:
                    parts[i] = list(whole)
        return parts

    def model_text(self, parts) -> str:
        """What the model reads of a row whose whole text is at hand (a chunked fill): the same
        text a plain fill gives it, cut where the model stops reading."""
        cut = self.model_cut
        if cut is not None and not may_read_past_cut(parts, cut, self.max_length):
            parts = [None if p is None else p[:cut] for p in parts]
        return document_text(self.target, parts)

    def encode(self, rows: list[tuple]) -> tuple[list[tuple], object]:
        """The rows the encoder managed, with what their write needs (vectors and hashes; with
        chunks too)."""
        nkeys = len(self.queries.keys)
        parts = self.texts(rows)
        if self.splitter is None:
            texts = [document_text(self.target, p) for p in parts]
        else:
            texts = [self.model_text(p) for p in parts]
        if self.refused:
            fresh = [i for i, row in enumerate(rows) if self.refused.get(row[:nkeys]) != texts[i]]
            self.report(len(rows) - len(fresh))
            rows, texts, parts = [rows[i] for i in fresh], [texts[i] for i in fresh], [parts[i] for i in fresh]
        if self.splitter is not None:
            return self.encode_chunked(rows, parts, texts)
        if self.count_truncated is not None:
            self.result.truncated += self.count_truncated(texts)
        if len(self.queries.sources) > 1 and self.max_length:
            self.result.unread_columns += sum(later_columns_unread(p, self.max_length) for p in parts)
        hashes = [content_hash(text) for text in texts]
        vectors, failed = self.vectors_of(rows, texts, hashes, list(range(len(rows))), self.known_contents(hashes))
        if not failed:
            return rows, (vectors, hashes)
        keep = self.forget(rows, texts, failed)
        return [rows[i] for i in keep], (vectors[keep], [hashes[i] for i in keep])

    def known_contents(self, hashes: list) -> dict:
        """{hash: vector} of the hashes whose text the column has encoded before: in the contents
        table, or on the page before (whose write may not have committed yet)."""
        wanted = list(dict.fromkeys(hashes))
        found = self.db.fetchall(self.queries.known, (wanted,)) if wanted else []
        known = {h: vector_value(v) for h, v in found}
        known.update((h, self.recent[h]) for h in wanted if h not in known and h in self.recent)
        return known

    def known_rows(self, row_hashes: list) -> dict:
        """{hash of a whole text: a row's own vector} for the texts another row already has."""
        wanted = list(dict.fromkeys(row_hashes))
        found = self.db.fetchall(self.queries.known_rows, (wanted,)) if wanted else []
        return {h: vector_value(v) for h, v in found}

    def vectors_of(self, rows, texts: list[str], hashes: list, owners: list[int], known: dict):
        """The vectors of texts (each keyed by its hash; `owners` maps a text to its row), each
        distinct text encoded once and none that `known` has; and the indices of the texts the
        encoder refused (with --on-error skip). Progress is told in rows."""
        first: dict = {}  # hash -> the first text with it
        for i, h in enumerate(hashes):
            first.setdefault(h, i)
        wanted = [h for h in first if h not in known]
        self.result.repeats += len(texts) - len(wanted)
        progress = RowProgress(self.report, len(rows), len(wanted))
        fresh, failed = self.encode_texts(
            rows, [texts[first[h]] for h in wanted], [owners[first[h]] for h in wanted], progress.texts_done
        )
        progress.finish()
        refused = {wanted[i] for i in failed}
        self.recent = {h: fresh[i] for i, h in enumerate(wanted) if h not in refused}
        distinct = list(known) + wanted
        position = {h: n for n, h in enumerate(distinct)}
        table = np.empty((len(distinct), self.target.dimension), dtype=np.float32)
        if known:
            table[: len(known)] = np.stack(list(known.values()))
        table[len(known) :] = fresh
        return table[[position[h] for h in hashes]], [i for i, h in enumerate(hashes) if h in refused]

    def encode_chunked(self, rows, parts, texts) -> tuple[list[tuple], object]:
        """Split each row's text, encode its chunks and its own (model-truncated) text, each
        distinct text once; a row one of whose texts the encoder refuses is left pending whole.
        The rows' own texts come first among the inputs and the chunks after them."""
        prefix = self.target.prefix
        chunked = PageChunks()
        chunk_texts: list[str] = []
        documents = [joined_text(row_parts) for row_parts in parts]
        for i, document in enumerate(documents):
            for number, (start, end) in enumerate(self.splitter.spans(document)):
                chunk_texts.append(prefix + document[start:end])
                chunked.owners.append(i)
                chunked.numbers.append(number)
                chunked.starts.append(start)
                chunked.ends.append(end)
        row_hashes = [content_hash(prefix + document) for document in documents]
        chunked.hashes = [content_hash(text) for text in chunk_texts]
        own_hashes = [content_hash(text) for text in texts]
        hashes = own_hashes + chunked.hashes
        known = self.known_contents(hashes)
        # A row's own text is no chunk's when it is longer than the model reads: another row
        # with the same whole text has its vector.
        unknown = [i for i, h in enumerate(own_hashes) if h not in known]
        by_row = self.known_rows([row_hashes[i] for i in unknown])
        known.update((own_hashes[i], by_row[row_hashes[i]]) for i in unknown if row_hashes[i] in by_row)
        owners = list(range(len(rows))) + chunked.owners
        vectors, failed = self.vectors_of(rows, texts + chunk_texts, hashes, owners, known)
        del chunk_texts
        failed_rows = sorted({owners[i] for i in failed})
        if not failed_rows:
            chunked.vectors = vectors[len(rows) :]
            return rows, ChunkedPage(vectors[: len(rows)], row_hashes, with_openings(chunked, own_hashes, vectors))
        keep = self.forget(rows, texts, failed_rows)
        renumber = {old: new for new, old in enumerate(keep)}
        chosen = [c for c, owner in enumerate(chunked.owners) if owner in renumber]
        kept = PageChunks(
            owners=[renumber[chunked.owners[c]] for c in chosen],
            numbers=[chunked.numbers[c] for c in chosen],
            starts=[chunked.starts[c] for c in chosen],
            ends=[chunked.ends[c] for c in chosen],
            hashes=[chunked.hashes[c] for c in chosen],
            vectors=vectors[[len(rows) + c for c in chosen]],
        )
        kept = with_openings(kept, [own_hashes[i] for i in keep], vectors[keep])
        return [rows[i] for i in keep], ChunkedPage(vectors[keep], [row_hashes[i] for i in keep], kept)

    def encode_texts(self, rows, texts: list[str], owner: list[int], on_chunk) -> tuple[np.ndarray, list[int]]:
        """Vectors of texts; the indices of those the encoder refused (with --on-error skip)."""
        nkeys = len(self.queries.keys)

        def after_call(count: int) -> None:
            if on_chunk is not None:
                on_chunk(count)
            self.check_interrupt()

        self.check_interrupt()
        if self.in_flight is not None:
            return self.encode_remote(rows, texts, owner, after_call)
        try:
            vectors, failed, error = encode_page(self.encoder, self.target, texts, after_call, self.skip_failures)
        except ChunkFailed as exc:
            keys = list(dict.fromkeys(rows[owner[i]][:nkeys] for i in exc.indices))
            raise EncoderError(f"{exc.error} (rows {describe_keys(self.target, keys)})") from None
        if failed:
            self.result.failure = self.result.failure or str(error)
        return vectors, failed

    def encode_remote(self, rows, texts: list[str], owner: list[int], after_call) -> tuple[np.ndarray, list[int]]:
        """encode_texts() through a remote encoder: the page's texts in one call (shortest first,
        so a request's texts are alike), its requests in flight at once. A failure of the
        endpoint names it; texts the server refused name their rows (with --on-error skip: they
        stay pending)."""
        nkeys = len(self.queries.keys)
        model = self.target.model
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        try:
            got, refused = self.encoder.encode_many(
                [texts[i] for i in order], requests_in_flight=self.in_flight, on_done=after_call,
                on_wait=self.on_wait, cancel=self.interrupt, isolate=self.skip_failures,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - any encoder failure is reported the same way
            self.check_interrupt()  # Ctrl-C abandoned the requests in flight
            if getattr(exc, "endpoint_wide", False):
                raise EncoderError(f"model {model!r}: {exc}; {how_to_continue(self.target)}") from None
            keys = list(dict.fromkeys(rows[owner[i]][:nkeys] for i in range(len(texts))))
            raise EncoderError(
                f"model {model!r} failed: {type(exc).__name__}: {exc} (rows {describe_keys(self.target, keys)})"
            ) from None
        got = np.asarray(got, dtype=np.float32)
        if got.shape != (len(texts), self.target.dimension):
            raise EncoderError(
                f"model {model!r} returned an array of shape {got.shape} "
                f"for {len(texts)} texts; expected ({len(texts)}, {self.target.dimension})"
            )
        vectors = np.empty_like(got)
        vectors[order] = got
        failed = sorted(order[i] for i in refused)
        if failed:
            first = refused[min(refused)]
            why = str(first)
            if getattr(first, "too_long", False):
                why += " (the text is longer than the model reads; encode --chunk splits long texts)"
            if not self.skip_failures:
                keys = list(dict.fromkeys(rows[owner[i]][:nkeys] for i in failed))
                raise EncoderError(f"model {model!r} refused a text: {why} (rows {describe_keys(self.target, keys)})")
            self.result.failure = self.result.failure or why
        return vectors, failed

    def forget(self, rows, texts, failed: list[int]) -> list[int]:
        """Count the rows the encoder refused, remember them, and return the others' indices."""
        nkeys = len(self.queries.keys)
        self.result.failed += len(failed)
        self.result.failed_keys += [rows[i][:nkeys] for i in failed][: 10 - len(self.result.failed_keys)]
        self.refused.update((rows[i][:nkeys], texts[i]) for i in failed)
        return sorted(set(range(len(rows))) - set(failed))

    def report(self, encoded: int) -> None:
        self.encoded += encoded
        if self.progress is not None:
            self.progress(self.encoded, self.total)

    def account(self, written: int, rows: int) -> None:
        self.result.written += written
        self.result.skipped += rows - written


class RowProgress:
    """Progress told in rows while a page's distinct texts are encoded: a page of many rows and
    few distinct texts moves the count as its texts are done."""

    def __init__(self, report, rows: int, texts: int):
        self.report, self.rows, self.texts = report, rows, texts
        self.done = self.told = 0

    def texts_done(self, count: int) -> None:
        self.done += count
        rows = self.rows * self.done // max(1, self.texts)
        self.report(rows - self.told)
        self.told = rows

    def finish(self) -> None:
        self.report(self.rows - self.told)
        self.told = self.rows


class StopNow(BaseException):
    """Raised between encoder calls when the run is interrupted (a BaseException, like
    KeyboardInterrupt: no handler of ordinary errors may swallow it)."""


def interrupted_message(result) -> str:
    chunked = f" ({plural(result.chunks, 'chunk')})" if result.chunks else ""
    return (
        f"interrupted: {plural(result.written, 'row')}{chunked} written to {result.target.display} in this run; "
        f"{how_to_continue(result.target)}"
    )


def how_to_continue(target: VectorTarget) -> str:
    """What finishes a run cut short: the same command, but never --reencode again (it would clear
    the column again, losing what this run wrote)."""
    if target.reencode:
        return "run it again without --reencode to continue where it stopped (--reencode would clear the column again)"
    return "run the same command again to continue where it stopped"


# A source is read as its first CUT_CHARS_PER_TOKEN characters for every token the model reads:
# more than any tokenizer's longest token, so the cut never changes what the model sees (see
# may_read_past_cut for the text where it could).
CUT_CHARS_PER_TOKEN = 16


def model_cut(encoder) -> int | None:
    """How many characters of a source the fill reads for the model (None: all of it)."""
    max_length = getattr(encoder, "max_length", None)
    return max_length * CUT_CHARS_PER_TOKEN if max_length else None


def later_columns_unread(parts: list[str | None], max_length: int) -> bool:
    """Whether the model stops before a later source column with text: the ones before it hold
    more words than it reads tokens (a word is a token at least)."""
    words = 0
    for part in parts:
        if words >= max_length and not is_blank(part):
            return True
        if part is not None:
            words += len(part.split(None, max_length))
    return False


def may_read_past_cut(parts: list[str | None], cut: int, max_length: int) -> bool:
    """Whether the model might read past the cut of a source: a cut text with fewer words before
    it than the model reads tokens (every word is a token at least, and the words before a cut
    tokenize as in the whole text)."""
    words = 0
    for part in parts:
        if part is None:
            continue
        if len(part) >= cut:
            return words + len(part.split(None, max_length)) <= max_length
        words += len(part.split(None, max_length))
        if words > max_length:
            return False
    return False


def describe_keys(target: VectorTarget, keys: list[tuple], most: int = 5) -> str:
    names = target.table.primary_key
    shown = [", ".join(f"{n}={v}" for n, v in zip(names, key, strict=True)) for key in keys[:most]]
    more = f" and {len(keys) - most} more" if len(keys) > most else ""
    return "; ".join(shown) + more
