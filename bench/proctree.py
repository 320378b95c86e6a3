"""Run a command and measure it: wall time, CPU time, and peak RSS of its whole process tree.

Standard library only (psutil is not a dependency). Linux /proc:
- every `interval` seconds, walk /proc once, find the command's process and all its
  descendants by parent pid (`/proc/<pid>/stat`, field 4; this kernel has no
  `/proc/<pid>/task/<tid>/children`), and sum their resident set sizes (same file, field 24);
  the peak of that sum is `peak_tree_rss`. Pages shared between processes (fork, shared
  libraries) count once per process, so the sum can overstate; a spike shorter than the
  interval can be missed. The same walk notes each descendant's CPU seconds so far (fields
  14 and 15), so that `descendants_cpu_s` splits the CPU between the command's own process
  and the workers it starts (short by at most one interval of each descendant's last work).
- when the command exits, `os.wait4` gives the kernel's own figures: `ru_maxrss`, the peak RSS
  of the largest single process among the command and the descendants it waited for (exact,
  no sampling), and user + system CPU seconds of them all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, int, float]]:
    """pid -> (ppid, rss bytes, user + system CPU seconds) for every process we can read right now."""
    table: dict[int, tuple[int, int, float]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # exited meanwhile
            continue
        # comm (field 2) may hold spaces or ')': fields 3.. follow the last ')'.
        # Field 4 is the parent pid, fields 14 and 15 user and system CPU in clock ticks, field 24
        # the resident set size in pages.
        rest = stat[stat.rfind(b")") + 2 :].split()
        table[int(name)] = (int(rest[1]), int(rest[21]) * PAGE, (int(rest[11]) + int(rest[12])) / TICKS)
    return table


def tree(root: int) -> dict[int, tuple[int, float]]:
    """pid -> (RSS bytes, CPU seconds) of `root` and all its descendants."""
    table = _processes()
    if root not in table:
        return {}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        found[pid] = table[pid][1:]
        todo.extend(children.get(pid, ()))
    return found


@dataclass
class Measurement:
    command: list[str]
    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    peak_tree_rss: int  # bytes, sampled
    max_process_rss: int  # bytes, kernel ru_maxrss of the largest single process
    max_processes: int
    samples: int
    descendants_cpu_s: float  # sampled: the CPU of the processes the command started
    timed_out: bool = False
    stdout_path: Path | None = None
    stderr_path: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def peak_rss(self) -> int:
        """The larger of the sampled tree sum and the kernel's single-process peak."""
        return max(self.peak_tree_rss, self.max_process_rss)

    def stderr_tail(self, lines: int = 5) -> str:
        if not self.stderr_path or not self.stderr_path.exists():
            return ""
        text = self.stderr_path.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def stdout_text(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path and self.stdout_path.exists() else ""


def measure(
    command: list[str], *, stdout: Path, stderr: Path, env: dict | None = None, cwd: Path | None = None,
    interval: float = 0.05, timeout: float | None = None,
) -> Measurement:
    """Run `command` to its end with stdout/stderr to files, sampling its tree's RSS."""
    stdout.parent.mkdir(parents=True, exist_ok=True)
    peak, peak_count, samples = 0, 0, 0
    descendants_cpu: dict[int, float] = {}
    done = threading.Event()
    timed_out = threading.Event()
    with stdout.open("wb") as out, stderr.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=cwd, start_new_session=True)

        def sample() -> None:
            nonlocal peak, peak_count, samples
            while not done.is_set():
                processes = tree(proc.pid)
                samples += 1
                peak = max(peak, sum(rss for rss, _ in processes.values()))
                peak_count = max(peak_count, len(processes))
                descendants_cpu.update((pid, cpu) for pid, (_, cpu) in processes.items() if pid != proc.pid)
                done.wait(interval)

        def watchdog() -> None:
            if timeout is not None and not done.wait(timeout):
                timed_out.set()
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the session we started, nothing else
                except ProcessLookupError:
                    pass

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        killer = threading.Thread(target=watchdog, daemon=True)
        killer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    return Measurement(
        command=command, returncode=proc.returncode, wall_s=wall, user_s=usage.ru_utime, sys_s=usage.ru_stime,
        peak_tree_rss=peak, max_process_rss=usage.ru_maxrss * 1024, max_processes=peak_count, samples=samples,
        descendants_cpu_s=sum(descendants_cpu.values()),
        timed_out=timed_out.is_set(), stdout_path=stdout, stderr_path=stderr,
    )
