"""`warehouse.duckdb`: one view per warehouse table, rebuilt aside and swapped in whole.

Views hold absolute paths so the file answers from any working directory; readers that have
the old file open keep reading it while a new one is built (os.replace of a finished file).
One writer at a time: an exclusive lock on `<warehouse>/.catalog.lock`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb

from etl.events import EVENT_LEADING_COLUMNS, EVENT_PROVENANCE_COLUMNS
from etl.names import is_context_column
from etl.registry import REGISTRY_FILE, Column, SchemaRegistry
from etl.write import file_lock

DATABASE_FILE = "warehouse.duckdb"
# The file holds only views, so it is written in the oldest storage format DuckDB 1.x reads:
# analysts' CLIs and BI tools on an older DuckDB open it too.
STORAGE_COMPATIBILITY = {"storage_compatibility_version": "v1.0.0"}
LOCK_FILE = ".catalog.lock"
FINGERPRINT_FILE = ".catalog.fingerprint"
EVENTS_SCHEMA = "events"
BASE_VIEWS = ("tracks", "quarantine", "discards")
DUCKDB_TYPES = {
    "int": "BIGINT", "float": "DOUBLE", "bool": "BOOLEAN",
    "string": "VARCHAR", "timestamp": "TIMESTAMPTZ", "json": "VARCHAR",
}


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@contextlib.contextmanager
def writer_lock(warehouse: Path) -> Iterator[None]:
    """Serialize writers of the DuckDB file and the marts across processes (flock)."""
    warehouse.mkdir(parents=True, exist_ok=True)
    with file_lock(warehouse / LOCK_FILE):
        yield


def parquet_source(folder: Path) -> str | None:
    """A read_parquet() over a Hive-partitioned folder, or None when it holds no Parquet yet."""
    if not any(folder.glob("received_date=*/*.parquet")):
        return None
    pattern = quote_literal(str(folder.resolve() / "*" / "*.parquet"))
    return (
        f"read_parquet({pattern}, hive_partitioning = true, union_by_name = true, "
        "hive_types = {'received_date': DATE})"
    )


def table_folders(warehouse: Path) -> dict[str, Path]:
    """View name → Parquet folder, for the base tables that exist in the warehouse."""
    return {name: warehouse / name for name in BASE_VIEWS if (warehouse / name).is_dir()}


def registered_columns(warehouse: Path) -> dict[str, list[Column]]:
    if not (warehouse / REGISTRY_FILE).exists():
        return {}
    registry = SchemaRegistry(warehouse)
    try:
        return registry.all_events()
    finally:
        registry.close()


def event_columns_written(connection: duckdb.DuckDBPyConnection, events: Path) -> dict[str, set[str]]:
    """Event table → the columns its Parquet files hold, in one schema scan of every footer
    (one query, not one per table: a warehouse may have thousands of event tables)."""
    pattern = quote_literal(str(events.resolve() / "*" / "received_date=*" / "*.parquet"))
    rows = connection.execute(
        f"select distinct file_name, name from parquet_schema({pattern}) where num_children is null"
    ).fetchall()
    written: dict[str, set[str]] = {}
    for file_name, column in rows:
        written.setdefault(Path(file_name).parent.parent.name, set()).add(column)
    return written


def event_view_sql(source: str, present: set[str], properties: list[Column]) -> str:
    """Standard, context and provenance columns as written, then every registered property column
    cast to its registry type (NULL for partitions written before the column existed)."""
    context = sorted(c for c in present if is_context_column(c))
    selected = [quote_identifier(c) for c in (*EVENT_LEADING_COLUMNS, *context, *EVENT_PROVENANCE_COLUMNS) if c in present]
    for column in properties:
        value = quote_identifier(column.name) if column.name in present else "NULL"
        selected.append(f"cast({value} as {DUCKDB_TYPES[column.type]}) as {quote_identifier(column.name)}")
    selected.append("received_date")
    return f"select {', '.join(selected)} from {source}"


def event_view_name(event: str, taken: set[str]) -> str:
    """A view named after the event, unless that name is a base table or model (then `event_<name>`)."""
    return f"event_{event}" if event in taken else event


@contextlib.contextmanager
def rebuilt_database(warehouse: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to a fresh database file that replaces `warehouse.duckdb` when the block ends."""
    final = warehouse / DATABASE_FILE
    temporary = warehouse / f".{DATABASE_FILE}.{uuid.uuid4().hex[:8]}.tmp"
    connection = duckdb.connect(str(temporary), config=STORAGE_COMPATIBILITY)
    try:
        yield connection
        connection.execute("checkpoint")
        connection.close()
        os.replace(temporary, final)
    finally:
        connection.close()
        temporary.unlink(missing_ok=True)
        Path(str(temporary) + ".wal").unlink(missing_ok=True)


