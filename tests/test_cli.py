"""`etl run` and `etl check`: exit codes, one-line errors and the per-day summary."""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import duckdb
import polars as pl
import pytest
from conftest import opened_databases, query, track, write_log

from dagster_project import assets, cli, launch
from dagster_project.assets import counts_table
from dagster_project.cli import dagster_instance, ensure_writable, format_summaries, main, repeated_failures
from dagster_project.resources import TrackhouseConfig
from etl import checks, write
from etl.models import ModelError, model_names
from etl.pipeline import DaySummary, MissingLogs


def run(*args: str) -> int:
    return main(["run", *args])


def test_run_loads_every_day_folder_and_prints_a_summary(logs, warehouse, capsys):
    write_log(logs / "2025-01-14" / "a.ndjson", [track(messageId="m1"), track(messageId="m1")])
    write_log(logs / "2025-01-15" / "a.jsonl", [track(), "[]", ""])
    (logs / "2025-01-15" / "notes.txt").write_text("not a log")
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    out = capsys.readouterr()
    assert "2025-01-14" in out.out and "2025-01-15" in out.out
    assert "duplicate_message_id 1" in out.out and "not_an_object 1" in out.out
    assert "notes.txt" in out.out and "notes.txt" in out.err
    assert "reading 2025-01-15/a.jsonl" in out.err
    assert query(warehouse, "select count(*) from tracks") == [(2,)]


def test_run_counts_the_duplicates_across_days_that_stg_tracks_left_out(logs, warehouse, capsys):
    write_log(logs / "2025-01-14" / "a.ndjson", [track(messageId="m1"), track(messageId="m2")])
    write_log(logs / "2025-01-15" / "a.ndjson", [track(messageId="m1"), track(messageId="m3"), track(messageId="m3")])
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    said = capsys.readouterr().out.splitlines()
    assert "duplicates across days (all loaded days): 1 (a message received again on another day: " \
        "stg_tracks and the models keep the earliest received)" in said
    assert [line.split()[7] for line in said if line.startswith("2025-01-1")] == ["0", "1"]  # each day's own


def test_run_says_how_long_each_stage_of_each_day_and_of_the_models_took(logs, warehouse, capsys):
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    said = capsys.readouterr().err.splitlines()
    seconds = r"(\d+\.\d\d) s"
    (day,) = [m for line in said if (m := re.fullmatch(rf"  2025-01-14 done in {seconds} \(load {seconds}, catalog {seconds}, checks {seconds}\)", line))]
    assert float(day[1]) == pytest.approx(sum(map(float, day.groups()[1:])), abs=0.02)
    assert any(re.fullmatch(rf"  models done in {seconds} \(refresh {seconds}, checks {seconds}\)", line) for line in said)


def test_run_names_the_folders_it_skips_because_they_are_not_days(logs, warehouse, capsys):
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    for name in ("2025-02-30", "2025-1-05", "archive"):
        write_log(logs / name / "a.ndjson", [track()])
    (logs / ".cache").mkdir()
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    skipped = [line for line in capsys.readouterr().err.splitlines() if line.startswith("skipped ")]
    assert skipped == [f"skipped {name}/: not a YYYY-MM-DD day folder (rename it to the day its logs were received to load them)"
                       for name in ("2025-02-30", "2025-1-05", "archive")]


def test_a_name_with_a_newline_is_one_line_in_progress_and_skip_messages(logs, warehouse, capsys):
    write_log(logs / "2025-01-14" / "a\nb.ndjson", [track()])
    (logs / "old\nlogs").mkdir()
    (logs / "new\u2028logs").mkdir()  # a line break to Python's `splitlines`
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    err = capsys.readouterr().err.splitlines()
    assert "skipped old\\x0alogs/: not a YYYY-MM-DD day folder (rename it to the day its logs were received to load them)" in err
    assert "skipped new\\u2028logs/: not a YYYY-MM-DD day folder (rename it to the day its logs were received to load them)" in err
    assert "  2025-01-14: reading 2025-01-14/a\\x0ab.ndjson" in err


