"""Load one received day: read → validate → normalize → de-duplicate → write, chunk by chunk.

This is the function the Dagster partition asset and `etl run` call; it never raises for
bad data, only for a warehouse it cannot write.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import gc
import logging
import multiprocessing
import os
import platform
import signal
import sys
import types
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import orjson
import polars as pl

from etl import LOGGER
from etl.dedupe import SeenMessageIds
from etl.events import (
    EventProperties, EventTables, PropertyGatherer, drop_paths_full_tables_cannot_take, empty_discards, event_tables,
)
from etl.names import event_table_name, is_context_column
from etl.normalize import (
    QUARANTINE_SCHEMA, ContextFlattener, capped_context, empty_quarantine, empty_tracks, located, quarantine_frame, tracks_frame,
    without_empty_context,
)
from etl.read import (
    CHUNK_BYTES, FileBreak, LineChunk, LongLine, MessageBudget, Piece, coalesced, list_day_files, read_chunks, readable_path,
)
from etl.validate import (
    ORJSON_TOO_DEEP, OriginalTexts, TrackFields, ValidatedChunk, empty_times, forget_stopped_envelope, make_room_for_deep_json,
    validate_break, validate_chunk, validate_long_line,
)
from etl.registry import SchemaRegistry
from etl.write import PartitionWriter, read_manifest

log = logging.getLogger(LOGGER)

TRACKS = "tracks"
QUARANTINE = "quarantine"
DISCARDS = "discards"
EVENTS = "events"
PARALLEL_FROM_BYTES = 32 * 1024 * 1024
MAX_WORKERS = 4


@dataclass
class DaySummary:
    """What a day's run read and wrote; saved as the partition's manifest and shown by the CLI."""

    received_date: str
    files: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    lines: int = 0
    blank_lines: int = 0
    envelopes: int = 0
    messages: int = 0
    accepted: int = 0
    quarantined: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    unreadable_files: int = 0
    event_rows: dict[str, int] = field(default_factory=dict)
    discards: int = 0
    values_over_column_cap: int = 0
    parquet_sha256: dict[str, str] = field(default_factory=dict)  # in the manifest: what `files_match_load` checks

    @property
    def duplicates(self) -> int:
        return self.quarantined_by_reason.get("duplicate_message_id", 0)

    def as_dict(self) -> dict:
        return asdict(self)


def relative_source(logs_root: Path, path: Path) -> str:
    return readable_path(path.relative_to(logs_root).as_posix())


class PieceTexts:
    """The original texts of the chunk being finished, for its duplicates: kept across the parts
    of a chunk that stopped inside a batch envelope, each of which would split that line again
    (15 splits instead of 1 of a 15 MB envelope in the main process, 26 s, measured). Parts come
    in order, so the texts are the chunk's until `forget` says it is done."""

    def __init__(self) -> None:
        self.originals: OriginalTexts | None = None

    def of(self, piece: LineChunk) -> OriginalTexts:
        if self.originals is None:
            self.originals = OriginalTexts(piece.lines(), piece.first_line_number)
        return self.originals

    def forget(self) -> None:
        """The chunk is done: its texts would otherwise stay until another chunk's duplicates."""
        self.originals = None


def duplicate_rows(chunk: ValidatedChunk, originals: OriginalTexts, tracks: pl.DataFrame, duplicate: pl.Series) -> None:
    """Move accepted-but-duplicate messages of a chunk into its quarantine lists."""
    for message_id, line_number, batch_index in tracks.filter(duplicate).select("message_id", "line_number", "batch_index").iter_rows():
        chunk.reject(
            line_number,
            batch_index,
            originals.at(line_number, batch_index),
            [("duplicate_message_id", f"messageId {message_id!r} was already accepted earlier in this partition")],
            message_id,
        )


def quarantined_ids(chunk: ValidatedChunk) -> pl.DataFrame:
    """The chunk's quarantined messages that carry a `messageId`, with their provenance."""
    return pl.DataFrame(
        {
            "row": range(len(chunk.quarantine_line)), "message_id": chunk.quarantine_message_id,
            "line_number": chunk.quarantine_line, "batch_index": chunk.quarantine_batch_index,
        },
        schema={"row": pl.Int64, "message_id": pl.String, "line_number": pl.Int64, "batch_index": pl.Int64},
    ).drop_nulls("message_id")


