#!/usr/bin/env python3
"""Peer: DuckDB `read_json` over the day's files, 8 fields selected, COPY to Parquet. No validation.

    bench/.venv-peers/bin/python bench/peers/duckdb_read_json.py DAY_FOLDER OUT_FOLDER

One SQL statement; DuckDB decompresses the gzip files itself and uses every core it is given.
The columns are declared (no schema inference); with `ignore_errors` a line it cannot read
(truncated JSON, an array, a scalar) does not stop it but comes out as a row of NULLs. Batch
envelopes are not expanded: an envelope is one row of NULLs too. Nothing checks ids, names,
timestamps, revenue or duplicates.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import duckdb

from common import log_files, report

SQL = """
COPY (
    SELECT
        messageId AS message_id,
        event,
        userId AS user_id,
        anonymousId AS anonymous_id,
        try_cast("timestamp" AS TIMESTAMPTZ) AS "timestamp",
        try_cast(json_extract_string(properties, '$.revenue') AS DOUBLE) AS revenue,
        upper(json_extract_string(properties, '$.currency')) AS currency,
        json_extract_string(context, '$.page.url') AS page_url
    FROM read_json(
        {files},
        format = 'newline_delimited',
        ignore_errors = true,
        columns = {
            messageId: 'VARCHAR', event: 'VARCHAR', userId: 'VARCHAR', anonymousId: 'VARCHAR',
            "timestamp": 'VARCHAR', properties: 'JSON', context: 'JSON'
        }
    )
) TO '{out}' (FORMAT parquet)
"""


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def main(folder: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    target = out / "tracks.parquet"
    files = [str(p) for p in log_files(folder)]
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute(SQL.replace("{out}", quote(str(target))[1:-1]).replace("{files}", "[" + ", ".join(map(quote, files)) + "]"))
    t1 = time.perf_counter()
    rows, with_event = con.execute(
        "select count(*), count(event) from read_parquet(?)", [str(target)]).fetchone()
    threads = con.execute("select current_setting('threads')").fetchone()[0]
    report(rows=rows, rows_with_event=with_event, seconds_copy=round(t1 - t0, 3), threads=threads,
           duckdb_version=duckdb.__version__)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
