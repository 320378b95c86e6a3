"""Per-event tables: every accepted event's `properties` flattened into typed columns.

Python walks each message's properties once, gathering values per (event, path); the schema
registry names and types the columns; a value that does not fit its column's type becomes
NULL there and one `discards` row, so nothing is lost and no type conflict fails a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from etl.names import is_context_column
from etl.normalize import UTC_MICROS, json_text, without_empty_context
from etl.registry import CONVERTED_PROPERTIES, Column, SchemaRegistry, is_converted, path_key
from etl.validate import INVALID, TrackFields, as_float, parse_timestamp

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
POLARS_TYPES: dict[str, pl.DataType] = {
    "int": pl.Int64(), "float": pl.Float64(), "bool": pl.Boolean(),
    "string": pl.String(), "timestamp": UTC_MICROS, "json": pl.String(),
}
EVENT_LEADING_COLUMNS = (
    "message_id", "event", "event_text", "user_id", "anonymous_id", "timestamp", "original_timestamp",
    "sent_at", "received_at", "event_date",
)
EVENT_PROVENANCE_COLUMNS = ("source_file", "line_number", "batch_index")
DISCARDS_SCHEMA: dict[str, pl.DataType] = {
    "event": pl.String(), "message_id": pl.String(), "column_name": pl.String(),
    "value": pl.String(), "expected_type": pl.String(),
}


@dataclass
class EventProperties:
    """One event's rows in a chunk: their positions in `tracks`, and values per property path."""

    positions: list[int] = field(default_factory=list)
    cells: dict[tuple[str, ...], tuple[list[int], list[Any]]] = field(default_factory=dict)
    dropped: list[int] = field(default_factory=list)  # per row, values of paths a full table cannot take

    def put(self, path: tuple[str, ...], row: int, value: Any) -> None:
        cell = self.cells.get(path)
        if cell is None:
            cell = self.cells[path] = ([], [])
        cell[0].append(row)
        cell[1].append(value)


def flatten_nested(node: dict, prefix: tuple[str, ...], row: int, cells: dict) -> None:
    """Put each leaf below a top-level property into `cells` (an EventProperties' cells), keyed
    by its path. Filled inline rather than through EventProperties.put: it runs per leaf."""
    for key, value in node.items():
        path = (*prefix, key)
        if type(value) is dict:
            flatten_nested(value, path, row, cells)
        elif value is not None:
            cell = cells.get(path)
            if cell is None:
                cell = cells[path] = ([], [])
            cell[0].append(row)
            cell[1].append(value)


CONVERTED = ([], [])  # marks the top-level keys whose typed value comes from TrackFields


class PropertyGatherer:
    """Groups accepted messages by event table and flattens their properties, fed in batches of
    messages in order while validation goes on (while they are still in the CPU's cache).

    Most properties are top-level leaves: their cells are found by key in a per-event dict,
    with no path tuple built and hashed per value (24 → 16 k instructions an event, callgrind).
    """

    def __init__(self) -> None:
        self.by_event: dict[str, EventProperties] = {}
        self.top_cells: dict[str, dict[str, tuple[list[int], list[Any]]]] = {}
        self.positions = 0

    def add(self, fields: list[TrackFields], events: list[str]) -> None:
        """`events` are the messages' event table names."""
        by_event, top_cells, first = self.by_event, self.top_cells, self.positions
        self.positions += len(fields)
        for position, (message, event) in enumerate(zip(fields, events), first):
            sink = by_event.get(event)
            if sink is None:
                sink = by_event[event] = EventProperties()
                top_cells[event] = dict.fromkeys(CONVERTED_PROPERTIES, CONVERTED)
            top = top_cells[event]
            cells = sink.cells
            row = len(sink.positions)
            sink.positions.append(position)
            for key, value in message.properties.items():
                cell = top.get(key)
                if cell is CONVERTED:
                    continue
                if type(value) is dict:
                    flatten_nested(value, (key,), row, cells)
                elif value is not None:
                    if cell is None:
                        cell = top[key] = cells[(key,)] = ([], [])
                    cell[0].append(row)
                    cell[1].append(value)
            for name in CONVERTED_PROPERTIES:
                converted = getattr(message, name)
                if converted is not None:
                    sink.put((name,), row, converted)


