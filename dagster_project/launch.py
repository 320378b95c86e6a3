"""The `etl` command's entry point, kept free of heavy imports.

Importing Dagster takes about a second; a Ctrl-C during it printed a traceback of Python's
import machinery. Caught here, it ends like an interrupt at any later moment: one line, 130.
A project that cannot load (no SQL models where they should be) is said in one line too.
"""

from __future__ import annotations

import os
import sys

STARTUP_INTERRUPTED = "etl: interrupted while starting, before anything was read or written: rerun the command"


def main() -> int:
    try:
        from dagster_project.cli import main as run
    except KeyboardInterrupt:
        print(STARTUP_INTERRUPTED, file=sys.stderr)
        return 130
    except Exception as error:
        return said_unexpected(error, "cannot start:")
    return run()


def said_unexpected(error: Exception, what: str) -> int:
    """An error no message was written for, in one line (its traceback with TRACKHOUSE_DEBUG=1): status 1."""
    if os.environ.get("TRACKHOUSE_DEBUG"):
        raise error
    print(one_line(f"etl: {what} {type(error).__name__}: {error} (rerun with TRACKHOUSE_DEBUG=1 for the traceback)"), file=sys.stderr)
    return 1


# C0 controls, DEL, and the three other characters Python's `splitlines` breaks at.
CONTROL_CHARACTERS = {code: f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}" for code in (*range(32), 127, 0x85, 0x2028, 0x2029)}


def one_line(text: str) -> str:
    """`text` with its control characters escaped: a file or folder named with a newline must
    not split a line of progress or an error in two."""
    return text.translate(CONTROL_CHARACTERS)
