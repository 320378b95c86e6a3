"""The partition checks fail when a loaded day loses or misplaces rows, and never raise."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest
from conftest import opened_databases, track, write_log

from dagster_project.checks import PARTITION_CHECKS, partition_check_results
from dagster_project.models import model_check_results
from etl import catalog, checks
from etl.models import refresh_models
from etl.pipeline import load_day
from etl.write import partition_dir

DAY = "2025-01-15"


def loaded_day(logs: Path, warehouse: Path) -> None:
    """Two events, one with a value that does not fit its column: every table of a day has rows."""
    write_log(logs / DAY / "a.ndjson", [
        track("A", messageId="a1", properties={"n": 1}),
        track("A", messageId="a2", properties={"n": "x"}),
        track("B", messageId="b1", properties={"n": 1}),
    ])
    load_day(logs, warehouse, DAY)


def parts(warehouse: Path, table: str) -> list[Path]:
    return sorted(partition_dir(warehouse, table, DAY).glob("*.parquet"))


def day_with_quarantine(logs: Path, warehouse: Path) -> None:
    write_log(logs / DAY / "a.ndjson", [track("A", messageId="a1"), track("A", messageId="a2"), "[1]", "nope"])
    load_day(logs, warehouse, DAY)


def rewrite(part: Path, change) -> None:
    change(pl.read_parquet(part)).write_parquet(part)


def test_files_match_load_fails_on_an_edit_no_other_check_reads(logs, warehouse):
    # A value changed where no count, id or schema shows it (here `properties`): every other
    # check passed it, and the model refresh read the edited value.
    loaded_day(logs, warehouse)
    (part,) = parts(warehouse, "tracks")
    rewrite(part, lambda rows: rows.with_columns(properties=pl.lit('{"n":2}')))
    results = {r.check_name: r for r in partition_check_results(warehouse, DAY, checks.DEFAULT_QUARANTINE_WARN_RATE)}
    assert [name for name, r in results.items() if not r.passed] == ["files_match_load"]
    name = part.relative_to(warehouse).as_posix()
    assert results["files_match_load"].description == f"{name} changed: rerun the day (`etl run --date {DAY}`) to rewrite its files"


@pytest.mark.parametrize(("change", "said"), [
    (lambda part: part.unlink(), "is missing"),
    (lambda part: part.with_name("copy.parquet").write_bytes(part.read_bytes()), "was not written by the load"),
], ids=["a file gone", "a file added"])
def test_files_match_load_fails_on_a_file_gone_or_added(logs, warehouse, change, said):
    loaded_day(logs, warehouse)
    assert checks.files_match_load(warehouse, DAY).passed
    (part,) = parts(warehouse, "discards")
    change(part)
    outcome = checks.files_match_load(warehouse, DAY)
    assert not outcome.passed and said in outcome.description and outcome.metadata["problems"] == 1


def test_files_match_load_passes_a_day_loaded_before_digests_were_kept_saying_so(logs, warehouse):
    loaded_day(logs, warehouse)
    manifest = partition_dir(warehouse, "manifests", DAY) / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"parquet_sha256"', '"an_older_key"'))
    outcome = checks.files_match_load(warehouse, DAY)
    assert outcome.passed and outcome.description.startswith("no digests recorded")


def test_conservation_fails_when_a_lost_quarantine_row_is_replaced_by_a_copy_of_another(logs, warehouse):
    day_with_quarantine(logs, warehouse)
    assert checks.conservation(warehouse, DAY).passed
    (part,) = parts(warehouse, "quarantine")
    rewrite(part, lambda rows: pl.concat([rows.tail(1), rows.tail(1)]))  # as many rows, one message twice
    outcome = checks.conservation(warehouse, DAY)
    assert not outcome.passed and outcome.metadata["rows_repeating_a_message"] == 1
    assert "1 rows repeat a message's source_file, line_number and batch_index" in outcome.description


def test_conservation_fails_when_an_accepted_row_becomes_a_quarantine_row(logs, warehouse):
    day_with_quarantine(logs, warehouse)
    (tracks,), (quarantine,) = parts(warehouse, "tracks"), parts(warehouse, "quarantine")
    rewrite(tracks, lambda rows: rows.head(1))
    rewrite(quarantine, lambda rows: pl.concat([rows, rows.head(1).with_columns(line_number=pl.lit(2, pl.Int64), reason=pl.lit("missing_event"))]))
    outcome = checks.conservation(warehouse, DAY)
    assert not outcome.passed and "missing" not in outcome.description.partition(": ")[2].partition(";")[0]
    assert "tracks has 1 rows, the run accepted 2" in outcome.description
    assert "quarantine rows by reason differ from the run's counts for missing_event" in outcome.description


def test_discards_check_fails_when_discards_lose_rows_the_manifest_counted(logs, warehouse):
    loaded_day(logs, warehouse)
    assert checks.discards_point_to_messages(warehouse, DAY).passed
    for part in parts(warehouse, "discards"):
        pl.read_parquet(part).clear().write_parquet(part)
    outcome = checks.discards_point_to_messages(warehouse, DAY)
    assert not outcome.passed and "1 values discarded, 0 in discards: 1 missing" in outcome.description


def test_discards_check_fails_when_a_discard_points_at_no_accepted_message(logs, warehouse):
    loaded_day(logs, warehouse)
    (part,) = parts(warehouse, "discards")
    rewrite(part, lambda rows: rows.with_columns(message_id=pl.lit("nowhere")))
    outcome = checks.discards_point_to_messages(warehouse, DAY)
    assert not outcome.passed and outcome.description.endswith("1 pointing at no accepted message")


def test_event_rows_check_fails_when_a_row_moves_to_another_event_table(logs, warehouse):
    loaded_day(logs, warehouse)
    assert checks.event_rows_match_tracks(warehouse, DAY).passed
    (a,), (b,) = parts(warehouse, "events/a"), parts(warehouse, "events/b")
    rows_a = pl.read_parquet(a)
    moved = rows_a.filter(pl.col("message_id") == "a2")
    rows_a.filter(pl.col("message_id") != "a2").write_parquet(a)
    pl.concat([pl.read_parquet(b), moved]).write_parquet(b)
    outcome = checks.event_rows_match_tracks(warehouse, DAY)
    assert not outcome.passed
    assert "a (1 in its table, 2 in tracks), b (2 in its table, 1 in tracks)" in outcome.description


@pytest.mark.parametrize(
    "swap",
    [lambda rows: rows.with_columns(message_id=pl.lit("stray")), lambda rows: rows.with_columns(message_id=pl.lit("a1"))],
    ids=["a message tracks lacks", "a message twice"],
)
def test_event_rows_check_fails_when_a_row_is_swapped_for_another_with_counts_unchanged(logs, warehouse, swap):
    loaded_day(logs, warehouse)
    (a,) = parts(warehouse, "events/a")
    rows = pl.read_parquet(a)
    pl.concat([rows.filter(pl.col("message_id") != "a2"), swap(rows.filter(pl.col("message_id") == "a2"))]).write_parquet(a)
    outcome = checks.event_rows_match_tracks(warehouse, DAY)
    assert not outcome.passed
    assert outcome.metadata["stray_rows"] + outcome.metadata["repeated_rows"] == 1 and outcome.metadata["mismatched_events"] == 0


def test_a_days_checks_and_the_models_checks_each_share_one_database_closed_after_them(logs, warehouse, monkeypatch):
    # Opening a DuckDB costs 18 ms and a day's checks ask a dozen queries; a database left open
    # keeps DuckDB's threads running, and a process forked meanwhile can hang in DuckDB.
    loaded_day(logs, warehouse)
    refresh_models(warehouse)
    opened = opened_databases(monkeypatch)
    assert all(r.passed for r in partition_check_results(warehouse, DAY, checks.DEFAULT_QUARANTINE_WARN_RATE))
    assert all(r.passed for r in model_check_results(warehouse))
    assert len(opened) == 2
    for database in opened:
        with pytest.raises(duckdb.ConnectionException):
            database.execute("select 1")


def test_a_fatal_duckdb_error_in_one_check_gives_the_checks_after_it_a_new_shared_database(logs, warehouse, monkeypatch):
    # DuckDB invalidates a database for good after a fatal error: kept, it would fail every
    # later check of the day with "database has been invalidated" instead of its own outcome.
    loaded_day(logs, warehouse)
    opened = opened_databases(monkeypatch)
    with catalog.shared_scratch_database():
        with pytest.raises(duckdb.FatalException), catalog.scratch_cursor():
            raise duckdb.FatalException("FATAL Error: simulated")
        assert all(r.passed for r in partition_check_results(warehouse, DAY, checks.DEFAULT_QUARANTINE_WARN_RATE))
    assert len(opened) == 2
    for database in opened:
        with pytest.raises(duckdb.ConnectionException):
            database.execute("select 1")


def test_the_checks_database_spills_past_its_memory_limit_to_a_folder_it_removes(monkeypatch, tmp_path):
    # Conservation groups every message of the day: 20M quarantine rows took 2.4 GB unbounded.
    monkeypatch.setattr(catalog, "MEMORY_LIMIT", "64MB")
    monkeypatch.setattr(catalog.tempfile, "gettempdir", lambda: str(tmp_path))
    with catalog.shared_scratch_database():
        assert catalog.scratch_rows("select current_setting('memory_limit')") == [("61.0 MiB",)]
        groups = "select count(*) from (select i % 3000000 as k, count(*) from range(6000000) t(i) group by k)"
        with catalog.scratch_cursor() as cursor:
            assert cursor.execute(groups).fetchall() == [(3_000_000,)]
            spilled = [path for path in tmp_path.glob("trackhouse-scratch-*/*")]
        assert spilled  # it spilled rather than failing or growing
    assert list(tmp_path.iterdir()) == []


def test_the_checks_run_where_no_temporary_folder_is_usable(logs, warehouse, monkeypatch):
    loaded_day(logs, warehouse)

    def no_usable_folder() -> str:
        raise FileNotFoundError("No usable temporary directory found in ['/tmp']")

    monkeypatch.setattr(catalog.tempfile, "gettempdir", no_usable_folder)
    assert all(r.passed for r in partition_check_results(warehouse, DAY, checks.DEFAULT_QUARANTINE_WARN_RATE))


def test_a_model_checks_views_are_its_own_cursors_and_gone_after_it(logs, warehouse):
    # Another check on the shared database must never read them (a check on another warehouse,
    # or its `changed_days`, would otherwise be read through names this one made).
    loaded_day(logs, warehouse)
    refresh_models(warehouse)
    with catalog.shared_scratch_database():
        assert checks.stg_unique_message_id(warehouse).passed
        assert catalog.scratch_rows("select count(*) from duckdb_views() where not internal") == [(0,)]


@pytest.mark.parametrize(
    "break_tracks",
    [lambda part: part.unlink(), lambda part: part.write_bytes(b"")],
    ids=["no tracks file", "empty tracks file"],
)
def test_every_partition_check_reports_a_day_whose_tracks_file_is_gone(logs, warehouse, break_tracks):
    loaded_day(logs, warehouse)
    assert all(r.passed for r in partition_check_results(warehouse, DAY, checks.DEFAULT_QUARANTINE_WARN_RATE))
    for part in parts(warehouse, "tracks"):
        break_tracks(part)
    results = list(partition_check_results(warehouse, DAY, checks.DEFAULT_QUARANTINE_WARN_RATE))
    assert [r.check_name for r in results] == list(PARTITION_CHECKS)
    failed = {r.check_name for r in results if not r.passed}
    assert {"conservation", "schema_matches_contract", "event_rows_match_tracks", "discards_point_to_messages"} <= failed


@pytest.mark.parametrize("interrupt", [RuntimeError("Query interrupted"), duckdb.InterruptException("INTERRUPT Error: Interrupted!")])
def test_a_check_interrupted_by_ctrl_c_raises_rather_than_fails(interrupt):
    # A failed ERROR check makes `etl` exit 1 saying the output may be wrong; Ctrl-C exits 130.
    @checks.failing_instead_of_raising
    def interrupted() -> checks.CheckOutcome:
        raise interrupt

    with pytest.raises(type(interrupt)):
        interrupted()
    assert not checks.failing_instead_of_raising(lambda: 1 / 0)().passed