def also_duplicates(chunk: ValidatedChunk, quarantined: pl.DataFrame, in_earlier_chunks: pl.Series, firsts: pl.DataFrame) -> None:
    """A quarantined message whose messageId was accepted earlier (in an earlier chunk, or on an
    earlier line or batch item of this one) fails `duplicate_message_id` too: `reasons` lists
    every rule that fails. `firsts` are the chunk's accepted rows that are no duplicates."""
    accepted = firsts.select(
        "message_id", pl.col("line_number").alias("accepted_line"), pl.col("batch_index").alias("accepted_index"),
    )
    earlier_here = (pl.col("accepted_line") < pl.col("line_number")) | (
        (pl.col("accepted_line") == pl.col("line_number")) & (pl.col("accepted_index") < pl.col("batch_index"))
    )
    rows = (
        quarantined.with_columns(in_earlier_chunks.alias("in_earlier_chunks"))
        .join(accepted, on="message_id", how="left")
        .filter(pl.col("in_earlier_chunks") | earlier_here.fill_null(False))["row"]
    )
    for row in rows.to_list():
        chunk.quarantine_reasons[row].append("duplicate_message_id")


@dataclass
class PreparedChunk:
    """The order-independent work on a chunk, done in a worker process: validated, normalized,
    properties gathered by event. `chunk` keeps only its quarantine: the frame carries the rest."""

    chunk: ValidatedChunk
    tracks: pl.DataFrame
    gathered: dict[str, EventProperties]
    context_names: list[str] = field(default_factory=list)  # see ContextColumns.names_in_order

    @property
    def cells(self) -> int:
        """About the cells of the frames it makes, duplicates or not, which size the next chunks
        (see MessageBudget): `tracks`, and per event its rows times `tracks`' columns and its
        paths. Counted in the frames left once duplicates are dropped, a retried wide batch made
        the budget jump to its cap and the next chunk 8 times the cells aimed at (measured)."""
        width = self.tracks.width
        events = sum(len(sink.positions) * (width + len(sink.cells)) for sink in self.gathered.values())
        return self.tracks.height * width + events + len(self.chunk.quarantine_line) * len(QUARANTINE_SCHEMA)

    def __reduce__(self):
        """Sent to the main process with the gathered values as one orjson document: 2.2 instead
        of 3.5 µs an event for pickle, measured. Pickle stays for what JSON cannot hold exactly
        (an integer past 64 bits)."""
        try:
            gathered = orjson.dumps({
                event: [sink.positions, [[path, *cell] for path, cell in sink.cells.items()], sink.dropped]
                for event, sink in self.gathered.items()
            })
        except TypeError as error:
            if str(error) == ORJSON_TOO_DEEP:
                make_room_for_deep_json()  # pickle recurses twice a level through nested arrays
            return PreparedChunk, (self.chunk, self.tracks, self.gathered, self.context_names)
        return PreparedChunk.from_json, (self.chunk, self.tracks, gathered, self.context_names)

    @classmethod
    def from_json(cls, chunk: ValidatedChunk, tracks: pl.DataFrame, gathered: bytes, context_names: list[str]) -> "PreparedChunk":
        return cls(chunk, tracks, {
            event: EventProperties(positions, {tuple(path): (rows, values) for path, rows, values in cells}, dropped)
            for event, (positions, cells, dropped) in orjson.loads(gathered).items()
        }, context_names)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Chunk work allocates some 10^5 dicts and lists that all live until the chunk is done and
    form no cycles; the cyclic collector would rescan them again and again as they pile up
    (measured: a quarter of the validation time). They are freed by reference counting."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
FREED_MEMORY_KEPT = 64 * 1024 * 1024
LARGE_ALLOCATION = 32 * 1024 * 1024  # the most glibc allows for M_MMAP_THRESHOLD


def keep_freed_memory() -> None:
    """Let glibc's malloc keep freed memory for the next chunk instead of returning it at once.

    Each chunk allocates and frees the same few hundred megabytes (line buffers, parsed messages,
    frames). By default glibc maps every block over 128 KB afresh and unmaps it when freed, and
    gives back any free top of the heap over 128 KB: the next chunk then faults the same pages
    in again, zeroed (1.8M page faults for 1M events, measured). Blocks under 32 MB now come
    from the heap, and up to 64 MB of free heap stays: 0.6M faults. No-op off glibc."""
    if platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(None)
    libc.mallopt(M_MMAP_THRESHOLD, LARGE_ALLOCATION)
    libc.mallopt(M_TRIM_THRESHOLD, FREED_MEMORY_KEPT)


