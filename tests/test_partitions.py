"""Every day folder under the logs root is a partition (CONTRACT.md section 5), a future one too."""

from __future__ import annotations

import datetime as dt
import fcntl

import pytest
from conftest import materialize_day, track, write_log

from dagster_project import partitions
from dagster_project.partitions import received_days
from dagster_project.resources import TrackhouseConfig
from etl import checks
from etl.write import STAGING, read_manifest


def load_partition(logs, warehouse, day: str):
    return materialize_day(TrackhouseConfig(logs_root=str(logs), warehouse_root=str(warehouse)), day)


def test_partitions_start_at_the_earliest_day_folder_and_run_to_today(logs):
    (logs / "2024-03-05").mkdir()
    (logs / "2024-07-01").mkdir()
    keys = received_days(logs).get_partition_keys()
    assert keys[0] == "2024-03-05" and keys[-1] == dt.datetime.now(dt.UTC).date().isoformat()


def test_a_logs_root_that_is_not_there_is_said_where_the_code_location_loads(tmp_path, caplog):
    # `dagster dev` started outside the checkout: the default `data/samples` is then nowhere.
    partitions_def = received_days(tmp_path / "data" / "samples")
    assert partitions_def.start.date().isoformat() == partitions.FALLBACK_START
    [said] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert said.startswith(f"logs root {tmp_path / 'data' / 'samples'} is not a folder, so the partitions start at 2024-01-01: set TRACKHOUSE_LOGS")


def test_an_existing_logs_root_loads_without_a_warning(logs, caplog):
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    received_days(logs)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_a_logs_root_the_code_location_cannot_read_is_said_in_one_line(logs, monkeypatch):
    # A PermissionError's traceback was all the Dagster UI showed of it.
    def refused(root):
        raise PermissionError(13, "Permission denied", str(root))

    monkeypatch.setattr(partitions, "list_days", refused)
    with pytest.raises(RuntimeError, match=r"^cannot read the logs root .* \(Permission denied\): give this user read access, or set TRACKHOUSE_LOGS"):
        received_days(logs)


def test_a_day_folder_dated_after_today_is_a_partition_that_loads(logs, warehouse):
    future = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=400)).isoformat()
    write_log(logs / "2025-01-14" / "a.ndjson", [track(messageId="m1")])
    write_log(logs / future / "a.ndjson", [track(messageId="m2")])
    assert load_partition(logs, warehouse, future).success and read_manifest(warehouse, future)["accepted"] == 1


def test_a_days_checks_run_under_its_day_lock(logs, warehouse, monkeypatch):
    """Two runs of a day at once: the second must not swap the day's files while the first
    checks them (`IOException: No files found`)."""
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    conservation, held = checks.conservation, []

    def conservation_noting_the_lock(warehouse, day):
        with open(warehouse / STAGING / f"{day}.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append(False)
            except BlockingIOError:
                held.append(True)
        return conservation(warehouse, day)

    monkeypatch.setattr(checks, "conservation", conservation_noting_the_lock)
    assert load_partition(logs, warehouse, "2025-01-14").success and held == [True]
