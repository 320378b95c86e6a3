"""Daily partitions over received days, starting at the earliest day folder under the logs root.

No configuration: drop last year's logs in and their days become partitions, in the CLI and
in the UI alike. Today is included (end_offset=1) so a day still being received can be loaded.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from etl.read import list_days

FALLBACK_START = "2024-01-01"


def received_days(logs_root: Path) -> dg.DailyPartitionsDefinition:
    days = list_days(logs_root)
    return dg.DailyPartitionsDefinition(start_date=days[0] if days else FALLBACK_START, end_offset=1, timezone="UTC")
