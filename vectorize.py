#!/usr/bin/env python3
"""vectorize.py: semantic search on a table you already have, in CockroachDB or PostgreSQL.

The CLI only parses options, calls one function of vectorize_core, and prints. Errors from the
core are turned into one line on stderr and an exit code here, and only here.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import click

from vectorize_core.output import json_value, one_line, plural

DEBUG_ENV = "VECTORIZE_DEBUG"
# search -k: a bound any server takes as a LIMIT, and more rows than anyone reads.
MAX_K = 100_000


class VectorizeGroup(click.Group):
    """Turns the core's exceptions into one line on stderr and an exit code."""

    def invoke(self, ctx):
        from vectorize_core.errors import VectorizeError

        try:
            return super().invoke(ctx)
        except VectorizeError as exc:
            if os.environ.get(DEBUG_ENV) == "1":
                raise
            fail(str(exc), exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence: never a traceback
            if os.environ.get(DEBUG_ENV) == "1":
                raise
            fail(f"unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for details)", 1)


def fail(message: str, code: int) -> None:
    """One line on stderr, never a password, then exit."""
    click.echo(f"Error: {one_line(message)}", err=True)
    sys.exit(code)


url_option = click.option(
    "--url",
    envvar="DATABASE_URL",
    metavar="URL",
    help="Database URL (postgresql://...); default $DATABASE_URL, else the embedded database.",
)
table_options = [
    click.option("--table", "-t", metavar="TABLE", help="Table name, or schema.name; each part exactly as written."),
    click.option("--schema", metavar="SCHEMA", help="Schema of the table (instead of schema.name)."),
]


# encode and import-vectors: when and how big the index build is, and the full-text column.
index_options = [
    click.option(
        "--index", "index_mode", type=click.Choice(["after", "now", "skip"]), default="after", show_default=True,
        help="Build the indexes after the vectors are written, before, or not (then: vectorize.py index).",
    ),
    click.option(
        "--index-memory", metavar="SIZE", callback=lambda ctx, param, value: parse_size(value),
        help="PostgreSQL: memory for the HNSW build, e.g. 4GB  [default: room for the graph, at most 8GB]",
    ),
]  # fmt: skip
fulltext_options = [
    click.option("--fulltext", is_flag=True, help="Also add a generated full-text (tsvector) column and its index."),
    click.option("--language", metavar="CONFIG", help="Text search configuration of --fulltext  [default: english]"),
]


def apply(options):
    def decorator(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorator


@click.group(cls=VectorizeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option("0.1.0", prog_name="vectorize.py")
def cli():
    """Semantic search on a table you already have.

    Adds a VECTOR column next to a text column, fills it with an encoder model, indexes it, and
    answers similarity queries, inside CockroachDB or PostgreSQL+pgvector. With no --url and no
    DATABASE_URL, an embedded PostgreSQL is started and used.

    \b
    Example:
      vectorize.py encode --table passage --column passage --model minilm
      vectorize.py search "New York is the financial capital of the world"
    """
    show_notes()


class NoteHandler(logging.Handler):
    """The core's notes (logger 'vectorize': a model converted, a backend fallen back) as
    'Note: ...' lines on stderr, written where click writes at that moment."""

    def emit(self, record):
        click.echo(f"Note: {record.getMessage()}", err=True)


def show_notes() -> None:
    logger = logging.getLogger("vectorize")
    if not any(isinstance(h, NoteHandler) for h in logger.handlers):
        logger.addHandler(NoteHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False


@cli.command("list-models")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_models(name, as_json):
    """List the encoders that --model accepts, or show one in detail. Loads no model when
    listing; NAME may be a family member such as st:BAAI/bge-small-en-v1.5.

    \b
    Example:
      vectorize.py list-models
      vectorize.py list-models minilm --json
    """
    import modules

    if name:
        from vectorize_core.target import describe_encoder

        details = describe_encoder(name)
        if as_json:
            click.echo(json.dumps(details, indent=2))
        else:
            width = max(map(len, details))
            for key, value in details.items():
                click.echo(f"{key.ljust(width)}  {value}")
        return
    rows = [
        {
            "name": e.name,
            "dimension": e.dimension if modules.is_encoder(e) else "from model",
            "metric": e.metric if modules.is_encoder(e) else "",
            "description": e.description,
        }
        for e in modules.available().values()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    print_table(["name", "dimension", "metric", "description"], rows)


@cli.command()
@url_option
@apply(table_options)
@click.option(
    "--column", "-c", "columns", required=True, multiple=True, metavar="COLUMN",
    help="Text column to encode; repeat to embed several columns joined by a space.",
)  # fmt: skip
@click.option("--model", "-m", default="minilm", show_default=True, help="Encoder (see list-models).")
@click.option("--vector-column", metavar="NAME", help="Vector column to fill  [default: <first column>_vector]")
@click.option("--metric", type=click.Choice(["cosine", "l2", "ip"]), help="Distance metric  [default: the model's]")
@click.option("--prefix", help="Text put before every document (e5: 'passage: ', nomic: 'search_document: ').")
@click.option("--query-prefix", help="Text put before every search query (e5: 'query: '); recorded for search.")
@click.option(
    "--backend", type=click.Choice(["auto", "openvino", "torch"]),
    help="Inference backend for sentence-transformers models: auto takes OpenVINO on a CPU, torch on a GPU "
    "or when OpenVINO cannot run the model  [default: auto]",
)  # fmt: skip
@click.option("--dimension", type=click.IntRange(min=1), help="Vector size, for endpoints that cannot tell it.")
@click.option(
    "--on-error", type=click.Choice(["stop", "skip"]), default="stop", show_default=True,
    help="When the encoder fails on a batch: stop, or leave those rows pending and go on.",
)  # fmt: skip
@click.option(
    "--prefix-column", "prefix_columns", multiple=True, metavar="COLUMN",
    help="CockroachDB: lead the vector index with this column, so filters on it keep the index.",
)  # fmt: skip
@click.option("--track-changes", is_flag=True, help="Install a trigger that re-queues rows whose text changes.")
@click.option(
    "--adopt", is_flag=True,
    help="Take over an existing vector column vectorize did not make: keep its vectors, record them as --model's.",
)  # fmt: skip
@click.option("--reencode", is_flag=True, help="Clear every vector of the column and encode all rows again.")
@apply(fulltext_options)
@click.option(
    "--chunk", is_flag=True,
    help="Long texts: split each row into chunks the model reads whole, one vector each (in a table beside "
    "this one); search ranks rows by their nearest chunk.",
)  # fmt: skip
@click.option(
    "--chunk-tokens", type=click.IntRange(min=8), metavar="N",
    help="With --chunk: the most tokens of the model in one chunk  [default: 64, or what the model reads if less]",
)  # fmt: skip
@click.option(
    "--chunk-overlap", type=click.IntRange(min=0), metavar="N",
    help="With --chunk: tokens a chunk shares with the one before  [default: 0]",
)  # fmt: skip
@click.option("--follow", is_flag=True, help="Keep running: encode new and changed rows as they come.")
@click.option(
    "--max-idle",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="With --follow: exit 0 after this long with nothing to do.",
)
@click.option("--shard", metavar="I/N", callback=lambda ctx, param, value: parse_shard(value),
              help="Encode only shard I of N (1-based: 1/4 ... 4/4), split by a hash of the primary key.")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(min=1), help="Rows per read and per write statement.")
@click.option(
    "--requests-in-flight", type=click.IntRange(min=1), metavar="N",
    help="A model behind an HTTP endpoint (openai:...): requests sent at once  [default: 16]",
)  # fmt: skip
@click.option("--limit", type=click.IntRange(min=0), help="Encode at most this many rows in this run.")
@apply(index_options)
@click.option(
    "--dry-run", is_flag=True,
    help="Print the SQL it would run (and, for a remote model, the requests it would send); change nothing.",
)  # fmt: skip
def encode(url, columns, index_mode, **options):
    """Add, fill and index a vector column for a text column.

    Only rows whose vector is NULL and whose text is not are encoded, so a rerun continues
    where the last one stopped, and does nothing on a finished table. With --track-changes and
    --follow it keeps the vectors current as a long-running service (SIGTERM stops it cleanly).

    \b
    Example:
      vectorize.py encode --table passage --column passage --model minilm
      vectorize.py encode -t passage -c passage --track-changes --follow
      vectorize.py encode -t passage -c passage --shard 1/4      # on machine 1 of 4
      vectorize.py encode -t passage -c passage --adopt -m minilm  # keep vectors made elsewhere
      vectorize.py encode -t passage -c passage --fulltext          # and full text, for search --hybrid
      vectorize.py encode -t article -c title -c body --chunk      # every word of long texts searchable
      vectorize.py encode -t passage -c passage --backend torch     # torch, not OpenVINO (the default on a CPU)
      vectorize.py encode -t passage -c passage -m openai:text-embedding-3-small --dry-run  # what it would send
      vectorize.py encode -t passage -c passage -m openai:text-embedding-3-small --requests-in-flight 32
      vectorize.py encode -t article -c title -c body -m st:intfloat/e5-small-v2 \\
          --prefix "passage: " --query-prefix "query: "
    """
    import vectorize_core
    from vectorize_core.request import EncodeRequest

    if not options["table"]:
        raise click.UsageError("Missing option '--table'.")
    request = EncodeRequest(column=columns, index=index_mode, **options)
    stop = stop_on_signals() if request.follow else None
    interrupt = None if request.follow or request.dry_run else interrupt_on_ctrl_c()
    reporter = progress_reporter(enabled=not request.follow, lines=True)
    with vectorize_core.connect(url) as db, reporter as progress, index_reporter() as on_index:
        result = vectorize_core.encode(
            db, request, stop=stop, interrupt=interrupt, progress=progress, on_round=report_round, on_index=on_index,
            on_wait=reporter.waiting,
        )  # fmt: skip
    if request.dry_run:
        for statement in result.statements:
            click.echo(statement + ";")
        if result.requests is not None:
            click.echo(requests_line(result.requests), err=True)
        return
    if result.failed:
        click.echo(f"Warning: {encode_failures(result)}", err=True)
    click.echo(encode_summary(result))


def parse_size(value: str | None) -> int | None:
    """'4GB', '512MB', '1.5G' -> bytes."""
    import re

    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", value.lower())
    if not match or float(match.group(1)) <= 0:
        raise click.BadParameter(f"{value!r} is not a size such as 512MB or 4GB")
    return int(float(match.group(1)) * 1024 ** "bkmgt".index(match.group(2) or "b"))


def parse_shard(value: str | None):
    if value is None:
        return None
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not I/N, e.g. 1/4") from None
    if count < 1 or not 1 <= index <= count:
        raise click.BadParameter(f"{value!r}: shards are numbered from 1 to N (1-based, e.g. 1/4 ... 4/4)")
    return index, count


def stop_on_signals():
    """An event set by SIGTERM or SIGINT: --follow finishes the page in flight and exits 0."""
    import signal
    import threading

    stop = threading.Event()

    def request_stop(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def interrupt_on_ctrl_c():
    """An event set by the first Ctrl-C: the run stops after the model's batch in flight, keeps
    what it wrote and exits 130. A second Ctrl-C stops at once."""
    import signal
    import threading

    interrupt = threading.Event()

    def request_interrupt(signum, frame):
        if interrupt.is_set():
            raise KeyboardInterrupt
        interrupt.set()
        click.echo("Stopping after the model's current batch (Ctrl-C again to stop at once) ...", err=True)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, request_interrupt)
    return interrupt


def requests_line(cost: dict) -> str:
    """What a dry run would send a remote model."""
    about = "about " if cost.get("estimated") else ""
    return (
        f"Would send {about}{plural(cost['requests'], 'request')} ({cost['in_flight']} at a time) with "
        f"{plural(cost['texts'], 'text')}, {cost['characters']:,} characters (about {cost['tokens']:,} tokens at "
        f"4 characters a token) to {cost['endpoint']}; at most: texts encoded before are not sent again."
    )


def report_round(written: int, result) -> None:
    """--follow: one line per poll that wrote something, with what that poll wrote."""
    import time

    click.echo(
        f"{time.strftime('%H:%M:%S')} {plural(written, 'row')} encoded into {result.target.display} "
        f"({result.written} in all)",
        err=True,
    )


def encode_failures(result) -> str:
    from vectorize_core.pipeline import describe_keys

    return (
        f"{stay_pending(result.failed, 'could not be encoded')} "
        f"({describe_keys(result.target, result.failed_keys)}): {result.failure}"
    )


def encode_summary(result) -> str:
    t = result.target
    sources = "+".join(t.sources)
    if result.nothing_to_do:
        return (
            f"Nothing to do: every row of {t.table.display} with text in {sources} "
            f"already has a vector in {t.vector_column!r}."
        )
    parts = []
    if result.upgraded:
        parts.append(
            f"Keyed the vectors of {plural(result.upgraded, 'row')} (made by an earlier version) for an index of "
            "distinct contents, with no model time"
        )
    if result.openings:
        parts.append(
            f"Gave {plural(result.openings, 'row')} (chunked by an earlier version) their openings, from their "
            "vectors: search ranks them by opening and best chunk now, with no model time"
        )
    if result.cleared:
        parts.append(f"Cleared {plural(result.cleared, 'vector')} of {t.display} to encode them again")
    chunked = f" ({plural(result.chunks, 'chunk')})" if t.chunks else ""
    parts += [
        f"Encoded {plural(result.written, 'row')}{chunked} of {t.table.display}.{sources} into {t.vector_column} "
        f"with {t.model} in {result.seconds:.1f}s{encode_rate(result)}"
    ]
    if result.repeats:
        parts.append(
            f"{plural(result.repeats, 'text')} repeated one the model had read, and took its vector "
            "(each distinct text is encoded once)"
        )
    # Every figure is of the whole run: rows that changed mid-run and were encoded again by a
    # later poll are not pending any more.
    changed = min(result.skipped, result.pending_after)
    if changed:
        parts.append(f"{stay_pending(changed, 'changed while encoding')} (run again)")
    if result.failed:
        parts.append(stay_pending(result.failed, "failed to encode"))
    left = result.pending_after - changed - result.failed
    if left > 0:
        parts.append(f"{plural(left, 'row')} still pending (run again to continue)")
    if result.blank:
        parts.append(f"{plural(result.blank, 'row')} with only empty or whitespace text skipped")
    truncated = min(result.truncated, result.written)
    if truncated:
        parts.append(
            f"{plural(truncated, 'row was', 'rows were')} longer than the model reads and "
            f"{'was' if truncated == 1 else 'were'} truncated (encode --chunk reads every word)"
        )
    if result.unread_columns:
        later = "+".join(t.sources[1:])
        parts.append(
            f"in {plural(result.unread_columns, 'row')} the model read no word of {later}: "
            f"{t.sources[0]} before it is longer than the model reads (put the short column first, or use --chunk)"
        )
    if result.tracking_installed:
        parts.append(f"change tracking is on: a trigger re-queues rows whose {sources} changes")
    parts += fulltext_and_index_parts(result)
    if result.pending_elsewhere:
        parts.append(
            f"index not built yet: {plural(result.pending_elsewhere, 'row is', 'rows are')} pending in other shards; "
            "the last shard to finish builds it"
        )
    if result.ended:
        parts.append(result.ended)
    return "; ".join(parts) + "."


def stay_pending(rows: int, why: str) -> str:
    """'1 row failed to encode and stays pending', '2 rows ... stay pending'."""
    return f"{plural(rows, 'row')} {why} and {'stays' if rows == 1 else 'stay'} pending"


def encode_rate(result) -> str:
    """' (N rows/s)' over the time spent encoding (not the idle time of --follow); none for 0."""
    rate = result.rows_per_second
    if not result.written or rate <= 0:
        return ""
    return f" ({rate:.0f} rows/s)" if rate >= 1 else f" ({rate:.2f} rows/s)"


class index_reporter:
    """Index builds: a bar on a terminal, a line when each starts and ends otherwise (on stderr).
    Yields the core's on_index callback."""

    def __enter__(self):
        self.bar = None
        self.tasks = {}
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                console=Console(stderr=True), transient=True,
            )  # fmt: skip
        return self.update

    def update(self, progress) -> None:
        if self.bar is None:
            if progress.phase == "started":
                click.echo(f"Building index {progress.index} ...", err=True)
            elif progress.phase == "done":
                click.echo(f"Index {progress.index} built in {progress.seconds:.1f}s.", err=True)
            return
        if progress.index not in self.tasks:
            if not self.tasks:
                self.bar.start()
            self.tasks[progress.index] = self.bar.add_task(f"index {progress.index}", total=None)
        task = self.tasks[progress.index]
        if progress.phase == "done":
            self.bar.update(task, completed=1, total=1)
        elif progress.total:
            self.bar.update(task, description=f"index {progress.index}: {progress.phase}",
                            completed=progress.done, total=progress.total)  # fmt: skip

    def __exit__(self, *exc):
        if self.bar is not None and self.tasks:
            self.bar.stop()
        return False


# Without a terminal (nohup, CI, a pipe), a timestamped progress line at most this often.
PROGRESS_LINE_SECONDS = 5.0


def progress_line(label: str, done: int, total: int, seconds: float) -> str:
    """'12:00:05 encoding: 38 of 1,200 rows (6 rows/s, about 3m05s left)', the rate over the
    seconds spent encoding; no time left without a rate or a total to reach."""
    import time

    rate = done / seconds if seconds > 0 else 0.0
    said = f"{rate:.0f} rows/s" if rate >= 1 else f"{rate:.2f} rows/s"  # a slow remote model is not '0 rows/s'
    if rate > 0 and total > done:
        said += f", about {short_duration((total - done) / rate)} left"
    return f"{time.strftime('%H:%M:%S')} {label}: {done:,} of {total:,} rows ({said})"


def short_duration(seconds: float) -> str:
    """'12s', '3m05s', '1h02m': to the unit that matters for a time left, rounded up (never '0s')."""
    import math

    seconds = max(1, math.ceil(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class progress_reporter:
    """A rich progress bar on a terminal; otherwise, with lines, a timestamped line on stderr
    every PROGRESS_LINE_SECONDS while there is progress. Yields the core's callback."""

    def __init__(self, enabled: bool = True, label: str = "encoding", lines: bool = False):
        self.enabled = enabled
        self.label = label
        self.lines = lines
        self.bar = None
        self.said_wait = 0.0

    def waiting(self, message: str | None) -> None:
        """What the encoder waits for (a remote model's 429, its server unreachable), None when it
        goes on: in the bar's label on a terminal, else a line (at most every PROGRESS_LINE_SECONDS)."""
        import time

        if self.bar is not None:
            label = self.label if message is None else f"{self.label} (waiting: {message})"
            self.bar.update(self.task, description=label)
            return
        if message is None or time.monotonic() - self.said_wait < PROGRESS_LINE_SECONDS:
            return
        self.said_wait = time.monotonic()
        click.echo(f"{time.strftime('%H:%M:%S')} {self.label}: waiting on the server: {message}", err=True)

    def __enter__(self):
        self.bar = None
        if not self.enabled:
            return None
        if not sys.stderr.isatty():
            return self.line_printer() if self.lines else None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.bar.add_task(self.label, total=None, rate="-")
        self.bar.start()
        return self.update

    def line_printer(self):
        """The core's callback off a terminal. The interval counts from here: the first line comes
        with the first rows done once PROGRESS_LINE_SECONDS have passed, however long the setup
        or the first encoder call took. The rate counts from the core's first report when it is
        of 0 rows (encoding starts), so loading the model and the setup do not lower it or
        lengthen the time left."""
        import time

        started = last = time.monotonic()
        heard = False

        def update(done: int, total: int) -> None:
            nonlocal started, last, heard
            now = time.monotonic()
            if not heard and not done:
                started = now
            heard = True
            if not done or now - last < PROGRESS_LINE_SECONDS:
                return
            last = now
            click.echo(progress_line(self.label, done, total, now - started), err=True)

        return update

    def update(self, done: int, total: int) -> None:
        elapsed = self.bar.tasks[0].elapsed or 0
        rate = f"{done / elapsed:.0f}" if elapsed > 0 else "-"
        self.bar.update(self.task, completed=done, total=total, rate=rate)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


@cli.command()
@url_option
@click.argument("query", required=False)
@apply(table_options)
@click.option("--column", "-c", metavar="COLUMN", help="Source column whose vectors to search.")
@click.option("--vector-column", metavar="NAME", help="Vector column to search, when a column has several.")
@click.option(
    "-k",
    "k",
    default=10,
    show_default=True,
    type=click.IntRange(1, MAX_K),
    help=f"Number of results (at most {MAX_K:,}).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of rows (strict JSON; see the README).")
@click.option("--metric", type=click.Choice(["cosine", "l2", "ip"]), help="Choose among vector columns by metric.")
@click.option("--query-vector", metavar="JSON|@FILE", help="Search with a precomputed vector instead of text.")
@click.option("--where", metavar="JSON", help='Only rows matching a filter, e.g. \'{"status": "published"}\'.')
@click.option("--exact", is_flag=True, help="Rank every (matching) row exactly instead of using the index.")
@click.option("--show", metavar="COL,COL", help="More columns to print.")
@click.option(
    "--ef-search", type=click.IntRange(1, 1000), help="PostgreSQL: hnsw.ef_search for this query  [default: 100]"
)
@click.option(
    "--beam-size", type=click.IntRange(1, 2048), help="CockroachDB: vector_search_beam_size for this query (1-2048)."
)
@click.option(
    "--follower-read", is_flag=True,
    help="CockroachDB: read from the nearest replica (a few seconds stale), not the leaseholder.",
)  # fmt: skip
@click.option(
    "--no-text", "no_text", is_flag=True,
    help="Leave the source text out of the rows: keys, distance, --show columns (and a chunked column's best chunk).",
)  # fmt: skip
@click.option("--emit-sql", is_flag=True, help="Print the parameterised search query for application code.")
@click.option("--explain", is_flag=True, help="Print the engine's plan and whether the vector index serves it.")
@click.option("--hybrid", is_flag=True, help="Fuse the vector ranking with full text (needs encode --fulltext).")
@click.option(
    "--fusion-k", type=click.FloatRange(min=0, min_open=True), default=60, show_default=True,
    help="Hybrid: the reciprocal rank fusion constant.",
)  # fmt: skip
@click.option(
    "--dense-weight", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Hybrid: vector leg weight."
)
@click.option(
    "--text-weight", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Hybrid: full-text leg weight."
)
def search(url, query, table, schema, column, vector_column, k, as_json, metric, query_vector, where, exact, show,
           ef_search, beam_size, follower_read, no_text, emit_sql, explain, hybrid, fusion_k, dense_weight,
           text_weight):  # fmt: skip
    """Find the rows nearest in meaning to QUERY.

    Uses the only vectorized column in the database unless --table/--column say which; the
    query is encoded with the model recorded for that column.

    \b
    Example:
      vectorize.py search "a sentence" --table passage -k 5
      vectorize.py search "a sentence" --where '{"category": {"$in": ["infra", "db"]}}' --show category
      vectorize.py search --query-vector @query.json --table passage --metric l2
      vectorize.py search --emit-sql --table passage
      vectorize.py search "a sentence" --explain
      vectorize.py search "a sentence" --follower-read      # CockroachDB
      vectorize.py search "error 40001 on commit" --hybrid --where '{"lang": "en"}'
      vectorize.py search "indemnity for late delivery" --table contract --json --no-text -k 100
    """
    from vectorize_core import connect
    from vectorize_core import search as core

    if query is None and query_vector is None and not (emit_sql or explain):
        raise click.UsageError("Missing argument 'QUERY' (or --query-vector).")
    if query is not None and query_vector is not None and not hybrid:
        raise click.UsageError("Give QUERY or --query-vector, not both (both go together only with --hybrid).")
    choose = dict(table=table, schema=schema, column=column, vector_column=vector_column, metric=metric)
    shown = [c.strip() for c in show.split(",") if c.strip()] if show else None
    with connect(url) as db:
        if emit_sql:
            click.echo(core.emit_sql(db, where=where, exact=exact, hybrid=hybrid, **choose))
            return
        options = dict(
            query_vector=query_vector, k=k, where=where, exact=exact, show=shown, ef_search=ef_search,
            beam_size=beam_size, follower_read=follower_read, text_out=not no_text, **choose,
        )  # fmt: skip
        if hybrid:
            options.update(hybrid=True, fusion_k=fusion_k, weights=(dense_weight, text_weight))
        if explain:
            explained = core.explain(db, query, **options)
            for line in explained.plan:
                click.echo(line)
            click.echo(f"-- {explained.verdict}")
            return
        result = core.search(db, query, **options)
    if result.notice:
        click.echo(f"Note: {result.notice}", err=True)
    if as_json:
        click.echo(to_json([{k: json_value(v) for k, v in row.items()} for row in result.rows]))
        return
    for rank, row in enumerate(result.rows, 1):
        key = ", ".join(f"{c}={cell(row[c])}" for c in result.key_columns)
        text = " ".join(" ".join(cell(row[c]) for c in result.text_columns).split())
        if result.chunk_keys and row[result.chunk_keys[3]] is not None:
            # The chunk that matched, so that a user sees why the row did.
            number, _, _, chunk_text = result.chunk_keys
            text = f"[chunk {row[number]}] " + " ".join(row[chunk_text].split())
        extra = "".join(f"  {c}={cell(row[c])}" for c in result.extra_columns)
        if result.score_key:
            dense, words = (cell(row[k]) or "-" for k in result.rank_keys)
            measure = f"{row[result.score_key]:.4f}  (vector #{dense}, text #{words})"
        else:
            measure = f"{row[result.distance_key]:.4f}"
        click.echo(f"{rank:>3}  {measure}  {key}{extra}  {snippet(text)}")


@cli.command("import-vectors")
@url_option
@apply(table_options)
@click.option("--column", "-c", metavar="COLUMN", help="Text column the vectors belong to  [default: an export's own]")
@click.option(
    "--file", "-f", "file", required=True, metavar="FILE", help="JSON Lines, CSV, Parquet or .npy; - for stdin."
)
@click.option("--keys", "keys_file", metavar="FILE", help="For .npy: the key columns, as JSON Lines or CSV.")
@click.option("--vector-column", metavar="NAME", help="Vector column to fill  [default: <column>_vector]")
@click.option("--metric", type=click.Choice(["cosine", "l2", "ip"]), help="Distance metric  [default: cosine]")
@click.option("--model-name", metavar="LABEL", help="What made the vectors, recorded in the metadata.")
@click.option("--strict", is_flag=True, help="Fail (writing nothing) when a key is not in the table.")
@click.option(
    "--skip-damaged", is_flag=True,
    help="Leave out (and name) damaged rows: unreadable, failing their check, or of absurd length.",
)  # fmt: skip
@click.option("--partial", is_flag=True, help="Import a file holding fewer rows than its export record says.")
@apply(fulltext_options)
@apply(index_options)
def import_vectors(url, table, schema, column, file, keys_file, vector_column, metric, model_name, strict,
                   skip_damaged, partial, fulltext, language, index_mode, index_memory):  # fmt: skip
    """Import vectors computed elsewhere ("bring your own vectors").

    JSON Lines hold one object per line with the primary-key column(s) by name and 'vector'
    (an array of numbers); CSV has a header with the key columns and 'vector' (a JSON array);
    Parquet has the key columns and 'vector' (a list of float32 or float64); .npy needs --keys.
    The whole file is checked before the table is written. A file from export-vectors needs no
    other option: its table, column, keys and model record come with it, and each row's check
    and the row count, so a damaged or cut file is refused (exit 2, nothing written) unless
    --skip-damaged or --partial says what to do. In any file, a vector of absurd length (more
    than 1,000 times the file's typical one, or too long for float4 distances) is damage.

    \b
    Example:
      vectorize.py import-vectors --table passage --column passage --file vectors.jsonl --model-name my-model
      vectorize.py import-vectors -t passage -c passage -f vectors.npy --keys keys.jsonl --fulltext
      vectorize.py import-vectors --url postgresql://root@crdb:26257/app --file passage.parquet
      vectorize.py import-vectors --file passage.jsonl --skip-damaged   # leave out (and name) damaged rows
      vectorize.py import-vectors --file passage.jsonl --partial        # a file cut short, knowingly
    """
    from vectorize_core import connect
    from vectorize_core.importer import import_vectors as run_import

    with connect(url) as db, phase_reporter() as progress, index_reporter() as on_index:
        result = run_import(
            db, table=table, schema=schema, column=column, file=file, keys_file=keys_file,
            vector_column=vector_column, metric=metric, model_name=model_name, strict=strict,
            skip_damaged=skip_damaged, partial=partial, fulltext=fulltext, language=language, index=index_mode,
            index_memory=index_memory, progress=progress, on_index=on_index,
        )  # fmt: skip
    click.echo(import_summary(result))


def import_summary(result) -> str:
    t, restored = result.target, result.restored
    what = plural(result.updated, "vector")
    if restored is not None:
        what = f"the chunks of {plural(restored.rows, 'row')} ({plural(restored.chunks, 'chunk vector')})"
    parts = [
        f"Imported {what} of {t.dimension} dimensions into {t.display} "
        f"in {result.seconds:.1f}s ({result.rows_per_second:.0f} rows/s)"
    ]
    if result.missing:
        parts.append(f"{plural(result.missing, 'key of the file is', 'keys of the file are')} not in the table")
    if restored is not None and restored.changed:
        from vectorize_core.pipeline import describe_keys

        keys = describe_keys(t, restored.changed_keys)
        more = "" if restored.changed <= len(restored.changed_keys) else " among others"
        its, they = ("its", "it stays") if restored.changed == 1 else ("their", "they stay")
        parts.append(
            f"{plural(restored.changed, 'row was', 'rows were')} left out because {its} text changed since the "
            f"export ({keys}{more}); {they} pending for encode"
        )
    if restored is not None and restored.incomplete:
        its = "its chunks are" if restored.incomplete == 1 else "their chunks are"
        parts.append(f"{plural(restored.incomplete, 'row was', 'rows were')} left out: not all {its} in the file")
    if result.partial:
        cut = ", its last line cut off" if result.cut else ""
        parts.append(
            f"the file holds {result.file_rows} of the {result.expected_rows} {result.unit}s its export record says{cut} "
            "(--partial)"
        )
    if result.damaged:
        damaged = result.damaged
        parts.append(f"left out {plural(len(damaged.rows), f'damaged {damaged.unit}')} ({damaged.describe()})")
    parts += fulltext_and_index_parts(result)
    return "; ".join(parts) + "."


@cli.command("export-vectors")
@url_option
@apply(table_options)
@click.option("--column", "-c", metavar="COLUMN", help="Source column of the vectors.")
@click.option("--vector-column", metavar="NAME", help="Vector column, when the column has several.")
@click.option(
    "--file", "-f", "file", required=True, metavar="FILE", help="Where to: .jsonl, .csv, .npy or .parquet (by suffix)."
)
@click.option("--keys", "keys_file", metavar="FILE", help="For .npy: where the keys go  [default: <name>.keys.jsonl]")
def export_vectors(url, table, schema, column, vector_column, file, keys_file):
    """Export a column's vectors with their keys, in key order, and its model record.

    The record (model, metric, prefixes, source column, label) goes inside a Parquet file and
    beside the others (FILE.vectorize.json), so `import-vectors --file FILE` into another
    database restores the same vectors, bit for bit, and `search "text"` works there.
    Each row carries a CRC-32 check and the record its row count, so the import refuses a
    damaged or cut file. A chunked column (encode --chunk) exports one record a chunk, with its
    span in the text, and is restored into a table whose text matches.

    \b
    Example:
      vectorize.py export-vectors --table passage --column passage --file passage.parquet
      vectorize.py import-vectors --url postgresql://root@crdb:26257/app --file passage.parquet
    """
    from vectorize_core import connect
    from vectorize_core.exporter import export_vectors as run_export

    with connect(url) as db, phase_reporter() as progress:
        result = run_export(
            db, table=table, schema=schema, column=column, vector_column=vector_column, file=file,
            keys_file=keys_file, progress=progress,
        )  # fmt: skip
    files = ", ".join(str(f) for f in result.files)
    what = plural(result.rows, "chunk vector") + " (each row's opening among them)" if result.chunked else ""
    click.echo(
        f"Exported {what or plural(result.rows, 'vector')} of {result.dimension} dimensions from "
        f"{result.target.display} in {result.seconds:.1f}s ({result.rows_per_second:.0f} rows/s): {files}."
    )


def fulltext_and_index_parts(result) -> list[str]:
    """What encode and import-vectors say of the full-text column and the vector index."""
    t, parts = result.target, []
    if result.fulltext_added:
        parts.append(f"full text in {t.fulltext['column']} ({t.fulltext['language']}), for search --hybrid")
    if result.index_created:
        parts.append(f"index {t.index_name} ready ({result.index_seconds:.1f}s)")
    if result.index_skipped:
        parts.append(
            f"no index built (--index skip): build it with `vectorize.py index -t {t.table.display} -c {t.sources[0]}`"
        )
    if result.index_note:
        parts.append(f"no vector index: {result.index_note}; searches rank every row exactly")
    return parts


class phase_reporter:
    """The phases of an import: encode's bar for each on a terminal; otherwise (on stderr) a
    timestamped line when a phase that takes a second or more starts and when it ends (a small
    file's bad input stays the one line of its error). Yields the core's progress callback."""

    def __enter__(self):
        self.phase, self.bar, self.update, self.said = None, None, None, False
        return self.report

    def report(self, progress) -> None:
        import time

        if progress.phase != self.phase:
            self.close()
            self.phase, self.bar, self.said = progress.phase, progress_reporter(label=progress.phase), False
            self.update = self.bar.__enter__()
        if self.update is not None:
            if progress.total:
                self.update(progress.done, progress.total)
        elif progress.seconds >= 1 and not self.said:
            self.said = True
            started = time.strftime("%H:%M:%S", time.localtime(time.time() - progress.seconds))
            click.echo(f"{started} {progress.phase} ...", err=True)
        if progress.finished:
            self.close()
            if self.said:
                rate = f" ({progress.done / progress.seconds:.0f} rows/s)" if progress.seconds > 0 else ""
                click.echo(
                    f"{time.strftime('%H:%M:%S')} {progress.phase} done: {plural(progress.done, 'row')} "
                    f"in {progress.seconds:.1f}s{rate}",
                    err=True,
                )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
        self.bar = None

    def __exit__(self, *exc):
        self.close()
        return False


@cli.command("eval")
@url_option
@apply(table_options)
@click.option(
    "--column", "-c", "column", required=True, multiple=True, metavar="COLUMN",
    help="Source column of the vectors; repeat for a column encoded from several (-c title -c body).",
)  # fmt: skip
@click.option("--queries", required=True, metavar="FILE", help="BEIR queries.jsonl, or a TSV of id<TAB>text.")
@click.option("--qrels", required=True, metavar="FILE", help="Judgments: BEIR or TREC qrels TSV.")
@click.option(
    "--vector-column",
    "vector_columns",
    multiple=True,
    metavar="NAME",
    help="Column(s) to compare  [default: all of COLUMN]",
)
@click.option("--id-column", metavar="COLUMN", help="Column holding the corpus ids  [default: the primary key]")
@click.option("-k", "k", default=100, show_default=True, type=click.IntRange(min=10), help="Rows retrieved per query.")
@click.option("--exact", is_flag=True, help="Rank exactly, without the vector index.")
@click.option("--ef-search", type=click.IntRange(1, 1000), help="PostgreSQL: hnsw.ef_search  [default: 100]")
@click.option("--hybrid", is_flag=True, help="Also rank by full text alone and fused (needs encode --fulltext).")
@click.option("--fusion-k", type=click.FloatRange(min=0, min_open=True), default=60, show_default=True,
              help="Hybrid: the reciprocal rank fusion constant.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per vector column (and ranking).")
def eval_command(url, table, schema, column, queries, qrels, vector_columns, id_column, k, exact, ef_search, hybrid,
                 fusion_k, as_json):  # fmt: skip
    """Measure retrieval quality: NDCG@10, Recall@10/100, MRR@10, MAP@100 of each vector column
    on judged queries (BEIR or TREC files), and what the vector index costs against exact search.

    \b
    Example:
      vectorize.py eval --table nfcorpus --column doc --queries queries.jsonl --qrels qrels/test.tsv
      vectorize.py eval --table nfcorpus --column doc --queries q.jsonl --qrels r.tsv --hybrid
    """
    from vectorize_core import connect
    from vectorize_core.evaluate import eval_columns

    if not table:
        raise click.UsageError("Missing option '--table'.")
    with connect(url) as db, progress_reporter(label="evaluating") as progress:
        results = eval_columns(
            db, table=table, schema=schema, column=column, queries=queries, qrels=qrels,
            vector_columns=list(vector_columns) or None, id_column=id_column, k=k, exact=exact,
            ef_search=ef_search, hybrid=hybrid, fusion_k=fusion_k, progress=progress,
        )  # fmt: skip
    rows = [r.as_dict() for r in results]
    if as_json:
        click.echo(to_json(json_value(rows)))
        return
    metrics = ["ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100"]
    table_rows = [
        {"vector_column": r["vector_column"], "ranking": r["ranking"], "model": r["model"], "queries": r["queries"],
         **{m: f"{r[m]:.4f}" for m in metrics},
         "index recall@10": "exact" if r["exact"] else "" if r["index_recall@10"] is None
         else f"{r['index_recall@10']:.3f}"}
        for r in rows
    ]  # fmt: skip
    print_table(["vector_column", "ranking", "model", "queries", *metrics, "index recall@10"], table_rows)
    if rows and rows[0]["judged_queries_left_out"]:
        click.echo(
            f"Note: {plural(rows[0]['judged_queries_left_out'], 'judged query is', 'judged queries are')} "
            f"not in {queries} and {'was' if rows[0]['judged_queries_left_out'] == 1 else 'were'} left out.",
            err=True,
        )


@cli.command("index")
@url_option
@apply(table_options)
@click.option("--column", "-c", metavar="COLUMN", help="Source column of the vectors.")
@click.option("--vector-column", metavar="NAME", help="Vector column  [default: the one made for --column]")
@click.option(
    "--index-memory", metavar="SIZE", callback=lambda ctx, param, value: parse_size(value),
    help="PostgreSQL: memory for the HNSW build, e.g. 4GB  [default: room for the graph, at most 8GB]",
)  # fmt: skip
def index_command(url, table, schema, column, vector_column, index_memory):
    """Build the missing indexes of a vectorized column: after `encode --index skip`, or once
    at the end of several fills. Shows the build's progress.

    \b
    Example:
      vectorize.py encode -t passage -c passage --index skip --limit 100000
      vectorize.py index -t passage -c passage --index-memory 4GB
    """
    from vectorize_core import connect
    from vectorize_core.indexes import build_index

    if not table:
        raise click.UsageError("Missing option '--table'.")
    if not column and not vector_column:
        raise click.UsageError("Missing option '--column' (or '--vector-column').")
    with connect(url) as db, index_reporter() as on_index:
        result = build_index(
            db, table=table, schema=schema, column=column, vector_column=vector_column, memory=index_memory,
            on_index=on_index,
        )  # fmt: skip
    t = result.target
    if not result.index_created and not result.index_note:
        click.echo(f"Nothing to do: the indexes of {t.display} exist.")
        return
    line = f"Indexes of {t.display} ready in {result.index_seconds:.1f}s"
    click.echo(line + (f"; {result.index_note}" if result.index_note else "") + ".")


@cli.command()
@url_option
@apply(table_options)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def status(url, table, schema, as_json):
    """Show every vectorized column: model, counts of embedded and pending rows, index,
    change tracking and storage.

    \b
    Example:
      vectorize.py status --table passage --json
    """
    from vectorize_core import connect, ops

    with connect(url) as db:
        columns = [c.as_dict() for c in ops.status(db, table=table, schema=schema)]
    if as_json:
        click.echo(to_json(json_value(columns)))
        return
    if not columns:
        click.echo("No vectorized columns.")
        return
    headers = ["table", "column", "vector_column", "model", "metric", "rows", "embedded", "pending", "no_text",
               "index", "index_serves_search", "tracking"]  # fmt: skip
    if any(c["chunks"] is not None for c in columns):
        headers.insert(headers.index("embedded") + 1, "chunks")
    # What the vector index holds: each distinct text (or chunk) once.
    headers.insert(headers.index("index"), "indexed")
    print_table(headers, columns)
    for c in columns:
        if c["problem"]:
            click.echo(f"Warning: {c['table']}.{c['vector_column']}: {c['problem']}", err=True)
        if c["index_serves_search_note"]:
            click.echo(f"Note: {c['table']}.{c['vector_column']}: index not used: {c['index_serves_search_note']}.")


@cli.command()
@url_option
@apply(table_options)
@click.option("--column", "-c", metavar="COLUMN", help="Source column of the vectors (its old name works too).")
@click.option("--vector-column", metavar="NAME", help="Vector column to drop  [default: the one made for --column]")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def drop(url, table, schema, column, vector_column, yes):
    """Remove a vector column with its index, metadata and change tracking; every other column
    and row stays exactly as it was.

    \b
    Example:
      vectorize.py drop --table passage --column passage --yes
      vectorize.py drop --table passage --vector-column passage_vector --yes
    """
    from vectorize_core import connect, ops

    if not table:
        raise click.UsageError("Missing option '--table'.")
    if not column and not vector_column:
        raise click.UsageError("Missing option '--column' (or '--vector-column').")

    def confirm(plan) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise click.UsageError(f"refusing to drop {plan.display} without --yes (no terminal to ask on)")
        return click.confirm(
            f"Drop {plan.display} (vectors of {', '.join(plan.sources)}), its index{dropped_too(plan)}?"
        )

    with connect(url) as db:
        plan = ops.drop(db, table=table, schema=schema, column=column, vector_column=vector_column, confirm=confirm)
    if plan is None:
        click.echo("Nothing dropped.")
        return
    click.echo(f"Dropped {plan.display}{dropped_too(plan)}.")


def dropped_too(plan) -> str:
    """What goes with a vector column: its full-text column, its chunk table."""
    parts = [f"its full-text column {plan.fulltext_column}"] if plan.fulltext_column else []
    parts += [f"its chunk table {plan.chunk_table}"] if plan.chunk_table else []
    parts += [f"its contents table {plan.content_table}"] if plan.content_table else []
    return "".join(f" and {part}" for part in parts)


@cli.command()
@url_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any but loopback needs --token-env.")  # fmt: skip
@click.option("--port", "-p", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free one).")  # fmt: skip
@click.option("--token-env", metavar="NAME",
              help="Environment variable holding a token that requests must carry (Authorization: Bearer).")  # fmt: skip
@click.option("--statement-timeout", type=click.FloatRange(min=0, min_open=True), default=30, show_default=True,
              metavar="SECONDS", help="Longest a statement may run.")  # fmt: skip
@click.option("--openapi", is_flag=True, help="Print the API's OpenAPI schema and exit.")
def serve(url, host, port, token_env, statement_timeout, openapi):
    """Serve search over HTTP for applications, and a page to try queries on.

    POST /search takes what `search` takes, as JSON, and answers with the rows of `search --json`
    and how they were ranked; GET /columns lists the vectorized columns; GET /healthz; GET / is
    the page. Read-only. Listens on 127.0.0.1 unless told otherwise, and anywhere else only with
    a token.

    \b
    Example:
      vectorize.py serve                                # http://127.0.0.1:8000
      curl -s localhost:8000/search -d '{"table": "passage", "query": "a sentence", "k": 5}'
      VECTORIZE_TOKEN=$(openssl rand -hex 24) vectorize.py serve --host 0.0.0.0 --port 9000 --token-env VECTORIZE_TOKEN
    """
    from vectorize_core import serve as core

    if openapi:
        click.echo(core.openapi_text(), nl=False)
        return
    token = core.token_from_env(token_env) if token_env else None
    core.serve(
        url, host=host, port=port, token=token, statement_timeout=statement_timeout,
        on_ready=lambda base: click.echo(f"Serving {base}: the page at /, the API at /search (Ctrl-C stops).", err=True),
    )  # fmt: skip


def snippet(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def cell(value) -> str:
    """A value in a human table: nothing for NULL, yes/no for booleans, bytes as PostgreSQL does."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    return str(value)


def to_json(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False)


def print_table(headers: list[str], rows: list[dict]) -> None:
    cells = [[cell(r[h]) for h in headers] for r in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def main():
    cli(prog_name="vectorize.py")


if __name__ == "__main__":
    main()
