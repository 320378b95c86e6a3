"""The benchmark reads the stage times `etl run` prints, and its checks ceiling validates what a
load validates: each must keep agreeing with the code it measures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from conftest import track, write_log

from dagster_project.cli import main
from etl.pipeline import load_day

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def bench_run():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
        module = sys.modules["bench_run"] = importlib.util.module_from_spec(spec)  # its dataclasses look it up
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))
        sys.modules.pop("bench_run", None)


def test_the_benchmark_reads_every_stage_etl_run_says_it_ran(bench_run, logs, warehouse, tmp_path, capsys):
    for day in ("2025-01-14", "2025-01-15"):
        write_log(logs / day / "a.ndjson", [track()])
    assert main(["run", "--logs", str(logs), "--warehouse", str(warehouse)]) == 0
    stderr = tmp_path / "run.err"
    stderr.write_text(capsys.readouterr().err)
    measured = bench_run.Measurement(
        command=[], returncode=0, wall_s=100.0, user_s=0, sys_s=0, peak_tree_rss=0, max_process_rss=0,
        max_processes=1, samples=1, descendants_cpu_s=0, stderr_path=stderr,
    )
    seconds = bench_run.stage_seconds(measured)
    assert list(seconds) == list(bench_run.STAGES)
    assert all(seconds[stage] > 0 for stage in bench_run.STAGES)
    assert sum(seconds.values()) == pytest.approx(100.0)


def test_the_checks_ceiling_validates_every_message_a_load_does(logs, warehouse):
    write_log(logs / "2025-01-14" / "a.ndjson", [
        track(messageId="m1"), "not json", {"batch": [track(messageId="m2"), track(event="", messageId="m3"), track(messageId="m5")]}, "",
    ])
    write_log(logs / "2025-01-14" / "b.ndjson.gz", [track(messageId="m4", timestamp="yesterday")], gzipped=True)
    spec = importlib.util.spec_from_file_location("bench_ceiling", BENCH / "ceiling.py")
    ceiling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ceiling)
    measured = ceiling.checks(logs / "2025-01-14")
    loaded = load_day(logs, warehouse, "2025-01-14")
    assert {k: measured[k] for k in ("files", "lines", "messages", "accepted", "quarantined")} == {
        "files": 2, "lines": loaded.lines, "messages": loaded.messages, "accepted": loaded.accepted,
        "quarantined": loaded.quarantined,
    } == {"files": 2, "lines": 5, "messages": 6, "accepted": 3, "quarantined": 3}
