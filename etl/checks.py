"""Data checks on one published partition, as plain functions the Dagster asset checks call.

Each reads what was actually written (Parquet and the manifest), never the run's memory,
so a check catches a file that lost rows after the fact as well as a bug in the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from etl.normalize import QUARANTINE_SCHEMA, TRACKS_STANDARD_SCHEMA, TRACKS_TRAILING_SCHEMA
from etl.write import partition_dir, read_manifest

DEFAULT_QUARANTINE_WARN_RATE = 0.05


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def parquet_files(warehouse: Path, table: str, day: str) -> list[Path]:
    return sorted(partition_dir(warehouse, table, day).glob("*.parquet"))


def scalar(sql: str, files: list[Path]) -> int:
    if not files:
        return 0
    listing = "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"
    return duckdb.connect().execute(sql.format(files=f"read_parquet({listing}, union_by_name = true)")).fetchone()[0]


def row_count(warehouse: Path, table: str, day: str) -> int:
    return scalar("select count(*) from {files}", parquet_files(warehouse, table, day))


def conservation(warehouse: Path, day: str) -> CheckOutcome:
    """Every message read is one row of `tracks` or `quarantine` (plus one row per broken file)."""
    manifest = read_manifest(warehouse, day)
    if manifest is None:
        return CheckOutcome(False, f"no manifest for {day}: the partition was not published by a complete run")
    expected = manifest["messages"] + manifest["unreadable_files"]
    accepted = row_count(warehouse, "tracks", day)
    quarantined = row_count(warehouse, "quarantine", day)
    metadata = {
        "lines_read": manifest["lines"],
        "blank_lines": manifest["blank_lines"],
        "messages_read": manifest["messages"],
        "unreadable_files": manifest["unreadable_files"],
        "tracks_rows": accepted,
        "quarantine_rows": quarantined,
    }
    missing = expected - accepted - quarantined
    passed = missing == 0
    verdict = "nothing lost" if passed else f"{missing} missing" if missing > 0 else f"{-missing} more rows than messages read"
    return CheckOutcome(passed, f"{expected} messages read, {accepted} accepted + {quarantined} quarantined: {verdict}", metadata)


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


def schema_problems(path: Path, required: dict[str, pl.DataType], extra_prefix: str | None) -> list[str]:
    actual = pl.read_parquet_schema(path)
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


def schema_matches_contract(warehouse: Path, day: str) -> CheckOutcome:
    """`tracks` has the standard columns with their types (plus text `context_…`); `quarantine` exactly its own."""
    tracks_required = {**TRACKS_STANDARD_SCHEMA, **TRACKS_TRAILING_SCHEMA}
    problems = []
    for path in parquet_files(warehouse, "tracks", day):
        problems += schema_problems(path, tracks_required, "context_")
    for path in parquet_files(warehouse, "quarantine", day):
        problems += schema_problems(path, QUARANTINE_SCHEMA, None)
    if not parquet_files(warehouse, "tracks", day) or not parquet_files(warehouse, "quarantine", day):
        problems.append("tracks or quarantine has no Parquet file for this day")
    description = "tracks and quarantine match the contract" if not problems else "; ".join(problems[:5])
    return CheckOutcome(not problems, description, {"problems": len(problems)})
