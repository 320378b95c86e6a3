#!/usr/bin/env python3
"""Benchmark trackhouse's `etl run` against the parse ceiling and three peer loaders.

    make bench          # .venv/bin/python bench/run.py: 250k, 500k, 1M, 2M events, 3 runs each
    make bench-smoke    # .venv/bin/python bench/run.py --smoke: 10k events, 1 run, no peers
    .venv/bin/python bench/run.py --sizes 250000 --repeat 1 [--no-peers] [--output FILE]

What one run does, on the same generated files (bench/generate.py, one received day each):
1. for each size, the parse ceiling (bench/ceiling.py: read + orjson.loads per line, one
   process, one core), the checks ceiling (bench/ceiling.py --checks: trackhouse's reading and
   validation alone, one process) and the full `etl run --logs L --warehouse W --date D` on a
   fresh warehouse, `--repeat` times each; the figures are the medians;
2. on the smallest size only, the peers (bench/peers/*.py) in their own virtualenv
   bench/.venv-peers (created on first use; bench-only dependencies, never runtime ones):
   dlt 1.x into DuckDB via Parquet, pandas json_normalize + to_parquet, DuckDB read_json +
   COPY to Parquet;
3. the smallest size again, written as `--small-files` files (a day of many small drops, as
   Kinesis Firehose or an S3 sink writes them), through the same `etl run`;
4. one extra trackhouse run under cProfile on the smallest size, for a per-stage breakdown
   (not part of the timings), and the start-up cost (`etl --help`);
5. a Markdown report: printed, and written to bench/results.md (smoke: bench/work/).

Every command is a subprocess measured the same way (bench/proctree.py): wall time, user+sys
CPU, and peak RSS of its whole process tree; for `etl run`, the wall time of each stage it
reports on stderr, and its CPU split between its own process and the workers it starts. MB are 10^6 bytes of uncompressed NDJSON.
Generated logs and warehouses live under bench/work/ and logs are reused when their
generated.json matches the size, seed, day and generator.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import pstats
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "work"
PROJECT_BIN = ROOT / ".venv" / "bin"
PROJECT_PY = PROJECT_BIN / "python"
ETL = PROJECT_BIN / "etl"
PEERS_VENV = BENCH / ".venv-peers"
PEER_REQUIREMENTS = ["dlt[duckdb,parquet]>=1,<2", "pandas>=2", "pyarrow", "orjson", "duckdb"]
PEERS = {
    "dlt → DuckDB (parquet)": ("dlt_duckdb.py", []),
    "pandas json_normalize → Parquet": ("pandas_normalize.py", []),
    "DuckDB read_json → Parquet": ("duckdb_read_json.py", []),
}
PANDAS_COERCED = "pandas json_normalize → Parquet (--coerce)"
TRACKHOUSE = "trackhouse etl run"
SMALL_FILES = 2_000
DEFAULT_SIZES = [250_000, 500_000, 1_000_000, 2_000_000]
SMOKE_SIZE = 10_000

sys.path.insert(0, str(BENCH))
import generate  # noqa: E402
from proctree import Measurement  # noqa: E402
from proctree import measure as _measure  # noqa: E402


def measure(command: list[str], **kwargs) -> Measurement:
    """proctree.measure, noting the 1-minute load average just before the start."""
    before = load1()
    m = _measure(command, **kwargs)
    m.extra["load1"] = before
    return m


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


# --------------------------------------------------------------------------------------------
# Machine and versions
# --------------------------------------------------------------------------------------------


def read_first(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def load1() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


VERSIONS_SNIPPET = """
import json, platform, sys
from importlib.metadata import version, PackageNotFoundError
out = {"python": platform.python_version()}
for name in sys.argv[1:]:
    try:
        out[name] = version(name)
    except PackageNotFoundError:
        out[name] = "not installed"
