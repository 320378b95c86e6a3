"""Turn validated chunks into typed Polars frames for `tracks` and `quarantine`.

Python only gathers columns (one list comprehension per field, one walk per `context`);
typing, skew correction, dates, names and defaults are Polars expressions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from itertools import accumulate
from typing import Any

import orjson
import polars as pl

from etl.names import context_key_name, event_table_name, is_context_column, unique_name
from etl.read import LineChunk, Piece
from etl.validate import TIME_COLUMNS, TrackFields, ValidatedChunk, corrected_timestamp, dump_json

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
    """A value as JSON text, strings as they are. Integers and booleans skip the encoder: their
    text is known, and context has several per event (screen sizes, flags)."""
    kind = type(value)
    if kind is str:
        return value
    if kind is int:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    return dump_json(value).decode()


MAX_CONTEXT_COLUMNS = 500
# A longer column name (a 30,000-character context key) stays a key of `context_other`: every
# event table carries every context column, and 500 such names made 50-row files of 65 MB.
MAX_CONTEXT_NAME_CHARS = 255
CONTEXT_OVERFLOW = "context_other"


class ContextColumns:
    """The dense text columns of a chunk's `context`, at most MAX_CONTEXT_COLUMNS of them.

    A key path that would open one more column past the cap goes, with its text, into that
    row's `context_other` JSON object instead: a file where every line brings new context keys
    (measured: 20,000 lines, 15 GB) cannot blow up memory, and no value is lost.

    Rows come in batches (`ContextFlattener.add`), so each column holds `capacity` cells, grown
    for all columns at once as rows arrive, and `series` cuts them to the rows there are.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.columns: dict[str, list[str | None]] = {}  # in the order first seen
        self.overflow: dict[int, dict[str, str]] = {}
        self.spilled: dict[str, None] = {}  # names the cap sent to `context_other`, in the order first seen
        self.suffix_row, self.next_suffix = -1, {}  # see `free_name`

    def make_room(self, rows: int) -> None:
        """Let the columns hold `rows` rows, doubling as they grow (a batch line's messages)."""
        if rows <= self.capacity:
            return
        extra = max(rows, 2 * self.capacity) - self.capacity
        for column in self.columns.values():
            column.extend([None] * extra)
        self.capacity += extra

    def put(self, name: str, row: int, text: str) -> None:
        column = self.columns.get(name)
        if column is not None and column[row] is None:
            column[row] = text
            return
        extra = self.overflow.get(row, {})
        if column is not None or name in extra:  # `pageUrl` and `page.url` in one message: the next is `_2`, `_3`, …
            name = self.free_name(name, row)
            column = self.columns.get(name)
        if column is None:
            if len(self.columns) >= MAX_CONTEXT_COLUMNS or len(name) > MAX_CONTEXT_NAME_CHARS:
                self.overflow.setdefault(row, extra)[name] = text
                if len(name) <= MAX_CONTEXT_NAME_CHARS:
                    self.spilled[name] = None
                return
            column = self.columns[name] = [None] * self.capacity
        column[row] = text

    def free_name(self, name: str, row: int) -> str:
        """The first of `name_2`, `name_3`, … free in `row`: neither a filled column nor a key
        the cap spilled to the row's `context_other`, whichever it is (numbered among the
        spilled keys alone, a value took `x_2` where a column of its row held `x_2`, and so its
        name depended on where chunks ended). Searched from where the last search for `name` in
        this row stopped (rows come in order, and a row's names only fill): k keys of one
        message that map to one name cost k steps, not k², which let a 55 KB line of 1,000 such
        messages run for over 300 s."""
        extra = self.overflow.get(row, {})
        return self.next_free(name, row, lambda candidate: (
            (column := self.columns.get(candidate)) is not None and column[row] is not None or candidate in extra
        ))

    def next_free(self, name: str, row: int, taken: Callable[[str], bool]) -> str:
        if row != self.suffix_row:
            self.suffix_row, self.next_suffix = row, {}
        suffix = self.next_suffix.get(name, 2)
        while taken(f"{name}_{suffix}"):
            suffix += 1
        self.next_suffix[name] = suffix + 1
        return f"{name}_{suffix}"

    def series(self, height: int) -> list[pl.Series]:
        cut = (lambda column: column) if height == self.capacity else (lambda column: column[:height])
        out = [pl.Series(name, cut(self.columns[name]), dtype=pl.String) for name in sorted(self.columns)]
        if self.overflow:
            texts = [None] * height
            for row, extra in self.overflow.items():
                texts[row] = overflow_text(extra)
            out.append(pl.Series(CONTEXT_OVERFLOW, texts, dtype=pl.String))
        return out

    def names_in_order(self) -> list[str]:
        """Every name a column could take, in the order first seen: the cap spills only once
        the columns are all made."""
        return [*self.columns, *self.spilled]


