"""`etl`: run the Dagster assets of trackhouse from a shell, one received day at a time."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from collections.abc import Iterator
from typing import TextIO
from pathlib import Path

import dagster as dg
import polars as pl
from dagster._core.instance.ref import InstanceRef

from dagster_project.assets import build_load_asset, largest_counts, stage_seconds
from dagster_project.checks import partition_check_results
from dagster_project.launch import one_line, said_unexpected
from dagster_project.models import model_check_results, sql_models
from dagster_project.partitions import received_days
from dagster_project.resources import DEFAULT_LOGS, DEFAULT_WAREHOUSE, TrackhouseConfig
from etl import LOGGER
from etl.catalog import DATABASE_FILE, glob_literal, mart_views, shared_scratch_database
from etl.checks import DUCKDB_INTERRUPTED, is_interrupt, missing_marts, missing_marts_message, reading_marts
from etl.pipeline import DaySummary
from etl.read import DAY_FOLDER, DAY_NAMED_FILE, OUT_OF_RANGE, is_day_out_of_range, list_days, readable_path, skipped_entries
from etl import write
from etl.write import UnwritableWarehouse, file_lock, loaded_days, read_manifest

EXAMPLES = """examples:
  etl run                                        every day folder under data/samples
  etl run --logs /var/log/track --date 2025-01-14
  etl run --logs /var/log/track --from 2025-01-01 --to 2025-01-31 --warehouse /srv/warehouse
  etl models --warehouse /srv/warehouse          refresh the SQL models only
  etl check --warehouse /srv/warehouse           rerun every check on what is loaded, writing nothing
"""
REPORTS = ("revenue_daily", "conversions_daily")
# Silent: `materialize` reports a failure in one line (its traceback with TRACKHOUSE_DEBUG=1).
QUIET_DAGSTER = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


class UsageError(Exception):
    """A problem the user can fix by changing the command; the message says how."""


class Interrupted(Exception):
    """Ctrl-C (or SIGINT) stopped a run; whatever it was writing was not published."""


INTERRUPTED = (
    "interrupted while {what}: a day's tables and the marts are replaced only once complete, "
    "so rerun the same command to finish"
)


CHECK_INTERRUPTED = "interrupted while checking: checks write nothing, so rerun `etl check` to check again"


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def iso_date(text: str) -> str:
    try:
        if not DAY_FOLDER.match(text):
            raise ValueError(text)
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: use YYYY-MM-DD, e.g. 2025-01-14") from None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="etl",
        description="trackhouse: load track-event logs into a Parquet + DuckDB warehouse.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        subparser = commands.add_parser(name, help=help, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_warehouse_option(subparser)
        return subparser

    run = command("run", "load received days (the Dagster partition assets), then print a summary per day")
    run.add_argument("--logs", type=folder_path, default=os.environ.get("TRACKHOUSE_LOGS") or DEFAULT_LOGS, help="logs root with YYYY-MM-DD day folders (default: %(default)s)")
    add_day_options(run, "load")
    command("models", "refresh the SQL models (marts and warehouse.duckdb) over every loaded day")
    check = command("check", "rerun the asset checks of loaded days and of the models on the files as they are now, writing nothing")
    add_day_options(check, "check")
    return parser


def add_day_options(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("--date", type=iso_date, help=f"{verb} only this received day, e.g. 2025-01-14 (not with --from/--to)")
    parser.add_argument("--from", dest="start", type=iso_date, help="first received day of a range, included, e.g. 2025-01-01")
    parser.add_argument("--to", dest="end", type=iso_date, help="last received day of a range, included, e.g. 2025-01-31")


def folder_path(text: str) -> str:
    """An empty path would mean the current folder: more likely an unset shell variable."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (an unset shell variable?) would mean the current folder: pass a folder")
    return text


