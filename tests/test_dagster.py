"""The real Dagster assets, run with `dagster.materialize` on temporary folders."""

from __future__ import annotations

import datetime as dt
import fcntl
import shutil
import threading
import time
from decimal import Decimal
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from conftest import QUIET, materialize_day, query, track, write_log

from dagster_project import assets
from dagster_project.assets import build_load_asset, stage_seconds
from dagster_project.cli import format_reports
from dagster_project.definitions import LOAD_JOB, build_definitions
from dagster_project.models import sql_models
from dagster_project.partitions import received_days
from dagster_project.resources import TrackhouseConfig
from etl import checks
from etl.catalog import writer_lock

def two_days(logs):
    write_log(logs / "2025-01-14" / "a.ndjson", [track(messageId="m1"), track("Order Completed", messageId="m2")])
    write_log(logs / "2025-01-15" / "b.ndjson.gz", [track(messageId="m3"), "garbage", ""])


def test_definitions_load_with_a_job_schedule_and_partitions_from_the_folders(logs, warehouse):
    two_days(logs)
    defs = build_definitions(TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse)))
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def(LOAD_JOB)
    keys = job.partitions_def.get_partition_keys()
    assert keys[0] == "2025-01-14" and "2025-01-15" in keys


def test_daily_schedule_asks_for_yesterdays_partition(logs, warehouse):
    two_days(logs)
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse))
    defs = build_definitions(config)
    schedule = defs.resolve_schedule_def("daily_load")
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2025, 1, 16, 1, 30, tzinfo=dt.UTC), repository_def=defs.get_repository_def(),
        resources={"trackhouse": config},
    )
    request = schedule(context)
    assert request.partition_key == "2025-01-15"


@pytest.mark.parametrize("days_after_today", [0, 3], ids=["earliest folder is today", "only a folder after today"])
def test_daily_schedule_skips_when_yesterday_is_not_a_partition(logs, warehouse, days_after_today):
    today = dt.datetime.now(dt.UTC).date()
    first_folder = (today + dt.timedelta(days=days_after_today)).isoformat()
    write_log(logs / first_folder / "a.ndjson", [track(messageId="m1")])
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse))
    defs = build_definitions(config)
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime.combine(today, dt.time(1, 30), dt.UTC), repository_def=defs.get_repository_def(),
        resources={"trackhouse": config},
    )
    tick = defs.resolve_schedule_def("daily_load").evaluate_tick(context)
    assert tick.run_requests == []
    yesterday = (today - dt.timedelta(days=1)).isoformat()
    assert tick.skip_message.startswith(f"{yesterday} is not a partition: partitions start at {first_folder}")


def test_daily_schedule_skips_a_day_without_a_folder_instead_of_loading_it_empty(logs, warehouse):
    two_days(logs)  # 2025-01-14 and 2025-01-15; nothing received on 2025-01-16
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse))
    defs = build_definitions(config)
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2025, 1, 17, 1, 30, tzinfo=dt.UTC), repository_def=defs.get_repository_def(),
        resources={"trackhouse": config},
    )
    tick = defs.resolve_schedule_def("daily_load").evaluate_tick(context)
    assert tick.run_requests == []
    assert tick.skip_message.startswith(f"no folder {logs.resolve() / '2025-01-16'}: nothing received that day yet")


def test_daily_schedule_still_asks_for_the_day_when_the_logs_root_is_missing(tmp_path, warehouse):
    # The run then fails with MissingLogs, naming the root: a skip would hide a mistyped TRACKHOUSE_LOGS for ever.
    config = TrackhouseConfig(logs_root=str(tmp_path / "no-such-logs"), warehouse_root=str(warehouse))
    defs = build_definitions(config)
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2025, 1, 17, 1, 30, tzinfo=dt.UTC), repository_def=defs.get_repository_def(),
        resources={"trackhouse": config},
    )
    assert defs.resolve_schedule_def("daily_load")(context).partition_key == "2025-01-16"