def overflow_text(extra: dict[str, str]) -> str:
    """A row's `context_other` object, its keys sorted: the same text whichever keys a chunk's
    own cap spilled and which the day's cap folded in after (see `capped_context`)."""
    return dump_json(extra, sort_keys=True).decode()


def context_path_name(prefix: str, key: str) -> str:
    return f"{prefix}_{context_key_name(key)}"


def context_column_name(prefix: str, key: str) -> str:
    """A value's column: its path's name, except that `context.other` leaves `context_other` to
    the overflow column (objects below `context.other` keep their names)."""
    return unique_name(context_path_name(prefix, key), (CONTEXT_OVERFLOW,))


class ContextFlattener:
    """`context.page.url` → `context_page_url`, one text column per key path (JSON text for
    numbers, booleans and arrays), NULL where a row lacks it.

    Fed in batches of messages, in order, while validation goes on: a context is walked while
    its message is still in the CPU's cache, which a whole chunk's parsed messages outgrow (with
    the properties' walk: 1-2 µs of worker CPU less an event, 1-2 % of a 1M-event run, measured).

    A tight loop, as it runs per value: each nested object's level remembers, by key, the dense
    column a value goes to and the level below, so a value costs one lookup; names are made, and
    clashes and the cap handled, only off that path (50 → 21 k instructions an event, callgrind).
    """

    def __init__(self, capacity: int) -> None:
        self.out = ContextColumns(capacity)
        self.rows = 0
        # (column name prefix, key → column, key → level)
        self.root: tuple[str, dict, dict] = ("context", {}, {})

    def add(self, contexts: list[Any]) -> None:
        out, root, first = self.out, self.root, self.rows
        self.rows += len(contexts)
        out.make_room(self.rows)
        for row, context in enumerate(contexts, first):
            if context is None:
                continue
            if type(context) is not dict:
                out.put("context", row, json_text(context))
                continue
            stack = [(root, context)]
            while stack:
                (prefix, cells, levels), node = stack.pop()
                pushed = len(stack)  # this level's objects, walked after its values, in key order
                for key, value in node.items():
                    kind = type(value)
                    if kind is dict:
                        level = levels.get(key)
                        if level is None:
                            level = levels[key] = (context_path_name(prefix, key), {}, {})
                        stack.append((level, value))
                        continue
                    if value is None:
                        continue
                    text = value if kind is str else json_text(value)
                    column = cells.get(key)
                    if column is not None and column[row] is None:
                        column[row] = text
                        continue
                    name = context_column_name(prefix, key)
                    out.put(name, row, text)
                    if column is None and name in out.columns:
                        cells[key] = out.columns[name]
                if len(stack) - pushed > 1:
                    stack[pushed:] = reversed(stack[pushed:])

    def series(self) -> list[pl.Series]:
        return self.out.series(self.rows)

    def names_in_order(self) -> list[str]:
        return self.out.names_in_order()


