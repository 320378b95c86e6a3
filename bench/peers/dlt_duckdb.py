#!/usr/bin/env python3
"""Peer: dlt 1.x loads the day's messages into DuckDB, with Parquet as the loader file format.

    bench/.venv-peers/bin/python bench/peers/dlt_duckdb.py DAY_FOLDER OUT_FOLDER

Fed the parsed dicts of the good lines (see common.py: JSON objects, batch envelopes expanded,
no validation), as one resource `tracks`. dlt does its usual work: infers and evolves the
schema, flattens nested objects into `a__b` columns, moves arrays (products, tags) to child
tables, puts a value that does not fit a column's type into a variant column, writes Parquet
load packages and loads them into OUT_FOLDER/dlt.duckdb. Defaults otherwise (one normalize
worker, default buffer sizes), telemetry off.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

import dlt  # noqa: E402

from common import messages, report  # noqa: E402


def main(folder: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    pipeline = dlt.pipeline(
        pipeline_name="bench_tracks",
        pipelines_dir=str(out / "pipelines"),
        destination=dlt.destinations.duckdb(str(out / "dlt.duckdb")),
        dataset_name="bench",
    )
    counted = 0

    def counting():
        nonlocal counted
        for message in messages(folder):
            counted += 1
            yield message

    info = pipeline.run(counting(), table_name="tracks", loader_file_format="parquet")
    info.raise_on_failed_jobs()
    with pipeline.sql_client() as client:
        rows = client.execute_sql("select count(*) from tracks")[0][0]
        tables = [r[0] for r in client.execute_sql(
            "select table_name from information_schema.tables where table_schema = 'bench' order by 1")]
    columns = len(pipeline.default_schema.get_table_columns("tracks"))
    report(messages_in=counted, rows=rows, tracks_columns=columns, tables=tables, dlt_version=dlt.__version__)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
