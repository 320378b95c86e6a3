"""`warehouse.duckdb`: one view per warehouse table, rebuilt aside and swapped in whole.

Views hold absolute paths so the file answers from any working directory; readers that have
the old file open keep reading it while a new one is built (os.replace of a finished file).
One writer at a time: an exclusive lock on `<warehouse>/.catalog.lock`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb

from etl import LOGGER
from etl.events import EVENT_LEADING_COLUMNS, EVENT_PROVENANCE_COLUMNS
from etl.names import is_context_column
from etl.registry import Column, read_registry
from etl.write import writer_lock

log = logging.getLogger(LOGGER)

DATABASE_FILE = "warehouse.duckdb"
# The file holds only views, so it is written in the oldest storage format DuckDB 1.x reads:
# analysts' CLIs and BI tools on an older DuckDB open it too.
STORAGE_COMPATIBILITY = {"storage_compatibility_version": "v1.0.0"}
FINGERPRINT_FILE = ".catalog.fingerprint"
COLUMNS_CACHE_FILE = ".catalog.columns.json"
EVENTS_SCHEMA = "events"
BASE_VIEWS = ("tracks", "quarantine", "discards")
DUCKDB_TYPES = {
    "int": "BIGINT", "float": "DOUBLE", "bool": "BOOLEAN",
    "string": "VARCHAR", "timestamp": "TIMESTAMPTZ", "json": "VARCHAR",
}


# What a DuckDB of trackhouse's may hold before it spills to disk: a refresh of the models, a
# day's checks (conservation groups every message's provenance: 20M quarantine rows took 2.4 GB
# unbounded, 0.57 GB bounded, in the same 3 s, measured).
MEMORY_LIMIT = "512MB"

_scratch = threading.local()


def bounded(spill: Path) -> dict[str, str]:
    """DuckDB settings that hold a database to MEMORY_LIMIT, spilling past it into `spill`."""
    return {"memory_limit": MEMORY_LIMIT, "temp_directory": str(spill)}


def scratch_database() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB bounded by MEMORY_LIMIT, spilling to a folder of its own that DuckDB
    makes under the system's temporary folder when it first spills and removes when closed.
    Where no temporary folder is usable (a read-only container), unbounded, as it always was:
    checks that never spill must not fail for want of one."""
    try:
        spill = Path(tempfile.gettempdir()) / f"trackhouse-scratch-{uuid.uuid4().hex}"
    except FileNotFoundError:  # "No usable temporary directory found"
        return duckdb.connect()
    return duckdb.connect(config=bounded(spill))


@contextlib.contextmanager
def shared_scratch_database() -> Iterator[None]:
    """Let the queries inside (a day's checks, the models' checks) share one in-memory DuckDB,
    each on a cursor of its own: opening a database costs 18 ms, a cursor 0.3 ms, and a day's
    checks asked a dozen queries, a fifth of a 10,000-event day's run (measured). Closed on exit,
    so no DuckDB threads outlive it: a process forked while they run can hang in DuckDB."""
    if getattr(_scratch, "database", None) is not None:
        yield
        return
    _scratch.database = scratch_database()
    try:
        yield
    finally:
        close_quietly(_scratch.database)
        _scratch.database = None


def close_quietly(database: duckdb.DuckDBPyConnection) -> None:
    """Close a database that may have been invalidated, without hiding the error that did it."""
    with contextlib.suppress(duckdb.Error):
        database.close()


