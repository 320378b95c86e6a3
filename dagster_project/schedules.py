"""The daily run: at 01:30 UTC, load yesterday's received day."""


import datetime as dt

import dagster as dg

from dagster_project.resources import TrackhouseConfig

DAILY_CRON = "30 1 * * *"


def build_daily_schedule(job) -> dg.ScheduleDefinition:
    @dg.schedule(cron_schedule=DAILY_CRON, job=job, execution_timezone="UTC", name="daily_load")
    def daily_load(context: dg.ScheduleEvaluationContext, trackhouse: TrackhouseConfig) -> dg.RunRequest | dg.SkipReason:
        """Skip, saying why, when yesterday is before the first partition (the earliest day folder
        is today, or dated after today): requesting it would fail the tick with an unknown partition.
        Skip too when yesterday has no folder: loading it would publish an empty day that looks
        loaded, and the tick's run key would keep its logs, once they arrive, from ever loading."""
        scheduled = context.scheduled_execution_time
        yesterday = (scheduled.astimezone(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
        partitions = context.repository_def.get_job(job.name).partitions_def
        if not partitions.has_partition_key(yesterday):
            return dg.SkipReason(
                f"{yesterday} is not a partition: partitions start at {partitions.get_first_partition_key()},"
                " the earliest day folder under the logs root; nothing to load yet (rename that folder if its date is wrong)"
            )
        # A missing logs root (a mistyped TRACKHOUSE_LOGS) is no quiet day: the run fails saying so.
        if trackhouse.logs.is_dir() and not (trackhouse.logs / yesterday).is_dir():
            return dg.SkipReason(
                f"no folder {trackhouse.logs / yesterday}: nothing received that day yet; "
                f"once its logs arrive, materialize partition {yesterday} (Assets → tracks → Materialize)"
            )
        return dg.RunRequest(run_key=yesterday, partition_key=yesterday)

    return daily_load