def test_two_partitions_materialize_with_every_check_passing(logs, warehouse):
    two_days(logs)
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse))
    for day, accepted, quarantined in (("2025-01-14", 2, 0), ("2025-01-15", 1, 1)):
        result = materialize_day(config, day)
        assert result.success
        evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert evaluations == {
            "conservation": True, "files_match_load": True, "unique_message_id": True, "schema_matches_contract": True,
            "quarantine_rate": quarantined == 0, "event_rows_match_tracks": True,
            "registry_matches_parquet": True, "columns_within_cap": True, "discards_point_to_messages": True,
        }
        metadata = {
            m.step_materialization_data.materialization.asset_key.to_user_string():
            m.step_materialization_data.materialization.metadata
            for m in result.get_asset_materialization_events()
        }
        assert metadata["tracks"]["rows"] == dg.MetadataValue.int(accepted)
        assert metadata["quarantine"]["rows"] == dg.MetadataValue.int(quarantined)
        assert "`invalid_json`" in metadata["quarantine"]["by_reason"].value or quarantined == 0
    assert query(warehouse, "select received_date, count(*) from tracks group by 1 order by 1") == [
        (dt.date(2025, 1, 14), 2), (dt.date(2025, 1, 15), 1),
    ]


def test_a_load_carries_the_seconds_of_each_stage_it_ran(logs, warehouse, monkeypatch):
    two_days(logs)
    real_load_day = assets.load_day
    monkeypatch.setattr(assets, "load_day", lambda *args: (time.sleep(0.2), real_load_day(*args))[1])
    result = materialize_day(TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse)), "2025-01-14")
    for event in result.get_asset_materialization_events():  # yielded before the checks ran
        assert list(stage_seconds(event.materialization.metadata)) == ["load", "catalog"]
    for evaluation in result.get_asset_check_evaluations():
        seconds = stage_seconds(evaluation.metadata)
        assert list(seconds) == ["load", "catalog", "checks"]
        assert seconds["load"] >= 0.2 and seconds["catalog"] > 0 and seconds["checks"] > 0


def test_a_load_whose_checks_crash_is_still_recorded_as_materialized(logs, warehouse, monkeypatch):
    # The models refresh after recorded loads: a published day must be recorded before its checks run.
    two_days(logs)

    def crash(*args):
        raise RuntimeError("checks crashed")

    monkeypatch.setattr(assets, "partition_check_results", crash)
    asset = build_load_asset(received_days(logs))
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse))
    result = dg.materialize([asset], partition_key="2025-01-14", resources={"trackhouse": config}, run_config=QUIET, raise_on_error=False)
    assert not result.success
    assert {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()} == {"tracks", "quarantine", "event_tables", "discards"}


def test_quarantine_rate_check_warns_through_dagster(logs, warehouse):
    two_days(logs)
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse), quarantine_warn_rate=0.9)
    result = materialize_day(config, "2025-01-15")
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()}["quarantine_rate"] is True
    strict = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse), quarantine_warn_rate=0.1)
    evaluation = next(e for e in materialize_day(strict, "2025-01-15").get_asset_check_evaluations() if e.check_name == "quarantine_rate")
    assert evaluation.passed is False and evaluation.severity == dg.AssetCheckSeverity.WARN


def test_ignored_and_unreadable_files_are_named_in_the_runs_log_on_any_dagster_instance(logs, warehouse):
    # The contract names them "in the run's log"; Dagster took the `trackhouse` logger's records
    # only on an instance whose dagster.yaml manages that logger (the project's), not a user's.
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    (logs / "2025-01-14" / "README.txt").write_text("notes")
    (logs / "2025-01-14" / "b.ndjson.gz").write_bytes(b"not gzip")
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse))
    for managed in ([], ["trackhouse"], ["root"]):  # Dagster takes the last two's records itself
        instance = dg.DagsterInstance.ephemeral(settings={"python_logs": {"managed_python_loggers": managed}})
        result = dg.materialize([build_load_asset(received_days(logs))], partition_key="2025-01-14", resources={"trackhouse": config}, instance=instance)
        said = [entry.user_message for entry in instance.all_logs(result.run_id)]
        assert sum("ignored 2025-01-14/README.txt" in message for message in said) == 1, managed
        assert sum("2025-01-14/b.ndjson.gz: unreadable from line 1" in message for message in said) == 1, managed


