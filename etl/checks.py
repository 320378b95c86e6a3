"""Data checks on one published partition, as plain functions the Dagster asset checks call.

Each reads what was actually written (Parquet and the manifest), never the run's memory,
so a check catches a file that lost rows after the fact as well as a bug in the run.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from etl.catalog import create_views, file_list, mart_views, parquet_source, quote_literal, scratch_cursor, scratch_rows, writer_lock
from etl.events import EVENT_LEADING_COLUMNS, EVENT_PROVENANCE_COLUMNS, POLARS_TYPES
from etl.names import is_context_column
from etl.normalize import QUARANTINE_SCHEMA, TRACKS_STANDARD_SCHEMA, TRACKS_TRAILING_SCHEMA
from etl.models import model_names, modelled_days
from etl.registry import MAX_PROPERTY_COLUMNS, UnreadableRegistry, read_registry
from etl.write import file_sha256, partition_dir, read_manifest

DEFAULT_QUARANTINE_WARN_RATE = 0.05
SHOWN_PROBLEMS = 5


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


DUCKDB_INTERRUPTED = "Query interrupted"  # how the DuckDB client in use reports Ctrl-C, as a RuntimeError


def is_interrupt(error: Exception) -> bool:
    """DuckDB's way of reporting Ctrl-C: InterruptException, or a bare RuntimeError."""
    return isinstance(error, duckdb.InterruptException) or (type(error) is RuntimeError and str(error) == DUCKDB_INTERRUPTED)


def rewrite_advice(warehouse: Path, day: str | None = None, *_) -> str:
    """What rewrites the files a check found wrong or could not read: the day's load, or the models' refresh."""
    if day is not None:
        return f"rerun the day (`etl run --date {day}`) to rewrite its files"
    return f"rebuild the marts with `etl models --warehouse {warehouse}`"


def failing_instead_of_raising(check: Callable[..., CheckOutcome]) -> Callable[..., CheckOutcome]:
    """A check that cannot read what it checks (a file missing, empty or corrupt) fails, naming the
    error: raising would lose the results of every other check of the run."""

    @functools.wraps(check)
    def run(*args, **kwargs) -> CheckOutcome:
        try:
            return check(*args, **kwargs)
        except Exception as error:  # any error is this check's failure, never the run's
            if is_interrupt(error):
                raise  # Ctrl-C stops the run: it is no failed check
            first_line = (str(error).strip().splitlines() or [""])[0]  # DuckDB adds the query and a caret
            # These two say what to do themselves: rewriting the day's files would not help.
            remedy = f": {rewrite_advice(*args)}" if args and not isinstance(error, (MissingMarts, UnreadableRegistry)) else ""
            return CheckOutcome(False, f"{type(error).__name__}: {first_line}{remedy}", {"error": type(error).__name__})

    return run


def parquet_files(warehouse: Path, table: str, day: str) -> list[Path]:
    return sorted(partition_dir(warehouse, table, day).glob("*.parquet"))


def read_files(files: list[Path]) -> str:
    return f"read_parquet({file_list(files)}, union_by_name = true)"


def fetch(sql: str, files: list[Path]) -> list[tuple]:
    """Rows of `sql` over `files` (its `{files}`); none without a file, as `read_parquet([])` raises."""
    if not files:
        return []
    return scratch_rows(sql.format(files=read_files(files)))


def scalar(sql: str, files: list[Path]) -> int:
    rows = fetch(sql, files)
    return rows[0][0] if rows else 0


def row_count(warehouse: Path, table: str, day: str) -> int:
    return scalar("select count(*) from {files}", parquet_files(warehouse, table, day))


def published_manifest(warehouse: Path, day: str) -> dict:
    """What the run counted as it wrote the day: the checks prove the files still hold it all."""
    manifest = read_manifest(warehouse, day)
    if manifest is None:
        raise FileNotFoundError(f"no manifest for {day}: the partition was not published by a complete run")
    return manifest


