"""The SQL models as Dagster assets: one asset per `sql/*.sql` file, dependencies read from the SQL.

All models refresh together in one computation (they are cheap and must agree with each
other); Declarative Automation re-runs them after any partition load or backfill. A file lock
(`etl.catalog.writer_lock`) keeps one writer of the marts and `warehouse.duckdb` at a time; the
`warehouse_writer` pool only names them for the UI, as a pool limit would wait forever on a
slot that a killed run left claimed.
"""

from pathlib import Path

import dagster as dg

from dagster_project.assets import StageClock, writable_or_failure
from dagster_project.checks import check_result
from dagster_project.resources import TrackhouseConfig
from etl import checks
from etl.catalog import shared_scratch_database
from etl.models import SEEDS, SOURCES, load_models, refresh_models

WRITER_POOL = "warehouse_writer"
# Not `eager()`: that waits for every upstream partition to exist, and a warehouse of received
# days always has gaps. Refresh once no load and no refresh is running, if any loaded day changed
# since the models were last requested: a load that finished while another was still running (or
# was killed and left STARTED) must not be forgotten.
# Not `any_deps_updated().since_last_handled()`: a refresh ending resets that, and a load ending
# between the same two ticks was forgotten, though the refresh had not read it. Both sides here
# carry times (Dagster's and/or drop them), so a load after the last request wins even within one
# tick; a refresh run by hand (the CLI's) resets nothing, which costs at most one more refresh.
# Only loads (`tracks`) count: models updating each other in a refresh are not a reason for another.
AFTER_ANY_LOAD = (
    dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated())
    .allow(dg.AssetSelection.assets(*SOURCES))
    .since(dg.AutomationCondition.newly_requested())
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
)
MODEL_CHECKS = {
    "unique_message_id": ("stg_tracks", dg.AssetCheckSeverity.ERROR, checks.stg_unique_message_id),
    "cross_partition_duplicates": ("stg_tracks", dg.AssetCheckSeverity.ERROR, checks.cross_partition_duplicates),
    "identities_match_stg_tracks": ("dim_identities", dg.AssetCheckSeverity.ERROR, checks.identities_match_stg_tracks),
    "active_users_match_stg_tracks": ("daily_active_users", dg.AssetCheckSeverity.ERROR, checks.active_users_match_stg_tracks),
    "revenue_reconciles": ("fct_orders", dg.AssetCheckSeverity.ERROR, checks.orders_reconcile_with_tracks),
    "fx_coverage": ("fct_orders", dg.AssetCheckSeverity.WARN, checks.fx_coverage),
    "sums_equal_fct_orders": ("revenue_daily", dg.AssetCheckSeverity.ERROR, checks.revenue_daily_matches_orders),
    "conversions_equal_fct_conversions": ("conversions_daily", dg.AssetCheckSeverity.ERROR, checks.conversions_match_facts),
    "conversion_rate_in_range": ("conversions_daily", dg.AssetCheckSeverity.ERROR, checks.conversion_rate_in_range),
}


def model_specs() -> list[dg.AssetSpec]:
    specs = []
    for name, model in load_models().items():
        upstream = sorted(model.depends_on - set(SEEDS))
        specs.append(
            dg.AssetSpec(
                name,
                deps=[dep for dep in upstream if dep not in SOURCES] + (["tracks"] if set(SOURCES) & model.depends_on else []),
                description=model.sql.splitlines()[0].removeprefix("-- "),
                group_name="models",
                automation_condition=AFTER_ANY_LOAD,
                metadata={"sql": dg.MetadataValue.md(f"```sql\n{model.sql}\n```")},
            )
        )
    return specs


@dg.multi_asset(
    name="sql_models",
    specs=model_specs(),
    check_specs=[dg.AssetCheckSpec(name, asset=asset) for name, (asset, _, _) in MODEL_CHECKS.items()],
    pool=WRITER_POOL,
)
def sql_models(context: dg.AssetExecutionContext, trackhouse: TrackhouseConfig):
    writable_or_failure(trackhouse.warehouse)
    clock = StageClock()
    with clock.stage("refresh"):
        rows = refresh_models(trackhouse.warehouse)
    timings = clock.metadata()
    for name, count in rows.items():
        yield dg.MaterializeResult(
            asset_key=name,
            metadata={
                **timings,
                "rows": dg.MetadataValue.int(count),
                "path": dg.MetadataValue.path(str(trackhouse.warehouse / "marts" / name)),
            },
        )
    # refresh_models has released the writer lock; each check takes it again to read the marts.
    with clock.stage("checks"):
        check_results = model_check_results(trackhouse.warehouse)
    yield from clock.timed(check_results)


def model_check_results(warehouse: Path) -> list[dg.AssetCheckResult]:
    with shared_scratch_database():
        return [check_result(check_name, asset, severity, check(warehouse)) for check_name, (asset, severity, check) in MODEL_CHECKS.items()]


models_automation = dg.AutomationConditionSensorDefinition(
    "refresh_models_after_loads",
    target=dg.AssetSelection.assets(sql_models),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
)