def test_a_damaged_file_of_another_day_fails_no_days_load_in_dagster(logs, warehouse):
    # The load refreshes the catalog after publishing its day: that failed on another day's
    # damaged footer, so Dagster recorded a published day as failed, checks and all unrun.
    two_days(logs)
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse))
    assert materialize_day(config, "2025-01-14").success
    for part in (warehouse / "events").glob("*/received_date=2025-01-14/*.parquet"):
        part.write_bytes(part.read_bytes()[:100])
    result = materialize_day(config, "2025-01-15")
    assert result.success
    assert {e.check_name for e in result.get_asset_check_evaluations() if not e.passed} <= {"quarantine_rate"}


def test_a_warehouse_dagster_cannot_write_fails_the_run_in_one_line_saying_what_to_set(logs, tmp_path):
    # A bare OSError from the first mkdir said nothing of TRACKHOUSE_WAREHOUSE.
    two_days(logs)
    (tmp_path / "a-file").write_text("")
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(tmp_path / "a-file" / "warehouse"))
    result = dg.materialize([build_load_asset(received_days(logs))], partition_key="2025-01-14", resources={"trackhouse": config}, raise_on_error=False, run_config=QUIET)
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith(f"cannot write to warehouse {tmp_path / 'a-file' / 'warehouse'} (Not a directory): set TRACKHOUSE_WAREHOUSE")


def test_a_day_with_no_folder_loads_as_an_empty_partition(logs, warehouse):
    two_days(logs)
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse))
    result = materialize_day(config, "2025-01-16")
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())


def test_partition_checks_pass_in_a_warehouse_whose_path_has_glob_characters(logs, tmp_path):
    two_days(logs)
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(tmp_path / "wh[1]"))
    result = materialize_day(config, "2025-01-14")
    assert [e.check_name for e in result.get_asset_check_evaluations() if not e.passed] == []


def test_models_materialize_after_the_loads_with_every_model_check_passing(logs, warehouse):
    two_days(logs)
    write_log(logs / "2025-01-15" / "c.ndjson", [track("Order Completed", messageId="o1", properties={"revenue": 10, "currency": "XAU"})])
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse))
    for day in ("2025-01-14", "2025-01-15"):
        materialize_day(config, day)
    result = dg.materialize([sql_models], resources={"trackhouse": config}, run_config=QUIET)
    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations == {
        "unique_message_id": True, "cross_partition_duplicates": True, "identities_match_stg_tracks": True,
        "active_users_match_stg_tracks": True, "revenue_reconciles": True, "sums_equal_fct_orders": True, "conversions_equal_fct_conversions": True, "conversion_rate_in_range": True,
        "fx_coverage": False,  # XAU has no rate in the seeds: a WARN naming the pair, not a failure
    }
    fx = next(e for e in result.get_asset_check_evaluations() if e.check_name == "fx_coverage")
    assert all(list(stage_seconds(e.materialization.metadata)) == ["refresh"] for e in result.get_asset_materialization_events())
    assert all(list(stage_seconds(e.metadata)) == ["refresh", "checks"] for e in result.get_asset_check_evaluations())
    assert fx.severity == dg.AssetCheckSeverity.WARN and fx.description == "no rate for XAU 2025-01-15"
    assert query(warehouse, "select currency, revenue_usd from fct_orders") == [("XAU", None)]