def verdict(missing: int, counted: str) -> str:
    return "nothing lost" if missing == 0 else f"{missing} missing" if missing > 0 else f"{-missing} more rows than {counted}"


def repeated_provenance(tracks: list[Path], quarantine: list[Path]) -> int:
    """Rows of `tracks` and `quarantine` together whose (file, line, batch index) another row has:
    a message is exactly one row, so a copied row (even one standing in for a lost one) shows."""
    parts = [f"select source_file, line_number, batch_index from {read_files(files)}" for files in (tracks, quarantine) if files]
    if not parts:
        return 0
    union = " union all ".join(parts)
    sql = f"select coalesce(sum(copies - 1), 0) from (select count(*) as copies from ({union}) group by source_file, line_number, batch_index having count(*) > 1)"
    return scratch_rows(sql)[0][0]


@failing_instead_of_raising
def conservation(warehouse: Path, day: str) -> CheckOutcome:
    """Every message read is exactly one row of `tracks` or `quarantine` (plus one row per broken
    file): as many rows as the run counted, accepted and by reason, none for one message twice."""
    manifest = published_manifest(warehouse, day)
    expected = manifest["messages"] + manifest["unreadable_files"]
    tracks, quarantine = parquet_files(warehouse, "tracks", day), parquet_files(warehouse, "quarantine", day)
    accepted = scalar("select count(*) from {files}", tracks)
    by_reason = dict(fetch("select reason, count(*) from {files} group by 1", quarantine))
    quarantined = sum(by_reason.values())
    repeated = repeated_provenance(tracks, quarantine)
    metadata = {
        "lines_read": manifest["lines"],
        "blank_lines": manifest["blank_lines"],
        "messages_read": manifest["messages"],
        "unreadable_files": manifest["unreadable_files"],
        "tracks_rows": accepted,
        "quarantine_rows": quarantined,
        "rows_repeating_a_message": repeated,
    }
    missing = expected - accepted - quarantined
    problems = [f"{verdict(missing, 'messages read')}"] if missing else []
    if accepted != manifest["accepted"]:
        problems.append(f"tracks has {accepted} rows, the run accepted {manifest['accepted']}")
    if by_reason != manifest["quarantined_by_reason"]:
        differ = sorted(r for r in by_reason.keys() | manifest["quarantined_by_reason"].keys()
                        if by_reason.get(r, 0) != manifest["quarantined_by_reason"].get(r, 0))
        problems.append("quarantine rows by reason differ from the run's counts for " + ", ".join(differ))
    if repeated:
        problems.append(f"{repeated} rows repeat a message's source_file, line_number and batch_index")
    verdict_text = "; ".join(problems) + f": {rewrite_advice(warehouse, day)}" if problems else "nothing lost, none twice"
    description = f"{expected} messages read, {accepted} accepted + {quarantined} quarantined: {verdict_text}"
    return CheckOutcome(not problems, description, metadata)


@failing_instead_of_raising
def unique_message_id(warehouse: Path, day: str) -> CheckOutcome:
    files = parquet_files(warehouse, "tracks", day)
    rows = scalar("select count(*) from {files}", files)
    distinct = scalar("select count(distinct message_id) from {files}", files)
    nulls = scalar("select count(*) from {files} where message_id is null", files)
    passed = rows == distinct and nulls == 0
    return CheckOutcome(
        passed,
        f"{rows} rows, {distinct} distinct message_id, {nulls} null",
        {"rows": rows, "distinct_message_ids": distinct, "null_message_ids": nulls},
    )


@failing_instead_of_raising
def quarantine_rate(warehouse: Path, day: str, warn_above: float = DEFAULT_QUARANTINE_WARN_RATE) -> CheckOutcome:
    accepted = row_count(warehouse, "tracks", day)
    quarantined = row_count(warehouse, "quarantine", day)
    total = accepted + quarantined
    rate = quarantined / total if total else 0.0
    return CheckOutcome(
        rate <= warn_above,
        f"{rate:.2%} of messages quarantined (warn above {warn_above:.2%})",
        {"quarantine_rate": rate, "warn_above": warn_above, "quarantined": quarantined, "total": total},
    )


