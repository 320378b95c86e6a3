"""The `etl` command's entry point, kept free of heavy imports.

Importing Dagster takes about a second; a Ctrl-C during it printed a traceback of Python's
import machinery. Caught here, it ends like an interrupt at any later moment: one line, 130.
"""

from __future__ import annotations

import sys

STARTUP_INTERRUPTED = "etl: interrupted while starting, before anything was read or written: rerun the command"


def main() -> int:
    try:
        from dagster_project.cli import main as run
    except KeyboardInterrupt:
        print(STARTUP_INTERRUPTED, file=sys.stderr)
        return 130
    return run()
