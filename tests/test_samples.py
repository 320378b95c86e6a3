"""End to end on the bundled samples, through `etl run` (the same Dagster assets as the schedule)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from conftest import query

from dagster_project.cli import main
from etl.validate import REASON_CODES

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"


@pytest.fixture(scope="module")
def sample_warehouse(tmp_path_factory) -> Path:
    warehouse = tmp_path_factory.mktemp("samples") / "warehouse"
    assert main(["run", "--logs", str(SAMPLES), "--warehouse", str(warehouse)]) == 0
    return warehouse


def test_samples_quarantine_at_least_one_line_for_every_reason(sample_warehouse):
    reasons = {r for (r,) in query(sample_warehouse, "select distinct reason from quarantine")}
    assert reasons == set(REASON_CODES)


def test_samples_lose_nothing(sample_warehouse):
    per_day = query(
        sample_warehouse,
        "select received_date, (select count(*) from tracks t where t.received_date = q.received_date), count(*) "
        "from quarantine q group by 1 order by 1",
    )
    assert per_day == [
        (dt.date(2025, 1, 13), 216, 19),
        (dt.date(2025, 1, 14), 192, 23),
        (dt.date(2025, 1, 15), 211, 14),
    ]


def test_order_completed_has_its_properties_as_typed_columns(sample_warehouse):
    row = query(
        sample_warehouse,
        "select revenue, currency, order_id, shipping_address_city, shipping_address_geo_lat, products like '[{%', "
        "received_date from order_completed where message_id = '12f51947-1e8d-4176-96f0-53686c547f4b'",
    )
    assert row == [(267.72, "EUR", "ord_f5055955", "Lyon", 5.4386, True, dt.date(2025, 1, 13))]
    assert query(sample_warehouse, "select count(*), count(distinct currency) from order_completed") == [(41, 6)]


def test_a_quantity_sent_as_text_is_a_discard_not_a_failure(sample_warehouse):
    assert query(sample_warehouse, "select event, column_name, value, expected_type from discards") == [
        ("product_added", "quantity", "two", "int"),
    ]