def test_an_unexpected_error_is_said_in_one_line_whatever_its_text(capsys):
    assert launch.said_unexpected(OSError("first line\nsecond line"), "unexpected") == 1
    assert one_line_error(capsys) == "etl: unexpected OSError: first line\\x0asecond line (rerun with TRACKHOUSE_DEBUG=1 for the traceback)"


def test_run_with_a_range_loads_only_the_days_inside_it(logs, warehouse, capsys):
    for day in ("2025-01-13", "2025-01-14", "2025-01-15"):
        write_log(logs / day / "a.ndjson", [track(messageId=day)])
    assert run("--logs", str(logs), "--warehouse", str(warehouse), "--from", "2025-01-14", "--to", "2025-01-15") == 0
    assert query(warehouse, "select message_id from tracks order by 1") == [("2025-01-14",), ("2025-01-15",)]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("etl: ")
    return err[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--date", "2025-13-01"], "is not a date: use YYYY-MM-DD"),
        (["--date", "20250114"], "is not a date: use YYYY-MM-DD"),
        (["--date", "2025-01-20"], "no folder"),
        (["--date", "2025-01-20"], "the only day folder is 2025-01-14"),
        (["--warehouse", ""], "--warehouse: an empty path (an unset shell variable?) would mean the current folder"),
        (["--logs", ""], "--logs: an empty path (an unset shell variable?) would mean the current folder"),
        (["--from", "2025-01-15", "--to", "2025-01-01"], "swap them"),
        (["--from", "2026-01-01"], "no day folders between"),
        (["--date", "2025-01-14", "--to", "2025-01-14"], "pass --date for one day or --from/--to for a range"),
        (["--date", "2025-01-14", "--from", "2025-01-14"], "pass --date for one day or --from/--to for a range"),
        (["--warehouse", "wh\\x"], "use a warehouse path without one"),
    ],
)
def test_usage_errors_exit_2_with_one_line(logs, warehouse, capsys, args, expected):
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    assert run("--logs", str(logs), "--warehouse", str(warehouse), *args) == 2
    assert expected in one_line_error(capsys)


@pytest.mark.parametrize(("make", "said"), [
    (lambda logs: (logs / "2025-01-20").write_text(""), "2025-01-20 is a file, not a folder"),
    (lambda logs: (logs / "1899-12-31").mkdir(), "1899-12-31 is a day outside the 1900-01-01 … 2199-12-31"),
], ids=["a file", "out of range"])
def test_a_date_whose_entry_exists_but_is_no_day_folder_says_what_it_is(logs, warehouse, capsys, make, said):
    # "no folder" for a folder that is there sent the user looking for the wrong problem.
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    make(logs)
    date = said.split(" ")[0]
    assert run("--logs", str(logs), "--warehouse", str(warehouse), "--date", date) == 2
    assert said in one_line_error(capsys)


def test_a_missing_date_among_several_days_is_not_said_to_lie_between_them(logs, warehouse, capsys):
    for day in ("2025-01-13", "2025-01-15"):
        write_log(logs / day / "a.ndjson", [track()])
    assert run("--logs", str(logs), "--warehouse", str(warehouse), "--date", "2025-01-14") == 2
    assert one_line_error(capsys).endswith("no folder " + str(logs / "2025-01-14") + ": the 2 day folders go from 2025-01-13 to 2025-01-15")


def test_a_warehouse_that_is_the_logs_root_is_refused_before_anything_is_written(logs, capsys):
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    assert run("--logs", str(logs), "--warehouse", str(logs)) == 2
    assert "keep the warehouse in a folder of its own" in one_line_error(capsys)
    assert sorted(p.name for p in logs.iterdir()) == ["2025-01-14"]


def test_a_warehouse_inside_the_logs_root_is_not_named_as_a_skipped_folder(logs, capsys):
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    assert run("--logs", str(logs), "--warehouse", str(logs / "warehouse")) == 0
    assert run("--logs", str(logs), "--warehouse", str(logs / "warehouse")) == 0
    assert not [line for line in capsys.readouterr().err.splitlines() if line.startswith("skipped ")]