def start_worker() -> None:
    """A worker leaves Ctrl-C to the main process, which stops it (see `prepared_in_order`):
    interrupted mid-chunk, each worker printed a traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_freed_memory()


VALIDATORS = {FileBreak: validate_break, LongLine: validate_long_line}


class WalkedWhileValidating:
    """The context columns and gathered properties of a chunk's accepted messages, walked batch
    by batch as validation accepts them (see `validate_chunk`)."""

    def __init__(self, capacity: int) -> None:
        self.context = ContextFlattener(capacity)
        self.properties = PropertyGatherer()

    def add(self, fields: list[TrackFields]) -> None:
        self.context.add([f.context for f in fields])
        self.properties.add(fields, [event_table_name(f.event_text) for f in fields])  # remembered per text

    @property
    def messages(self) -> int:
        return self.context.rows


def prepare_chunk(
    piece: Piece, received_date: dt.date, full_tables: dict[str, frozenset[str]] | None = None, max_messages: int = sys.maxsize,
) -> PreparedChunk:
    """`full_tables`: the event tables whose column cap is reached, with the path keys of their
    columns (see `drop_paths_full_tables_cannot_take`). A chunk of lines stops after
    `max_messages` messages, or after its lines if they are more (see `validate_chunk`)."""
    with collector_paused():
        walked = WalkedWhileValidating(piece.line_count()) if isinstance(piece, LineChunk) else None
        if walked is not None:
            chunk = validate_chunk(piece, walked.add, max(max_messages, piece.line_count()))
        else:
            chunk = VALIDATORS[type(piece)](piece)
        if walked is None or walked.messages != len(chunk.accepted):
            # None walked yet, or `settle_timestamps` quarantined some after their walk: walk them all again.
            walked = WalkedWhileValidating(len(chunk.accepted))
            walked.add(chunk.accepted)
        tracks = tracks_frame(chunk, received_date, walked.context.series())
        gathered = walked.properties.by_event
        chunk.accepted, chunk.times = [], empty_times()
        if full_tables:
            drop_paths_full_tables_cannot_take(gathered, full_tables)
        return PreparedChunk(chunk, tracks, gathered, walked.context.names_in_order())


@dataclass
class ChunkOutput:
    tracks: pl.DataFrame
    quarantine: pl.DataFrame
    events: EventTables


def finish_chunk(
    prepared: PreparedChunk, piece: Piece, quarantined_at: dt.datetime,
    seen: SeenMessageIds, registry: SchemaRegistry, context_columns: set[str], texts: PieceTexts | None = None,
) -> ChunkOutput:
    """The order-dependent work, in the main process and in input order: duplicates (first by
    file name, then line, wins) go to quarantine; the day's context columns are capped; the
    registry types the event tables."""
    chunk, tracks = prepared.chunk, capped_context(prepared.tracks, context_columns, prepared.context_names)
    # Most chunks quarantine nothing: their Polars calls here cost a few ms a chunk, paid per file
    # by a day of thousands of one-line files.
    quarantined = quarantined_ids(chunk) if chunk.quarantine_line else None
    in_earlier_chunks = seen.contains_ids(quarantined["message_id"]) if quarantined is not None else None
    duplicate = seen.mark_duplicates(tracks["message_id"])
    if quarantined is not None and quarantined.height:
        also_duplicates(chunk, quarantined, in_earlier_chunks, tracks.filter(~duplicate))
    has_duplicates = duplicate.any()
    if has_duplicates:
        duplicate_rows(chunk, (texts or PieceTexts()).of(piece), tracks, duplicate)
    # Until here, a joined chunk's line numbers count on across its files.
    tracks, quarantine = located(tracks, piece), located(quarantine_frame(chunk, quarantined_at), piece)
    if not has_duplicates:
        return ChunkOutput(tracks, quarantine, event_tables(tracks, prepared.gathered, registry))
    events = event_tables(tracks, prepared.gathered, registry, duplicate.to_list())
    return ChunkOutput(without_empty_context(tracks.filter(~duplicate)), quarantine, events)



class ChunkWorkers(ProcessPoolExecutor):
    """Spawned worker processes that start without re-running the parent's main module.

    A spawned child first re-runs `__main__` (the `etl` script, Dagster's CLI, pytest), which
    imports Dagster it never uses: ~1.6 s of CPU and ~80 MB per worker, measured. Workers only
    need `etl.pipeline`, so each submit (where the pool starts its processes) briefly shows
    them an empty main module.
    """

    def __init__(self, workers: int) -> None:
        super().__init__(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=start_worker,
        )

    def stop(self) -> None:
        """End the workers now, dropping their chunks: waiting for them after an interrupt hung
        once in some 40 Ctrl-Cs (a worker blocked on the result queue), holding the day's lock.

        A worker killed while sending a result leaves half of it in the result pipe, and the
        pool's thread (then the interpreter's exit) would wait for the rest for ever: closing
        this process's end of the pipe lets that thread read its end and give up."""
        for process in list((self._processes or {}).values()):
            process.terminate()
        if self._result_queue is not None:
            self._result_queue._writer.close()
        self.shutdown(wait=False, cancel_futures=True)

    def submit(self, fn, /, *args, **kwargs):
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            return super().submit(fn, *args, **kwargs)
        finally:
            sys.modules["__main__"] = main