def test_revenue_check_fails_when_fct_orders_loses_an_order(logs, warehouse):
    write_log(logs / "2025-01-14" / "a.ndjson", [track("Order Completed", messageId=f"o{i}", properties={"revenue": i}) for i in (1, 2)])
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse))
    materialize_day(config, "2025-01-14")
    dg.materialize([sql_models], resources={"trackhouse": config}, run_config=QUIET)
    assert checks.orders_reconcile_with_tracks(warehouse).passed
    mart = next((warehouse / "marts" / "fct_orders").glob("*.parquet"))
    pl.read_parquet(mart).head(1).write_parquet(mart)
    outcome = checks.orders_reconcile_with_tracks(warehouse)
    assert not outcome.passed and "USD: tracks 2 orders" in outcome.description
    assert not checks.revenue_daily_matches_orders(warehouse).passed


def modelled_warehouse(logs: Path, warehouse: Path) -> None:
    write_log(logs / "2025-01-14" / "a.ndjson", [
        track("Page Viewed", user_id=None, anonymousId=f"anon-{i}", messageId=f"m{i}", timestamp=f"2025-01-1{i}T10:00:00Z")
        for i in (1, 2, 3)
    ])
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse))
    materialize_day(config, "2025-01-14")
    dg.materialize([sql_models], resources={"trackhouse": config}, run_config=QUIET)


@pytest.mark.parametrize(
    ("mart", "check"),
    [
        ("stg_tracks", checks.cross_partition_duplicates),
        ("dim_identities", checks.identities_match_stg_tracks),
        ("daily_active_users", checks.active_users_match_stg_tracks),
    ],
)
def test_a_mart_that_loses_a_row_fails_its_check(logs, warehouse, mart, check):
    modelled_warehouse(logs, warehouse)
    assert check(warehouse).passed
    part = next((warehouse / "marts" / mart).glob("*.parquet"))
    pl.read_parquet(part).tail(-1).write_parquet(part)
    assert not check(warehouse).passed


def rewrite_mart(warehouse: Path, mart: str, change) -> None:
    part = next((warehouse / "marts" / mart).glob("*.parquet"))
    change(pl.read_parquet(part)).write_parquet(part)


@pytest.mark.parametrize(
    ("mart", "change", "check"),
    [
        ("stg_tracks", lambda rows: pl.concat([rows, rows.head(1)]), checks.stg_unique_message_id),
        ("conversions_daily", lambda rows: rows.with_columns(conversion_rate=pl.lit(1.5)), checks.conversion_rate_in_range),
        ("fct_conversions", lambda rows: rows.tail(-1), checks.conversions_match_facts),
        ("revenue_daily", lambda rows: rows.with_columns(revenue_usd=rows["revenue_usd"] * 2), checks.revenue_daily_matches_orders),
    ],
    ids=["a message twice in stg_tracks", "a rate above 1", "a conversion lost", "revenue_usd changed"],
)
def test_a_tampered_mart_fails_the_check_that_guards_it(logs, warehouse, mart, change, check):
    write_log(logs / "2025-01-14" / "a.ndjson", [
        track("Order Completed", messageId="o1", timestamp="2025-01-14T10:00:00Z", properties={"revenue": 10, "currency": "EUR"}),
        track("Signed up for a trial", messageId="c1", timestamp="2025-01-14T11:00:00Z"),
        track("Signed up for a trial", "u2", messageId="c2", timestamp="2025-01-14T12:00:00Z"),
    ])
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse))
    materialize_day(config, "2025-01-14")
    dg.materialize([sql_models], resources={"trackhouse": config}, run_config=QUIET)
    assert check(warehouse).passed
    rewrite_mart(warehouse, mart, change)
    assert not check(warehouse).passed


def test_a_missing_mart_fails_the_model_checks_in_one_line_saying_what_to_run(logs, warehouse):
    modelled_warehouse(logs, warehouse)
    shutil.rmtree(warehouse / "marts" / "stg_tracks")
    outcome = checks.stg_unique_message_id(warehouse)
    assert not outcome.passed and "\n" not in outcome.description
    assert outcome.description == (
        f"MissingMarts: no mart for stg_tracks under {warehouse / 'marts'}: run `etl models --warehouse {warehouse}` to build them"
    )