print(json.dumps(out))
"""


def versions(python: Path, packages: list[str]) -> dict:
    try:
        done = subprocess.run([str(python), "-c", VERSIONS_SNIPPET, *packages], capture_output=True, text=True, check=True)
        return json.loads(done.stdout)
    except (OSError, subprocess.CalledProcessError, json.JSONDecodeError) as error:
        return {"error": str(error)}


def machine() -> dict:
    mem_kb = read_first("/proc/meminfo", "MemTotal").split()[0]
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gib": round(int(mem_kb) / 1024 / 1024, 1) if mem_kb.isdigit() else "?",
        "cpu": read_first("/proc/cpuinfo", "model name"),
        "kernel": platform.release(),
        "loadavg_start": loadavg(),
        "project": versions(PROJECT_PY, ["polars", "duckdb", "pyarrow", "orjson", "dagster"]),
    }


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def dataset_name(size: int, files: int | None = None) -> str:
    return label(size) + (f"-{files}files" if files else "")


def logs_root(size: int, seed: int, day: str, files: int | None = None) -> Path:
    return WORK / f"logs-{dataset_name(size, files)}-seed{seed}-{day}"


def ensure_logs(size: int, seed: int, day: str, files: int | None = None) -> dict:
    """The generated.json of a matching set of logs (`files` of them, else the generator's
    default), generating them first if needed."""
    root = logs_root(size, seed, day, files)
    meta_path = root / "generated.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        same = (meta.get("events"), meta.get("seed"), meta.get("day"), meta.get("generator_sha"), meta.get("generator_version")) == (
            size, seed, day, generate.generator_digest(), generate.GENERATOR_VERSION) and files in (None, len(meta["per_file"]))
        present = all((root / day / f["file"]).is_file() and (root / day / f["file"]).stat().st_size == f["file_bytes"] for f in meta["per_file"])
        if same and present:
            log(f"reusing {root} ({meta['totals']['raw_bytes'] / 1e6:.0f} MB)")
            meta["root"] = str(root)
            return meta
    log(f"generating {size:,} events into {root} ...")
    done = subprocess.run([str(PROJECT_PY), str(BENCH / "generate.py"), "--events", str(size), "--out", str(root),
                           "--day", day, "--seed", str(seed), *(["--files", str(files)] if files else [])],
                          stdout=subprocess.PIPE, text=True, check=True)
    log(done.stdout.rstrip())
    meta = json.loads(meta_path.read_text())
    meta["root"] = str(root)
    return meta


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    tool: str
    size: int
    raw_bytes: int
    runs: list[Measurement] = field(default_factory=list)
    note: str = ""
    output: dict = field(default_factory=dict)  # what the tool reported it wrote (last run)

    @property
    def ok_runs(self) -> list[Measurement]:
        return [m for m in self.runs if m.ok]

    @property
    def failed(self) -> list[Measurement]:
        return [m for m in self.runs if not m.ok]

    @property
    def load(self) -> float:
        return statistics.median(m.extra.get("load1", 0.0) for m in self._figures())

    def _figures(self) -> list[Measurement]:
        return self.ok_runs or self.runs

    @property
    def wall(self) -> float:
        return statistics.median(m.wall_s for m in self._figures())

    @property
    def cpu(self) -> float:
        return statistics.median(m.cpu_s for m in self._figures())

    @property
    def rss_mb(self) -> float:
        return statistics.median(m.peak_rss for m in self._figures()) / 1e6

    @property
    def stages(self) -> dict[str, float]:
        """The median seconds of each stage over the runs (see `stage_seconds`)."""
        runs = [stage_seconds(m) for m in self._figures()]
        return {stage: statistics.median(run.get(stage, 0.0) for run in runs) for stage in runs[0]}

    @property
    def workers_cpu(self) -> float:
        return statistics.median(m.descendants_cpu_s for m in self._figures())

    @property
    def main_cpu(self) -> float:
        return statistics.median(m.cpu_s - m.descendants_cpu_s for m in self._figures())

    @property
    def events_per_s(self) -> float:
        return self.size / self.wall

    @property
    def mb_per_s(self) -> float:
        return self.raw_bytes / 1e6 / self.wall

    @property
    def status(self) -> str:
        if not self.failed:
            return "ok"
        first = self.failed[0]
        why = "timed out" if first.timed_out else f"exit {first.returncode}"
        return f"FAILED {len(self.failed)}/{len(self.runs)} ({why})"


# `etl run` says on stderr how long each stage took: `  2025-02-01 done in 22.60 s (load 20.31 s,
# catalog 0.35 s, checks 1.94 s)` per day, `  models done in 2.10 s (refresh 1.62 s, checks 0.48 s)`.
STAGES_SAID = re.compile(r"  (\S+) done in [\d.]+ s \((.*)\)")
STAGE_SAID = re.compile(r"(\w+) ([\d.]+) s")
STAGES = {
    "day load": "load (read → write)", "day catalog": "catalog", "day checks": "day's checks",
    "models refresh": "models", "models checks": "model checks", "rest": "rest: start-up, Dagster, summary",
}


def stage_seconds(m: Measurement) -> dict[str, float]:
    """The wall seconds of each stage a trackhouse run said it ran (days summed), and `rest`:
    what they leave of its wall time."""
    seconds = dict.fromkeys(STAGES, 0.0)
    text = m.stderr_path.read_text(errors="replace") if m.stderr_path and m.stderr_path.exists() else ""
    for line in text.splitlines():
        if said := STAGES_SAID.fullmatch(line):
            scope = "models" if said[1] == "models" else "day"
            for name, value in STAGE_SAID.findall(said[2]):
                seconds[f"{scope} {name}"] = seconds.get(f"{scope} {name}", 0.0) + float(value)
    seconds["rest"] = m.wall_s - sum(seconds.values())
    return seconds


def clean_env() -> dict:
    """The caller's environment without anything that would point trackhouse elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKHOUSE_", "DAGSTER_HOME"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def record(row: Row, m: Measurement, i: int, repeat: int) -> None:
    """Add a run to its row and log it."""
    row.runs.append(m)
    state = "ok" if m.ok else ("TIMED OUT" if m.timed_out else f"FAILED exit {m.returncode}")
    log(f"  [{row.tool} {label(row.size)} {i}/{repeat}] {m.wall_s:.2f} s, {row.size / m.wall_s:,.0f} events/s, "
        f"peak RSS {m.peak_rss / 1e6:,.0f} MB (tree {m.peak_tree_rss / 1e6:,.0f}, largest process {m.max_process_rss / 1e6:,.0f}), "
        f"CPU {m.cpu_s:.1f} s, load before {m.extra.get('load1', 0):.2f}: {state}")
    if not m.ok:
        tail = m.stderr_tail()
        if tail:
            log("    " + tail.replace("\n", "\n    "))