def parquet_schema(path: Path) -> pl.Schema:
    """The schema of one file, its name taken literally (`pl.read_parquet_schema` globs: `wh[1]`)."""
    return pl.scan_parquet(path, glob=False).collect_schema()


def schema_problems(path: Path, required: dict[str, pl.DataType], extra_prefix: str | None) -> list[str]:
    actual = parquet_schema(path)
    problems = [f"{path.name}: missing {name}" for name in required if name not in actual]
    problems += [
        f"{path.name}: {name} is {actual[name]}, expected {dtype}"
        for name, dtype in required.items()
        if name in actual and actual[name] != dtype
    ]
    for name, dtype in actual.items():
        if name in required:
            continue
        if extra_prefix is None or not name.startswith(extra_prefix) or dtype != pl.String():
            problems.append(f"{path.name}: unexpected column {name} ({dtype})")
    return problems


@failing_instead_of_raising
def schema_matches_contract(warehouse: Path, day: str) -> CheckOutcome:
    """`tracks` has the standard columns with their types (plus text `context…`); `quarantine` exactly its own."""
    tracks_required = {**TRACKS_STANDARD_SCHEMA, **TRACKS_TRAILING_SCHEMA}
    problems = []
    for path in parquet_files(warehouse, "tracks", day):
        problems += schema_problems(path, tracks_required, "context")
    for path in parquet_files(warehouse, "quarantine", day):
        problems += schema_problems(path, QUARANTINE_SCHEMA, None)
    if not parquet_files(warehouse, "tracks", day) or not parquet_files(warehouse, "quarantine", day):
        problems.append("tracks or quarantine has no Parquet file for this day")
    description = "tracks and quarantine match the contract" if not problems else "; ".join(problems[:SHOWN_PROBLEMS])
    return CheckOutcome(not problems, description, {"problems": len(problems)})


def event_partition_files(warehouse: Path, day: str) -> dict[str, list[Path]]:
    folder = warehouse / "events"
    tables = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return {t.name: files for t in tables if (files := parquet_files(warehouse, f"events/{t.name}", day))}


def day_parquet_files(warehouse: Path, day: str) -> dict[str, Path]:
    """Every Parquet file in the day's partition folders, by its path under the warehouse."""
    files = [f for table in ("tracks", "quarantine", "discards") for f in parquet_files(warehouse, table, day)]
    files += [f for event_files in event_partition_files(warehouse, day).values() for f in event_files]
    return {f.relative_to(warehouse).as_posix(): f for f in files}