def warehouse_path(text: str) -> str:
    """A path the catalog's views can glob (`glob_literal` refuses `wh\\x`), refused before any work."""
    folder_path(text)
    try:
        glob_literal(Path(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def add_warehouse_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--warehouse", type=warehouse_path, default=os.environ.get("TRACKHOUSE_WAREHOUSE") or DEFAULT_WAREHOUSE,
        help="warehouse root (default: %(default)s)",
    )


def configured(**options: str) -> TrackhouseConfig:
    """The options over the environment's TRACKHOUSE_* settings, as the Dagster definitions read them."""
    try:
        return TrackhouseConfig.from_env(**options)
    except ValueError as error:
        raise UsageError(str(error)) from None


def chosen_days(logs: Path, date: str | None, start: str | None, end: str | None) -> list[str]:
    if not logs.is_dir():
        problem = "is a file, not a folder" if logs.exists() else "does not exist"
        raise UsageError(f"logs folder {logs} {problem}: pass --logs DIR, a folder of YYYY-MM-DD day folders")
    try:
        available = list_days(logs)
    except OSError as error:
        raise UsageError(f"cannot read logs folder {logs} ({error.strerror}): give this user read access, or pass --logs DIR") from None
    if date and date not in available and (logs / date).exists():
        problem = OUT_OF_RANGE if is_day_out_of_range(date) else DAY_NAMED_FILE
        raise UsageError(f"{logs / date} is {problem}")
    if not available:
        if DAY_FOLDER.match(logs.name):
            raise UsageError(f"{logs} is a day folder itself: pass its parent, --logs {logs.parent}, with --date {logs.name}")
        raise UsageError(f"no YYYY-MM-DD day folders under {logs}: put each day's log files in a folder named after it")
    return days_in_range(available, date, start, end, f"no folder {logs / (date or '')}", "day folders", logs)


def days_in_range(
    available: list[str], date: str | None, start: str | None, end: str | None, no_such_day: str, kind: str, place: Path,
) -> list[str]:
    """The days of `available` that --date or --from/--to ask for; the messages say what a day is."""
    if date and (start or end):
        raise UsageError(f"--date {date} and --from/--to both choose days: pass --date for one day or --from/--to for a range")
    if date:
        if date not in available:
            there = f"the only {kind[:-1]} is {available[0]}" if len(available) == 1 else (
                f"the {len(available):,} {kind} go from {available[0]} to {available[-1]}"
            )
            raise UsageError(f"{no_such_day}: {there}")
        return [date]
    if start and end and start > end:
        raise UsageError(f"--from {start} is after --to {end}: swap them")
    days = [d for d in available if (not start or d >= start) and (not end or d <= end)]
    if not days:
        raise UsageError(f"no {kind} between {start or 'the first'} and {end or 'the last'} under {place}")
    return days


def ensure_writable(warehouse: Path) -> None:
    try:
        write.ensure_writable(warehouse, "pass --warehouse DIR, a folder you can write (new or existing)")
    except UnwritableWarehouse as error:
        if error.not_a_folder:
            raise UsageError(str(error)) from None
        raise


# Dagster mirrors a step's stdout and stderr to the terminal through `tail` and a Python watcher
# per stream, started in the terminal's process group: a Ctrl-C reached them too, and each watcher
# printed a traceback above the CLI's one line. The CLI prints its own output, so it keeps none.
NO_COMPUTE_LOG_CAPTURE = {"compute_logs": {"module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}}


def dagster_instance() -> dg.DagsterInstance:
    """The persistent instance when DAGSTER_HOME is set (runs show in the UI), else a throwaway one.

    Dagster's SQLite storage is not safe to create from several processes at once: `etl run`s
    started together on a new DAGSTER_HOME crashed, and could stamp its databases with two
    schema versions, which broke every later run. One process at a time creates it here."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return dg.DagsterInstance.ephemeral()
    home_path = Path(home).expanduser()
    if not home_path.is_absolute():
        raise UsageError(f"DAGSTER_HOME={home} is a relative path: set it to an absolute one, e.g. {Path.cwd() / home}, or unset it")
    if home_path.exists() and not home_path.is_dir():
        raise UsageError(f"DAGSTER_HOME={home} is not a folder: point it at a folder for Dagster's run history, or unset it")
    home_path.mkdir(parents=True, exist_ok=True)
    with file_lock(home_path / ".trackhouse-init.lock"):
        instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home_path), overrides=NO_COMPUTE_LOG_CAPTURE))
        instance.get_runs_count()  # run and event storage
        instance.all_instigator_state()  # schedule storage
    return instance


SUMMARY_COLUMNS = (
    "received_date", "files", "lines", "blank", "messages", "accepted", "quarantined", "duplicates", "event_tables", "discards",
)


def summary_cells(s: DaySummary) -> list[str]:
    """A day's counts. Messages (a batch line holds several) are accepted or quarantined; an
    unreadable file adds one quarantine row that is no message."""
    counts = (len(s.files), s.lines, s.blank_lines, s.messages, s.accepted, s.quarantined, s.duplicates, len(s.event_rows), s.discards)
    return [s.received_date, *map(str, counts)]


def format_summaries(summaries: list[DaySummary]) -> str:
    """A table of the days (columns as wide as their largest count), each day's details below it."""
    cells = [summary_cells(s) for s in summaries]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(SUMMARY_COLUMNS)]

    def aligned(row: list[str] | tuple[str, ...]) -> str:
        return "  ".join([row[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:]))])

    header = aligned(SUMMARY_COLUMNS)
    lines = [header, "-" * len(header)]
    for s, row in zip(summaries, cells):
        lines.append(aligned(row))
        if s.event_rows:
            shown, more, more_rows = largest_counts(s.event_rows)
            listed = ", ".join(f"{e} {n}" for e, n in shown.items())
            lines.append(f"  rows by event table: {listed}" + (f", and {more} more tables with {more_rows}" if more else ""))
        if s.quarantined_by_reason:
            lines.append("  quarantined by reason: " + ", ".join(f"{r} {n}" for r, n in s.quarantined_by_reason.items()))
        if s.ignored_files:
            lines.append("  ignored (not log files): " + ", ".join(s.ignored_files))
    return "\n".join(lines)


