#!/usr/bin/env python3
"""Peer: pandas `json_normalize` of the parsed lines, then `to_parquet` (pyarrow).

    bench/.venv-peers/bin/python bench/peers/pandas_normalize.py DAY_FOLDER OUT_FOLDER [--coerce]

Fed only the lines that parse as JSON objects (see common.py: batch envelopes expanded, no
validation): `pd.json_normalize` crashes on a line that is not an object. Nested objects
become `a.b` columns, arrays stay Python lists. All rows are held in memory at once, the way
this is usually written.

`to_parquet` fails when a column mixes types (an int and a string `quantity`, integer and
string `userId`): that failure is the result of the plain run, reported, not hidden. With
`--coerce`, every object column that pyarrow cannot convert is turned into JSON text first
(what one does next by hand), and the write goes through.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson
import pandas as pd
import pyarrow as pa

from common import messages, report


def as_text(value):
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def main(folder: Path, out: Path, coerce: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    records = list(messages(folder))
    t1 = time.perf_counter()
    frame = pd.json_normalize(records)
    del records
    t2 = time.perf_counter()
    coerced = []
    if coerce:
        for column in frame.columns:
            if frame[column].dtype == object:
                try:
                    pa.array(frame[column], from_pandas=True)
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                    frame[column] = frame[column].map(as_text)
                    coerced.append(column)
    frame.to_parquet(out / "tracks.parquet", engine="pyarrow", index=False)
    t3 = time.perf_counter()
    report(rows=len(frame), columns=len(frame.columns), coerced_columns=coerced,
           seconds_parse=round(t1 - t0, 3), seconds_normalize=round(t2 - t1, 3), seconds_write=round(t3 - t2, 3),
           pandas_version=pd.__version__)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--coerce"]
    if len(args) != 2:
        sys.exit(__doc__)
    main(Path(args[0]), Path(args[1]), "--coerce" in sys.argv[1:])