def trackhouse_command(logs: Path, warehouse: Path, day: str) -> list[str]:
    return [str(ETL), "run", "--logs", str(logs), "--warehouse", str(warehouse), "--date", day]


def read_manifest(warehouse: Path, day: str) -> dict:
    for path in sorted(warehouse.glob(f"manifests/*{day}*/*.json")):
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return {}


def run_trackhouse(meta: dict, repeat: int, timeout: float, files: int | None = None) -> Row:
    """`etl run` on a dataset; `files` marks the small-files dataset, reported in a row of its own."""
    size, day = meta["events"], meta["day"]
    row = Row(f"{TRACKHOUSE}, {files:,} small files" if files else TRACKHOUSE, size, meta["totals"]["raw_bytes"])
    name = dataset_name(size, files)
    warehouse = WORK / f"warehouse-{name}"
    for i in range(1, repeat + 1):
        shutil.rmtree(warehouse, ignore_errors=True)
        m = measure(trackhouse_command(Path(meta["root"]), warehouse, day), env=clean_env(), cwd=ROOT, timeout=timeout,
                    stdout=WORK / "runs" / f"trackhouse-{name}-{i}.out", stderr=WORK / "runs" / f"trackhouse-{name}-{i}.err")
        record(row, m, i, repeat)
    manifest = read_manifest(warehouse, day)
    if manifest:
        row.output = {k: manifest.get(k) for k in ("messages", "accepted", "quarantined", "discards", "quarantined_by_reason")}
        if manifest.get("messages") != size or (manifest.get("accepted", 0) + manifest.get("quarantined", 0)) != size:
            row.note = f"manifest counts {manifest.get('messages')} messages, {manifest.get('accepted')} accepted + {manifest.get('quarantined')} quarantined, expected {size:,}"
    return row


PARSE_CEILING = "parse ceiling (read + orjson.loads, 1 core)"
CHECKS_CEILING = "checks ceiling (read + trackhouse's validation, 1 core)"


def run_ceiling(meta: dict, repeat: int, timeout: float, checks: bool = False) -> Row:
    """bench/ceiling.py on the day: the parse ceiling, or with `checks` the checks ceiling."""
    size, day = meta["events"], meta["day"]
    row = Row(CHECKS_CEILING if checks else PARSE_CEILING, size, meta["totals"]["raw_bytes"])
    name = "checks-ceiling" if checks else "ceiling"
    for i in range(1, repeat + 1):
        command = [str(PROJECT_PY), str(BENCH / "ceiling.py"), *(["--checks"] if checks else []), str(Path(meta["root"]) / day)]
        m = measure(command, cwd=ROOT, timeout=timeout,
                    stdout=WORK / "runs" / f"{name}-{label(size)}-{i}.out", stderr=WORK / "runs" / f"{name}-{label(size)}-{i}.err")
        record(row, m, i, repeat)
    row.output = last_json(row.runs[-1].stdout_text())
    if checks and row.output.get("messages") != size:
        row.note = f"validated {row.output.get('messages')} messages, expected {size:,}"
    return row


def ensure_peers_venv() -> Path | str:
    """bench/.venv-peers/bin/python, creating the venv on first use; or why it could not be."""
    python = PEERS_VENV / "bin" / "python"
    stamp = PEERS_VENV / ".bench-requirements"
    wanted = "\n".join(PEER_REQUIREMENTS) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    try:
        if not python.exists():
            base = shutil.which("python3") or sys.executable
            log(f"creating {PEERS_VENV} with {base} ...")
            subprocess.run([base, "-m", "venv", str(PEERS_VENV)], check=True)
        log("installing the peers' packages: " + " ".join(PEER_REQUIREMENTS))
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PEER_REQUIREMENTS], check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        return f"could not set up {PEERS_VENV}: {error}"
    stamp.write_text(wanted)
    return python


