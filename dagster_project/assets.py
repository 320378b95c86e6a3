"""The partitioned load: one received day of logs → `tracks`, `quarantine`, event tables, `discards`."""

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from dagster_project.checks import partition_check_results, partition_check_specs
from dagster_project.resources import TrackhouseConfig
from etl import LOGGER
from etl.catalog import refresh_catalog
from etl.pipeline import load_day
from etl.write import UnwritableWarehouse, ensure_writable, partition_dir


SHOWN_COUNTS = 50


def largest_counts(counts: dict[str, int], limit: int = SHOWN_COUNTS) -> tuple[dict[str, int], int, int]:
    """The `limit` largest counts (ties by name), and how many names and rows the rest hold: a day
    with 20,000 event names (`Viewed Product 123`) must not print or store 20,000 entries."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    rest = ranked[limit:]
    return dict(ranked[:limit]), len(rest), sum(count for _, count in rest)


def counts_table(label: str, counts: dict[str, int]) -> str:
    shown, more, more_rows = largest_counts(counts)
    rows = [f"| `{name}` | {count} |" for name, count in shown.items()]
    if more:
        rows.append(f"| … {more} more | {more_rows} |")
    return f"| {label} | rows |\n|---|---|\n" + ("\n".join(rows) or "| (none) | 0 |")


STAGE_SUFFIX = "_seconds"


class StageClock:
    """Wall seconds of each stage of an asset's computation, in the order run: every
    materialization it yields carries them (`load_seconds`, …), for the Dagster UI, for `etl run`
    to print, and for the benchmark's per-stage table."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - started

    def metadata(self) -> dict[str, dg.MetadataValue]:
        return {f"{name}{STAGE_SUFFIX}": dg.MetadataValue.float(round(seconds, 3)) for name, seconds in self.seconds.items()}

    def timed(self, check_results: list[dg.AssetCheckResult]) -> list[dg.AssetCheckResult]:
        """The check results with every stage's seconds, the checks' own included: they come
        after the materializations, which go first so that a load is recorded even if a check
        then crashes (the models refresh after recorded loads)."""
        timings = self.metadata()
        return [result.with_metadata({**result.metadata, **timings}) for result in check_results]


def stage_seconds(metadata: dict[str, dg.MetadataValue]) -> dict[str, float]:
    """The stage seconds a materialization or a check result carries (see StageClock), in the order run."""
    return {key.removesuffix(STAGE_SUFFIX): value.value for key, value in metadata.items() if key.endswith(STAGE_SUFFIX)}


class ToRunLog(logging.Handler):
    def __init__(self, run_log: dg.DagsterLogManager) -> None:
        super().__init__()
        self.run_log = run_log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.run_log.log(record.levelno, record.getMessage())
        except Exception:  # noqa: BLE001 - a log event Dagster could not store must not fail the load
            self.handleError(record)


@contextlib.contextmanager
def trackhouse_logs_in_run_log(context: dg.AssetExecutionContext) -> Iterator[None]:
    """The contract names ignored and unreadable files "in the run's log". Dagster takes the
    `trackhouse` logger's records into it only when the instance's dagster.yaml lists that logger
    under `managed_python_loggers` (the project's does, a user's DAGSTER_HOME may not), or `root`,
    which its records reach too: otherwise they are handed over here."""
    if {LOGGER, "root"} & set(context.instance.managed_python_loggers):
        yield
        return
    logger, handler = logging.getLogger(LOGGER), ToRunLog(context.log)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def writable_or_failure(warehouse: Path) -> None:
    """A warehouse the run cannot write fails it with one line saying what to set."""
    try:
        ensure_writable(warehouse, "set TRACKHOUSE_WAREHOUSE (the trackhouse resource's warehouse_root) to a folder you can write")
    except UnwritableWarehouse as error:
        raise dg.Failure(description=str(error)) from None


def build_load_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name="received_day",
        specs=[
            dg.AssetSpec("tracks", description="Accepted track events, one row each, by received day.", group_name="warehouse"),
            dg.AssetSpec("quarantine", description="Rejected messages with reason and exact raw text.", group_name="warehouse"),
            dg.AssetSpec("event_tables", description="One table per event name, properties flattened into typed columns.", group_name="warehouse"),
            dg.AssetSpec("discards", description="Property values that did not fit their column's type.", group_name="warehouse"),
        ],
        check_specs=partition_check_specs(),
        partitions_def=partitions,
    )
    def received_day(context: dg.AssetExecutionContext, trackhouse: TrackhouseConfig):
        day, clock = context.partition_key, StageClock()
        writable_or_failure(trackhouse.warehouse)
        with trackhouse_logs_in_run_log(context):
            with clock.stage("load"):
                summary = load_day(trackhouse.logs, trackhouse.warehouse, day)
            with clock.stage("catalog"):
                refresh_catalog(trackhouse.warehouse)
        context.log.info(f"{day}: {summary.lines} lines, {summary.accepted} accepted, {summary.quarantined} quarantined")
        timings = clock.metadata()
        yield dg.MaterializeResult(
            asset_key="tracks",
            metadata={
                **timings,
                "rows": dg.MetadataValue.int(summary.accepted),
                "lines_read": dg.MetadataValue.int(summary.lines),
                "duplicates": dg.MetadataValue.int(summary.duplicates),
                "files": dg.MetadataValue.int(len(summary.files)),
                "path": dg.MetadataValue.path(str(partition_dir(trackhouse.warehouse, "tracks", day))),
            },
        )
        yield dg.MaterializeResult(
            asset_key="quarantine",
            metadata={
                **timings,
                "rows": dg.MetadataValue.int(summary.quarantined),
                "by_reason": dg.MetadataValue.md(counts_table("reason", summary.quarantined_by_reason)),
                "path": dg.MetadataValue.path(str(partition_dir(trackhouse.warehouse, "quarantine", day))),
            },
        )
        yield dg.MaterializeResult(
            asset_key="event_tables",
            metadata={
                **timings,
                "tables": dg.MetadataValue.int(len(summary.event_rows)),
                "rows": dg.MetadataValue.int(sum(summary.event_rows.values())),
                "rows_by_event": dg.MetadataValue.md(counts_table("event", summary.event_rows)),
                "values_over_column_cap": dg.MetadataValue.int(summary.values_over_column_cap),
            },
        )
        yield dg.MaterializeResult(
            asset_key="discards",
            metadata={
                **timings,
                "rows": dg.MetadataValue.int(summary.discards),
                "path": dg.MetadataValue.path(str(partition_dir(trackhouse.warehouse, "discards", day))),
            },
        )
        with clock.stage("checks"):
            check_results = partition_check_results(trackhouse.warehouse, day, trackhouse.quarantine_warn_rate)
        yield from clock.timed(check_results)

    return received_day