def test_a_day_folder_without_log_files_loads_empty_and_says_so(logs, warehouse, capsys):
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    (logs / "2025-01-15").mkdir()
    (logs / "2025-01-15" / "a.ndjson.bak").write_text("")
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    assert "  2025-01-15/ holds no log files (.ndjson, .jsonl, .json, each maybe .gz): loaded as an empty day" in capsys.readouterr().err.splitlines()


def test_a_reader_leaving_early_leaves_a_completed_run_exit_0(logs, warehouse):
    # `etl run | head -1`: the summary's reader is gone once the run is complete, which a
    # BrokenPipeError made exit 1, "unexpected".
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    command = [sys.executable, "-c", "import sys; from dagster_project.cli import main; sys.exit(main())"]
    process = subprocess.Popen([*command, "run", "--logs", str(logs), "--warehouse", str(warehouse)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    stderr = process.communicate()[1].decode()
    assert process.returncode == 0, stderr
    assert "Error" not in stderr and query(warehouse, "select count(*) from tracks") == [(1,)]


def test_a_logs_folder_this_user_cannot_read_is_a_usage_error(logs, warehouse, capsys, monkeypatch):
    # Simulated: root, as tests may run, reads any folder.
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])

    def refused(root: Path) -> list[str]:
        raise PermissionError(13, "Permission denied", str(root))

    monkeypatch.setattr(cli, "list_days", refused)
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 2
    assert one_line_error(capsys) == f"etl: cannot read logs folder {logs} (Permission denied): give this user read access, or pass --logs DIR"


def test_a_day_folder_this_user_cannot_read_fails_its_load_saying_what_to_do(logs, warehouse, capsys, monkeypatch):
    # Simulated as above. Loaded as an empty day, its logs would have been lost from the warehouse.
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    listed = Path.iterdir

    def refused(folder: Path):
        if folder.name == "2025-01-14":
            raise PermissionError(13, "Permission denied", str(folder))
        return listed(folder)

    monkeypatch.setattr(Path, "iterdir", refused)
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 1
    progress, said = capsys.readouterr().err.splitlines()
    assert progress == "loading 2025-01-14"
    assert said.startswith(
        f"etl: loading 2025-01-14 failed: UnreadableDayFolder: cannot read day folder {logs / '2025-01-14'} (Permission denied): "
        "give this user read access to it, then rerun the day"
    )


def test_a_folder_inside_the_warehouse_this_user_cannot_write_is_said_with_what_to_do(logs, warehouse, capsys, monkeypatch):
    # Simulated (root writes anywhere): `tracks/` made read-only fails the swap of the day's files.
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])

    def refused(staged: Path, target: Path) -> None:
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(write, "swap_in", refused)
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 1
    said = capsys.readouterr().err.splitlines()[-1]
    assert said.startswith("etl: loading 2025-01-14 failed: PermissionError: ")
    assert f": give this user write access to everything under {warehouse}, or pass --warehouse DIR (rerun with" in said


def test_models_over_a_damaged_tracks_file_name_the_day_to_rerun(logs, warehouse, capsys):
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    [part] = (warehouse / "tracks" / "received_date=2025-01-14").glob("*.parquet")
    part.write_bytes(b"garbage")
    capsys.readouterr()
    assert main(["models", "--warehouse", str(warehouse)]) == 1
    said = one_line_error(capsys)
    assert "too small to be a Parquet file" in said
    assert f"rerun 2025-01-14 (`etl run --date 2025-01-14`) to rewrite tracks/received_date=2025-01-14/{part.name}" in said


