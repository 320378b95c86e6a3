"""Load one received day: read → validate → normalize → de-duplicate → write, chunk by chunk.

This is the function the Dagster partition asset and `etl run` call; it never raises for
bad data, only for a warehouse it cannot write.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from etl.dedupe import SeenMessageIds
from etl.events import EventTables, empty_discards, event_tables
from etl.normalize import empty_quarantine, empty_tracks, quarantine_frame, tracks_frame
from etl.read import CHUNK_BYTES, FileBreak, list_day_files, read_chunks
from etl.validate import ValidatedChunk, validate_break, validate_chunk
from etl.registry import SchemaRegistry
from etl.write import PartitionWriter

log = logging.getLogger("trackhouse")

TRACKS = "tracks"
QUARANTINE = "quarantine"
DISCARDS = "discards"
EVENTS = "events"


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

    @property
    def duplicates(self) -> int:
        return self.quarantined_by_reason.get("duplicate_message_id", 0)

    def as_dict(self) -> dict:
        return asdict(self)


def relative_source(logs_root: Path, path: Path) -> str:
    return path.relative_to(logs_root).as_posix()


def duplicate_rows(chunk: ValidatedChunk, tracks: pl.DataFrame, duplicate: pl.Series) -> None:
    """Move accepted-but-duplicate messages of a chunk into its quarantine lists."""
    positions = duplicate.arg_true().to_list()
    ids = tracks["message_id"].gather(positions).to_list()
    for position, message_id in zip(positions, ids):
        chunk.reject(
            chunk.accepted_line[position],
            chunk.accepted_batch_index[position],
            chunk.accepted_raw_text(position),
            [("duplicate_message_id", f"messageId {message_id!r} was already accepted earlier in this partition")],
        )


@dataclass
class ChunkOutput:
    tracks: pl.DataFrame
    quarantine: pl.DataFrame
    events: EventTables


def process_chunk(
    chunk: ValidatedChunk, received_date: dt.date, quarantined_at: dt.datetime,
    seen: SeenMessageIds, registry: SchemaRegistry,
) -> ChunkOutput:
    """Normalize a validated chunk, move in-partition duplicates to quarantine, split by event."""
    tracks = tracks_frame(chunk, received_date)
    fields = chunk.accepted
    duplicate = seen.mark_duplicates(tracks["message_id"])
    if duplicate.any():
        duplicate_rows(chunk, tracks, duplicate)
        tracks = tracks.filter(~duplicate)
        fields = [f for f, dup in zip(fields, duplicate.to_list()) if not dup]
    return ChunkOutput(tracks, quarantine_frame(chunk, quarantined_at), event_tables(tracks, fields, registry))


def existing_event_tables(warehouse: Path) -> list[str]:
    folder = warehouse / EVENTS
    return [f"{EVENTS}/{p.name}" for p in folder.iterdir()] if folder.is_dir() else []


def load_day(logs_root: Path, warehouse: Path, day: str, chunk_bytes: int = CHUNK_BYTES) -> DaySummary:
    """Load every log file of `day` into its warehouse partition, replacing it atomically."""
    received_date = dt.date.fromisoformat(day)
    quarantined_at = dt.datetime.now(dt.UTC)
    day_files = list_day_files(logs_root, day)
    summary = DaySummary(day, [relative_source(logs_root, p) for p in day_files.files])
    summary.ignored_files = [relative_source(logs_root, p) for p in day_files.ignored]
    for ignored in summary.ignored_files:
        log.warning("ignored %s: not a .ndjson/.jsonl/.json(.gz) log file", ignored)
    reasons: Counter[str] = Counter()
    event_rows: Counter[str] = Counter()
    seen = SeenMessageIds()
    registry = SchemaRegistry(warehouse)
    with PartitionWriter(warehouse, day) as writer:
        for path in day_files.files:
            source = relative_source(logs_root, path)
            log.info("%s: reading %s", day, source)
            for piece in read_chunks(path, source, chunk_bytes):
                if isinstance(piece, FileBreak):
                    chunk = validate_break(piece)
                    summary.unreadable_files += 1
                    log.warning("%s: unreadable from line %d on (%s)", source, piece.line_number, piece.error)
                else:
                    chunk = validate_chunk(piece)
                out = process_chunk(chunk, received_date, quarantined_at, seen, registry)
                writer.append(TRACKS, out.tracks)
                writer.append(QUARANTINE, out.quarantine)
                writer.append(DISCARDS, out.events.discards_frame())
                for event, frame in out.events.frames.items():
                    writer.append(f"{EVENTS}/{event}", frame)
                    event_rows[event] += frame.height
                reasons.update(out.quarantine["reason"].to_list())
                summary.lines += chunk.lines
                summary.blank_lines += chunk.blank_lines
                summary.envelopes += chunk.envelopes
                summary.messages += chunk.messages
                summary.accepted += out.tracks.height
                summary.quarantined += out.quarantine.height
                summary.discards += out.events.discards_frame().height
                summary.values_over_column_cap += out.events.over_cap_values
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
