"""trackhouse: track-event logs to a validated, Hive-partitioned Parquet + DuckDB warehouse.

Stages, one module each, data flowing one way: read → validate → normalize → write.
This package never imports Dagster; `dagster_project` wires it.
"""

LOGGER = "trackhouse"  # every module logs progress and warnings here; the CLI and Dagster show it