def run_peer(python: Path, tool: str, script: str, extra: list[str], meta: dict, repeat: int, timeout: float) -> Row:
    size, day = meta["events"], meta["day"]
    row = Row(tool, size, meta["totals"]["raw_bytes"])
    slug = script.removesuffix(".py") + ("-coerce" if "--coerce" in extra else "")
    out = WORK / f"peer-{slug}-{label(size)}"
    for i in range(1, repeat + 1):
        shutil.rmtree(out, ignore_errors=True)
        env = clean_env()
        env["RUNTIME__DLTHUB_TELEMETRY"] = "false"
        m = measure([str(python), str(BENCH / "peers" / script), str(Path(meta["root"]) / day), str(out), *extra],
                    env=env, cwd=ROOT, timeout=timeout,
                    stdout=WORK / "runs" / f"peer-{slug}-{label(size)}-{i}.out", stderr=WORK / "runs" / f"peer-{slug}-{label(size)}-{i}.err")
        record(row, m, i, repeat)
        if m.ok:
            row.output = last_json(m.stdout_text())
    if row.failed:
        error = row.failed[0].stderr_tail(1)
        row.note = f"crashed: {error}" if error else row.status
    return row


# --------------------------------------------------------------------------------------------
# Stage breakdown (cProfile) and start-up
# --------------------------------------------------------------------------------------------


def callees(stats: dict, parent: tuple) -> list[tuple[tuple, float]]:
    out = []
    for key, (_, _, _, _, callers) in stats.items():
        if parent in callers:
            out.append((key, callers[parent][3]))
    return sorted(out, key=lambda kv: -kv[1])


def find(stats: dict, file_suffix: str, func: str) -> tuple | None:
    for key in stats:
        if key[0].replace("\\", "/").endswith(file_suffix) and key[2] == func:
            return key
    return None


def short(key: tuple) -> str:
    path = key[0].replace("\\", "/")
    for anchor in ("/etl/", "/dagster_project/", "/site-packages/"):
        if anchor in path:
            path = anchor.strip("/") + "/" + path.split(anchor, 1)[1] if anchor != "/site-packages/" else path.split(anchor, 1)[1]
            break
    else:
        path = Path(path).name if path not in ("~",) else ""
    return f"{path}:{key[2]}" if path else key[2]


# The CLI's main() under cProfile, keeping its exit code (`python -m cProfile` swallows it);
# imports are not profiled (start-up is measured on its own).
PROFILE_SNIPPET = """
import cProfile, sys
from dagster_project.cli import main
profile = cProfile.Profile()
code = profile.runcall(main, sys.argv[2:])
profile.dump_stats(sys.argv[1])
sys.exit(code)
"""


def profile_trackhouse(meta: dict, timeout: float) -> dict:
    """One cProfile run of `etl run`; cumulative seconds of the direct callees of the CLI's run,
    of load_day and of process_chunk (whatever they are called today)."""
    size, day = meta["events"], meta["day"]
    warehouse = WORK / f"warehouse-{label(size)}-profile"
    shutil.rmtree(warehouse, ignore_errors=True)
    prof = WORK / "runs" / f"trackhouse-{label(size)}.prof"
    prof.unlink(missing_ok=True)
    command = [str(PROJECT_PY), "-c", PROFILE_SNIPPET, str(prof), *trackhouse_command(Path(meta["root"]), warehouse, day)[1:]]
    m = measure(command, env=clean_env(), cwd=ROOT, timeout=timeout,
                stdout=WORK / "runs" / f"profile-{label(size)}.out", stderr=WORK / "runs" / f"profile-{label(size)}.err")
    log(f"  [profile {label(size)}] {m.wall_s:.2f} s under cProfile: {'ok' if m.ok else 'FAILED'}")
    result = {"size": size, "wall_s": m.wall_s, "ok": m.ok, "sections": []}
    if not prof.exists():
        result["error"] = m.stderr_tail(2) or "no profile written"
        return result
    stats = pstats.Stats(str(prof)).stats  # type: ignore[attr-defined]
    main = find(stats, "dagster_project/cli.py", "main")
    result["profiled_total_s"] = max((v[3] for v in stats.values()), default=0.0)
    if main:
        result["cli_main_s"] = stats[main][3]
    def section(title: str, key: tuple) -> list[tuple[tuple, float]]:
        total = stats[key][3]
        found = [(k, s) for k, s in callees(stats, key) if s >= max(0.01 * total, 0.005)][:12]
        result["sections"].append({"title": title, "total_s": total, "parts": [(short(k), s) for k, s in found]})
        return found

    run_key = find(stats, "dagster_project/cli.py", "run")
    if run_key:
        section("etl run (CLI `run`)", run_key)
    load_key = find(stats, "etl/pipeline.py", "load_day")
    if load_key:
        # load_day, then one level down into each of its own steps that takes a fifth or more
        for key, seconds in section("load_day", load_key):
            if "/etl/" in key[0] and seconds >= 0.2 * stats[load_key][3]:
                section(short(key), key)
    project = [(short(k), v[3]) for k, v in stats.items()
               if ("/etl/" in k[0] or "/dagster_project/" in k[0]) and k[2] not in ("<module>", "main") and v[3] >= 0.005]
    result["project_top"] = sorted(project, key=lambda kv: -kv[1])[:20]
    if not m.ok:
        result["error"] = m.stderr_tail(1)
    return result