def moved_context(tracks: pl.DataFrame, folded: list[str], lifted: list[str]) -> pl.DataFrame:
    """Move the context columns `folded` into the rows' `context_other` objects (the day already
    has as many columns as it may), and the keys `lifted` out of them into columns (the day took
    them as columns though this chunk's own cap had spilled them): no value is lost.

    Polars finds the folded columns' values (mostly NULL: 16k rows × 250 sparse columns were 4M
    Python steps a chunk); Python touches only the rows with something to move."""
    lift = set(lifted)
    lifted_cells: tuple[list[int], list[str], list[str]] = ([], [], [])  # row, name, text
    merged = overflow_objects(tracks)
    folded_cells: dict[int, list[tuple[str, str]]] = {}
    if folded:
        cells = tracks.select(pl.int_range(pl.len()).alias("row"), *folded).unpivot(index="row").drop_nulls("value")
        for row, name, text in cells.iter_rows():
            folded_cells.setdefault(row, []).append((name, text))
    for row in sorted({*folded_cells, *(row for row, other in enumerate(merged) if other is not None)}):
        extra = orjson.loads(merged[row]) if merged[row] is not None else {}
        if lift:
            for name in lift.intersection(extra):
                lifted_cells[0].append(row)
                lifted_cells[1].append(name)
                lifted_cells[2].append(extra.pop(name))
        for name, text in folded_cells.get(row, ()):
            extra[unique_name(name, extra)] = text
        merged[row] = overflow_text(extra) if extra else None
    tracks = tracks.drop(folded)
    if lifted:  # the cells, pivoted to one column per name: a Series per name cost a query each
        rows, names, texts = lifted_cells
        cells = pl.DataFrame({"row": rows, "name": names, "text": texts}, schema={"row": pl.Int64, "name": pl.String, "text": pl.String})
        wide = pl.DataFrame({"row": range(tracks.height)}, schema={"row": pl.Int64}).join(
            cells.pivot(on="name", index="row", values="text"), on="row", how="left", maintain_order="left",
        )
        tracks = tracks.hstack(wide.select(lifted).get_columns())  # each a name the chunk spilled in some row
    if any(text is not None for text in merged):
        return tracks.with_columns(pl.Series(CONTEXT_OVERFLOW, merged, dtype=pl.String))
    return tracks.drop(CONTEXT_OVERFLOW, strict=False)  # as a chunk that spilled nothing: no column


def overflow_objects(tracks: pl.DataFrame) -> list[str | None]:
    return tracks.get_column(CONTEXT_OVERFLOW).to_list() if CONTEXT_OVERFLOW in tracks.columns else [None] * tracks.height


def capped_context(tracks: pl.DataFrame, day_columns: set[str], names_in_order: list[str]) -> pl.DataFrame:
    """Keep the day's `context` columns within MAX_CONTEXT_COLUMNS (each chunk is capped on its
    own): the first names seen in input order (a message's keys in its order) stay columns,
    later ones join `context_other`, wherever chunks end and however many workers made them.

    `names_in_order`: the chunk's names, columns or spilled by its own cap (see
    ContextColumns.names_in_order). A name the day takes that the chunk spilled is lifted back
    out of `context_other` into its column."""
    room = MAX_CONTEXT_COLUMNS - len(day_columns)
    if room > 0:
        day_columns.update([name for name in names_in_order if name not in day_columns][:room])
    columns = tracks.columns  # a new list at each access
    folded = [c for c in columns if is_context_column(c) and c != CONTEXT_OVERFLOW and c not in day_columns]
    present = set(columns)
    lifted = [name for name in names_in_order if name in day_columns and name not in present]
    return moved_context(tracks, folded, lifted) if folded or lifted else tracks


def without_empty_context(frame: pl.DataFrame) -> pl.DataFrame:
    """Drop the context columns no row of `frame` holds: those only a chunk's duplicates used.
    Whether `tracks` or an event table has such a column must not depend on whether the
    duplicates came in a chunk of their own, which writes no rows (read through the views, a
    column a part lacks is NULL there anyway)."""
    empty = [name for name, nulls in zip(frame.columns, frame.null_count().row(0)) if nulls == frame.height and is_context_column(name)]
    return frame.drop(empty) if empty and frame.height else frame