# How an interrupt reaches a run's failure: Dagster's, Python's, DuckDB's (new, and old clients).
INTERRUPTIONS = {"DagsterExecutionInterruptedError", "KeyboardInterrupt", "InterruptException", f"RuntimeError: {DUCKDB_INTERRUPTED}"}


def failure_cause(result: dg.ExecuteInProcessResult) -> str | None:
    """The exception that failed the run, in one line (Dagster's own message only names the step),
    or None when none is recorded; with TRACKHOUSE_DEBUG set, its traceback goes to stderr too."""
    errors = [e.event_specific_data.error for e in result.all_events if e.is_failure and getattr(e.event_specific_data, "error", None)]
    if not errors:
        return None
    if os.environ.get("TRACKHOUSE_DEBUG"):
        emit(errors[0].to_string(), sys.stderr)  # the traceback, lines and all
    cause = errors[0].cause or errors[0]
    detail = (cause.message.strip().splitlines() or [""])[0].partition(": ")[2]
    return f"{cause.cls_name}: {detail}" if detail else cause.cls_name


def materialize(
    asset: dg.AssetsDefinition, config: TrackhouseConfig, instance: dg.DagsterInstance, what: str, day: str | None = None,
) -> tuple[list[str], list]:
    """Run the asset; raise on a failed run. Each failed check is named on stderr as it comes
    (a completed run with a failed check is no silent success); returns the ERROR ones, and
    every check evaluation."""
    result = dg.materialize(
        [asset], partition_key=day, resources={"trackhouse": config},
        instance=instance, run_config=QUIET_DAGSTER, raise_on_error=False,
    )
    if not result.success:
        cause = failure_cause(result)
        if cause is not None and (cause in INTERRUPTIONS or cause.partition(":")[0] in INTERRUPTIONS):
            raise Interrupted(INTERRUPTED.format(what=what))
        more = "rerun with TRACKHOUSE_DEBUG=1 for the traceback" + ("" if instance.is_ephemeral else f", or open run {result.run_id} in the Dagster UI")
        if cause is not None and cause.startswith("PermissionError"):
            # A folder inside the warehouse made read-only: the path named is often a staging one.
            cause += f": give this user write access to everything under {config.warehouse}, or pass --warehouse DIR"
        raise RuntimeError(f"{what} failed: {cause or 'see the Dagster run log'} ({more})")
    evaluations = result.get_asset_check_evaluations()
    say(f"  {day or 'models'} {format_stages(result, evaluations)}")
    return reported_failures(evaluations, day), evaluations


def copies_across_days(evaluations: list) -> int | None:
    """How many copies of messages received on more than one day `stg_tracks` dropped, as its
    check counted them (the per-day summary counts only a day's own duplicates)."""
    for check in evaluations:
        if check.check_name == "cross_partition_duplicates" and "duplicates_removed" in check.metadata:
            return check.metadata["duplicates_removed"].value
    return None