# A worker's work (`prepare_chunk`) on the first chunks of the day, in one process under
# cProfile: the profile of `etl run` above cannot see into its worker processes.
WORKER_PROFILE_SNIPPET = """
import cProfile, datetime as dt, json, sys
from pathlib import Path
from etl.pipeline import prepare_chunk
from etl.read import LineChunk, MessageBudget, read_chunks
folder, out, most = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
pieces, lines = [], 0
for path in sorted(folder.iterdir()):
    for piece in read_chunks(path, path.name, 4 * 1024 * 1024, MessageBudget()):
        if isinstance(piece, LineChunk) and lines < most:
            pieces.append(piece)
            lines += piece.line_count()
day, messages, profile = dt.date.fromisoformat(folder.name), 0, cProfile.Profile()
for piece in pieces:
    messages += profile.runcall(prepare_chunk, piece, day).chunk.messages
profile.dump_stats(out)
print(json.dumps({"messages": messages}))
"""
WORKER_PROFILE_LINES = 60_000


def profile_worker(meta: dict, timeout: float) -> dict:
    """Own seconds of the functions a worker runs, over its first WORKER_PROFILE_LINES lines."""
    size = meta["events"]
    prof = WORK / "runs" / f"worker-{label(size)}.prof"
    prof.unlink(missing_ok=True)
    command = [str(PROJECT_PY), "-c", WORKER_PROFILE_SNIPPET, str(Path(meta["root"]) / meta["day"]), str(prof), str(WORKER_PROFILE_LINES)]
    m = measure(command, env=clean_env(), cwd=ROOT, timeout=timeout,
                stdout=WORK / "runs" / f"worker-profile-{label(size)}.out", stderr=WORK / "runs" / f"worker-profile-{label(size)}.err")
    log(f"  [worker profile {label(size)}] {m.wall_s:.2f} s: {'ok' if m.ok else 'FAILED'}")
    if not prof.exists():
        return {"error": m.stderr_tail(2) or "no profile written"}
    stats = pstats.Stats(str(prof)).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values())
    own = sorted(((short(k), v[2]) for k, v in stats.items()), key=lambda kv: -kv[1])
    return {"messages": last_json(m.stdout_text()).get("messages", 0), "total_s": total, "top": own[:15]}


def startup(timeout: float) -> Measurement:
    return measure([str(ETL), "--help"], env=clean_env(), cwd=ROOT, timeout=timeout,
                   stdout=WORK / "runs" / "startup.out", stderr=WORK / "runs" / "startup.err")


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def fmt_int(x) -> str:
    return f"{x:,.0f}" if isinstance(x, (int, float)) else "?"