def test_model_checks_hold_when_a_day_is_published_after_the_models_ran(logs, warehouse):
    # A backfill goes on while the models refresh: the new day is for the next refresh, and
    # the checks must neither call the marts wrong nor count its rows as removed duplicates.
    for day in ("2025-01-14", "2025-01-15"):
        write_log(logs / day / "a.ndjson", [track("Order Completed", messageId=day, properties={"revenue": 5})])
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse))
    materialize_day(config, "2025-01-14")
    dg.materialize([sql_models], resources={"trackhouse": config}, run_config=QUIET)
    materialize_day(config, "2025-01-15")
    assert checks.orders_reconcile_with_tracks(warehouse).passed
    assert checks.cross_partition_duplicates(warehouse).metadata["duplicates_removed"] == 0
    # Nor a modelled day run again since, with other content: the marts are not compared then.
    write_log(logs / "2025-01-14" / "a.ndjson", [track("Order Completed", messageId="2025-01-14", properties={"revenue": 7})])
    materialize_day(config, "2025-01-14")
    for check in (checks.orders_reconcile_with_tracks, checks.cross_partition_duplicates):
        outcome = check(warehouse)
        assert outcome.passed and outcome.description.startswith("not compared: 2025-01-14 run again since"), check
    dg.materialize([sql_models], resources={"trackhouse": config}, run_config=QUIET)
    assert checks.orders_reconcile_with_tracks(warehouse).description == "revenue per currency reconciles"


@pytest.mark.parametrize("day_has_a_winner", [True, False], ids=["day with another message", "day of duplicates only"])
def test_model_checks_hold_when_a_losing_copy_has_revenue_the_winner_lacks(logs, warehouse, day_has_a_winner):
    # Day 14 holds a copy of day 13's message, with revenue the winner lacks: it makes no order,
    # and it is one duplicate removed, even when no row of day 14 reaches stg_tracks.
    write_log(logs / "2025-01-13" / "a.ndjson", [track("Page Viewed", messageId="x")])
    write_log(logs / "2025-01-14" / "a.ndjson", [
        track("Order Completed", messageId="x", properties={"revenue": 10}),
        *([track("Page Viewed", messageId="y")] if day_has_a_winner else []),
    ])
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse))
    for day in ("2025-01-13", "2025-01-14"):
        materialize_day(config, day)
    dg.materialize([sql_models], resources={"trackhouse": config}, run_config=QUIET)
    assert checks.orders_reconcile_with_tracks(warehouse).passed
    assert checks.cross_partition_duplicates(warehouse).metadata["duplicates_removed"] == 1


@pytest.mark.parametrize(
    "reader",
    [lambda warehouse: checks.stg_unique_message_id(warehouse).passed, lambda warehouse: "revenue_daily:" in format_reports(warehouse)],
    ids=["model check", "etl report"],
)
def test_readers_of_the_marts_wait_for_a_refresh_in_progress(logs, warehouse, monkeypatch, reader):
    """Another run's refresh swaps the marts under the writer lock: a reader that did not wait
    could open a mart file the swap has just removed (`IO Error: Cannot open file`)."""
    two_days(logs)
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse))
    materialize_day(config, "2025-01-14")
    dg.materialize([sql_models], resources={"trackhouse": config}, run_config=QUIET)
    steps, settled, flock = [], threading.Event(), fcntl.flock

    def flock_noting_waits(fd, operation):
        if operation in (fcntl.LOCK_EX, fcntl.LOCK_SH):
            try:
                return flock(fd, operation | fcntl.LOCK_NB)
            except BlockingIOError:
                steps.append("waited for the writer")
                settled.set()
        return flock(fd, operation)

    def read():
        try:
            steps.append("read" if reader(warehouse) else "read wrong")
        finally:
            settled.set()

    monkeypatch.setattr(fcntl, "flock", flock_noting_waits)
    with writer_lock(warehouse):
        worker = threading.Thread(target=read)
        worker.start()
        settled.wait()
    worker.join()
    assert steps == ["waited for the writer", "read"]