def format_stages(result: dg.ExecuteInProcessResult, evaluations: list) -> str:
    """`done in 22.60 s (load 20.31 s, catalog 0.35 s, checks 1.94 s)`: the run's stage seconds
    (see StageClock); the checks' results carry them all, the materializations those before."""
    seconds: dict[str, float] = {}
    for event in result.get_asset_materialization_events():
        seconds |= stage_seconds(event.materialization.metadata)
    for evaluation in evaluations:
        seconds |= stage_seconds(evaluation.metadata)
    stages = ", ".join(f"{name} {value:.2f} s" for name, value in seconds.items())
    return f"done in {sum(seconds.values()):.2f} s ({stages})"


def reported_failures(evaluations: list, day: str | None, said: dict[tuple[str, str], list[str]] | None = None) -> list[str]:
    """Name each failed check on stderr; return the ERROR ones (Dagster's check evaluations or results).

    With `said` (shared by the days of one `etl check`), a check that already failed in the same
    words on an earlier day is not named again: its days pile up in `said` for `repeated_failures`
    to list once (a damaged registry fails every day's check alike)."""
    errors = []
    for check in evaluations:
        if not check.passed:
            name = f"{check.check_name} ({check.asset_key.to_user_string()}{', ' + day if day else ''})"
            days = said.setdefault((check.check_name, check.description), []) if said is not None else []
            if not days:
                say(f"check {name} failed, {check.severity.value}: {check.description}")
            days.append(day)
            if check.severity == dg.AssetCheckSeverity.ERROR:
                errors.append(name)
    return errors


SHOWN_DAYS = 5


def repeated_failures(said: dict[tuple[str, str], list[str]]) -> Iterator[str]:
    """One line per check that failed the same way on more days than the one it was named for."""
    for (check_name, _), days in said.items():
        if len(days) > 1:
            more = days[1:]
            listed = ", ".join(more[:SHOWN_DAYS]) + (f" and {len(more) - SHOWN_DAYS} more" if len(more) > SHOWN_DAYS else "")
            yield f"check {check_name} failed the same way on {len(more)} more day(s): {listed}"


def say(text: str) -> None:
    """One line on stderr: progress, a skipped folder, a failed check, an error."""
    emit(one_line(text), sys.stderr)


def emit(text: str, stream: TextIO | None = None) -> None:
    """Print to stdout (or `stream`); a reader that leaves early (`etl run | head -1`, or
    `2>&1 | head`) neither stops the run nor turns it into a failure: the exit status still says
    whether checks failed."""
    stream = stream or sys.stdout
    try:
        print(text, file=stream, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())  # Python's flush at exit fails too otherwise


def failed_checks_error(errors: list[str]) -> RuntimeError:
    return RuntimeError(f"{len(errors)} ERROR check(s) failed: {', '.join(errors)}; the output may be wrong, see the check lines above")


def format_reports(warehouse: Path) -> str:
    """The two tables analysts read first, as the demo's last word (read like the model checks)."""
    blocks = []
    with reading_marts(warehouse) as connection, pl.Config(
        tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, tbl_width_chars=140,
    ):
        for model in REPORTS:
            frame = connection.sql(f"select * from {model} order by all").pl()
            blocks.append(f"{model}:\n{frame}")
    return "\n\n".join(blocks)


