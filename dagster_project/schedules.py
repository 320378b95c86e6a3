"""The daily run: at 01:30 UTC, load yesterday's received day."""


import datetime as dt

import dagster as dg

DAILY_CRON = "30 1 * * *"


def build_daily_schedule(job) -> dg.ScheduleDefinition:
    @dg.schedule(cron_schedule=DAILY_CRON, job=job, execution_timezone="UTC", name="daily_load")
    def daily_load(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        yesterday = (context.scheduled_execution_time.astimezone(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
        return dg.RunRequest(run_key=yesterday, partition_key=yesterday)

    return daily_load