def tracks_frame(chunk: ValidatedChunk, received_date: dt.date, context: list[pl.Series]) -> pl.DataFrame:
    """The accepted messages of a chunk as `tracks` rows (before de-duplication); `context`, their
    context columns, flattened (see ContextFlattener)."""
    fields = chunk.accepted
    if not fields:
        return empty_tracks()
    columns = dict(zip(TrackFields._fields, map(list, zip(*fields))))  # transposed in C, not per field
    del columns["context"]  # flattened into `context`
    for name in TIME_COLUMNS:  # the texts; `chunk.times` has them typed
        del columns[name]
    del columns["properties"]  # `properties_json` has them as text
    gathered = pl.DataFrame(
        {**columns, "line_number": chunk.accepted_line, "batch_index": chunk.accepted_batch_index},
        schema_overrides={
            "revenue": pl.Float64, "currency": pl.String, "value": pl.Int64, "user_id": pl.String,
            "anonymous_id": pl.String, "batch_index": pl.Int64, "properties_json": pl.Binary,
        },
    ).hstack(chunk.times)
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
        pl.col("properties_json").cast(pl.String).alias("properties"),
        pl.lit(chunk.source_file).alias("source_file"),
        "line_number",
        "batch_index",
    )
    return standard.hstack([*context, *trailing.get_columns()])


def located(frame: pl.DataFrame, chunk: Piece) -> pl.DataFrame:
    """Rows of a joined chunk, whose line numbers count on across its files, given their own
    `source_file` and `line_number` back."""
    if not isinstance(chunk, LineChunk) or not chunk.files or frame.is_empty():
        return frame
    starts = pl.Series(list(accumulate((f.lines for f in chunk.files[:-1]), initial=chunk.first_line_number)))
    file = starts.search_sorted(frame["line_number"], side="right") - 1
    return frame.with_columns(
        pl.Series("source_file", [f.source_file for f in chunk.files], pl.String).gather(file),
        frame["line_number"] - starts.gather(file) + pl.Series([f.first_line_number for f in chunk.files]).gather(file),
    )


def empty_tracks() -> pl.DataFrame:
    return pl.DataFrame(schema={**TRACKS_STANDARD_SCHEMA, **TRACKS_TRAILING_SCHEMA})


def quarantine_frame(chunk: ValidatedChunk, quarantined_at: dt.datetime) -> pl.DataFrame:
    """The chunk's rejected messages, `reason` being the first of `reasons`; `message` explains the
    first failure and names the others: "Missing required field: event (also: missing_identity)"."""
    if not chunk.quarantine_line:
        return empty_quarantine()
    frame = pl.DataFrame(
        {
            "line_number": chunk.quarantine_line,
            "batch_index": chunk.quarantine_batch_index,
            "raw": chunk.quarantine_raw,
            # Reason codes hold no space. Polars builds a list column from Python lists at ~5 KB a
            # row (a 4 MB file of `0` lines needed 10.5 GB, measured); split text is 40x leaner.
            "reasons": [" ".join(codes) for codes in chunk.quarantine_reasons],
            "message": chunk.quarantine_message,
        },
        schema={
            "line_number": pl.Int64, "batch_index": pl.Int64, "raw": pl.String,
            "reasons": pl.String, "message": pl.String,
        },
    ).with_columns(pl.col("reasons").str.split(" "))
    return frame.select(
        pl.lit(chunk.source_file, pl.String).alias("source_file"),
        "line_number",
        "batch_index",
        "raw",
        pl.col("reasons").list.first().alias("reason"),
        "reasons",
        pl.when(pl.col("reasons").list.len() > 1)
        .then(pl.format("{} (also: {})", "message", pl.col("reasons").list.slice(1).list.join(", ")))
        .otherwise("message")
        .alias("message"),
        pl.lit(quarantined_at, UTC_MICROS).alias("quarantined_at"),
    ).sort("line_number", "batch_index", nulls_last=False)


def empty_quarantine() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)
