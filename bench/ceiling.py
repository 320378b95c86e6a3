#!/usr/bin/env python3
"""The parse ceiling: read a day's log files and `orjson.loads` every line, in one Python process.

    python bench/ceiling.py DAY_FOLDER
    python bench/ceiling.py --checks DAY_FOLDER

Runs with the project's venv (orjson is a runtime dependency), on one core: no threads, no
validation, no output, nothing kept. Gzip is decompressed with zlib in 1 MiB blocks, lines are
split on b"\\n", and each line is parsed; a line that fails to parse is counted. This is about
the fastest any Python loader that looks at every line can go; what a loader does besides
parsing is the distance to this figure.

Prints one JSON object: files, lines, parsed objects, other JSON values, errors, bytes
(uncompressed) and the seconds spent inside the loop (without interpreter start-up).

`--checks`: the checks ceiling instead. trackhouse's own reader and validation (`read_chunks`,
`validate_chunk`: every rule of the contract, batch envelopes split, timestamps typed) over the
same files, in one process as a worker runs it (the cyclic collector paused), nothing
flattened, de-duplicated or written. Every message must pass through this much Python, so with
c cores a loader that validates in Python stays under c times its events/s. Prints files,
lines, messages, accepted, quarantined and seconds.
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from pathlib import Path

import orjson

BLOCK = 1 << 20


def blocks(path: Path):
    with path.open("rb") as handle:
        if path.name.endswith(".gz"):
            decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            while data := handle.read(BLOCK):
                while data:
                    yield decompressor.decompress(data)
                    data = decompressor.unused_data
                    if data:  # a next gzip member
                        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            yield decompressor.flush()
        else:
            while data := handle.read(BLOCK):
                yield data


def main(folder: Path) -> dict:
    loads = orjson.loads
    stats = {"files": 0, "lines": 0, "objects": 0, "other_json": 0, "errors": 0, "bytes": 0}
    started = time.perf_counter()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        stats["files"] += 1
        rest = b""
        for block in blocks(path):
            stats["bytes"] += len(block)
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            for line in lines:
                if not line:
                    continue
                stats["lines"] += 1
                try:
                    value = loads(line)
                except orjson.JSONDecodeError:
                    stats["errors"] += 1
                    continue
                if type(value) is dict:
                    stats["objects"] += 1
                else:
                    stats["other_json"] += 1
        if rest:
            stats["lines"] += 1
            try:
                loads(rest)
                stats["objects"] += 1
            except orjson.JSONDecodeError:
                stats["errors"] += 1
    stats["seconds"] = round(time.perf_counter() - started, 3)
    return stats


def checks(folder: Path) -> dict:
    from etl.pipeline import collector_paused, keep_freed_memory
    from etl.read import LineChunk, MessageBudget, read_chunks
    from etl.validate import validate_chunk

    keep_freed_memory()  # as in a worker
    stats = {"files": 0, "lines": 0, "messages": 0, "accepted": 0, "quarantined": 0}
    started = time.perf_counter()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        stats["files"] += 1
        for piece in read_chunks(path, path.name, 4 * 1024 * 1024, MessageBudget()):
            if not isinstance(piece, LineChunk):
                continue
            with collector_paused():  # as in a worker
                validated = validate_chunk(piece)
            stats["lines"] += validated.lines
            stats["messages"] += validated.messages
            stats["accepted"] += len(validated.accepted)
            stats["quarantined"] += len(validated.quarantine_line)
    stats["seconds"] = round(time.perf_counter() - started, 3)
    return stats


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if arguments[:1] == ["--checks"] and len(arguments) == 2:
        print(json.dumps(checks(Path(arguments[1]))))
    elif len(arguments) == 1:
        print(json.dumps(main(Path(arguments[0]))))
    else:
        sys.exit(__doc__)