def test_a_stderr_reader_leaving_early_stops_no_day_of_the_run(logs, warehouse):
    # `etl run 2>&1 | head -1`: the next progress line raised BrokenPipeError, and the days after
    # it were never loaded.
    for day in ("2025-01-13", "2025-01-14", "2025-01-15"):
        write_log(logs / day / "a.ndjson", [track(messageId=day)])
    command = [sys.executable, "-c", "import sys; from dagster_project.cli import main; sys.exit(main())"]
    process = subprocess.Popen([*command, "run", "--logs", str(logs), "--warehouse", str(warehouse)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stderr.close()
    process.communicate()
    assert process.returncode == 0
    assert query(warehouse, "select count(*) from tracks") == [(3,)]


def test_an_empty_environment_variable_counts_as_unset(logs, tmp_path, monkeypatch, capsys):
    # `TRACKHOUSE_WAREHOUSE=` from a script: an empty path was the current folder.
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRACKHOUSE_WAREHOUSE", "")
    monkeypatch.setenv("TRACKHOUSE_QUARANTINE_WARN_RATE", "")
    assert run("--logs", str(logs)) == 0
    assert query(tmp_path / "data" / "warehouse", "select count(*) from tracks") == [(1,)]
    assert TrackhouseConfig.from_env().warehouse == tmp_path / "data" / "warehouse"


def test_missing_logs_folder_exits_2(tmp_path, capsys):
    assert run("--logs", str(tmp_path / "absent"), "--warehouse", str(tmp_path / "w")) == 2
    assert "does not exist" in one_line_error(capsys)


def test_logs_folder_without_day_folders_exits_2(logs, warehouse, capsys):
    (logs / "not-a-day").mkdir()
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 2
    assert "no YYYY-MM-DD day folders" in one_line_error(capsys)


@pytest.mark.parametrize(("command", "path_given", "expected"), [
    ("run", lambda logs, file: ["--logs", str(file)], "logs folder {file} is a file, not a folder"),
    ("run", lambda logs, file: ["--logs", str(logs / "2025-01-14")], "is a day folder itself: pass its parent, --logs {logs}, with --date 2025-01-14"),
    ("run", lambda logs, file: ["--logs", str(logs), "--warehouse", str(file)], "warehouse {file} is a file, not a folder"),
    ("models", lambda logs, file: ["--warehouse", str(file)], "warehouse {file} is a file, not a folder"),
], ids=["logs is a file", "logs is a day folder", "warehouse is a file", "models: warehouse is a file"])
def test_a_path_of_the_wrong_kind_is_named_for_what_it_is(logs, tmp_path, capsys, command, path_given, expected):
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    assert main([command, *path_given(logs, file)]) == 2
    assert expected.format(logs=logs, file=file) in one_line_error(capsys)


def test_unwritable_warehouse_exits_1(logs, tmp_path, capsys):
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    assert run("--logs", str(logs), "--warehouse", str(blocker / "warehouse")) == 1
    assert "cannot write to warehouse" in one_line_error(capsys)


def test_a_failed_run_prints_one_line_naming_the_cause(logs, warehouse, capsys):
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    warehouse.mkdir()
    (warehouse / "tracks").write_text("a file where the tracks folder goes")
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 1
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if not line.startswith(("loading ", "  2025-01-14: "))] == [err[-1]]
    assert err[-1].startswith(f"etl: loading 2025-01-14 failed: FileExistsError: [Errno 17] File exists: '{warehouse / 'tracks'}'")


@pytest.mark.parametrize(("error", "status", "said"), [
    (KeyboardInterrupt(), 130, "etl: interrupted while loading 2025-01-14: "),
    (RuntimeError("Query interrupted"), 130, "etl: interrupted while loading 2025-01-14: "),  # DuckDB's, older clients
    (MissingLogs("no log files in /srv/after-interrupt/2025-01-14"), 1, "etl: loading 2025-01-14 failed: MissingLogs: "),
], ids=["Ctrl-C", "DuckDB interrupted", "a failure naming an interrupt"])
def test_an_interrupted_run_exits_130_with_one_line_saying_to_rerun(logs, warehouse, capsys, monkeypatch, error, status, said):
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(assets, "load_day", failing)
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == status
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(said) and ("rerun the same command" in err[-1]) == (status == 130)
    assert [line for line in err if not line.startswith("loading ")] == [err[-1]]


def test_a_failed_error_check_is_named_and_the_run_exits_1(logs, warehouse, capsys, monkeypatch):
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    monkeypatch.setattr(checks, "conservation", lambda warehouse, day: checks.CheckOutcome(False, "5 rows missing"))
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 1
    err = capsys.readouterr().err.splitlines()
    assert "check conservation (tracks, 2025-01-14) failed, ERROR: 5 rows missing" in err
    assert err[-1].startswith("etl: 1 ERROR check(s) failed: conservation (tracks, 2025-01-14)")


def test_a_failed_warn_check_is_named_and_the_run_still_exits_0(logs, warehouse, capsys):
    write_log(logs / "2025-01-14" / "a.ndjson", [track(), "not json"])  # half quarantined: over the 5 % warning rate
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    assert any(line.startswith("check quarantine_rate (quarantine, 2025-01-14) failed, WARN") for line in capsys.readouterr().err.splitlines())


def test_check_opens_one_database_for_all_its_days_and_the_models(logs, warehouse, monkeypatch):
    # Opening a DuckDB costs 18 ms: a database per day would add some 6.6 s (365 × 18 ms) to checking a year.
    for day in ("2025-01-14", "2025-01-15", "2025-01-16"):
        write_log(logs / day / "a.ndjson", [track(messageId=f"{day}-1")])
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    opened = opened_databases(monkeypatch)
    assert main(["check", "--warehouse", str(warehouse)]) == 0
    assert len(opened) == 1


def test_check_reruns_every_check_on_the_files_as_they_are_and_rewrites_nothing(logs, warehouse, capsys):
    for day in ("2025-01-14", "2025-01-15"):
        write_log(logs / day / "a.ndjson", [track(messageId=f"{day}-{n}") for n in range(3)])
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    capsys.readouterr()
    assert main(["check", "--warehouse", str(warehouse)]) == 0
    assert capsys.readouterr().out.strip().endswith("on 2 loaded day(s) from 2025-01-14 to 2025-01-15 and the models: 0 ERROR check(s) failed")

    (part,) = (warehouse / "tracks" / "received_date=2025-01-15").glob("*.parquet")
    pl.read_parquet(part).head(2).write_parquet(part)  # a row lost after the load
    before = {path: path.stat().st_mtime_ns for path in warehouse.rglob("*.parquet")}
    assert main(["check", "--warehouse", str(warehouse), "--date", "2025-01-15"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert "check conservation (tracks, 2025-01-15) failed, ERROR: 3 messages read, 2 accepted + 0 quarantined: 1 missing; " \
        "tracks has 2 rows, the run accepted 3: rerun the day (`etl run --date 2025-01-15`) to rewrite its files" in err
    assert err[-1].startswith("etl: ") and "conservation (tracks, 2025-01-15)" in err[-1]
    assert {path: path.stat().st_mtime_ns for path in warehouse.rglob("*.parquet")} == before


def warehouse_state(warehouse: Path) -> dict[Path, tuple[int, int]]:
    return {path: (path.stat().st_size, path.stat().st_mtime_ns) for path in warehouse.rglob("*") if path.is_file()}


def test_check_leaves_no_file_behind_and_changes_none(logs, warehouse, capsys):
    write_log(logs / "2025-01-14" / "a.ndjson", [track(properties={"n": 1})])
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    for lock in [warehouse / ".catalog.lock", *(warehouse / ".staging").glob("*.lock")]:
        lock.unlink()  # as an auditor's copy might lack them
    before = warehouse_state(warehouse)
    assert main(["check", "--warehouse", str(warehouse)]) == 0
    assert warehouse_state(warehouse) == before


def test_a_damaged_registry_is_named_with_what_to_do_by_the_load_and_once_by_the_check(logs, warehouse, capsys):
    for day in ("2025-01-13", "2025-01-14", "2025-01-15"):
        write_log(logs / day / "a.ndjson", [track(properties={"n": 1})])
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    registry = warehouse / "_registry.sqlite"
    registry.write_bytes(b"not a database" * 100)
    said = (
        f"schema registry {registry} cannot be read (file is not a database): restore it from a backup, or move it "
        "aside and rerun every loaded day in received order (`etl run`) to rebuild it"
    )
    capsys.readouterr()
    assert run("--logs", str(logs), "--warehouse", str(warehouse), "--date", "2025-01-14") == 1
    (failure,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("etl: ")]
    assert failure.startswith(f"etl: loading 2025-01-14 failed: UnreadableRegistry: {said} (")
    assert main(["check", "--warehouse", str(warehouse)]) == 1
    failed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("check registry_matches_parquet")]
    assert failed == [
        f"check registry_matches_parquet (event_tables, 2025-01-13) failed, ERROR: UnreadableRegistry: {said}",
        "check registry_matches_parquet failed the same way on 2 more day(s): 2025-01-14, 2025-01-15",
    ]


def test_an_interrupted_check_still_lists_the_days_an_earlier_failure_repeated_on(logs, warehouse, capsys, monkeypatch):
    for day in ("2025-01-13", "2025-01-14", "2025-01-15"):
        write_log(logs / day / "a.ndjson", [track()])
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    capsys.readouterr()

    def lost_then_interrupted(warehouse, day):
        if day == "2025-01-15":
            raise KeyboardInterrupt
        return checks.CheckOutcome(False, "rows lost", {})

    monkeypatch.setattr(checks, "conservation", lost_then_interrupted)
    assert main(["check", "--warehouse", str(warehouse)]) == 130
    assert "check conservation failed the same way on 1 more day(s): 2025-01-14" in capsys.readouterr().err.splitlines()


def test_a_failure_repeated_on_many_days_lists_five_of_them_and_counts_the_rest():
    said = {("conservation", "the same words"): [f"2025-01-{d:02d}" for d in range(1, 9)], ("unique_message_id", "once"): ["2025-01-01"]}
    assert list(repeated_failures(said)) == [
        "check conservation failed the same way on 7 more day(s): 2025-01-02, 2025-01-03, 2025-01-04, 2025-01-05, 2025-01-06 and 2 more",
    ]


def test_check_fails_a_loaded_day_whose_manifest_was_lost_saying_to_rerun_it(logs, warehouse, capsys):
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    (warehouse / "manifests" / "received_date=2025-01-14" / "manifest.json").unlink()
    assert main(["check", "--warehouse", str(warehouse)]) == 1
    failed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("check conservation (tracks, 2025-01-14)")]
    assert failed == [
        "check conservation (tracks, 2025-01-14) failed, ERROR: FileNotFoundError: no manifest for 2025-01-14: the partition was "
        "not published by a complete run: rerun the day (`etl run --date 2025-01-14`) to rewrite its files"
    ]


def test_a_corrupt_quarantine_file_fails_only_the_days_checks_not_the_models(logs, warehouse, capsys):
    write_log(logs / "2025-01-14" / "a.ndjson", [track(), "not json"])
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    for part in (warehouse / "quarantine" / "received_date=2025-01-14").glob("*.parquet"):
        part.write_bytes(b"")
    capsys.readouterr()
    assert main(["check", "--warehouse", str(warehouse)]) == 1
    failed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("check ")]
    assert failed and all(", 2025-01-14) failed" in line for line in failed)