@contextlib.contextmanager
def scratch_cursor() -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection for queries over Parquet files that leave nothing behind (temporary views at
    most, which are the cursor's own): a cursor of this thread's shared database, else a database
    of its own. A fatal error invalidates a DuckDB database for good, so the shared one is then
    replaced: the query that hit it fails, the ones after it run as if it had not."""
    database = getattr(_scratch, "database", None)
    connection = database.cursor() if database is not None else scratch_database()
    try:
        yield connection
    except duckdb.FatalException:
        if database is not None and _scratch.database is database:
            close_quietly(database)
            _scratch.database = scratch_database()
        raise
    finally:
        close_quietly(connection)


def scratch_rows(sql: str) -> list[tuple]:
    with scratch_cursor() as cursor:
        return cursor.execute(sql).fetchall()


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def glob_literal(path: Path) -> str:
    """`path` as a DuckDB glob that matches only itself (a warehouse `wh[1]` must not read `wh1`):
    `*`, `?` and `[` go in brackets, DuckDB's only escape (1.0 to 2.0). DuckDB also splits a glob
    at `\\`, which nothing escapes, so such a path is refused rather than read from elsewhere."""
    text = str(path)
    if "\\" in text:
        raise ValueError(f"DuckDB reads the '\\' in {text} as a folder separator: use a warehouse path without one")
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def file_list(files: list[Path]) -> str:
    """A SQL list of these files, each taken literally."""
    return "[" + ", ".join(quote_literal(glob_literal(f)) for f in files) + "]"


def parquet_glob(folder: Path, pattern: str) -> str:
    """A SQL literal for the files under `folder` (taken literally) that match `pattern`."""
    return quote_literal(f"{glob_literal(folder.resolve())}/{pattern}")


def parquet_source(folder: Path) -> str | None:
    """A read_parquet() over a Hive-partitioned folder, or None when it holds no Parquet yet."""
    if not any(folder.glob("received_date=*/*.parquet")):
        return None
    pattern = parquet_glob(folder, "*/*.parquet")
    return (
        f"read_parquet({pattern}, hive_partitioning = true, union_by_name = true, "
        "hive_types = {'received_date': DATE})"
    )


def table_folders(warehouse: Path) -> dict[str, Path]:
    """View name → Parquet folder, for the base tables that exist in the warehouse."""
    return {name: warehouse / name for name in BASE_VIEWS if (warehouse / name).is_dir()}


def folder_files(folder: Path) -> list[list]:
    """The Parquet files of one (event table, day) folder, hidden ones too as the views' glob reads
    them, as [name, inode, size, mtime_ns, ctime_ns], sorted: what a folder's cached columns are
    valid for (a file rewritten under its name and given its old time back still has a new ctime)."""
    files = [entry for entry in os.scandir(folder) if entry.name.endswith(".parquet") and entry.is_file()]
    return sorted([entry.name, (stat := entry.stat()).st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns] for entry in files)


def read_columns_cache(path: Path) -> dict[str, tuple[list, list[str]]]:
    """The last refresh's files and columns per folder; nothing (read every footer) if absent or
    damaged."""
    try:
        cached = json.loads(path.read_text())
        sets = cached["column_sets"]
        if not all(isinstance(columns, list) and all(isinstance(name, str) for name in columns) for columns in sets):
            return {}
        return {key: (files, sets[index]) for key, (files, index) in cached["folders"].items()}
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        return {}


def write_columns_cache(path: Path, folders: dict[str, tuple[list, list[str]]]) -> None:
    """Each distinct column list once (a table's days mostly share one), atomically replaced."""
    index: dict[tuple[str, ...], int] = {}
    entries = {key: [files, index.setdefault(tuple(columns), len(index))] for key, (files, columns) in folders.items()}
    staged = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    staged.write_text(json.dumps({"column_sets": [list(columns) for columns in index], "folders": entries}))
    os.replace(staged, path)


FILES_PER_SCAN = 5_000  # a list literal of 200,000 paths took DuckDB 4.7 s and 1.5 GB to parse


def scanned_columns(files: list[Path]) -> dict[str, list[str]]:
    """Columns per `<table>/received_date=<day>` folder of `files` (absolute paths, so that
    DuckDB names them as given), scanning their footers FILES_PER_SCAN at a time (not a query per
    table: a warehouse may have thousands of event tables)."""
    columns: dict[str, set[str]] = {}
    for start in range(0, len(files), FILES_PER_SCAN):
        # Grouped in DuckDB: a row per file and column in Python held 1.2 GB for 5,000 tables of 414 columns.
        for folder, names in scratch_rows(f"""
            select regexp_extract(file_name, '([^/]+/received_date=[^/]*)/[^/]*$', 1), list(distinct name)
            from parquet_schema({file_list(files[start : start + FILES_PER_SCAN])}) where num_children is null group by 1
        """):
            columns.setdefault(folder, set()).update(names)
    return {folder: sorted(names) for folder, names in columns.items()}


def event_columns_written(warehouse: Path) -> dict[str, set[str]]:
    """Event table → the columns its Parquet files hold. Each (table, day) folder's footers are
    read once: COLUMNS_CACHE_FILE keeps its columns with its files' names, inodes, sizes and times, and a
    refresh reads only the folders that changed since (a partition run refreshes the catalog, and
    reading all 2,600 footers of a 200-day warehouse took it 0.43 s, measured). Caller holds the
    writer lock."""
    events = (warehouse / "events").resolve()
    folders = {
        f"{folder.parent.name}/{folder.name}": (folder, files)
        for folder in sorted(events.glob("*/received_date=*"))
        if folder.is_dir() and (files := folder_files(folder))
    }
    cache_path = warehouse / COLUMNS_CACHE_FILE
    for debris in warehouse.glob(f"{COLUMNS_CACHE_FILE}.*.tmp"):  # a killed refresh's (we hold the writer lock)
        debris.unlink(missing_ok=True)
    cached = read_columns_cache(cache_path)
    unchanged = {key for key, (_, files) in folders.items() if key in cached and cached[key][0] == files}
    changed = [folder / name for key, (folder, files) in folders.items() if key not in unchanged for name, *_ in files]
    scanned = scanned_columns(changed) if changed else {}
    current = {key: (files, cached[key][1] if key in unchanged else scanned.get(key, [])) for key, (_, files) in folders.items()}
    if current != cached:
        write_columns_cache(cache_path, current)
    written: dict[str, set[str]] = {}
    for key, (_, columns) in current.items():
        written.setdefault(key.partition("/")[0], set()).update(columns)
    return written


def event_view_sql(source: str, present: set[str], properties: list[Column]) -> str:
    """Standard, context and provenance columns as written, then every registered property column
    cast to its registry type (NULL for partitions written before the column existed).

    An int column's files are read as they are, uncast: a view outlives its catalog (a reader's
    open session, or the moment between a day's publishing and the rebuild), and once a later
    day widens the column to float, `cast(… as BIGINT)` rounded its 1.5 to 2 without a word.
    Read as written, the files that are all BIGINT give BIGINT, and one DOUBLE file makes it
    DOUBLE for every row, values intact."""
    context = sorted(c for c in present if is_context_column(c))
    selected = [quote_identifier(c) for c in (*EVENT_LEADING_COLUMNS, *context, *EVENT_PROVENANCE_COLUMNS) if c in present]
    for column in properties:
        name = quote_identifier(column.name)
        if column.name not in present:
            selected.append(f"cast(NULL as {DUCKDB_TYPES[column.type]}) as {name}")
        elif column.type == "int":
            selected.append(name)
        else:
            selected.append(f"cast({name} as {DUCKDB_TYPES[column.type]}) as {name}")
    selected.append("received_date")
    return f"select {', '.join(selected)} from {source}"


def folded(name: str) -> bytes:
    """A view name as DuckDB compares it: ASCII letters ignore case, other letters do not."""
    return name.encode().lower()


def event_view_names(events: list[str], taken: set[str]) -> dict[str, str]:
    """Event table → its main-schema view name, never one `taken` (tables, models) or another
    event's, so no view hides another. An event has its own name when no table or model has it;
    else `event_<name>`, or `event_<name>_2`, `_3`, … when that is taken too (by a model or an
    event's own name), given in event-name order: the same warehouse always gets the same names."""
    used = {folded(name) for name in taken}
    names = {}
    for event in sorted(events):
        if folded(event) not in used:
            names[event] = event
            used.add(folded(event))
    for event in sorted(set(events) - set(names)):
        alias, number = f"event_{event}", 1
        while folded(alias) in used:
            number += 1
            alias = f"event_{event}_{number}"
        names[event] = alias
        used.add(folded(alias))
    return names


@contextlib.contextmanager
def rebuilt_database(warehouse: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to a fresh database file that replaces `warehouse.duckdb` when the block ends.

    DuckDB names a database's WAL by putting `.wal` before the first `?` of its path (also after
    resolving links), so under a folder like `wh?` it cannot commit: the file is then built in a
    scratch folder and copied next to `warehouse.duckdb` before the swap."""
    final = warehouse / DATABASE_FILE
    for debris in warehouse.glob(f".{DATABASE_FILE}.*.tmp*"):  # a killed rebuild's (we hold the writer lock)
        debris.unlink(missing_ok=True)
    temporary = warehouse / f".{DATABASE_FILE}.{uuid.uuid4().hex[:8]}.tmp"
    with tempfile.TemporaryDirectory(prefix="trackhouse-catalog-") as scratch:
        built = Path(scratch) / DATABASE_FILE if "?" in str(temporary.resolve()) else temporary
        connection = duckdb.connect(str(built), config=STORAGE_COMPATIBILITY)
        try:
            yield connection
            connection.execute("checkpoint")
            connection.close()
            if built != temporary:
                shutil.copyfile(built, temporary)
            os.replace(temporary, final)
        finally:
            connection.close()
            temporary.unlink(missing_ok=True)
            Path(str(temporary) + ".wal").unlink(missing_ok=True)


def create_views(connection: duckdb.DuckDBPyConnection, views: dict[str, str], temporary: bool = False) -> None:
    """`temporary` views are the connection's own (a scratch cursor's), unseen by other cursors."""
    kind = "temporary view" if temporary else "view"
    for name, select in views.items():
        connection.execute(f"create or replace {kind} {quote_identifier(name)} as {select}")


def create_event_views(
    connection: duckdb.DuckDBPyConnection, warehouse: Path, taken: set[str], written: dict[str, set[str]],
    registry: dict[str, list[Column]],
) -> None:
    """One view per event table: in schema `events`, and in the main schema under the name
    `event_view_names` gives it."""
    folder = warehouse / "events"
    if not written:
        return
    connection.execute(f"create schema if not exists {EVENTS_SCHEMA}")
    tables = sorted(p for p in folder.iterdir() if p.is_dir() and p.name in written)
    names = event_view_names([table.name for table in tables], taken)
    for table in tables:
        source = parquet_source(table)
        select = event_view_sql(source, written[table.name], registry.get(table.name, []))
        connection.execute(f"create or replace view {EVENTS_SCHEMA}.{quote_identifier(table.name)} as {select}")
        connection.execute(f"create or replace view {quote_identifier(names[table.name])} as {select}")


def mart_views(warehouse: Path) -> dict[str, str]:
    """A view per published model (`marts/<model>/`), named after the model."""
    folder = warehouse / "marts"
    views = {}
    for mart in sorted(folder.iterdir()) if folder.is_dir() else []:
        if mart.is_dir() and not mart.name.startswith(".") and any(mart.glob("*.parquet")):
            views[mart.name] = f"select * from read_parquet({parquet_glob(mart, '*.parquet')})"
    return views


def catalog_fingerprint(views: dict[str, str], written: dict[str, set[str]], registry: dict[str, list[Column]]) -> str:
    """What the views depend on: their SQL, each event table's columns, the registry. New
    partitions of known tables change none of it (views re-read their globs at query time)."""
    state = {
        "views": views,
        "event_columns": {event: sorted(columns) for event, columns in sorted(written.items())},
        "registry": {event: [(c.name, c.type) for c in columns] for event, columns in sorted(registry.items())},
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
    written = event_columns_written(warehouse)
    # Read once for the fingerprint and the views alike: a load registering columns between two
    # reads would have fingerprinted one registry and built views from another.
    registry = read_registry(warehouse)
    fingerprint = catalog_fingerprint(views, written, registry)
    marker = warehouse / FINGERPRINT_FILE
    database = warehouse / DATABASE_FILE
    if database.exists() and marker.exists() and marker.read_text() == as_built(fingerprint, database):
        return database
    with rebuilt_database(warehouse) as connection:
        connection.execute("begin")  # one commit, not one per view: 30 % less time for 3,000 events
        create_views(connection, views)
        create_event_views(connection, warehouse, set(BASE_VIEWS) | set(views), written, registry)
        connection.execute("commit")
    marker.write_text(as_built(fingerprint, database))
    return database


def as_built(fingerprint: str, database: Path) -> str:
    """The fingerprint with the database file's size and time: a file overwritten, truncated or
    replaced since it was built (it no longer opened, and stayed so) is rebuilt too."""
    stat = database.stat()
    return f"{fingerprint} {stat.st_size} {stat.st_mtime_ns}"


def refresh_catalog(warehouse: Path) -> None:
    """`rebuild_catalog` under the writer lock: what a partition run calls after publishing. Its
    day is loaded whatever happens here, so a rebuild that cannot read one of the warehouse's
    Parquet files (another day's, damaged) is a warning saying what rewrites it, not a failure of
    a day already published, and of every later day of a backfill; the last catalog stays. Any
    other error (a full disk) fails the run as before."""
    with writer_lock(warehouse):
        try:
            rebuild_catalog(warehouse)
        except duckdb.Error as error:
            advice = damaged_file_advice(warehouse, error)
            if advice is None or isinstance(error, duckdb.InterruptException):
                raise
            first_line = (str(error).strip().splitlines() or [""])[0]
            log.warning(f"{DATABASE_FILE} was not rebuilt after this load ({first_line}): {advice}")


NAMED_PARQUET = re.compile(r"'([^']+\.parquet)'")  # as DuckDB quotes a file it cannot read


def damaged_file_advice(warehouse: Path, error: duckdb.Error) -> str | None:
    """What rewrites the warehouse Parquet file `error` names (a day's rerun, or the models'
    refresh for a mart), or None when it names none of them."""
    named = NAMED_PARQUET.search(str(error))
    if named is None:
        return None
    try:
        relative = Path(named.group(1)).relative_to(warehouse.resolve())
    except ValueError:
        return None
    days = [part.removeprefix("received_date=") for part in relative.parts if part.startswith("received_date=")]
    if days:
        return f"rerun {days[0]} (`etl run --date {days[0]}`) to rewrite {relative}"
    return f"run `etl models --warehouse {warehouse}` to rewrite {relative}"
