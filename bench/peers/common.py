"""What the Python peers share: read a day's log files and yield the messages of the good lines.

No validation, on purpose (the peers are plain loaders): a line is kept when `orjson.loads`
parses it and it is a JSON object; a batch envelope (`{"batch": [...]}`) yields each of its
messages that is an object, unchanged (no `sentAt`/`context` merge). Everything else
(truncated JSON, arrays, strings, numbers, null) is skipped and counted in `SKIPPED`.
Runs in bench/.venv-peers.
"""

from __future__ import annotations

import gzip
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

SKIPPED = {"invalid_json": 0, "not_an_object": 0}
STARTED = time.perf_counter()


def log_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith((".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz", ".json", ".json.gz")))


def lines(folder: Path) -> Iterator[bytes]:
    for path in log_files(folder):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as handle:
            for line in handle:
                if line.strip():
                    yield line


def messages(folder: Path) -> Iterator[dict]:
    loads = orjson.loads
    for line in lines(folder):
        try:
            value = loads(line)
        except orjson.JSONDecodeError:
            SKIPPED["invalid_json"] += 1
            continue
        if type(value) is not dict:
            SKIPPED["not_an_object"] += 1
            continue
        batch = value.get("batch")
        if isinstance(batch, list):
            for item in batch:
                if type(item) is dict:
                    yield item
                else:
                    SKIPPED["not_an_object"] += 1
        else:
            yield value


def report(**figures) -> None:
    """The last line of stdout: one JSON object the harness reads."""
    figures.setdefault("skipped", dict(SKIPPED))
    figures.setdefault("seconds_in_process", round(time.perf_counter() - STARTED, 3))
    sys.stdout.write(json.dumps(figures) + "\n")
    sys.stdout.flush()
