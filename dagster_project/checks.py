"""Asset checks of a loaded partition: the specs, and their results from `etl.checks`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from etl import checks
from etl.catalog import shared_scratch_database
from etl.write import day_lock

PARTITION_CHECKS = {
    "conservation": ("tracks", dg.AssetCheckSeverity.ERROR, "each message read is exactly one row of tracks or quarantine, as the run counted"),
    "files_match_load": ("tracks", dg.AssetCheckSeverity.ERROR, "the day's Parquet files are byte for byte those its load wrote"),
    "unique_message_id": ("tracks", dg.AssetCheckSeverity.ERROR, "no message_id twice in the partition"),
    "schema_matches_contract": ("tracks", dg.AssetCheckSeverity.ERROR, "tracks and quarantine columns and types match the contract"),
    "quarantine_rate": ("quarantine", dg.AssetCheckSeverity.WARN, "share of quarantined messages under the configured threshold"),
    "event_rows_match_tracks": ("event_tables", dg.AssetCheckSeverity.ERROR, "rows across event tables = rows of tracks"),
    "registry_matches_parquet": ("event_tables", dg.AssetCheckSeverity.ERROR, "registry and Parquet schemas agree"),
    "columns_within_cap": ("event_tables", dg.AssetCheckSeverity.WARN, "no property dropped from its event table by the column cap"),
    "discards_point_to_messages": ("discards", dg.AssetCheckSeverity.ERROR, "every discards row points at an accepted message"),
}


def partition_check_specs() -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name, asset=asset, description=description)
        for name, (asset, _, description) in PARTITION_CHECKS.items()
    ]


def partition_check_results(warehouse: Path, day: str, quarantine_warn_rate: float) -> list[dg.AssetCheckResult]:
    """The day's checks, read under its day lock: a rerun of the day must not swap files mid-check."""
    with day_lock(warehouse, day, reading=True), shared_scratch_database():
        return list(day_check_results(warehouse, day, quarantine_warn_rate))


def day_check_results(warehouse: Path, day: str, quarantine_warn_rate: float) -> Iterator[dg.AssetCheckResult]:
    outcomes = {
        "conservation": checks.conservation(warehouse, day),
        "files_match_load": checks.files_match_load(warehouse, day),
        "unique_message_id": checks.unique_message_id(warehouse, day),
        "schema_matches_contract": checks.schema_matches_contract(warehouse, day),
        "quarantine_rate": checks.quarantine_rate(warehouse, day, quarantine_warn_rate),
        "event_rows_match_tracks": checks.event_rows_match_tracks(warehouse, day),
        "registry_matches_parquet": checks.registry_matches_parquet(warehouse, day),
        "columns_within_cap": checks.columns_within_cap(warehouse, day),
        "discards_point_to_messages": checks.discards_point_to_messages(warehouse, day),
    }
    for name, outcome in outcomes.items():
        asset, severity, _ = PARTITION_CHECKS[name]
        yield check_result(name, asset, severity, outcome)


def check_result(name: str, asset: str, severity: dg.AssetCheckSeverity, outcome: checks.CheckOutcome) -> dg.AssetCheckResult:
    """A library check's outcome as Dagster reports it."""
    return dg.AssetCheckResult(
        check_name=name, asset_key=asset, passed=outcome.passed,
        severity=severity, description=outcome.description, metadata=outcome.metadata,
    )
