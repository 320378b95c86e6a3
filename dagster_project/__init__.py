"""Dagster orchestration over `etl/`: partitions, assets, checks, schedule and the `etl` CLI."""
