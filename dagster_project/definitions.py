"""The one `Definitions` of trackhouse, built for a logs root (its day folders are the partitions)."""

from __future__ import annotations

import dagster as dg

from dagster_project.assets import build_load_asset
from dagster_project.models import models_automation, sql_models
from dagster_project.partitions import received_days
from dagster_project.resources import TrackhouseConfig
from dagster_project.schedules import build_daily_schedule

LOAD_JOB = "load_received_day"


def build_definitions(config: TrackhouseConfig | None = None) -> dg.Definitions:
    config = config or TrackhouseConfig.from_env()
    load_asset = build_load_asset(received_days(config.logs))
    load_job = dg.define_asset_job(LOAD_JOB, selection=[load_asset])
    return dg.Definitions(
        assets=[load_asset, sql_models],
        jobs=[load_job],
        schedules=[build_daily_schedule(load_job)],
        sensors=[models_automation],
        resources={"trackhouse": config},
    )


defs = build_definitions()
