"""Turn validated chunks into typed Polars frames for `tracks` and `quarantine`.

Python only gathers columns (one list comprehension per field, one walk per `context`);
typing, skew correction, dates, names and defaults are Polars expressions.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from etl.names import event_table_name, key_name
from etl.validate import TrackFields, ValidatedChunk, dump_json

UTC_MICROS = pl.Datetime("us", "UTC")

TRACKS_STANDARD_SCHEMA: dict[str, pl.DataType] = {
    "message_id": pl.String(),
    "event": pl.String(),
    "event_text": pl.String(),
    "user_id": pl.String(),
    "anonymous_id": pl.String(),
    "timestamp": UTC_MICROS,
    "original_timestamp": UTC_MICROS,
    "sent_at": UTC_MICROS,
    "received_at": UTC_MICROS,
    "event_date": pl.Date(),
    "revenue": pl.Float64(),
    "currency": pl.String(),
    "value": pl.Int64(),
}
TRACKS_TRAILING_SCHEMA: dict[str, pl.DataType] = {
    "properties": pl.String(),
    "source_file": pl.String(),
    "line_number": pl.Int64(),
    "batch_index": pl.Int64(),
}
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "line_number": pl.Int64(),
    "batch_index": pl.Int64(),
    "raw": pl.String(),
    "reason": pl.String(),
    "reasons": pl.List(pl.String()),
    "message": pl.String(),
    "quarantined_at": UTC_MICROS,
}
DEFAULT_CURRENCY = "USD"


def json_text(value: Any) -> str:
    return value if isinstance(value, str) else dump_json(value).decode()


def context_columns(contexts: list[Any]) -> list[pl.Series]:
    """`context.page.url` → `context_page_url`, one text column per key path (JSON text for
    numbers, booleans and arrays), NULL where a row lacks it. A tight loop: it runs per event,
    so each column is a dense list filled in place and names are cached per parent path."""
    height = len(contexts)
    columns: dict[str, list[str | None]] = {}
    child_names: dict[str, dict[str, str]] = {}
    for row, context in enumerate(contexts):
        if context is None:
            continue
        if type(context) is not dict:
            columns.setdefault("context", [None] * height)[row] = json_text(context)
            continue
        stack = [("context", context)]
        while stack:
            prefix, node = stack.pop()
            names = child_names.get(prefix)
            if names is None:
                names = child_names[prefix] = {}
            for key, value in node.items():
                name = names.get(key)
                if name is None:
                    name = names[key] = f"{prefix}_{key_name(key)}"
                if type(value) is dict:
                    stack.append((name, value))
                elif value is not None:
                    column = columns.get(name)
                    if column is None:
                        column = columns[name] = [None] * height
                    elif column[row] is not None:  # `pageUrl` and `page.url` in one message
                        column = clash_column(columns, name, row, height)
                    column[row] = value if type(value) is str else json_text(value)
    return [pl.Series(name, columns[name], dtype=pl.String) for name in sorted(columns)]


def clash_column(columns: dict[str, list[str | None]], name: str, row: int, height: int) -> list[str | None]:
    """The first `name_2`, `name_3`, … still free in `row`: a second key of one message that maps
    to a taken column name keeps its value there instead of overwriting the first."""
    suffix = 2
    while (column := columns.setdefault(f"{name}_{suffix}", [None] * height))[row] is not None:
        suffix += 1
    return column


def corrected_timestamp() -> pl.Expr:
    """Segment's skew correction: receivedAt − (sentAt − originalTimestamp) when no timestamp."""
    ts, original, sent, received = (pl.col(n) for n in ("timestamp", "original_timestamp", "sent_at", "received_at"))
    return (
        pl.when(ts.is_not_null())
        .then(ts)
        .when(original.is_not_null() & sent.is_not_null() & received.is_not_null())
        .then(received - (sent - original))
        .otherwise(pl.coalesce(original, pl.col("occurred_at"), received))
    )


def tracks_frame(chunk: ValidatedChunk, received_date: dt.date) -> pl.DataFrame:
    """The accepted messages of a chunk as `tracks` rows (before de-duplication)."""
    fields = chunk.accepted
    if not fields:
        return empty_tracks()
    columns = dict(zip(TrackFields._fields, map(list, zip(*fields))))  # transposed in C, not per field
    contexts = columns.pop("context")
    columns["properties"] = [dump_json(p) for p in columns["properties"]]
    gathered = pl.DataFrame(
        {**columns, "line_number": chunk.accepted_line, "batch_index": chunk.accepted_batch_index},
        schema_overrides={
            "timestamp": pl.Int64, "original_timestamp": pl.Int64, "sent_at": pl.Int64,
            "received_at": pl.Int64, "occurred_at": pl.Int64, "revenue": pl.Float64,
            "currency": pl.String, "value": pl.Int64, "user_id": pl.String,
            "anonymous_id": pl.String, "batch_index": pl.Int64, "properties": pl.Binary,
        },
    )
    event_names = {text: event_table_name(text) for text in set(gathered["event_text"].to_list())}
    standard = gathered.with_columns(
        timestamp=corrected_timestamp(),
    ).select(
        "message_id",
        pl.col("event_text").replace_strict(event_names, return_dtype=pl.String).alias("event"),
        "event_text",
        "user_id",
        "anonymous_id",
        *(pl.col(n).cast(UTC_MICROS) for n in ("timestamp", "original_timestamp", "sent_at", "received_at")),
        pl.coalesce(pl.col("timestamp").cast(UTC_MICROS).dt.date(), pl.lit(received_date)).alias("event_date"),
        "revenue",
        pl.col("currency").fill_null(DEFAULT_CURRENCY),
        "value",
    )
    trailing = gathered.select(
        pl.col("properties").cast(pl.String),
        pl.lit(chunk.source_file).alias("source_file"),
        "line_number",
        "batch_index",
    )
    return standard.hstack([*context_columns(contexts), *trailing.get_columns()])


def empty_tracks() -> pl.DataFrame:
    return pl.DataFrame(schema={**TRACKS_STANDARD_SCHEMA, **TRACKS_TRAILING_SCHEMA})


def quarantine_frame(chunk: ValidatedChunk, quarantined_at: dt.datetime) -> pl.DataFrame:
    """The chunk's rejected messages, `reason` being the first of `reasons`."""
    frame = pl.DataFrame(
        {
            "line_number": chunk.quarantine_line,
            "batch_index": chunk.quarantine_batch_index,
            "raw": chunk.quarantine_raw,
            "reasons": chunk.quarantine_reasons,
            "message": chunk.quarantine_message,
        },
        schema={
            "line_number": pl.Int64, "batch_index": pl.Int64, "raw": pl.String,
            "reasons": pl.List(pl.String), "message": pl.String,
        },
    )
    return frame.select(
        pl.lit(chunk.source_file, pl.String).alias("source_file"),
        "line_number",
        "batch_index",
        "raw",
        pl.col("reasons").list.first().alias("reason"),
        "reasons",
        "message",
        pl.lit(quarantined_at, UTC_MICROS).alias("quarantined_at"),
    ).sort("line_number", "batch_index", nulls_last=False)


def empty_quarantine() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)