def going_on(piece: Piece, prepared: PreparedChunk) -> LineChunk | None:
    """The rest of a chunk whose validation stopped at its message budget, if it did."""
    resume = prepared.chunk.resume
    return replace(piece, resume=resume) if resume is not None else None


def prepared_in_order(
    pieces: Iterator[Piece], received_date: dt.date, workers: int, full_tables: dict[str, frozenset[str]],
    budget: MessageBudget | None = None,
) -> Iterator[tuple[Piece, PreparedChunk]]:
    """Prepare chunks on `workers` processes, yielding them in input order (so output does not
    depend on parallelism); at most two chunks per worker are in flight, bounding memory, each
    stopping after `budget.messages` messages (the rest of a chunk that stops goes first in line).
    `full_tables` grows as the consumer finds tables full; each chunk takes it as it is then."""
    budget = budget or MessageBudget()
    if workers <= 1:
        try:
            for piece in pieces:
                while piece is not None:
                    prepared = prepare_chunk(piece, received_date, full_tables, budget.messages)
                    yield piece, prepared
                    piece = going_on(piece, prepared)
        finally:  # a load that stops (an interrupt, an error) with an envelope half done
            forget_stopped_envelope()
        return
    pool = ChunkWorkers(workers)

    def submit(piece: Piece) -> tuple[Piece, Future]:
        # A copy: the pool pickles it later, on its own thread, while the consumer may add to it.
        return piece, pool.submit(prepare_chunk, piece, received_date, dict(full_tables), budget.messages)

    def oldest() -> tuple[Piece, PreparedChunk]:
        piece, future = in_flight.popleft()
        prepared = future.result()
        if (rest := going_on(piece, prepared)) is not None:
            in_flight.appendleft(submit(rest))
        return piece, prepared

    try:
        in_flight: deque[tuple[Piece, Future]] = deque()
        for piece in pieces:
            in_flight.append(submit(piece))
            while len(in_flight) >= 2 * workers:
                yield oldest()
        while in_flight:
            yield oldest()
    except BaseException:  # an interrupt, an error, or the consumer giving up (GeneratorExit)
        pool.stop()
        raise
    pool.shutdown()


def log_bytes(files: list[Path]) -> int:
    """The size of the day's log files on disk (a broken link counts as none)."""
    return sum(path.stat().st_size for path in files if path.exists())


def worker_count(files: list[Path]) -> int:
    """Both cores for a large day; one process below PARALLEL_FROM_BYTES, where starting workers
    would cost more than it saves. TRACKHOUSE_WORKERS overrides."""
    configured = os.environ.get("TRACKHOUSE_WORKERS")
    if configured:
        return max(1, int(configured))
    if log_bytes(files) < PARALLEL_FROM_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def day_pieces(logs_root: Path, files: list[Path], day: str, chunk_bytes: int, budget: MessageBudget) -> Iterator[Piece]:
    for path in files:
        source = relative_source(logs_root, path)
        log.info("%s: reading %s", day, source)
        for piece in read_chunks(path, source, chunk_bytes, budget):
            if isinstance(piece, FileBreak):
                log.warning("%s: unreadable from line %d on (%s)", source, piece.line_number, piece.error)
            elif isinstance(piece, LongLine):
                log.warning("%s: line %d is %d bytes, quarantined unparsed", source, piece.line_number, piece.length)
            yield piece


def existing_event_tables(warehouse: Path) -> list[str]:
    folder = warehouse / EVENTS
    return [f"{EVENTS}/{p.name}" for p in folder.iterdir()] if folder.is_dir() else []


class MissingLogs(Exception):
    """The logs a load needs are not there; loading anyway would empty data already loaded."""


