"""The daily run: at 01:30 UTC, load yesterday's received day."""


import datetime as dt

import dagster as dg

DAILY_CRON = "30 1 * * *"


def build_daily_schedule(job) -> dg.ScheduleDefinition:
    @dg.schedule(cron_schedule=DAILY_CRON, job=job, execution_timezone="UTC", name="daily_load")
    def daily_load(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        """Skip, saying why, when yesterday is before the first partition (the earliest day folder
        is today, or dated after today): requesting it would fail the tick with an unknown partition."""
        scheduled = context.scheduled_execution_time
        yesterday = (scheduled.astimezone(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
        partitions = context.repository_def.get_job(job.name).partitions_def
        if not partitions.has_partition_key(yesterday):
            return dg.SkipReason(
                f"{yesterday} is not a partition: partitions start at {partitions.get_first_partition_key()},"
                " the earliest day folder under the logs root; nothing to load yet (rename that folder if its date is wrong)"
            )
        return dg.RunRequest(run_key=yesterday, partition_key=yesterday)

    return daily_load