def test_check_without_marts_says_once_to_build_them_and_exits_1(logs, warehouse, capsys):
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    shutil.rmtree(warehouse / "marts")
    capsys.readouterr()
    assert main(["check", "--warehouse", str(warehouse)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "marts" in line and not line.startswith("etl: ")] == [
        f"models not checked: no mart for {', '.join(model_names())} under {warehouse.resolve() / 'marts'}: "
        f"run `etl models --warehouse {warehouse.resolve()}` to build them"
    ]


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), duckdb.InterruptException("INTERRUPT Error: Interrupted!")])
def test_check_interrupted_exits_130_saying_nothing_was_written(logs, warehouse, capsys, monkeypatch, interrupt):
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    capsys.readouterr()

    def interrupted(warehouse, day):
        raise interrupt

    monkeypatch.setattr(checks, "conservation", interrupted)
    assert main(["check", "--warehouse", str(warehouse)]) == 130
    assert one_line_error(capsys) == "etl: interrupted while checking: checks write nothing, so rerun `etl check` to check again"


class FailingImport:
    """A module finder that raises `error` when `name` is imported: a Ctrl-C while Python imports
    Dagster (the `etl` command's first second), or a project that cannot load."""

    def __init__(self, name: str, error: BaseException) -> None:
        self.name, self.error = name, error

    def find_spec(self, fullname, path, target=None):
        if fullname == self.name:
            raise self.error
        return None