def drop_paths_full_tables_cannot_take(gathered: dict[str, EventProperties], full_tables: dict[str, frozenset[str]]) -> None:
    """For an event table whose column cap is reached, and so can never take another column,
    drop the values of every path it has no column for, keeping per row how many went (they are
    counted past the cap once duplicates are known). The main process then need not decode and
    walk them: 4 million such paths made it use 27 s of CPU where a whole load in one process
    used 14 s (measured). `revenue`, `currency` and `value` are never capped, so never dropped."""
    for event, allowed in full_tables.items():
        sink = gathered.get(event)
        if sink is None:
            continue
        beyond = [path for path in sink.cells if path_key(path) not in allowed and not is_converted(path)]
        if not beyond:
            continue
        counts = sink.dropped or [0] * len(sink.positions)
        for path in beyond:
            for row in sink.cells.pop(path)[0]:
                counts[row] += 1
        sink.dropped = counts


def value_type(value: Any) -> str:
    kind = type(value)
    if kind is bool:
        return "bool"
    if kind is int:
        return "int"
    if kind is float:
        return "float"
    if kind is list:
        return "json"
    timestamp = parse_timestamp(value)
    return "string" if timestamp is INVALID else "timestamp"


EXACT_PYTHON_TYPE = {"string": str, "float": float, "bool": bool}


def converted_column(values: list[Any], kind: str) -> list[Any]:
    """`converted` over a column, skipping the per-value work when every value already fits
    (the types are collected in C: a Python loop here cost a tenth of the main process)."""
    types = set(map(type, values))
    exact = EXACT_PYTHON_TYPE.get(kind)
    if exact is not None and types == {exact}:
        return values
    if kind == "int" and types == {int} and INT64_MIN <= min(values) and max(values) <= INT64_MAX:
        return values
    return [converted(v, kind) for v in values]


def converted(value: Any, kind: str) -> Any:
    """The value as stored in a column of `kind`, or INVALID when it does not fit."""
    vtype = type(value)
    if kind == "string":
        return value if vtype is str else json_text(value)
    if kind == "int":
        return value if vtype is int and INT64_MIN <= value <= INT64_MAX else INVALID
    if kind == "float":
        return value if vtype is float else as_float(value) if vtype is int else INVALID
    if kind == "bool":
        return value if vtype is bool else INVALID
    if kind == "timestamp":
        return parse_timestamp(value) if vtype is str else INVALID
    return json_text(value) if vtype is list else INVALID


@dataclass
class EventTables:
    """What one chunk adds to the per-event tables and to `discards`."""

    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    discards: list[pl.DataFrame] = field(default_factory=list)
    over_cap_values: int = 0

    def discards_frame(self) -> pl.DataFrame:
        return pl.concat(self.discards) if self.discards else empty_discards()


def empty_discards() -> pl.DataFrame:
    return pl.DataFrame(schema=DISCARDS_SCHEMA)


def register_columns(
    registry: SchemaRegistry, event: str, cells: dict, keep: list[bool] | None, lacked: bool = False,
) -> tuple[dict[str, Column], dict[str, int]]:
    """Ask the registry only when this chunk brings a path it lacks (`lacked`: paths dropped by
    the workers, which a full table lacks) or an int column sees a float: asking reads what other
    runs registered meanwhile. Values of dropped rows (`keep` false: duplicates) never name or
    type a column.

    Also returns, for each path that the registry held as int until a float came in this chunk,
    where that float is among its values: the values before it are judged as an int column's, as
    in a chunk of their own (else a value's fate would depend on where chunks happen to end). A
    new path is registered with its first value's type before it widens, so a column that a run
    of an earlier (or the same) day registered as float meanwhile is never judged as int.

    Types follow received order whatever the order days load in: the registry keeps the
    earliest received day that sent a column a float (`widened_on`: the day that widened it, or
    registered it as float), and a day up to that one (a rerun, or an earlier day loaded later)
    judges the column as int until its own first float, as a clean run in received order would;
    a float there moves `widened_on` back to it."""
    known = registry.columns(event)
    proposals, floats_from, rewidened = {}, {}, {}
    for path, (rows, values) in cells.items():
        key = path_key(path)
        column = known.get(key)
        widened_here = column is not None and registry.int_until_first_float(event, key, column)
        if column is not None and column.type != "int" and not widened_here:
            continue
        kept = [i for i, r in enumerate(rows) if keep[r]] if keep is not None else range(len(values))
        if not kept:
            continue
        first_float = next((i for i in kept if type(values[i]) is float), None)
        if first_float is not None:
            floats_from[key] = (path, first_float)
            registry.floats_seen.add((event, key))
        if widened_here:
            rewidened[key] = len(values) if first_float is None else first_float
            if first_float is not None:
                proposals[key] = (path, "float")  # the registry moves widened_on back if this day is earlier
        if column is None:
            proposals[key] = (path, value_type(values[kept[0]]))
    columns = registry.register(event, proposals) if proposals or lacked else known
    int_until = {key: first for key, (_, first) in floats_from.items() if (c := columns.get(key)) is not None and c.type == "int"}
    if int_until:
        columns = registry.register(event, {key: (floats_from[key][0], "float") for key in int_until})
    return columns, {**int_until, **rewidened}


