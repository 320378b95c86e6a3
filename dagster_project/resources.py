"""Where the logs and the warehouse live: one resource, environment variables as defaults."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from etl.checks import DEFAULT_QUARANTINE_WARN_RATE

DEFAULT_LOGS = "data/samples"
DEFAULT_WAREHOUSE = "data/warehouse"


class TrackhouseConfig(dg.ConfigurableResource):
    """Roots of a trackhouse deployment (TRACKHOUSE_LOGS, TRACKHOUSE_WAREHOUSE, TRACKHOUSE_QUARANTINE_WARN_RATE)."""

    logs_root: str = DEFAULT_LOGS
    warehouse_root: str = DEFAULT_WAREHOUSE
    quarantine_warn_rate: float = DEFAULT_QUARANTINE_WARN_RATE

    @property
    def logs(self) -> Path:
        return Path(self.logs_root).resolve()

    @property
    def warehouse(self) -> Path:
        return Path(self.warehouse_root).resolve()

    @classmethod
    def from_env(cls, **overrides: str) -> "TrackhouseConfig":
        """The environment's settings, with `overrides` (the CLI's options) taking precedence."""
        # A variable set empty (`TRACKHOUSE_LOGS=`) is unset, as shells and users mean it: an empty
        # path would be the current folder.
        rate = os.environ.get("TRACKHOUSE_QUARANTINE_WARN_RATE") or str(DEFAULT_QUARANTINE_WARN_RATE)
        try:
            warn_rate = float(rate)
        except ValueError:
            raise ValueError(f"TRACKHOUSE_QUARANTINE_WARN_RATE={rate!r} is not a number: set a fraction such as 0.05") from None
        if not 0 <= warn_rate <= 1:  # NaN too: a check against it would never warn
            raise ValueError(f"TRACKHOUSE_QUARANTINE_WARN_RATE={rate!r} is not a fraction from 0 to 1: set e.g. 0.05 for 5 %")
        settings = {
            "logs_root": os.environ.get("TRACKHOUSE_LOGS") or DEFAULT_LOGS,
            "warehouse_root": os.environ.get("TRACKHOUSE_WAREHOUSE") or DEFAULT_WAREHOUSE,
            "quarantine_warn_rate": warn_rate,
        }
        return cls(**{**settings, **overrides})
