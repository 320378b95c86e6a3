"""The schema registry: for each event table, its property columns in order, with their types.

Names and types are fixed the first time a property path is seen anywhere in the warehouse
(int may widen to float), so every partition reads with one schema and a rerun never renames
a column. It lives in `<warehouse>/_registry.sqlite`; each update is one `BEGIN IMMEDIATE`
transaction, so partition runs in parallel processes merge their columns instead of losing one.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from etl.names import is_context_column, snake_case, unique_name

REGISTRY_FILE = "_registry.sqlite"
MAX_PROPERTY_COLUMNS = 1000
LOCK_TIMEOUT_S = 60
PROPERTY_TYPES = ("int", "float", "bool", "string", "timestamp", "json")
EVENT_STANDARD_COLUMNS = (
    "message_id", "event", "event_text", "user_id", "anonymous_id", "timestamp", "original_timestamp",
    "sent_at", "received_at", "event_date", "source_file", "line_number", "batch_index", "received_date",
)
# revenue, currency and value keep the names and converted types `tracks` gives them.
CONVERTED_PROPERTIES = {"revenue": "float", "currency": "string", "value": "int"}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    position: int
    widened_on: str | None = None  # the earliest received day that sent it a float


def path_key(path: tuple[str, ...]) -> str:
    return orjson.dumps(path).decode()


def is_converted(path: tuple[str, ...]) -> bool:
    """`properties.revenue`, `.currency` or `.value`: typed as `tracks` has them."""
    return len(path) == 1 and path[0] in CONVERTED_PROPERTIES


def base_column_name(path: tuple[str, ...]) -> str:
    """`("shippingAddress", "city")` → `shipping_address_city`; a key with no letter or digit
    adds nothing to the path, and a name left empty, starting with a digit or clashing with a
    standard column is prefixed `property_` (the contract's rule, to the letter: `{"!!!": 1}` →
    `property_`)."""
    if is_converted(path):
        return path[0]
    name = "_".join(part for part in map(snake_case, path) if part)
    clashes = name in EVENT_STANDARD_COLUMNS or name in CONVERTED_PROPERTIES or is_context_column(name)
    if not name or name[0].isdigit() or clashes:
        name = f"property_{name}"
    return name


class UnreadableRegistry(RuntimeError):
    """The registry cannot be read as it is; the message names the file and what to do."""


@contextlib.contextmanager
def damage_said(path: Path) -> Iterator[None]:
    """Name a damaged registry and what to do about it: SQLite's "file is not a database" named
    no file, and the checks' advice to rerun the day could not help. Any other error (locked,
    no permission, out of file handles) passes as it is: the file may be sound."""
    try:
        yield
    except sqlite3.DatabaseError as error:
        if (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF not in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
            raise
        raise UnreadableRegistry(
            f"schema registry {path} cannot be read ({error}): restore it from a backup, or move it "
            "aside and rerun every loaded day in received order (`etl run`) to rebuild it"
        ) from None


IMMUTABLE = "?immutable=1"
READ_ATTEMPTS = 3
REREAD_PAUSE_S = 0.05


def read_registry(warehouse: Path) -> dict[str, list[Column]]:
    """Every event table's columns, for checks and the catalog, leaving no file behind. Where the
    warehouse may be written, an ordinary connection reads it (SQLite removes its `-wal` and
    `-shm` files on closing). A reader who may not write the registry reads the file as it is,
    exact when no `-wal` holds commits not yet folded in; with a writer's `-wal` and `-shm` there,
    a read-only connection reads both. It must not make them itself: owned by the reader, they
    would fail every later write. No registry yet (no file, or an empty one): no columns.

    Reading the file as it is takes no lock, so a load that starts meanwhile and folds its `-wal`
    in could tear the read (wrong rows, or "malformed" and advice to restore a sound file): a read
    during which the file changed or a `-wal` appeared is done again, after a pause, as is one
    that finds a `-wal` without its `-shm`, which a writer's connection briefly leaves as it opens
    or closes."""
    path = warehouse / REGISTRY_FILE
    for attempt in range(READ_ATTEMPTS):
        if attempt:
            time.sleep(REREAD_PAUSE_S)
        if not path.exists() or not path.stat().st_size:  # an emptied file is a new registry, as for a load
            return {}
        mode, before = registry_read_mode(warehouse, path, last_attempt=attempt == READ_ATTEMPTS - 1), file_state(path)
        if mode is None:
            continue
        damage = None
        try:
            with damage_said(path), contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}{mode}", uri=True, timeout=LOCK_TIMEOUT_S)) as connection:
                rows = connection.execute("select event, name, type, position from columns order by event, position").fetchall()
        except UnreadableRegistry as error:
            damage = error
        if mode == IMMUTABLE and written_meanwhile(path, before):
            continue  # whatever the read gave, rows or "malformed", a load may have torn it
        if damage is not None:
            raise damage
        out: dict[str, list[Column]] = {}
        for event, name, kind, position in rows:
            out.setdefault(event, []).append(Column(name, kind, position))
        return out
    raise UnreadableRegistry(
        f"schema registry {path} kept changing over {READ_ATTEMPTS} tries to read it, as a load wrote it: rerun when the load is done"
    )


def registry_read_mode(warehouse: Path, path: Path, last_attempt: bool) -> str | None:
    """How `read_registry` opens the file (the URI's query): see there. None: not now."""
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    if os.access(path, os.W_OK) and os.access(warehouse, os.W_OK):
        return ""
    if not wal.exists():
        return IMMUTABLE
    if shm.exists():
        return "?mode=ro"
    if not last_attempt:
        return None
    raise UnreadableRegistry(
        f"schema registry {path} has a write-ahead log ({wal.name}) that a writer left open, which only "
        "a user who may write the warehouse can fold in: rerun as such a user (any etl command does it)"
    )


def file_state(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def written_meanwhile(path: Path, before: tuple[int, int, int]) -> bool:
    """A writer touched the registry since `before`: it has a `-wal` open, or changed the file."""
    return Path(f"{path}-wal").exists() or not path.exists() or file_state(path) != before


class SchemaRegistry:
    """Column names and types per event table, shared by every run on one warehouse."""

    def __init__(self, warehouse: Path, loading_day: str | None = None) -> None:
        warehouse.mkdir(parents=True, exist_ok=True)
        self.path = warehouse / REGISTRY_FILE
        self.connection = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_S, isolation_level=None)
        with damage_said(self.path):
            self._create()
        self.cache: dict[str, dict[str, Column]] = {}
        self.loading_day = loading_day
        # (event, path key) of the columns this load has seen a float for: until then, a day up to
        # the column's `widened_on` judges it as int, as a clean run in received order would.
        self.floats_seen: set[tuple[str, str]] = set()

    def _create(self) -> None:
        """Switch to WAL and create the table, retrying while another run does the same.

        SQLite gives up on a journal-mode change at once when another connection holds the
        file, whatever its busy timeout: two partitions starting together on a new warehouse
        failed with "database is locked" (measured: 4 runs at once, within 2 tries)."""
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                self.connection.execute("pragma journal_mode=wal")
                # Commits are not synced to disk, like the warehouse's Parquet: a power loss may
                # undo the last ones, never corrupt the file. Syncing each took 1.3 ms a
                # transaction, 13 of the 41 s that a day of 10,000 event names took to load.
                self.connection.execute("pragma synchronous=normal")
                self.connection.execute(
                    "create table if not exists columns (event text not null, path text not null, name text not null,"
                    " type text not null, position integer not null, widened_on text,"
                    " primary key (event, path), unique (event, name))"
                )
                if "widened_on" not in {row[1] for row in self.connection.execute("pragma table_info(columns)")}:
                    self.connection.execute("alter table columns add column widened_on text")  # a registry from before it
                return
            except sqlite3.OperationalError as error:
                if "duplicate column" in str(error):  # another run added it first
                    continue
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def close(self) -> None:
        self.connection.close()

    def _load(self, event: str) -> dict[str, Column]:
        rows = self.connection.execute(
            "select path, name, type, position, widened_on from columns where event = ? order by position", (event,)
        ).fetchall()
        return {path: Column(*column) for path, *column in rows}

    def columns(self, event: str) -> dict[str, Column]:
        """Property path key → column, in registry order (cached; refreshed on every register)."""
        if event not in self.cache:
            with damage_said(self.path):
                self.cache[event] = self._load(event)
        return self.cache[event]

    def register(self, event: str, proposals: dict[str, tuple[tuple[str, ...], str]]) -> dict[str, Column]:
        """Add new paths (first come keeps its name and type) and widen int to float; return the columns.

        `proposals` maps path key → (path, type seen first). In one transaction: whatever
        another process registered meanwhile wins, and paths past the column cap stay out.
        """
        connection = self.connection
        connection.execute("begin immediate")
        try:
            current = self._load(event)
            taken = {column.name for column in current.values()}
            for key, (path, kind) in proposals.items():
                existing = current.get(key)
                if existing is None:
                    # revenue, currency and value are never capped: the contract says they appear in the event table.
                    if len(current) >= MAX_PROPERTY_COLUMNS and not is_converted(path):
                        continue
                    name = unique_name(base_column_name(path), taken)
                    position = len(current)
                    # A float column's first float counts as a widening: an earlier day loaded later
                    # still judges it as int until its own first float, as in received order.
                    widened_on = self.loading_day if kind == "float" else None
                    connection.execute(
                        "insert into columns (event, path, name, type, position, widened_on) values (?, ?, ?, ?, ?, ?)",
                        (event, key, name, kind, position, widened_on),
                    )
                    current[key] = Column(name, kind, position, widened_on)
                    taken.add(name)
                elif kind == "float" and (existing.type == "int" or self.widened_earlier(existing)):
                    connection.execute(
                        "update columns set type = 'float', widened_on = ? where event = ? and path = ?",
                        (self.loading_day, event, key),
                    )
                    current[key] = Column(existing.name, "float", existing.position, self.loading_day)
            connection.execute("commit")
        except BaseException:
            connection.execute("rollback")
            raise
        self.cache[event] = current
        return current

    def full_columns(self, event: str) -> frozenset[str] | None:
        """The path keys of `event`'s columns once they reach the cap, else None: a full table
        stays full (no column is ever removed), so no other path can ever join them."""
        columns = self.columns(event)
        return frozenset(columns) if len(columns) >= MAX_PROPERTY_COLUMNS else None

    def int_until_first_float(self, event: str, key: str, column: Column) -> bool:
        """This load judges `column` as int until its own first float: its day is up to the
        earliest that sent the column a float, and no float has come in this load yet."""
        return (
            column.widened_on is not None and self.loading_day is not None and self.loading_day <= column.widened_on
            and (event, key) not in self.floats_seen
        )

    def widened_earlier(self, column: Column) -> bool:
        """This load's day, received before the day that widened `column`, widens it too."""
        return column.widened_on is not None and self.loading_day is not None and self.loading_day < column.widened_on