def event_tables(
    tracks: pl.DataFrame, gathered: dict[str, EventProperties], registry: SchemaRegistry,
    duplicate: list[bool] | None = None,
) -> EventTables:
    """Split a chunk's accepted rows into per-event frames with typed property columns.

    `tracks` and `gathered` still hold the chunk's duplicates, marked in `duplicate`: the property
    columns are built whole and filtered once, cheaper than re-gathering properties without them.
    """
    out = EventTables()
    message_ids = tracks["message_id"]
    base_columns = [
        c for c in tracks.columns
        if c in EVENT_LEADING_COLUMNS or is_context_column(c) or c in EVENT_PROVENANCE_COLUMNS
    ]
    for event, sink in gathered.items():
        keep = [not duplicate[p] for p in sink.positions] if duplicate is not None else None
        if keep is not None and all(keep):
            keep = None
        if keep is not None and not any(keep):
            continue
        dropped = sum(count for row, count in enumerate(sink.dropped) if keep is None or keep[row])
        columns, int_until = register_columns(registry, event, sink.cells, keep, lacked=dropped > 0)
        height = len(sink.positions)
        # Plain indexing, not select/filter: those plan a lazy query each time, ten times the
        # cost on a chunk's few hundred rows, paid per event table in the main process. The rows
        # kept only, and the context columns they hold.
        base = without_empty_context(tracks[sink.positions if keep is None else [p for p, k in zip(sink.positions, keep) if k], base_columns])
        series = []
        for path, (rows, values) in sink.cells.items():
            column = columns.get(path_key(path))
            if column is None:  # past the cap, or only in duplicates (which never open a column)
                out.over_cap_values += len(values) if keep is None else sum(keep[r] for r in rows)
                continue
            split = int_until.get(path_key(path)) if column.type == "float" else None
            if split is None:
                typed = converted_column(values, column.type)
            else:
                typed = [*converted_column(values[:split], "int"), *converted_column(values[split:], "float")]
            misfit = []
            if typed is not values and any(t is INVALID for t in typed):
                misfit = [(i, r, v) for i, (r, v, t) in enumerate(zip(rows, values, typed)) if t is INVALID and (keep is None or keep[r])]
                fitting = [(r, t) for r, t in zip(rows, typed) if t is not INVALID]
                rows, typed = [r for r, _ in fitting], [t for _, t in fitting]
            dtype = pl.Int64() if column.type == "timestamp" else POLARS_TYPES[column.type]
            values_series = pl.Series(column.name, list(typed), dtype=dtype)
            if len(rows) != height:
                values_series = pl.Series(column.name, [None] * height, dtype=dtype).scatter(list(rows), values_series)
            if column.type == "timestamp":
                values_series = values_series.cast(UTC_MICROS)
            series.append((column.position, values_series))
            if misfit:
                out.discards.append(pl.DataFrame({
                    "event": [event] * len(misfit),
                    "message_id": message_ids.gather([sink.positions[r] for _, r, _ in misfit]),
                    "column_name": [column.name] * len(misfit),
                    "value": [json_text(v) for _, _, v in misfit],
                    "expected_type": ["int" if split is not None and i < split else column.type for i, _, _ in misfit],
                }, schema=DISCARDS_SCHEMA))
        out.over_cap_values += dropped
        properties = pl.DataFrame([s for _, s in sorted(series, key=lambda item: item[0])])
        if keep is not None and properties.width:
            properties = properties[pl.Series(keep).arg_true()]
        out.frames[event] = base.hstack(properties.get_columns())
    return out
