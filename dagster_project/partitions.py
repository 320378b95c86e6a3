"""Daily partitions over received days, starting at the earliest day folder under the logs root.

No configuration: drop last year's logs in and their days become partitions, in the CLI and
in the UI alike. Today is included (end_offset=1) so a day still being received can be loaded,
and so is a folder dated after today (a sender's clock, a typo'd name): the partitions then
run on to it, as every day folder is a partition.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import dagster as dg

from etl import LOGGER
from etl.read import list_days

FALLBACK_START = "2024-01-01"


def received_days(logs_root: Path) -> dg.DailyPartitionsDefinition:
    try:
        days = list_days(logs_root)
    except OSError as error:  # said in one line where the code location fails to load
        raise RuntimeError(
            f"cannot read the logs root {logs_root} ({error.strerror}): give this user read access, or set TRACKHOUSE_LOGS to another folder"
        ) from None
    if not logs_root.is_dir():
        # Said where the code location loads: a relative TRACKHOUSE_LOGS (or the default) counts
        # from the folder Dagster was started in, and from elsewhere the partitions were a guess.
        logging.getLogger(LOGGER).warning(
            f"logs root {logs_root} is not a folder, so the partitions start at {FALLBACK_START}: set TRACKHOUSE_LOGS to "
            "the folder of YYYY-MM-DD day folders (a relative path counts from where Dagster starts), or start it in the checkout"
        )
    today = dt.datetime.now(dt.UTC).date()
    days_after_today = (dt.date.fromisoformat(days[-1]) - today).days if days else 0
    return dg.DailyPartitionsDefinition(
        start_date=days[0] if days else FALLBACK_START, end_offset=max(1, days_after_today + 1), timezone="UTC",
    )
