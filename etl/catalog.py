"""`warehouse.duckdb`: one view per warehouse table, rebuilt aside and swapped in whole.

Views hold absolute paths so the file answers from any working directory; readers that have
the old file open keep reading it while a new one is built (os.replace of a finished file).
One writer at a time: an exclusive lock on `<warehouse>/.catalog.lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb

DATABASE_FILE = "warehouse.duckdb"
LOCK_FILE = ".catalog.lock"


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@contextlib.contextmanager
def writer_lock(warehouse: Path) -> Iterator[None]:
    """Serialize writers of the DuckDB file and the marts across processes (flock)."""
    warehouse.mkdir(parents=True, exist_ok=True)
    with open(warehouse / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    folders = {}
    for name in ("tracks", "quarantine", "discards"):
        if (warehouse / name).is_dir():
            folders[name] = warehouse / name
    return folders


@contextlib.contextmanager
def rebuilt_database(warehouse: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to a fresh database file that replaces `warehouse.duckdb` when the block ends."""
    final = warehouse / DATABASE_FILE
    temporary = warehouse / f".{DATABASE_FILE}.{uuid.uuid4().hex[:8]}.tmp"
    connection = duckdb.connect(str(temporary))
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


def refresh_catalog(warehouse: Path, extra_views: dict[str, str] | None = None) -> Path:
    """Rebuild `warehouse.duckdb` with a view per table (plus `extra_views`), under the writer lock."""
    views = {}
    for name, folder in table_folders(warehouse).items():
        source = parquet_source(folder)
        if source is not None:
            views[name] = f"select * from {source}"
    views.update(extra_views or {})
    with writer_lock(warehouse), rebuilt_database(warehouse) as connection:
        create_views(connection, views)
    return warehouse / DATABASE_FILE