def create_views(connection: duckdb.DuckDBPyConnection, views: dict[str, str]) -> None:
    for name, select in views.items():
        connection.execute(f"create or replace view {quote_identifier(name)} as {select}")


def create_event_views(
    connection: duckdb.DuckDBPyConnection, warehouse: Path, taken: set[str], written: dict[str, set[str]],
) -> None:
    """One view per event table: in schema `events`, and under its own name in the main schema."""
    folder = warehouse / "events"
    if not written:
        return
    registry = registered_columns(warehouse)
    connection.execute(f"create schema if not exists {EVENTS_SCHEMA}")
    for table in sorted(p for p in folder.iterdir() if p.is_dir() and p.name in written):
        source = parquet_source(table)
        select = event_view_sql(source, written[table.name], registry.get(table.name, []))
        connection.execute(f"create or replace view {EVENTS_SCHEMA}.{quote_identifier(table.name)} as {select}")
        connection.execute(f"create or replace view {quote_identifier(event_view_name(table.name, taken))} as {select}")


def mart_views(warehouse: Path) -> dict[str, str]:
    """A view per published model (`marts/<model>/`), named after the model."""
    folder = warehouse / "marts"
    views = {}
    for mart in sorted(folder.iterdir()) if folder.is_dir() else []:
        if mart.is_dir() and not mart.name.startswith(".") and any(mart.glob("*.parquet")):
            views[mart.name] = f"select * from read_parquet({quote_literal(str(mart.resolve() / '*.parquet'))})"
    return views


def catalog_fingerprint(warehouse: Path, views: dict[str, str], written: dict[str, set[str]]) -> str:
    """What the views depend on: their SQL, each event table's columns, the registry. New
    partitions of known tables change none of it (views re-read their globs at query time)."""
    state = {
        "views": views,
        "event_columns": {event: sorted(columns) for event, columns in sorted(written.items())},
        "registry": {event: [(c.name, c.type) for c in columns] for event, columns in sorted(registered_columns(warehouse).items())},
    }
    return hashlib.sha1(json.dumps(state, sort_keys=True).encode()).hexdigest()


def rebuild_catalog(warehouse: Path) -> Path:
    """Rebuild `warehouse.duckdb` with a view per table, per event and per model, unless nothing
    the views depend on changed since the last build. Caller holds the writer lock."""
    views = {}
    for name, folder in table_folders(warehouse).items():
        source = parquet_source(folder)
        if source is not None:
            views[name] = f"select * from {source}"
    views.update(mart_views(warehouse))
    events = warehouse / "events"
    written = event_columns_written(duckdb.connect(), events) if any(events.glob("*/received_date=*/*.parquet")) else {}
    fingerprint = catalog_fingerprint(warehouse, views, written)
    marker = warehouse / FINGERPRINT_FILE
    database = warehouse / DATABASE_FILE
    if database.exists() and marker.exists() and marker.read_text() == fingerprint:
        return database
    with rebuilt_database(warehouse) as connection:
        create_views(connection, views)
        create_event_views(connection, warehouse, set(BASE_VIEWS) | set(views), written)
    marker.write_text(fingerprint)
    return database


def refresh_catalog(warehouse: Path) -> Path:
    """`rebuild_catalog` under the writer lock: what a partition run calls after publishing."""
    with writer_lock(warehouse):
        return rebuild_catalog(warehouse)