def ensure_logs_for(logs_root: Path, warehouse: Path, day: str, day_files: list[Path]) -> None:
    """A day with no folder or no log files loads as an empty partition, unless the root itself
    is missing (a mistyped TRACKHOUSE_LOGS) or the day already holds messages (its files rotated
    away): replacing those with nothing would lose them while every check passed."""
    if not logs_root.is_dir():
        raise MissingLogs(f"logs root {logs_root} does not exist: point TRACKHOUSE_LOGS or --logs at the folder of YYYY-MM-DD day folders")
    loaded = (read_manifest(warehouse, day) or {}).get("messages", 0)
    if loaded and not log_bytes(day_files):
        # Rotation that leaves an empty file (logrotate's `create` or `copytruncate`) counts too.
        missing = "only empty log files in" if day_files else "no log files in" if (logs_root / day).is_dir() else "no folder"
        raise MissingLogs(
            f"{missing} {logs_root / day}, yet the warehouse holds {loaded} messages loaded from it: "
            "restore its files to reload the day (the partition is left as it was)"
        )


def load_day(
    logs_root: Path, warehouse: Path, day: str, chunk_bytes: int = CHUNK_BYTES, workers: int | None = None,
) -> DaySummary:
    """Load every log file of `day` into its warehouse partition, replacing it atomically."""
    day_files = list_day_files(logs_root, day)
    ensure_logs_for(logs_root, warehouse, day, day_files.files)
    received_date = dt.date.fromisoformat(day)
    quarantined_at = dt.datetime.now(dt.UTC)
    summary = DaySummary(day, [relative_source(logs_root, p) for p in day_files.files])
    summary.ignored_files = [relative_source(logs_root, p) for p in day_files.ignored]
    for ignored in summary.ignored_files:
        log.warning("ignored %s: not a .ndjson/.jsonl/.json(.gz) log file", ignored)
    keep_freed_memory()
    reasons: Counter[str] = Counter()
    event_rows: Counter[str] = Counter()
    seen = SeenMessageIds()
    context_columns: set[str] = set()
    registry = SchemaRegistry(warehouse, loading_day=day)
    with PartitionWriter(warehouse, day) as writer:
        budget, texts = MessageBudget(), PieceTexts()
        pieces = coalesced(day_pieces(logs_root, day_files.files, day, chunk_bytes, budget), chunk_bytes, budget)
        full_tables: dict[str, frozenset[str]] = {}
        workers = workers or worker_count(day_files.files)
        for piece, prepared in prepared_in_order(pieces, received_date, workers, full_tables, budget):
            with collector_paused():
                out = finish_chunk(prepared, piece, quarantined_at, seen, registry, context_columns, texts)
            for event in prepared.gathered:
                if event not in full_tables and (columns := registry.full_columns(event)) is not None:
                    full_tables[event] = columns
            chunk = prepared.chunk
            writer.append(TRACKS, out.tracks)
            writer.append(QUARANTINE, out.quarantine)
            discards = out.events.discards_frame()
            writer.append(DISCARDS, discards)
            frames = out.events.frames
            for event in frames:
                writer.append(f"{EVENTS}/{event}", frames[event])
                event_rows[event] += frames[event].height
            reasons.update(out.quarantine["reason"].to_list())
            summary.lines += chunk.lines
            summary.blank_lines += chunk.blank_lines
            summary.envelopes += chunk.envelopes
            summary.messages += chunk.messages
            summary.unreadable_files += isinstance(piece, FileBreak)
            summary.accepted += out.tracks.height
            summary.quarantined += out.quarantine.height
            summary.discards += discards.height
            summary.values_over_column_cap += out.events.over_cap_values
            if isinstance(piece, LineChunk):  # a long line or a break is one row, whatever the day's width
                budget.fit(chunk.messages, prepared.cells)
            if chunk.resume is None:
                texts.forget()
            # Let this chunk's frames go before the next one's are made, not after (two 1 GB
            # chunks of a wide event table were held at once, measured).
            del prepared, out, frames
        # An event table has every `context_…` column of the day's `tracks`, as the contract has
        # it (a chunk's rows carry the ones they use): NULL where its events never sent the key.
        day_context = {name: dtype for name, dtype in writer.columns.get(TRACKS, {}).items() if is_context_column(name)}
        for event in event_rows:  # each written at once: thousands of padded frames must not pile up
            writer.add_columns(f"{EVENTS}/{event}", day_context)
            writer.flush(f"{EVENTS}/{event}")
        writer.flush_all()
        # Every day has these tables, even empty, so views and schemas never miss a partition.
        for table, empty in ((TRACKS, empty_tracks()), (QUARANTINE, empty_quarantine()), (DISCARDS, empty_discards())):
            if table not in writer.parts:
                writer.write(table, empty)
        summary.quarantined_by_reason = dict(sorted(reasons.items()))
        summary.event_rows = dict(sorted(event_rows.items()))
        writer.write_manifest(summary.as_dict())
        writer.publish(retired_tables=existing_event_tables(warehouse))
    registry.close()
    return summary