@pytest.mark.parametrize(("error", "status", "said"), [
    (KeyboardInterrupt(), 130, "etl: interrupted while starting, before anything was read or written: rerun the command"),
    (ModelError("no SQL models (*.sql) in /x/sql: install it editable"), 1,
     "etl: cannot start: ModelError: no SQL models (*.sql) in /x/sql: install it editable (rerun with TRACKHOUSE_DEBUG=1 for the traceback)"),
], ids=["Ctrl-C", "no models"])
def test_the_command_failing_to_start_says_so_in_one_line(capsys, monkeypatch, error, status, said):
    monkeypatch.delenv("TRACKHOUSE_DEBUG", raising=False)
    monkeypatch.delitem(sys.modules, "dagster_project.cli")
    monkeypatch.setattr(sys, "meta_path", [FailingImport("dagster_project.cli", error), *sys.meta_path])
    assert launch.main() == status
    assert one_line_error(capsys) == said


def test_an_unplanned_error_is_one_line_and_its_traceback_only_on_request(capsys, monkeypatch):
    def broken(args):
        raise ValueError("something no message was written for")

    monkeypatch.setitem(cli.COMMANDS, "check", broken)
    monkeypatch.delenv("TRACKHOUSE_DEBUG", raising=False)
    assert main(["check"]) == 1
    assert one_line_error(capsys) == (
        "etl: unexpected ValueError: something no message was written for (rerun with TRACKHOUSE_DEBUG=1 for the traceback)"
    )
    monkeypatch.setenv("TRACKHOUSE_DEBUG", "1")
    with pytest.raises(ValueError):
        main(["check"])