@failing_instead_of_raising
def files_match_load(warehouse: Path, day: str) -> CheckOutcome:
    """The day's Parquet files are the ones its load wrote, byte for byte (their SHA-256 in the
    manifest): an edit that leaves a file readable, in a column no other check reads, shows here."""
    written = published_manifest(warehouse, day).get("parquet_sha256")
    if written is None:
        return CheckOutcome(True, "no digests recorded: loaded by a trackhouse that kept none; rerun the day to record them", {"files": 0})
    present = day_parquet_files(warehouse, day)
    problems = [f"{name} is missing" for name in sorted(written.keys() - present.keys())]
    problems += [f"{name} changed" for name in sorted(written.keys() & present.keys()) if file_sha256(present[name]) != written[name]]
    problems += [f"{name} was not written by the load" for name in sorted(present.keys() - written.keys())]
    if not problems:
        return CheckOutcome(True, f"{len(written)} files as the load wrote them", {"files": len(written)})
    shown = "; ".join(problems[:SHOWN_PROBLEMS]) + (f"; and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else "")
    return CheckOutcome(False, f"{shown}: {rewrite_advice(warehouse, day)}", {"files": len(written), "problems": len(problems)})


def footer_rows_by_event(files: list[Path]) -> dict[str, int]:
    """Rows of each event table (`events/<event>/received_date=…/file`) as the file footers say, in
    one query however many files: a query per event table took 16 ms each, five minutes for a day
    of 20,000 event names."""
    if not files:
        return {}
    sql = f"select string_split(file_name, '/')[-3], sum(num_rows) from parquet_file_metadata({file_list(files)}) group by 1"
    return dict(scratch_rows(sql))


def unmatched_event_rows(event_files: list[Path], tracks: list[Path]) -> tuple[int, int]:
    """(event-table rows whose message and event `tracks` does not hold, rows repeating a
    message): with the rows per event equal, both 0 means each table holds its events exactly."""
    if not event_files:
        return 0, 0
    events = f"(select message_id, event from read_parquet({file_list(event_files)}))"
    accepted = f"(select message_id, event, true as found from {read_files(tracks)})" if tracks else (
        "(select null::varchar as message_id, null::varchar as event, true as found where false)"
    )
    return scratch_rows(
        f"select count(*) filter (where found is null), count(*) - count(distinct message_id) "
        f"from {events} left join {accepted} using (message_id, event)"
    )[0]


@failing_instead_of_raising
def event_rows_match_tracks(warehouse: Path, day: str) -> CheckOutcome:
    """Every accepted event is in the table of its name, once: per event, not in total, so that a row
    moved to another event's table fails too; row by row, so that a row swapped for a stray one does."""
    per_event = event_partition_files(warehouse, day)
    event_files = [path for paths in per_event.values() for path in paths]
    written = footer_rows_by_event(event_files)
    tracks_files = parquet_files(warehouse, "tracks", day)
    accepted = dict(fetch("select event, count(*) from {files} group by event", tracks_files))
    mismatched = sorted((e for e in written.keys() | accepted.keys() if written.get(e, 0) != accepted.get(e, 0)), key=str)
    strays, repeats = unmatched_event_rows(event_files, tracks_files)
    total, tracks = sum(written.values()), sum(accepted.values())
    description = f"{total} rows across {len(per_event)} event tables, {tracks} in tracks"
    if mismatched:
        shown = ", ".join(f"{e} ({written.get(e, 0)} in its table, {accepted.get(e, 0)} in tracks)" for e in mismatched[:SHOWN_PROBLEMS])
        description += f"; {len(mismatched)} events differ: {shown}"
    if strays or repeats:
        description += f"; {strays} rows name a message and event tracks does not hold, {repeats} repeat a message"
    return CheckOutcome(
        not (mismatched or strays or repeats),
        description,
        {
            "event_rows": total, "tracks_rows": tracks, "event_tables": len(per_event), "mismatched_events": len(mismatched),
            "stray_rows": strays, "repeated_rows": repeats,
        },
    )


def orphan_discards(discards: list[Path], tracks: list[Path]) -> int:
    """Discards whose message `tracks` does not hold: all of them when `tracks` has no file."""
    if not discards or not tracks:
        return scalar("select count(*) from {files}", discards)
    return scratch_rows(f"select count(*) from {read_files(discards)} anti join {read_files(tracks)} using (message_id)")[0][0]


@failing_instead_of_raising
def discards_point_to_messages(warehouse: Path, day: str) -> CheckOutcome:
    """`discards` holds every value the run discarded (the manifest's count: a type conflict
    loses nothing), each belonging to a message that `tracks` holds for the same day."""
    expected = published_manifest(warehouse, day)["discards"]
    discards = parquet_files(warehouse, "discards", day)
    rows = scalar("select count(*) from {files}", discards)
    orphans = orphan_discards(discards, parquet_files(warehouse, "tracks", day))
    missing = expected - rows
    return CheckOutcome(
        missing == 0 and orphans == 0,
        f"{expected} values discarded, {rows} in discards: {verdict(missing, 'values discarded')}; {orphans} pointing at no accepted message",
        {"discards": rows, "discards_counted": expected, "orphans": orphans},
    )


@failing_instead_of_raising
def registry_matches_parquet(warehouse: Path, day: str) -> CheckOutcome:
    """Each property column written for the day is registered, with a type the registry allows."""
    registry = read_registry(warehouse)
    problems = []
    for event, files in event_partition_files(warehouse, day).items():
        registered = {c.name: c.type for c in registry.get(event, [])}
        for path in files:
            for name, dtype in parquet_schema(path).items():
                if name in EVENT_LEADING_COLUMNS or name in EVENT_PROVENANCE_COLUMNS or is_context_column(name):
                    continue
                kind = registered.get(name)
                allowed = {POLARS_TYPES[kind]} | ({pl.Int64()} if kind == "float" else set()) if kind else set()
                if dtype not in allowed:
                    problems.append(f"{event}.{name} is {dtype} in {path.name}, registry says {kind or 'nothing'}")
    description = "every property column matches the registry" if not problems else "; ".join(problems[:SHOWN_PROBLEMS])
    return CheckOutcome(not problems, description, {"problems": len(problems)})


@failing_instead_of_raising
def columns_within_cap(warehouse: Path, day: str) -> CheckOutcome:
    """WARN when an event had more property paths than its table may have columns."""
    manifest = read_manifest(warehouse, day) or {}
    over = manifest.get("values_over_column_cap", 0)
    return CheckOutcome(
        over == 0,
        f"{over} property values past the {MAX_PROPERTY_COLUMNS}-column cap stay only in tracks.properties",
        {"values_over_column_cap": over, "column_cap": MAX_PROPERTY_COLUMNS},
    )


# Model checks: the views of warehouse.duckdb, over the same Parquet, in an in-memory DuckDB.


# The received days the marts were built from, as they were: a day published or run again since
# (a backfill goes on while the models refresh) waits for the next refresh, and is no mismatch
# meanwhile.
MODELLED_DAYS = "received_date in (select received_date from modelled_days)"


def days_view(days: list[str]) -> str:
    values = ", ".join(f"(date {quote_literal(day)})" for day in days)
    return f"select * from (values {values}) as days(received_date)" if days else "select null::date as received_date where false"


def modelled_days_views(warehouse: Path) -> dict[str, str]:
    """`modelled_days`, still as the last refresh read them, and `changed_days`, run again since."""
    days = modelled_days(warehouse)
    if days is None:  # marts from before the refresh recorded its days
        return {"modelled_days": "select distinct received_date from tracks", "changed_days": days_view([])}
    return {"modelled_days": days_view(days[0]), "changed_days": days_view(days[1])}


class MissingMarts(Exception):
    """A model's output is not in the warehouse: the models were never refreshed, or it was removed."""


def missing_marts(marts: dict[str, str]) -> list[str]:
    """The models without a published mart, of `mart_views`."""
    return [name for name in model_names() if name not in marts]


def missing_marts_message(warehouse: Path, missing: list[str]) -> str:
    return f"no mart for {', '.join(missing)} under {warehouse / 'marts'}: run `etl models --warehouse {warehouse}` to build them"


@contextlib.contextmanager
def reading_marts(warehouse: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """Views of tracks and the marts, read under the writer lock: another run's refresh cannot
    swap the marts mid-query, and an analyst holding warehouse.duckdb open cannot lock us out."""
    with writer_lock(warehouse, reading=True), scratch_cursor() as connection:
        marts = mart_views(warehouse)
        missing = missing_marts(marts)
        if missing:
            raise MissingMarts(missing_marts_message(warehouse, missing))
        # Only `tracks`: the marts' checks never read quarantine or discards, and a corrupt file
        # there must fail the day's checks alone, not every model check too.
        tracks = parquet_source(warehouse / "tracks") if (warehouse / "tracks").is_dir() else None
        create_views(connection, ({"tracks": f"select * from {tracks}"} if tracks else {}) | marts, temporary=True)
        create_views(connection, modelled_days_views(warehouse), temporary=True)
        yield connection


def warehouse_rows(warehouse: Path, sql: str) -> list[tuple]:
    with reading_marts(warehouse) as connection:
        return connection.execute(sql).fetchall()


@failing_instead_of_raising
def stg_unique_message_id(warehouse: Path) -> CheckOutcome:
    rows, distinct = warehouse_rows(warehouse, "select count(*), count(distinct message_id) from stg_tracks")[0]
    return CheckOutcome(rows == distinct, f"{rows} rows, {distinct} distinct message_id", {"rows": rows, "distinct": distinct})


def compared_with_tracks(check: Callable[[duckdb.DuckDBPyConnection, Path], CheckOutcome]) -> Callable[[Path], CheckOutcome]:
    """A model check of the marts against `tracks`, which means nothing while a day the marts were
    built from has been run again since (a backfill during the refresh): it then passes, saying
    so, and the refresh that follows the run compares that day."""

    @functools.wraps(check)
    def checked(warehouse: Path) -> CheckOutcome:
        with reading_marts(warehouse) as connection:
            changed = [str(day) for (day,) in connection.execute("select received_date from changed_days order by 1").fetchall()]
            if changed:
                return CheckOutcome(
                    True, f"not compared: {', '.join(changed)} run again since the models were built; the next refresh compares them",
                    {"changed_days": len(changed)},
                )
            return check(connection, warehouse)

    return checked


@failing_instead_of_raising
@compared_with_tracks
def cross_partition_duplicates(connection: duckdb.DuckDBPyConnection, warehouse: Path) -> CheckOutcome:
    """stg_tracks holds each message of the modelled days once, and only those: the copies of a
    message received on more than one day are removed (and counted), no message is lost."""
    tracks, distinct, unmatched = connection.execute(f"""
        with modelled as (select distinct message_id from tracks where {MODELLED_DAYS})
        select
            (select count(*) from tracks where {MODELLED_DAYS}),
            (select count(*) from modelled),
            (select count(*) from modelled full join stg_tracks as staged using (message_id)
             where modelled.message_id is null or staged.message_id is null)
    """).fetchone()
    description = f"{tracks - distinct} copies received on more than one day removed; "
    description += "stg_tracks holds every message once" if not unmatched else (
        f"{unmatched} messages in only one of tracks and stg_tracks: {rewrite_advice(warehouse)}"
    )
    return CheckOutcome(unmatched == 0, description, {"duplicates_removed": tracks - distinct, "unmatched_messages": unmatched})


def mart_covers_stg_tracks(warehouse: Path, mart: str, key: str, what: str) -> CheckOutcome:
    """`mart` has one row per distinct `key` of stg_tracks, and its `events` add up to the
    stg_tracks rows with a `key`: a lost row or a dropped event shows."""
    expected_keys, expected_events, rows, keys, events = warehouse_rows(warehouse, f"""
        select
            (select count(distinct {key}) from stg_tracks),
            (select count({key}) from stg_tracks),
            (select count(*) from {mart}),
            (select count(distinct {key}) from {mart}),
            (select coalesce(sum(events), 0) from {mart})
    """)[0]
    passed = rows == keys == expected_keys and events == expected_events
    description = f"{rows} rows for {expected_keys} {what} in stg_tracks; {events} of their {expected_events} events counted"
    return CheckOutcome(
        passed, description if passed else f"{description}: {rewrite_advice(warehouse)}",
        {"rows": rows, "keys": expected_keys, "events": events},
    )


@failing_instead_of_raising
def identities_match_stg_tracks(warehouse: Path) -> CheckOutcome:
    return mart_covers_stg_tracks(warehouse, "dim_identities", "anonymous_id", "anonymous_ids")


@failing_instead_of_raising
def active_users_match_stg_tracks(warehouse: Path) -> CheckOutcome:
    return mart_covers_stg_tracks(warehouse, "daily_active_users", "event_date", "event dates")


@failing_instead_of_raising
@compared_with_tracks
def orders_reconcile_with_tracks(connection: duckdb.DuckDBPyConnection, warehouse: Path) -> CheckOutcome:
    """Revenue per currency in fct_orders equals that of the accepted events carrying revenue
    (on the days the models were built from)."""
    mismatches = connection.execute(f"""
        with accepted as (
            select currency, revenue
            from tracks
            where {MODELLED_DAYS} and message_id in (select message_id from tracks where revenue is not null)
            qualify row_number() over (
                partition by message_id
                order by received_date, received_at nulls last, source_file, line_number, batch_index nulls first
            ) = 1
        ),
        expected as (
            -- Only the copy that wins counts: a losing copy with revenue makes no order.
            select currency, count(*) as orders, sum(case when abs(revenue) < 1e14 then cast(revenue as decimal(18, 4)) end) as revenue
            from accepted
            where revenue is not null
            group by 1
        ),
        actual as (select currency, count(*) as orders, sum(revenue) as revenue from fct_orders group by 1)
        select coalesce(e.currency, a.currency), e.orders, a.orders, e.revenue, a.revenue
        from expected e full join actual a using (currency)
        where e.orders is distinct from a.orders or e.revenue is distinct from a.revenue
    """).fetchall()
    description = "revenue per currency reconciles" if not mismatches else "; ".join(
        f"{c}: tracks {eo} orders / {er}, fct_orders {ao} / {ar}" for c, eo, ao, er, ar in mismatches
    )
    if mismatches:
        description += f": {rewrite_advice(warehouse)}"
    return CheckOutcome(not mismatches, description, {"mismatched_currencies": len(mismatches)})


@failing_instead_of_raising
def revenue_daily_matches_orders(warehouse: Path) -> CheckOutcome:
    mismatches = warehouse_rows(warehouse, """
        with expected as (
            select event_date, currency, count(*) as orders, sum(revenue) as revenue, sum(revenue_usd) as revenue_usd
            from fct_orders group by 1, 2
        )
        select event_date, currency from expected e full join revenue_daily d using (event_date, currency)
        where e.orders is distinct from d.orders or e.revenue is distinct from d.revenue
           or e.revenue_usd is distinct from d.revenue_usd
    """)
    return CheckOutcome(
        not mismatches,
        "revenue_daily sums equal fct_orders" if not mismatches else f"{len(mismatches)} day × currency rows differ, e.g. {mismatches[0]}",
        {"mismatched_rows": len(mismatches)},
    )


@failing_instead_of_raising
def conversions_match_facts(warehouse: Path) -> CheckOutcome:
    daily, facts = warehouse_rows(
        warehouse, "select (select coalesce(sum(conversions), 0) from conversions_daily), (select count(*) from fct_conversions)"
    )[0]
    return CheckOutcome(daily == facts, f"{daily} conversions in conversions_daily, {facts} rows in fct_conversions", {"daily": daily, "facts": facts})


@failing_instead_of_raising
def conversion_rate_in_range(warehouse: Path) -> CheckOutcome:
    (outside,) = warehouse_rows(warehouse, "select count(*) from conversions_daily where not conversion_rate between 0 and 1")[0]
    return CheckOutcome(outside == 0, f"{outside} rows with conversion_rate outside [0, 1]", {"rows_outside": outside})


@failing_instead_of_raising
def fx_coverage(warehouse: Path) -> CheckOutcome:
    """WARN: orders whose currency had no rate on or before their date (revenue_usd is NULL)."""
    missing = warehouse_rows(
        warehouse, "select distinct currency, event_date from fct_orders where revenue is not null and revenue_usd is null order by 1, 2"
    )
    pairs = ", ".join(f"{currency} {day}" for currency, day in missing)
    return CheckOutcome(not missing, "every order has a USD rate" if not missing else f"no rate for {pairs}", {"missing_pairs": len(missing)})