def parse_size(text: str) -> int:
    """250000, 250_000, 250k or 2M."""
    text = text.strip().replace("_", "").lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def report(args: argparse.Namespace, info: dict, datasets: list[dict], rows: list[Row], peer_rows: list[Row],
           peers_note: str, profile: dict | None, start: Measurement | None) -> str:
    ceilings = {r.size: r for r in rows if r.tool == PARSE_CEILING}
    checks_ceilings = {r.size: r for r in rows if r.tool == CHECKS_CEILING and r.ok_runs}
    trackhouse = {r.size: r for r in rows if r.tool == TRACKHOUSE}
    out: list[str] = []
    w = out.append
    w("# trackhouse benchmark" + (" (smoke)" if args.smoke else ""))
    w("")
    w(f"`{' '.join(['bench/run.py', *sys.argv[1:]])}`, {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}. "
      f"Figures are the **median of {args.repeat} run{'s' if args.repeat != 1 else ''}** of each command, all in this one "
      "invocation, on a shared and possibly noisy machine: compare rows of one report, not across reports.")
    w("")
    p = info["project"]
    w("## Machine")
    w("")
    w(f"- {info['nproc']} CPUs ({info['affinity']} usable), {info['ram_gib']} GiB RAM, CPU: {info['cpu']}, Linux {info['kernel']}")
    w(f"- load average (1/5/15 min) at start {info['loadavg_start']}, at end {info.get('loadavg_end', '?')}")
    w(f"- project venv: Python {p.get('python')}, polars {p.get('polars')}, duckdb {p.get('duckdb')}, pyarrow {p.get('pyarrow')}, "
      f"orjson {p.get('orjson')}, dagster {p.get('dagster')}")
    if info.get("peers"):
        q = info["peers"]
        w(f"- peers venv (bench/.venv-peers): Python {q.get('python')}, dlt {q.get('dlt')}, pandas {q.get('pandas')}, "
          f"pyarrow {q.get('pyarrow')}, duckdb {q.get('duckdb')}, orjson {q.get('orjson')}")
    w("")
    w("## Input")
    w("")
    again = " (the last row: the smallest size again, in many small files)" if args.small_files else ""
    w(f"One received day per size{again}, generated by "
      f"`bench/generate.py` (seed {datasets[0]['seed']}, day {datasets[0]['day']}); *events* counts messages (a batch envelope of k "
      "messages counts k). **MB and MB/s are 10^6 bytes of uncompressed NDJSON**; the web files are gzipped "
      "on disk, the mobile and server files plain.")
    w("")
    w("| events | files (gz + plain) | lines | uncompressed MB | on disk MB | B/event | bad lines | re-sent duplicates | envelopes (messages) | string `quantity` |")
    w("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for d in datasets:
        t = d["totals"]
        gz = sum(1 for f in d["per_file"] if f["file"].endswith(".gz"))
        w(f"| {fmt_int(d['events'])} | {gz} + {len(d['per_file']) - gz} | {fmt_int(t['lines'])} | {t['raw_bytes'] / 1e6:,.1f} | "
          f"{t['file_bytes'] / 1e6:,.1f} | {t['raw_bytes'] / d['events']:.0f} | {fmt_int(t['bad_lines'])} | {fmt_int(t['duplicate_lines'])} | "
          f"{fmt_int(t['envelopes'])} ({fmt_int(t['batched_messages'])}) | {fmt_int(t['string_quantities'])} |")
    w("")
    w("## Results")
    w("")
    w("| tool | events | input MB | runs | median wall s (min–max) | events/s | MB/s | peak RSS MB | CPU s | × parse ceiling | load | status |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in [*rows, *peer_rows]:
        ceiling = ceilings.get(r.size)
        ratio = f"{r.events_per_s / ceiling.events_per_s:.2f}" if ceiling and ceiling.ok_runs and r.runs else "–"
        walls = [m.wall_s for m in r.runs]
        spread = f" ({min(walls):.2f}–{max(walls):.2f})" if len(walls) > 1 else ""
        w(f"| {r.tool} | {fmt_int(r.size)} | {r.raw_bytes / 1e6:,.1f} | {len(r.runs)} | {r.wall:.2f}{spread} | {fmt_int(r.events_per_s)} | "
          f"{r.mb_per_s:,.1f} | {fmt_int(r.rss_mb)} | {r.cpu:.1f} | {ratio} | {r.load:.1f} | {r.status} |")
    w("")
    w("- *wall s*: from starting the process to its exit, interpreter start-up and imports included; "
      "*events/s* and *MB/s* are the size divided by the median wall time.")
    w("- *peak RSS*: the larger of (a) the sum of VmRSS over the process and all its descendants, sampled every 50 ms "
      "from /proc, and (b) the kernel's `ru_maxrss` of the largest single process; median over the runs.")
    w("- *CPU s*: user + system seconds of the process and its waited-for children; above the wall time means more than one core was busy.")
    w(f"- *load*: the 1-minute load average just before each run (median); with {info['nproc']} CPUs, a figure near or "
      "above that means other work was competing for the cores.")
    w("- *× parse ceiling*: events/s divided by the parse ceiling's events/s on the same files (1.00 = as fast as "
      "reading and `orjson.loads` of every line in one process, doing nothing else); the small-files row is "
      "divided by the ceiling of the same size in its usual few files.")
    if checks_ceilings:
        largest = checks_ceilings[max(checks_ceilings)]
        w(f"- *checks ceiling*: trackhouse's own reading and validation (every rule of the contract) in one process, nothing "
          f"else. Every message passes through it, so with {info['nproc']} cores a loader validating in Python stays under "
          f"{info['nproc']} × its events/s: {fmt_int(info['nproc'] * largest.events_per_s)} events/s at {fmt_int(largest.size)} "
          "(its wall time includes interpreter start-up, as every row's does).")
    for r in rows:
        if r.note:
            w(f"- {r.tool} at {fmt_int(r.size)}: {r.note}")
    if trackhouse:
        r = trackhouse[min(trackhouse)]
        if r.output:
            w(f"- trackhouse at {fmt_int(r.size)} wrote: {fmt_int(r.output.get('accepted'))} accepted, {fmt_int(r.output.get('quarantined'))} "
              f"quarantined ({', '.join(f'{k} {fmt_int(v)}' for k, v in (r.output.get('quarantined_by_reason') or {}).items())}), "
              f"{fmt_int(r.output.get('discards'))} discards (from the partition manifest).")
    w("")
    timed = [r for r in rows if r.tool.startswith(TRACKHOUSE) and r.runs]
    if timed:
        w("## trackhouse's wall time by stage")
        w("")
        w("Medians over the same timed runs, from the stage times `etl run` prints on stderr; the CPU split is sampled "
          "from /proc (the workers: the processes `etl run` starts to validate chunks; the main process: the rest of the "
          "CPU, reading, de-duplication, event tables, writing, and every other stage).")
        w("")
        w(f"| run | events | median wall s | {' | '.join(STAGES.values())} | CPU s: main process | CPU s: workers |")
        w(f"|---|---:|---:|{'---:|' * len(STAGES)}---:|---:|")
        for r in timed:
            stages = r.stages
            w(f"| {r.tool} | {fmt_int(r.size)} | {r.wall:.2f} | {' | '.join(f'{stages[s]:.2f}' for s in STAGES)} | "
              f"{r.main_cpu:.1f} | {r.workers_cpu:.1f} |")
        w("")
    if peer_rows or peers_note:
        w(f"## trackhouse and its peers at {fmt_int(peer_rows[0].size) if peer_rows else '?'} events")
        w("")
        if peers_note:
            w(peers_note)
            w("")
        if peer_rows:
            base = trackhouse.get(peer_rows[0].size)
            w("| peer | what it does | events/s | peak RSS MB | trackhouse speed ÷ peer | trackhouse RSS ÷ peer | rows written | status |")
            w("|---|---|---:|---:|---:|---:|---|---|")
            for r in peer_rows:
                speed = f"{base.events_per_s / r.events_per_s:.2f}×" if base and r.ok_runs else "–"
                mem = f"{base.rss_mb / r.rss_mb:.2f}×" if base and r.ok_runs and r.rss_mb else "–"
                w(f"| {r.tool} | {PEER_WHAT.get(r.tool, '')} | {fmt_int(r.events_per_s) if r.ok_runs else '–'} | "
                  f"{fmt_int(r.rss_mb)} | {speed} | {mem} | {describe_output(r)} | {r.status if not r.note else r.note} |")
            w("")
            w("Ratios above 1 mean trackhouse is faster (speed) or uses more memory (RSS). The peers do much less: no "
              "validation, no quarantine, no de-duplication, no per-event tables, no registry, no DuckDB catalog or SQL "
              "models. The Python peers are fed the lines that parse as JSON objects, with batch envelopes expanded "
              "(`bench/peers/common.py`); pandas cannot take other lines at all.")
            w("")
    if profile:
        w(f"## Where trackhouse's time goes ({fmt_int(profile['size'])} events, one run under cProfile)")
        w("")
        w("Cumulative seconds of each direct callee, from one extra run of the CLI's `main()` under cProfile, imports "
          f"excluded ({profile['wall_s']:.2f} s wall with the profiler, not part of the timings above). The profiler slows "
          "Python code more than native code, so read these as proportions; work done in other threads or processes is not seen.")
        if start is not None:
            w(f"Start-up alone (`etl --help`: interpreter and imports, Dagster included) takes {start.wall_s:.2f} s wall, "
              f"{start.peak_rss / 1e6:,.0f} MB RSS.")
        w("")
        for section in profile["sections"]:
            w(f"- **{section['title']}**: {section['total_s']:.2f} s")
            for name, seconds in section["parts"]:
                w(f"  - `{name}` {seconds:.2f} s ({100 * seconds / section['total_s']:.0f}%)")
        if profile.get("project_top"):
            w("")
            w("<details><summary>trackhouse functions by cumulative seconds (nested calls overlap)</summary>")
            w("")
            for name, seconds in profile["project_top"]:
                w(f"- `{name}` {seconds:.2f} s")
            w("")
            w("</details>")
        if profile.get("error"):
            w(f"- the profiled run failed: `{profile['error']}`")
        w("")
        worker = profile.get("worker") or {}
        if worker.get("messages"):
            w(f"### Inside a worker ({fmt_int(worker['messages'])} messages of the first chunks, one process under cProfile)")
            w("")
            w(f"`prepare_chunk` (validate, flatten `context`, gather `properties`, build the chunk's `tracks` frame): "
              f"{worker['total_s']:.2f} s, {1e6 * worker['total_s'] / worker['messages']:.1f} µs a message with the profiler "
              "(which slows the Python parts most). Own seconds of the functions that take the most:")
            w("")
            for name, seconds in worker["top"]:
                w(f"- `{name}` {seconds:.2f} s ({100 * seconds / worker['total_s']:.0f}%)")
            w("")
        elif worker.get("error"):
            w(f"- the worker profile failed: `{worker['error']}`")
            w("")
    failures = [(r, m) for r in [*rows, *peer_rows] for m in r.runs if not m.ok]
    if failures:
        w("## Failures")
        w("")
        for r, m in failures:
            w(f"- {r.tool} at {fmt_int(r.size)}: {'timed out' if m.timed_out else f'exit {m.returncode}'} after {m.wall_s:.1f} s; "
              f"stderr ends (full: `{m.stderr_path.relative_to(ROOT) if m.stderr_path else '?'}`):")
            w("")
            w("  ```")
            for line in m.stderr_tail(4).splitlines():
                w("  " + line[:300])
            w("  ```")
        w("")
    return "\n".join(out)


PEER_WHAT = {
    "dlt → DuckDB (parquet)": "schema inference + evolution, nested → columns/child tables, Parquet load packages loaded into DuckDB",
    "pandas json_normalize → Parquet": "all rows in memory, `json_normalize`, `to_parquet`",
    PANDAS_COERCED: "same, mixed-type object columns turned into JSON text first",
    "DuckDB read_json → Parquet": "declared columns, 8 fields selected, COPY; multi-threaded; bad lines and envelopes become NULL rows",
}


def describe_output(r: Row) -> str:
    o = r.output
    if not o:
        return "–"
    if "tables" in o:
        return f"{fmt_int(o.get('rows'))} rows in `tracks` ({o.get('tracks_columns', '?')} columns) + {len(o['tables']) - 1} other tables"
    if "columns" in o:
        extra = f", {len(o['coerced_columns'])} coerced" if o.get("coerced_columns") else ""
        return f"{fmt_int(o.get('rows'))} rows × {o['columns']} columns{extra}"
    if "rows_with_event" in o:
        return f"{fmt_int(o.get('rows'))} rows ({fmt_int(o['rows_with_event'])} with an event)"
    return "–"


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="comma-separated event counts, 250000 or 250k or 2M (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per command; figures are medians (default %(default)s)")
    parser.add_argument("--seed", type=int, default=generate.DEFAULT_SEED)
    parser.add_argument("--day", default=generate.DEFAULT_DAY)
    parser.add_argument("--no-peers", action="store_true", help="skip the peers (and their virtualenv)")
    parser.add_argument("--small-files", type=int, default=SMALL_FILES, help="the smallest size again in this many files (default %(default)s; 0 skips it)")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile stage breakdown")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before one run is killed (default %(default)s)")
    parser.add_argument("--output", type=Path, default=None, help="report file (default bench/results.md; smoke: bench/work/results-smoke.md)")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_SIZE:,} events, 1 run, no peers, report not written to bench/results.md")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.repeat, args.no_peers, args.small_files = str(SMOKE_SIZE), 1, True, 0
        args.timeout = min(args.timeout, 120)
    try:
        sizes = sorted({parse_size(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sizes {args.sizes!r}: use comma-separated counts such as 250000,500k,1M")
    if not sizes or args.repeat < 1:
        parser.error("need at least one size and --repeat >= 1")
    output = args.output or (WORK / "results-smoke.md" if args.smoke else BENCH / "results.md")
    if not ETL.exists():
        parser.error(f"{ETL} not found: run `make install` first")
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "runs").mkdir(exist_ok=True)

    info = machine()
    log(f"machine: {info['nproc']} CPUs, {info['ram_gib']} GiB, {info['cpu']}, load {info['loadavg_start']}")
    datasets = [ensure_logs(n, args.seed, args.day) for n in sizes]
    rows: list[Row] = []
    for meta in datasets:
        log(f"size {label(meta['events'])}:")
        rows.append(run_ceiling(meta, args.repeat, args.timeout))
        rows.append(run_ceiling(meta, args.repeat, args.timeout, checks=True))
        rows.append(run_trackhouse(meta, args.repeat, args.timeout))
    if args.small_files:
        small = ensure_logs(sizes[0], args.seed, args.day, args.small_files)
        log(f"size {label(sizes[0])} in {args.small_files:,} files:")
        rows.append(run_trackhouse(small, args.repeat, args.timeout, files=args.small_files))
        datasets.append(small)

    peer_rows: list[Row] = []
    peers_note = ""
    if not args.no_peers:
        python = ensure_peers_venv()
        if isinstance(python, str):
            peers_note = f"Peers not run: {python}"
            log(peers_note)
        else:
            info["peers"] = versions(python, ["dlt", "pandas", "pyarrow", "duckdb", "orjson"])
            meta = datasets[0]
            log(f"peers at {label(meta['events'])}:")
            for tool, (script, extra) in PEERS.items():
                row = run_peer(python, tool, script, extra, meta, args.repeat, args.timeout)
                peer_rows.append(row)
                if script == "pandas_normalize.py" and row.failed:
                    peer_rows.append(run_peer(python, PANDAS_COERCED, script, ["--coerce"], meta, args.repeat, args.timeout))

    profile = None
    start = None
    if not args.no_profile:
        profile = profile_trackhouse(datasets[0], args.timeout)
        profile["worker"] = profile_worker(datasets[0], args.timeout)
        start = startup(args.timeout)
    info["loadavg_end"] = loadavg()

    text = report(args, info, datasets, rows, peer_rows, peers_note, profile, start)
    print(text)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + "\n")
    log(f"\nreport written to {output}")
    return 0 if all(not r.failed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