def test_the_etl_command_runs_the_cli_through_the_launcher():
    entry_points = metadata.entry_points(group="console_scripts", name="etl")
    assert [entry.value for entry in entry_points] == ["dagster_project.launch:main"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [([], "no loaded days under"), (["--date", "2025-01-16"], "2025-01-16 is not loaded under")],
    ids=["nothing loaded", "a day not loaded"],
)
def test_check_of_what_is_not_loaded_exits_2_with_one_line(logs, warehouse, capsys, args, expected):
    if args:
        write_log(logs / "2025-01-14" / "a.ndjson", [track()])
        assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
        capsys.readouterr()
    assert main(["check", "--warehouse", str(warehouse), *args]) == 2
    assert expected in one_line_error(capsys)


HOLD_OPEN = "import duckdb, sys; connection = duckdb.connect(sys.argv[1]); print('open', flush=True); sys.stdin.read()"


def test_a_rerun_succeeds_while_an_analyst_holds_warehouse_duckdb_open(logs, warehouse):
    """The DuckDB CLI opens the file read-write, which locks every other process out of it:
    the run's checks and report must not need it."""
    write_log(logs / "2025-01-14" / "a.ndjson", [track("Order Completed", properties={"revenue": 5})])
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    analyst = subprocess.Popen(
        [sys.executable, "-c", HOLD_OPEN, str(warehouse / "warehouse.duckdb")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert analyst.stdout.readline() == "open\n"
        assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    finally:
        analyst.communicate("")


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    assert "etl run --logs /var/log/track --date 2025-01-14" in capsys.readouterr().out


def probe_repeatedly(args: tuple[str, float]) -> int:
    warehouse, start = args
    while time.time() < start:
        pass
    failures = 0
    for _ in range(2000):
        try:
            ensure_writable(Path(warehouse))
        except RuntimeError:
            failures += 1
    return failures


def test_runs_starting_together_never_call_the_warehouse_unwritable(warehouse):
    # Two `etl run`s at once: each checks the warehouse is writable, and neither may remove
    # the other's probe file and so report a writable warehouse as not writable.
    start = time.time() + 3  # both processes have imported the CLI by then
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert pool.map(probe_repeatedly, [(str(warehouse), start)] * 2) == [0, 0]


def open_instance_at(args: tuple[str, float]) -> str:
    home, start = args
    os.environ["DAGSTER_HOME"] = home
    while time.time() < start:
        pass
    try:
        dagster_instance().get_runs_count()
    except Exception as error:  # noqa: BLE001 - the test reports whatever broke
        return repr(error)[:200]
    return "ok"


def test_runs_starting_together_on_a_new_dagster_home_all_start(tmp_path):
    # `etl run`s started together on a new DAGSTER_HOME raced to create Dagster's SQLite
    # storage: one crashed, and the databases could be left with two schema versions.
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        for trial in range(4):
            home = tmp_path / f"home{trial}"
            home.mkdir()
            start = time.time() + (4 if trial == 0 else 0.5)  # the first trial waits for the imports
            assert pool.map(open_instance_at, [(str(home), start)] * 3) == ["ok"] * 3


def test_a_run_kept_in_dagster_home_starts_no_helper_process_a_ctrl_c_would_also_reach(logs, warehouse, tmp_path, monkeypatch):
    # Dagster mirrored each step's output through `tail` and a Python watcher in the terminal's
    # process group: Ctrl-C reached them too, and each watcher printed a traceback.
    started, popen = [], subprocess.Popen

    class RecordedPopen(popen):
        def __init__(self, args, *rest, **options):
            started.append(args)
            super().__init__(args, *rest, **options)

    monkeypatch.setattr(subprocess, "Popen", RecordedPopen)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    assert [args for args in started if args[0] in ("tail", sys.executable)] == []  # (`uname -p` runs once and ends)
    assert dagster_instance().get_runs_count() == 2  # the day and the models, kept for the UI


@pytest.mark.parametrize(("home", "said"), [
    ("relative/home", "is a relative path: set it to an absolute one"),
    ("{tmp}/a-file", "is not a folder: point it at a folder"),
], ids=["relative", "a file"])
def test_a_dagster_home_dagster_cannot_use_is_a_one_line_usage_error(logs, warehouse, tmp_path, monkeypatch, capsys, home, said):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("DAGSTER_HOME", home.format(tmp=tmp_path))
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 2
    assert said in one_line_error(capsys)
    assert not (tmp_path / "relative").exists()


def test_the_summary_and_run_metadata_show_the_50_largest_event_tables_and_count_the_rest():
    # A day of 60 event names: `Viewed Product 1` … as some SDKs name them.
    rows = {f"viewed_product_{n:02d}": n for n in range(1, 61)}
    line = next(t for t in format_summaries([DaySummary("2025-01-14", event_rows=rows)]).splitlines() if "rows by event" in t)
    assert line.startswith("  rows by event table: viewed_product_60 60, viewed_product_59 59, ")
    assert line.endswith("viewed_product_11 11, and 10 more tables with 55")
    table = counts_table("event", rows).splitlines()
    assert len(table) == 2 + 50 + 1 and table[-1] == "| … 10 more | 55 |"


def test_the_summary_keeps_its_columns_apart_however_large_the_counts(tmp_path):
    summaries = [DaySummary("2025-01-14", files=["a.ndjson"], lines=20_971_520, blank_lines=20_971_520), DaySummary("2025-01-15")]
    header, _, first, second = format_summaries(summaries).splitlines()
    assert header.split() == [
        "received_date", "files", "lines", "blank", "messages", "accepted", "quarantined", "duplicates", "event_tables", "discards",
    ]
    assert first.split() == ["2025-01-14", "1", "20971520", "20971520", "0", "0", "0", "0", "0", "0"]
    assert len(first) == len(second) == len(header)


def test_the_quarantine_warning_rate_comes_from_the_environment_as_in_dagster(logs, warehouse, capsys, monkeypatch):
    write_log(logs / "2025-01-14" / "a.ndjson", [track(), "not json"])  # half quarantined
    monkeypatch.setenv("TRACKHOUSE_QUARANTINE_WARN_RATE", "0.6")
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 0
    assert not any("quarantine_rate" in line for line in capsys.readouterr().err.splitlines())
    monkeypatch.setenv("TRACKHOUSE_QUARANTINE_WARN_RATE", "five percent")
    assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 2
    assert "is not a number: set a fraction such as 0.05" in one_line_error(capsys)
    for rate in ("5", "-0.1", "nan"):  # 5 read as 500 %, and NaN, never warned
        monkeypatch.setenv("TRACKHOUSE_QUARANTINE_WARN_RATE", rate)
        assert run("--logs", str(logs), "--warehouse", str(warehouse)) == 2
        assert "is not a fraction from 0 to 1: set e.g. 0.05 for 5 %" in one_line_error(capsys)