def run(args: argparse.Namespace) -> int:
    config = configured(logs_root=args.logs, warehouse_root=args.warehouse)
    days = chosen_days(config.logs, args.date, args.start, args.end)
    if config.warehouse == config.logs:
        raise UsageError(f"--warehouse and --logs are both {config.logs}: keep the warehouse in a folder of its own, e.g. --warehouse {config.logs.parent / 'warehouse'}")
    for path, advice in skipped_entries(config.logs):
        if path.resolve() != config.warehouse:  # a warehouse kept inside the logs root is no logs
            say(f"skipped {readable_path(path.name)}{'/' if path.is_dir() else ''}: {advice}")
    ensure_writable(config.warehouse)
    load_asset = build_load_asset(received_days(config.logs))
    instance = dagster_instance()
    summaries, errors = [], []
    for day in days:
        say(f"loading {day}")
        errors += materialize(load_asset, config, instance, f"loading {day}", day)[0]
        summaries.append(DaySummary(**read_manifest(config.warehouse, day)))
        if not summaries[-1].files:
            say(f"  {day}/ holds no log files (.ndjson, .jsonl, .json, each maybe .gz): loaded as an empty day")
    say("refreshing the SQL models")
    failed, evaluations = materialize(sql_models, config, instance, "refreshing the models")
    errors += failed
    emit(format_summaries(summaries))
    copies = copies_across_days(evaluations)
    if copies is not None:
        emit(f"duplicates across days (all loaded days): {copies} (a message received again on another day: "
             "stg_tracks and the models keep the earliest received)")
    emit(f"\n{format_reports(config.warehouse)}")
    emit(f"\nwarehouse: {config.warehouse}  (DuckDB: {config.warehouse / DATABASE_FILE})")
    if errors:
        raise failed_checks_error(errors)
    return 0


def models(args: argparse.Namespace) -> int:
    config = configured(warehouse_root=args.warehouse)
    if not config.warehouse.is_file() and not (config.warehouse / "tracks").is_dir():
        raise UsageError(f"no tracks under {config.warehouse}: load days first with `etl run --warehouse {args.warehouse}`")
    ensure_writable(config.warehouse)  # a file, or read-only: said in one line before Dagster starts
    errors = materialize(sql_models, config, dagster_instance(), "refreshing the models")[0]
    emit(format_reports(config.warehouse))
    if errors:
        raise failed_checks_error(errors)
    return 0


def check(args: argparse.Namespace) -> int:
    """The checks `etl run` and Dagster run after a load and a refresh, on the files as they are
    now: a file lost, emptied or edited since shows, and nothing is rewritten first."""
    config = configured(warehouse_root=args.warehouse)
    loaded = loaded_days(config.warehouse) if config.warehouse.is_dir() else []
    if not loaded:
        raise UsageError(f"no loaded days under {config.warehouse}: load some first with `etl run --warehouse {args.warehouse}`")
    days = days_in_range(
        loaded, args.date, args.start, args.end,
        f"{args.date} is not loaded under {config.warehouse}", "loaded days", config.warehouse,
    )
    checked, errors, said = 0, [], {}
    with shared_scratch_database():  # one database for every day's checks and the models'
        try:
            try:
                for day in days:
                    results = partition_check_results(config.warehouse, day, config.quarantine_warn_rate)
                    errors += reported_failures(results, day, said)
                    checked += len(results)
            finally:  # an interrupt on a later day still lists the days an earlier failure repeated on
                for line in repeated_failures(said):
                    say(line)
            missing = missing_marts(mart_views(config.warehouse))
            if missing:  # said once, not by each model check
                say(f"models not checked: {missing_marts_message(config.warehouse, missing)}")
                errors.append("the models (marts missing)")
            else:
                results = model_check_results(config.warehouse)
                errors += reported_failures(results, None)
                checked += len(results)
        except KeyboardInterrupt:
            raise Interrupted(CHECK_INTERRUPTED) from None
        except Exception as error:
            if is_interrupt(error):
                raise Interrupted(CHECK_INTERRUPTED) from None
            raise
    emit(f"{checked} checks on {len(days)} loaded day(s) from {days[0]} to {days[-1]} and the models: {len(errors)} ERROR check(s) failed")
    if errors:
        raise failed_checks_error(errors)
    return 0


COMMANDS = {"run": run, "models": models, "check": check}


class OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return one_line(super().format(record))


def show_progress() -> None:
    """Print the pipeline's per-file progress and warnings to stderr, once per process."""
    logger = logging.getLogger(LOGGER)
    logger.handlers = [h for h in logger.handlers if not getattr(h, "trackhouse_cli", False)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("  %(message)s"))
    handler.trackhouse_cli = True
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    show_progress()
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as error:
        say(f"etl: {error}")
        return 2
    except Interrupted as error:
        say(f"etl: {error}")
        return 130
    except KeyboardInterrupt:
        say(f"etl: {INTERRUPTED.format(what='running')}")
        return 130
    except RuntimeError as error:
        say(f"etl: {error}")
        return 1
    except Exception as error:
        return said_unexpected(error, "unexpected")


if __name__ == "__main__":
    sys.exit(main())