def test_models_are_requested_automatically_after_a_partition_loads(logs, warehouse):
    two_days(logs)
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse))
    defs = build_definitions(config)
    instance = dg.DagsterInstance.ephemeral()
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert first.total_requested == 0
    asset = build_load_asset(received_days(config.logs))
    dg.materialize([asset], partition_key="2025-01-14", resources={"trackhouse": config}, instance=instance, run_config=QUIET)
    after_load = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    for model in ("stg_tracks", "daily_active_users", "dim_identities"):
        assert after_load.get_num_requested(dg.AssetKey(model)) == 1


def test_models_are_requested_once_after_a_load_that_finished_while_another_was_in_progress(logs, warehouse):
    """The other load may be a long day or a killed run left STARTED until run monitoring fails it:
    the finished load must still refresh the models once nothing is in progress."""
    two_days(logs)
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse))
    defs = build_definitions(config)
    instance = dg.DagsterInstance.ephemeral()
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    in_progress = instance.create_run_for_job(
        defs.resolve_job_def(LOAD_JOB), tags={"dagster/partition": "2025-01-15"}, status=dg.DagsterRunStatus.STARTED,
    )
    asset = build_load_asset(received_days(config.logs))
    dg.materialize([asset], partition_key="2025-01-14", resources={"trackhouse": config}, instance=instance, run_config=QUIET)
    requested = []
    for _ in range(2):
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        requested.append(tick.get_num_requested(dg.AssetKey("stg_tracks")))
    instance.report_run_failed(in_progress)
    for _ in range(2):
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        requested.append(tick.get_num_requested(dg.AssetKey("stg_tracks")))
    assert requested == [0, 0, 1, 0]


def test_a_load_that_finishes_right_after_a_refresh_is_not_forgotten(logs, warehouse):
    """The refresh ending and the next load ending between two ticks: the refresh (which did not
    read that load) must not cancel it, nor may a refresh that a user ran by hand."""
    two_days(logs)
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse))
    defs = build_definitions(config)
    instance = dg.DagsterInstance.ephemeral()
    asset = build_load_asset(received_days(config.logs))

    def load(day):
        dg.materialize([asset], partition_key=day, resources={"trackhouse": config}, instance=instance, run_config=QUIET)

    def refresh():
        dg.materialize([sql_models], resources={"trackhouse": config}, instance=instance, run_config=QUIET)

    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    requested = []
    for step in (lambda: load("2025-01-14"), lambda: (refresh(), load("2025-01-15")), refresh, lambda: None):
        step()
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        requested.append(tick.get_num_requested(dg.AssetKey("stg_tracks")))
    assert requested == [1, 1, 0, 0]


def test_an_absurd_revenue_cannot_break_the_model_refresh(logs, warehouse):
    write_log(logs / "2025-01-14" / "a.ndjson", [
        track("Order Completed", messageId="huge", properties={"revenue": 1e20}),
        track("Order Completed", messageId="fine", properties={"revenue": "19.99"}),
    ])
    config = TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse))
    materialize_day(config, "2025-01-14")
    result = dg.materialize([sql_models], resources={"trackhouse": config}, run_config=QUIET)
    assert result.success
    assert [e.check_name for e in result.get_asset_check_evaluations() if not e.passed] == []
    assert query(warehouse, "select message_id, revenue from fct_orders order by 1") == [
        ("fine", Decimal("19.9900")), ("huge", None),
    ]
    assert query(warehouse, "select revenue from tracks where message_id = 'huge'") == [(1e20,)]


def test_the_ui_instance_runs_at_most_two_days_at_once_and_fails_runs_left_started(tmp_path):
    """A backfill from `make ui` queues its days: ten big days at once would need ~10 GB. A killed
    run must not stay STARTED: the models wait while any load is in progress."""
    shutil.copy(Path(__file__).parents[1] / "dagster_home" / "dagster.yaml", tmp_path)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 2
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds == 3 * 60 * 60
