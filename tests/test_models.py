"""The SQL models (CONTRACT §4) over small hand-written logs: one test per rule, every expected row
spelled out. Each test loads its days with `load_day`, refreshes the models with its own seeds,
and reads the views of `warehouse.duckdb` as an analyst would."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import random
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest
from conftest import query, track, write_log

from etl import models
from etl.catalog import writer_lock
from etl.models import ModelError, build_order, load_models, refresh_models
from etl.pipeline import load_day
from etl.write import partition_dir

UTC = dt.UTC
D13, D14, D15 = dt.date(2025, 1, 13), dt.date(2025, 1, 14), dt.date(2025, 1, 15)

GOALS = [("Signed up for a trial", 2000), ("Newsletter Subscribed", 150)]


def at(text: str) -> dt.datetime:
    """An aware UTC datetime from 'YYYY-MM-DDTHH:MM' (compares equal to DuckDB's TIMESTAMPTZ)."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def write_seeds(folder: Path, rates: list[tuple[str, str, str]] = (), goals: list[tuple[str, int]] = GOALS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fx_rates.csv").write_text(
        "currency,date,rate_to_usd\n" + "".join(f"{c},{d},{r}\n" for c, d, r in rates)
    )
    (folder / "goals.csv").write_text(
        "name,default_value_cents\n" + "".join(f"{n},{v}\n" for n, v in goals)
    )
    return folder


def build(logs: Path, warehouse: Path, seeds: Path, days: list[str]) -> dict[str, int]:
    for day in days:
        load_day(logs, warehouse, day)
    return refresh_models(warehouse, seeds_dir=seeds)


def order(message_id: str, user_id, timestamp: str, revenue, currency: str | None = None, **fields) -> dict:
    properties = {"revenue": revenue, **({"currency": currency} if currency else {})}
    return track("Order Completed", user_id, messageId=message_id, timestamp=timestamp, properties=properties, **fields)


# --- stg_tracks ---------------------------------------------------------------------------------


def test_stg_tracks_keeps_the_earliest_received_copy_of_a_message_id_over_all_partitions(logs, warehouse, tmp_path):
    # Day 1 receives m-dup with a *later* receivedAt than the day-2 copy: received_date decides first.
    write_log(logs / "2025-01-14" / "a.ndjson", [
        track("Order Completed", "u-1", messageId="m-dup", timestamp="2025-01-14T10:00:00Z",
              receivedAt="2025-01-14T23:00:00Z", properties={"revenue": 10, "currency": "EUR"}),
        track("Product Viewed", "u-1", messageId="m-1", timestamp="2025-01-14T09:00:00Z"),
    ])
    write_log(logs / "2025-01-15" / "a.ndjson", [
        track("Checkout Done", "u-2", messageId="m-dup", timestamp="2025-01-15T10:00:00Z",
              receivedAt="2025-01-13T08:00:00Z", properties={"revenue": 99, "currency": "GBP"}),
        track("Product Viewed", "u-2", messageId="m-2", timestamp="2025-01-15T09:00:00Z"),
    ])
    rows = build(logs, warehouse, write_seeds(tmp_path / "seeds"), ["2025-01-14", "2025-01-15"])

    assert rows["stg_tracks"] == 3
    assert query(warehouse, """
        select message_id, event_text, user_id, revenue, currency, received_date, received_at, event_date
        from stg_tracks order by message_id
    """) == [
        ("m-1", "Product Viewed", "u-1", None, "USD", D14, None, D14),
        ("m-2", "Product Viewed", "u-2", None, "USD", D15, None, D15),
        ("m-dup", "Order Completed", "u-1", 10.0, "EUR", D14, at("2025-01-14T23:00"), D14),
    ]
    assert query(warehouse, "select count(*), count(distinct message_id) from tracks") == [(4, 3)]


def test_stg_tracks_breaks_ties_within_a_received_day_by_received_at_nulls_last_then_file_then_line(
    logs, warehouse, tmp_path
):
    """A partition never holds a message_id twice after `load_day`, so the tied copies are written as
    an extra Parquet part of the same day: the model must still pick the earliest received one."""
    day = "2025-01-14"
    write_log(logs / day / "a.ndjson", [
        track("Original", "u-1", messageId="t-null", timestamp="2025-01-14T01:00:00Z"),  # received_at NULL
        track("Original", "u-1", messageId="t-late", timestamp="2025-01-14T01:00:00Z", receivedAt="2025-01-14T10:00:00Z"),
    ])
    write_log(logs / day / "b.ndjson", [
        track("Original", "u-1", messageId="t-file", timestamp="2025-01-14T01:00:00Z", receivedAt="2025-01-14T10:00:00Z"),
        track("Original", "u-1", messageId="t-early", timestamp="2025-01-14T01:00:00Z", receivedAt="2025-01-14T10:00:00Z"),
        track("Original", "u-1", messageId="t-line", timestamp="2025-01-14T01:00:00Z", receivedAt="2025-01-14T10:00:00Z"),
    ])
    load_day(logs, warehouse, day)
    folder = partition_dir(warehouse, "tracks", day)
    loaded = pl.concat([pl.read_parquet(p) for p in sorted(folder.glob("*.parquet"))], how="diagonal_relaxed")
    assert loaded.select("message_id", "source_file", "line_number").sort("message_id").rows() == [
        ("t-early", f"{day}/b.ndjson", 2), ("t-file", f"{day}/b.ndjson", 1), ("t-late", f"{day}/a.ndjson", 2),
        ("t-line", f"{day}/b.ndjson", 3), ("t-null", f"{day}/a.ndjson", 1),
    ]
    ten, nine, eleven = at("2025-01-14T10:00"), at("2025-01-14T09:00"), at("2025-01-14T11:00")
    copies = {  # message_id: (received_at, source_file, line_number) of the copy
        "t-null": (ten, f"{day}/z.ndjson", 9),     # a received_at beats a NULL one: copy wins
        "t-early": (nine, f"{day}/z.ndjson", 9),   # earlier received_at beats file order: copy wins
        "t-late": (eleven, f"{day}/0.ndjson", 1),  # later received_at loses despite file order: original wins
        "t-file": (ten, f"{day}/a.ndjson", 99),    # same received_at, earlier file beats line: copy wins
        "t-line": (ten, f"{day}/b.ndjson", 2),     # same file, earlier line: copy wins
    }
    copy = loaded.filter(pl.col("message_id").is_in(list(copies))).with_columns(
        pl.lit("Copy").alias("event_text"),
        pl.col("message_id").replace_strict({k: v[0] for k, v in copies.items()}, return_dtype=loaded["received_at"].dtype).alias("received_at"),
        pl.col("message_id").replace_strict({k: v[1] for k, v in copies.items()}, return_dtype=pl.String).alias("source_file"),
        pl.col("message_id").replace_strict({k: v[2] for k, v in copies.items()}, return_dtype=loaded["line_number"].dtype).alias("line_number"),
    )
    copy.write_parquet(folder / "zz-tied-copies.parquet")
    refresh_models(warehouse, seeds_dir=write_seeds(tmp_path / "seeds"))

    assert query(warehouse, "select message_id, event_text, received_at, source_file, line_number from stg_tracks order by message_id") == [
        ("t-early", "Copy", nine, f"{day}/z.ndjson", 9),
        ("t-file", "Copy", ten, f"{day}/a.ndjson", 99),
        ("t-late", "Original", ten, f"{day}/a.ndjson", 2),
        ("t-line", "Copy", ten, f"{day}/b.ndjson", 2),
        ("t-null", "Copy", ten, f"{day}/z.ndjson", 9),
    ]


# --- identity stitching -------------------------------------------------------------------------


def write_identity_logs(logs: Path) -> None:
    write_log(logs / "2025-01-14" / "web.ndjson", [
        # a-1: anonymous, then identified as u-1
        track("Page Viewed", None, anonymousId="a-1", messageId="m-01", timestamp="2025-01-14T09:00:00Z"),
        track("Signed In", "u-1", anonymousId="a-1", messageId="m-02", timestamp="2025-01-14T10:00:00Z"),
        # a-2: seen with u-2 (09:00, received a day later) and u-3 (11:00): u-3 is last by timestamp
        track("Page Viewed", None, anonymousId="a-2", messageId="m-03", timestamp="2025-01-14T08:00:00Z"),
        track("Signed In", "u-3", anonymousId="a-2", messageId="m-05", timestamp="2025-01-14T11:00:00Z"),
        track("Page Viewed", None, anonymousId="a-2", messageId="m-06", timestamp="2025-01-14T12:00:00Z"),
        # a-3: u-4 and u-5 at the same instant: the higher message_id (m-08, u-4) is last
        track("Signed In", "u-4", anonymousId="a-3", messageId="m-08", timestamp="2025-01-14T10:00:00Z"),
        track("Signed In", "u-5", anonymousId="a-3", messageId="m-07", timestamp="2025-01-14T10:00:00Z"),
        track("Page Viewed", None, anonymousId="a-3", messageId="m-09", timestamp="2025-01-14T09:00:00Z"),
        # a-4: never identified
        track("Page Viewed", None, anonymousId="a-4", messageId="m-10", timestamp="2025-01-14T09:30:00Z"),
        # a-5: an integer userId
        track("Signed In", 4242, anonymousId="a-5", messageId="m-11", timestamp="2025-01-14T13:00:00Z"),
        track("Page Viewed", None, anonymousId="a-5", messageId="m-12", timestamp="2025-01-14T12:00:00Z"),
        # a user without an anonymous_id
        track("Page Viewed", "u-6", messageId="m-13", timestamp="2025-01-14T14:00:00Z"),
    ])
    write_log(logs / "2025-01-15" / "web.ndjson", [
        track("Signed In", "u-2", anonymousId="a-2", messageId="m-04", timestamp="2025-01-14T09:00:00Z"),
    ])


def test_identity_stitching_gives_each_event_a_user_key(logs, warehouse, tmp_path):
    write_identity_logs(logs)
    build(logs, warehouse, write_seeds(tmp_path / "seeds"), ["2025-01-14", "2025-01-15"])

    assert query(warehouse, "select message_id, user_id, anonymous_id, user_key from stg_tracks order by message_id") == [
        ("m-01", None, "a-1", "u-1"),     # anonymous before identification → the user_id
        ("m-02", "u-1", "a-1", "u-1"),
        ("m-03", None, "a-2", "u-3"),     # a-2 last seen (by timestamp) with u-3
        ("m-04", "u-2", "a-2", "u-2"),    # an identified event keeps its own user_id
        ("m-05", "u-3", "a-2", "u-3"),
        ("m-06", None, "a-2", "u-3"),
        ("m-07", "u-5", "a-3", "u-5"),
        ("m-08", "u-4", "a-3", "u-4"),
        ("m-09", None, "a-3", "u-4"),     # timestamp tie → last by message_id (m-08)
        ("m-10", None, "a-4", "a-4"),     # never identified → the anonymous_id
        ("m-11", "4242", "a-5", "4242"),  # integer userId as its decimal string
        ("m-12", None, "a-5", "4242"),
        ("m-13", "u-6", None, "u-6"),
    ]


def test_last_seen_orders_by_timestamp_nulls_last_so_a_user_seen_without_one_is_the_last(logs, warehouse, tmp_path):
    # CONTRACT 4: "last seen" orders by timestamp (NULL last), then message_id: the last in that order.
    write_log(logs / "2025-01-14" / "a.ndjson", [
        track("Signed In", "A", anonymousId="a-x", messageId="m-1", timestamp="2025-01-14T10:00:00Z"),
        track("Signed In", "B", anonymousId="a-x", messageId="m-2"),  # no timestamp of any kind
        track("Page Viewed", None, anonymousId="a-x", messageId="m-3", timestamp="2025-01-14T11:00:00Z"),
    ])
    build(logs, warehouse, write_seeds(tmp_path / "seeds"), ["2025-01-14"])
    assert query(warehouse, "select user_key from stg_tracks where message_id = 'm-3'") == [("B",)]
    assert query(warehouse, "select user_id from dim_identities where anonymous_id = 'a-x'") == [("B",)]


def test_dim_identities_has_one_row_per_anonymous_id_with_its_user_and_first_and_last_seen(logs, warehouse, tmp_path):
    write_identity_logs(logs)
    build(logs, warehouse, write_seeds(tmp_path / "seeds"), ["2025-01-14", "2025-01-15"])

    assert query(warehouse, "select anonymous_id, user_id, first_seen_at, last_seen_at from dim_identities order by anonymous_id") == [
        ("a-1", "u-1", at("2025-01-14T09:00"), at("2025-01-14T10:00")),
        ("a-2", "u-3", at("2025-01-14T08:00"), at("2025-01-14T12:00")),
        ("a-3", "u-4", at("2025-01-14T09:00"), at("2025-01-14T10:00")),
        ("a-4", None, at("2025-01-14T09:30"), at("2025-01-14T09:30")),
        ("a-5", "4242", at("2025-01-14T12:00"), at("2025-01-14T13:00")),
    ]


# --- fct_orders / revenue_daily -----------------------------------------------------------------

ORDER_RATES = [
    ("EUR", "2025-01-10", "1.1"),
    ("EUR", "2025-01-13", "1.25"),
    ("EUR", "2025-01-15", "1.4"),    # after 01-14: never used for a 01-14 event
    ("GBP", "2025-01-13", "1.5"),
    ("JPY", "2025-01-16", "0.0064"),  # only after every event: no rate on or before
]


def test_fct_orders_converts_revenue_to_usd_and_adds_the_first_touch_campaign_source(logs, warehouse, tmp_path):
    write_log(logs / "2025-01-15" / "web.ndjson", [
        # u-1 (first seen anonymously as a-1): google first by timestamp, though bing comes first in the file
        track("Signed In", "u-1", anonymousId="a-1", messageId="e-2", timestamp="2025-01-12T11:00:00Z",
              context={"campaign": {"source": "bing"}}),
        track("Page Viewed", None, anonymousId="a-1", messageId="e-1", timestamp="2025-01-12T10:00:00Z",
              context={"campaign": {"source": "google"}}),
        order("o-1", "u-1", "2025-01-13T12:00:00Z", 10, "EUR"),       # rate of the day: 1.25
        order("o-2", "u-1", "2025-01-14T12:00:00Z", 20, "eur"),       # no 01-14 rate: 01-13's 1.25
        order("o-3", "u-2", "2025-01-13T08:00:00Z", 8.1, "GBP"),      # 1.5
        order("o-4", "u-2", "2025-01-14T08:00:00Z", 5.55, "USD",      # USD: 1 without a seed row
              context={"campaign": {"source": "newsletter"}}),
        order("o-5", "u-3", "2025-01-14T08:00:00Z", 1000, "JPY"),     # rate only after: NULL
        order("o-6", "u-3", "2025-01-14T09:00:00Z", 3, "CHF"),        # no rate at all: NULL
        order("o-7", "u-3", "2025-01-14T10:00:00Z", "1.99"),          # no currency: USD
        order("o-8", "u-1", "2025-01-10T10:00:00Z", 0.1, "EUR"),      # 1.1
        order("o-9", "u-2", "2025-01-14T23:30:00-02:00", 10, "EUR"),  # UTC date 01-15: 1.4
        track("Product Viewed", "u-3", messageId="e-3", timestamp="2025-01-14T07:00:00Z",
              properties={"price": 5}),                                # no revenue: not an order
    ])
    build(logs, warehouse, write_seeds(tmp_path / "seeds", ORDER_RATES), ["2025-01-15"])

    rows = query(warehouse, """
        select message_id, event, event_date, user_key, revenue, currency, revenue_usd, campaign_source
        from fct_orders order by message_id
    """)
    assert rows == [
        ("o-1", "order_completed", D13, "u-1", Decimal("10"), "EUR", Decimal("12.5"), "google"),
        ("o-2", "order_completed", D14, "u-1", Decimal("20"), "EUR", Decimal("25"), "google"),
        ("o-3", "order_completed", D13, "u-2", Decimal("8.1"), "GBP", Decimal("12.15"), "newsletter"),
        ("o-4", "order_completed", D14, "u-2", Decimal("5.55"), "USD", Decimal("5.55"), "newsletter"),
        ("o-5", "order_completed", D14, "u-3", Decimal("1000"), "JPY", None, None),
        ("o-6", "order_completed", D14, "u-3", Decimal("3"), "CHF", None, None),
        ("o-7", "order_completed", D14, "u-3", Decimal("1.99"), "USD", Decimal("1.99"), None),
        ("o-8", "order_completed", dt.date(2025, 1, 10), "u-1", Decimal("0.1"), "EUR", Decimal("0.11"), "google"),
        ("o-9", "order_completed", D15, "u-2", Decimal("10"), "EUR", Decimal("14"), "newsletter"),
    ]
    # Exact decimals, not floats that merely print alike.
    assert all(isinstance(r[4], Decimal) for r in rows)
    assert all(isinstance(r[6], Decimal) for r in rows if r[6] is not None)


def test_first_touch_campaign_source_skips_an_event_without_a_timestamp(logs, warehouse, tmp_path):
    # "Earliest" orders by timestamp, NULL last: the untimed event comes first in the file, yet loses.
    write_log(logs / "2025-01-15" / "web.ndjson", [
        track("Page Viewed", "u-1", messageId="e-1", context={"campaign": {"source": "untimed"}}),
        track("Page Viewed", "u-1", messageId="e-2", timestamp="2025-01-12T10:00:00Z", context={"campaign": {"source": "google"}}),
        order("o-1", "u-1", "2025-01-13T12:00:00Z", 10),
    ])
    build(logs, warehouse, write_seeds(tmp_path / "seeds"), ["2025-01-15"])
    assert query(warehouse, "select message_id, campaign_source from fct_orders") == [("o-1", "google")]


def test_revenue_usd_rounds_the_exact_product_half_away_from_zero(logs, warehouse, tmp_path):
    # In floating point, 0.5 × 1.2307 = 0.61535 is 0.615349…, which rounds down.
    write_log(logs / "2025-01-15" / "a.ndjson", [
        order("h-1", "u-1", "2025-01-14T08:00:00Z", 0.5, "GBP"),
        order("h-2", "u-1", "2025-01-14T09:00:00Z", 1.5, "EUR"),
        order("h-3", "u-1", "2025-01-14T10:00:00Z", 1_000_000_000, "IDR"),
    ])
    rates = [("GBP", "2025-01-14", "1.2307"), ("EUR", "2025-01-14", "1.0243"), ("IDR", "2025-01-14", "0.000061728395")]
    build(logs, warehouse, write_seeds(tmp_path / "seeds", rates), ["2025-01-15"])
    assert query(warehouse, "select message_id, revenue_usd from fct_orders order by 1") == [
        ("h-1", Decimal("0.6154")), ("h-2", Decimal("1.5365")), ("h-3", Decimal("61728.3950")),
    ]


def test_revenue_daily_sums_per_day_and_currency_never_across_currencies(logs, warehouse, tmp_path):
    write_log(logs / "2025-01-15" / "web.ndjson", [
        order("r-01", "u-1", "2025-01-14T08:00:00Z", 0.1, "EUR"),
        order("r-02", "u-1", "2025-01-14T09:00:00Z", 0.2, "EUR"),
        order("r-03", "u-2", "2025-01-14T10:00:00Z", 1, "EUR"),
        order("r-04", "u-1", "2025-01-14T11:00:00Z", 0.1, "USD"),
        order("r-05", "u-1", "2025-01-14T12:00:00Z", 0.2),
        order("r-06", "u-3", "2025-01-14T13:00:00Z", 2, "GBP"),
        order("r-07", "u-3", "2025-01-14T14:00:00Z", 100, "JPY"),
        order("r-08", "u-2", "2025-01-15T08:00:00Z", 3, "EUR"),
        track("Product Viewed", "u-4", messageId="r-09", timestamp="2025-01-14T15:00:00Z"),
    ])
    rates = [("EUR", "2025-01-14", "1.25"), ("EUR", "2025-01-15", "1.5"), ("GBP", "2025-01-14", "1.5")]
    build(logs, warehouse, write_seeds(tmp_path / "seeds", rates), ["2025-01-15"])

    rows = query(warehouse, """
        select event_date, currency, orders, revenue, revenue_usd, paying_users
        from revenue_daily order by event_date, currency
    """)
    assert rows == [
        (D14, "EUR", 3, Decimal("1.3"), Decimal("1.625"), 2),
        (D14, "GBP", 1, Decimal("2"), Decimal("3"), 1),
        (D14, "JPY", 1, Decimal("100"), None, 1),
        (D14, "USD", 2, Decimal("0.3"), Decimal("0.3"), 1),
        (D15, "EUR", 1, Decimal("3"), Decimal("4.5"), 1),
    ]
    assert all(isinstance(r[3], Decimal) for r in rows)


# --- fct_conversions / conversions_daily --------------------------------------------------------


def test_fct_conversions_matches_goals_ignoring_case_and_space_with_value_and_first_flag(logs, warehouse, tmp_path):
    write_log(logs / "2025-01-14" / "web.ndjson", [
        track("  signed UP for a trial ", "u-1", messageId="c-1", timestamp="2025-01-14T10:00:00Z"),
        track("Signed up for a trial", "u-1", messageId="c-2", timestamp="2025-01-14T09:00:00Z",
              properties={"value": 500}),
        track("NEWSLETTER SUBSCRIBED", "u-2", messageId="c-3", timestamp="2025-01-14T09:00:00Z",
              properties={"value": 0}),                                   # 0 is a value, not "absent"
        track("Newsletter  Subscribed", "u-2", messageId="c-4", timestamp="2025-01-14T09:00:00Z"),   # inner space
        track("Signed up for a trial!", "u-2", messageId="c-5", timestamp="2025-01-14T09:00:00Z"),   # not a goal
        track("newsletter subscribed", None, anonymousId="a-9", messageId="c-6", timestamp="2025-01-14T08:00:00Z",
              properties={"value": "2500"}),
        track("Signed In", "u-1", anonymousId="a-9", messageId="c-7", timestamp="2025-01-14T11:00:00Z"),
        # u-3: a tie on timestamp (c-8 before c-9 by message_id), and a conversion without any timestamp
        track("Newsletter Subscribed", "u-3", messageId="c-9", timestamp="2025-01-14T12:00:00Z"),
        track("Newsletter Subscribed", "u-3", messageId="c-8", timestamp="2025-01-14T12:00:00Z"),
        track("Newsletter Subscribed", "u-3", messageId="c-0"),
    ])
    build(logs, warehouse, write_seeds(tmp_path / "seeds"), ["2025-01-14"])

    assert query(warehouse, """
        select message_id, event_date, user_key, goal, value_cents, is_first_for_user
        from fct_conversions order by message_id
    """) == [
        ("c-0", D14, "u-3", "Newsletter Subscribed", 150, False),   # NULL timestamp sorts last
        ("c-1", D14, "u-1", "Signed up for a trial", 2000, False),
        ("c-2", D14, "u-1", "Signed up for a trial", 500, True),
        ("c-3", D14, "u-2", "Newsletter Subscribed", 0, True),
        ("c-6", D14, "u-1", "Newsletter Subscribed", 2500, True),   # stitched a-9 → u-1
        ("c-8", D14, "u-3", "Newsletter Subscribed", 150, True),
        ("c-9", D14, "u-3", "Newsletter Subscribed", 150, False),
    ]


def test_a_goal_matches_an_event_text_surrounded_by_any_white_space(logs, warehouse, tmp_path):
    write_log(logs / "2025-01-14" / "web.ndjson", [
        track("\tNewsletter Subscribed\n", "u-1", messageId="c-1"),
        track("\u00a0signed up for a trial\u3000", "u-2", messageId="c-2"),
        track("Newsletter\tSubscribed", "u-3", messageId="c-3"),   # inner white space still differs
        track("Newsletter Subscribed\v", "u-4", messageId="c-4"),  # white space that DuckDB's \s misses
        track("\x85Newsletter Subscribed", "u-5", messageId="c-5"),
    ])
    build(logs, warehouse, write_seeds(tmp_path / "seeds"), ["2025-01-14"])
    assert query(warehouse, "select message_id, goal from fct_conversions order by 1") == [
        ("c-1", "Newsletter Subscribed"), ("c-2", "Signed up for a trial"),
        ("c-4", "Newsletter Subscribed"), ("c-5", "Newsletter Subscribed"),
    ]


def test_conversions_daily_counts_conversions_against_that_days_active_users(logs, warehouse, tmp_path):
    write_log(logs / "2025-01-15" / "web.ndjson", [
        track("Signed up for a trial", "u-1", messageId="d-01", timestamp="2025-01-14T09:00:00Z"),
        track("signed up for a trial", "u-1", messageId="d-02", timestamp="2025-01-14T10:00:00Z",
              properties={"value": 500}),
        track("Signed up for a trial", "u-2", messageId="d-03", timestamp="2025-01-14T11:00:00Z"),
        track("Newsletter Subscribed", "u-3", messageId="d-04", timestamp="2025-01-14T12:00:00Z"),
        track("Product Viewed", "u-4", messageId="d-05", timestamp="2025-01-14T13:00:00Z"),
        # 01-15: u-1 converts; active are u-1 (also as a-8, stitched), u-5 and the anonymous a-7
        track("Newsletter Subscribed", "u-1", messageId="d-06", timestamp="2025-01-15T09:00:00Z"),
        track("Product Viewed", "u-5", messageId="d-07", timestamp="2025-01-15T09:00:00Z"),
        track("Product Viewed", None, anonymousId="a-7", messageId="d-08", timestamp="2025-01-15T09:00:00Z"),
        track("Product Viewed", None, anonymousId="a-8", messageId="d-09", timestamp="2025-01-15T08:00:00Z"),
        track("Signed In", "u-1", anonymousId="a-8", messageId="d-10", timestamp="2025-01-15T10:00:00Z"),
    ])
    build(logs, warehouse, write_seeds(tmp_path / "seeds"), ["2025-01-15"])

    rows = query(warehouse, """
        select event_date, goal, conversions, converting_users, value_cents, active_users, conversion_rate
        from conversions_daily order by event_date, goal
    """)
    assert [r[:6] for r in rows] == [
        (D14, "Newsletter Subscribed", 1, 1, 150, 4),
        (D14, "Signed up for a trial", 3, 2, 4500, 4),
        (D15, "Newsletter Subscribed", 1, 1, 150, 3),
    ]
    assert [r[6] for r in rows] == [pytest.approx(0.25), pytest.approx(0.5), pytest.approx(1 / 3)]
    assert all(0 <= r[6] <= 1 for r in rows)


# --- late events --------------------------------------------------------------------------------


def test_late_events_count_on_the_day_they_happened_after_the_next_run(logs, warehouse, tmp_path):
    seeds = write_seeds(tmp_path / "seeds", [("EUR", "2025-01-14", "1.25")])
    write_log(logs / "2025-01-14" / "web.ndjson", [
        order("l-1", "u-1", "2025-01-14T10:00:00Z", 10, "EUR"),
        track("Product Viewed", "u-2", messageId="l-2", timestamp="2025-01-14T11:00:00Z"),
    ])
    build(logs, warehouse, seeds, ["2025-01-14"])
    assert query(warehouse, "select event_date, currency, orders, revenue, revenue_usd, paying_users from revenue_daily order by 1, 2") == [
        (D14, "EUR", 1, Decimal("10"), Decimal("12.5"), 1),
    ]
    assert query(warehouse, "select event_date, active_users, events from daily_active_users order by 1") == [(D14, 2, 2)]

    write_log(logs / "2025-01-15" / "web.ndjson", [
        order("l-3", "u-3", "2025-01-14T22:00:00Z", 5, "EUR"),  # happened 01-14, received 01-15
        track("Product Viewed", "u-1", messageId="l-4", timestamp="2025-01-15T08:00:00Z"),
    ])
    build(logs, warehouse, seeds, ["2025-01-15"])
    assert query(warehouse, "select event_date, currency, orders, revenue, revenue_usd, paying_users from revenue_daily order by 1, 2") == [
        (D14, "EUR", 2, Decimal("15"), Decimal("18.75"), 2),
    ]
    assert query(warehouse, "select event_date, active_users, events from daily_active_users order by 1") == [
        (D14, 3, 3), (D15, 1, 1),
    ]


# --- the dependency graph -----------------------------------------------------------------------


def test_the_dependency_graph_is_read_from_the_sql(tmp_path):
    models = load_models()
    assert models["stg_tracks"].depends_on == {"tracks"}
    assert models["fct_orders"].depends_on == {"stg_tracks", "fx_rates"}
    assert models["revenue_daily"].depends_on == {"fct_orders"}  # its CTE `orders` is not a table
    assert models["fct_conversions"].depends_on == {"stg_tracks", "goals"}
    assert models["conversions_daily"].depends_on == {"fct_conversions", "daily_active_users"}
    steps = build_order(models)
    assert sorted(steps) == sorted(models)
    assert steps.index("stg_tracks") < steps.index("fct_orders") < steps.index("revenue_daily")
    assert steps.index("fct_conversions") < steps.index("conversions_daily")
    assert steps.index("daily_active_users") < steps.index("conversions_daily")

    # A small graph of its own: joins, subqueries and CTEs (a CTE named like a model is still a CTE).
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "c.sql").write_text("with b as (select 1 as x) select * from b join (select * from a) s on true")
    (sql / "b.sql").write_text("select * from a where message_id in (select message_id from tracks)")
    (sql / "a.sql").write_text("select t.* from tracks t left join goals g on t.event_text = g.name")
    small = load_models(sql)
    assert {name: set(m.depends_on) for name, m in small.items()} == {
        "a": {"tracks", "goals"}, "b": {"a", "tracks"}, "c": {"a"},
    }
    small_order = build_order(small)
    assert small_order.index("a") < small_order.index("b")
    assert small_order.index("a") < small_order.index("c")


def test_a_missing_models_folder_is_a_model_error_saying_to_install_from_the_checkout(tmp_path):
    with pytest.raises(ModelError, match=r"no SQL models \(\*\.sql\) in .*: .*install it editable there"):
        load_models(tmp_path / "site-packages" / "sql")


def test_a_model_reading_an_unknown_table_is_a_model_error_naming_it(tmp_path):
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "fine.sql").write_text("select * from tracks")
    (sql / "broken.sql").write_text("with t as (select * from fine) select * from t join fx_rate using (currency)")
    with pytest.raises(ModelError, match="fx_rate") as caught:
        build_order(load_models(sql))
    assert "broken" in str(caught.value)


def test_models_depending_on_each_other_in_a_cycle_are_a_model_error(tmp_path):
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "first.sql").write_text("select * from second")
    (sql / "second.sql").write_text("select * from first")
    with pytest.raises(ModelError, match="cycle"):
        build_order(load_models(sql))


GOOD_RATE = ("EUR", "2025-01-14", "1.1")


@pytest.mark.parametrize(("rates", "goals", "said"), [
    ([GOOD_RATE, ("GBP", "2025-01-14", "one")], GOALS, "GBP,2025-01-14,one"),
    ([GOOD_RATE, ("GBP", "2025-01-14", "0.000000000000001")], GOALS,
     "the row GBP,2025-01-14,0.000000000000001 has more decimals in rate_to_usd than DECIMAL(20, 14) keeps"),
    ([GOOD_RATE, ("GBP", "2025-01-14", "")], GOALS, "the row GBP,2025-01-14, has an empty cell"),
    ([GOOD_RATE, ("GBP", "2025-01-14", "0")], GOALS, "has a rate that is not above 0"),
    ([GOOD_RATE, ("gbp", "2025-01-14", "1.2")], GOALS, "the row gbp,2025-01-14,1.2 has a currency code not in upper case"),
    ([GOOD_RATE, ("EUR", "2025-01-14", "1.2")], GOALS, "gives a second rate for one currency and date"),
    ([GOOD_RATE], [*GOALS, ("newsletter subscribed ", 100)], "repeats a goal name (ignoring case and spaces)"),
    # Matched alike, so each of its conversions would count twice.
    ([GOOD_RATE], [*GOALS, ('"Newsletter Subscribed\t"', 100)], "repeats a goal name (ignoring case and spaces)"),
    ([GOOD_RATE], [('"\t"', 100)], "has an empty cell"),
    ([GOOD_RATE], [("Trial", -5)], "the row Trial,-5 has a negative default value"),
], ids=["not a number", "past 14 decimals", "empty rate", "zero rate", "lower-case code", "second rate", "repeated goal",
        "repeated goal with a tab", "blank goal", "negative default"])
def test_a_seed_row_that_would_skew_the_models_is_a_one_line_model_error_naming_it(logs, warehouse, tmp_path, rates, goals, said):
    # DuckDB would round the 15 decimals in silence, and the others would pass unnoticed.
    write_log(logs / "2025-01-15" / "a.ndjson", [order("o-1", "u-1", "2025-01-14T08:00:00Z", 1, "EUR")])
    with pytest.raises(ModelError) as caught:
        build(logs, warehouse, write_seeds(tmp_path / "seeds", rates, goals), ["2025-01-15"])
    message = str(caught.value)
    assert "\n" not in message and said in message and ("fx_rates.csv" in message or "goals.csv" in message)


def test_an_interrupted_refresh_is_no_model_error(logs, warehouse, monkeypatch):
    # `etl` reports Ctrl-C as an interrupt (exit 130); a ModelError would send the user to fix SQL.
    write_log(logs / "2025-01-15" / "a.ndjson", [track()])
    load_day(logs, warehouse, "2025-01-15")

    class Interrupting:
        def __init__(self, connection):
            self.connection = connection

        def execute(self, sql, *args):
            if sql.startswith("copy"):
                raise duckdb.InterruptException("INTERRUPT Error: Interrupted!")
            return self.connection.execute(sql, *args)

        def close(self):
            self.connection.close()

    connect = models.bounded_connection
    monkeypatch.setattr(models, "bounded_connection", lambda spill: Interrupting(connect(spill)))
    with pytest.raises(duckdb.InterruptException):
        refresh_models(warehouse)


# --- one writer at a time -----------------------------------------------------------------------


def test_concurrent_refreshes_serialize_and_leave_every_model_complete(logs, warehouse, tmp_path):
    seeds = write_seeds(tmp_path / "seeds", [("EUR", "2025-01-14", "1.25")])
    write_log(logs / "2025-01-14" / "web.ndjson", [
        order("p-1", "u-1", "2025-01-14T10:00:00Z", 10, "EUR"),
        track("Signed up for a trial", None, anonymousId="a-1", messageId="p-2", timestamp="2025-01-14T09:00:00Z"),
        track("Signed In", "u-1", anonymousId="a-1", messageId="p-3", timestamp="2025-01-14T11:00:00Z"),
    ])
    load_day(logs, warehouse, "2025-01-14")

    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=refresh_models, args=(warehouse,), kwargs={"seeds_dir": seeds}) for _ in range(2)
    ]
    # While another writer holds the warehouse lock, neither refresh may publish anything ...
    with writer_lock(warehouse):
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 8  # unlocked, a spawned refresh publishes within ~3 s
        while time.monotonic() < deadline:
            assert all(w.is_alive() for w in workers), "a refresh finished while the writer lock was held"
            assert not (warehouse / "marts").exists(), "a refresh published marts while the writer lock was held"
            time.sleep(0.2)
    # ... and once it is released, the two contend for it, and both complete.
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]

    counts = {
        model: query(warehouse, f"select count(*) from {model}")[0][0]
        for model in ("stg_tracks", "dim_identities", "fct_orders", "revenue_daily",
                      "fct_conversions", "conversions_daily", "daily_active_users")
    }
    assert counts == {
        "stg_tracks": 3, "dim_identities": 1, "fct_orders": 1, "revenue_daily": 1,
        "fct_conversions": 1, "conversions_daily": 1, "daily_active_users": 1,
    }
    assert query(warehouse, "select user_key, goal, is_first_for_user from fct_conversions") == [
        ("u-1", "Signed up for a trial", True),
    ]
    assert [p.name for p in (warehouse / "marts").iterdir() if p.name.startswith(".")] == []
    assert sorted(p.name for p in (warehouse / "marts").iterdir()) == sorted(counts)


def test_no_two_refreshes_write_a_mart_file_of_the_same_name(logs, warehouse, tmp_path):
    # As for partitions: a reader of the old mart fails at the swap rather than mixing files.
    write_log(logs / "2025-01-14" / "a.ndjson", [order("m1", "u1", "2025-01-14T10:00:00Z", 10)])
    names = []
    for _ in range(2):
        build(logs, warehouse, write_seeds(tmp_path / "seeds"), ["2025-01-14"])
        names.append({p.name for p in (warehouse / "marts" / "fct_orders").iterdir()})
    assert len(names[0]) == 1 and not names[0] & names[1]


def test_a_refresh_removes_what_a_killed_refresh_left(logs, warehouse, tmp_path):
    """A refresh or catalog rebuild killed mid-way leaves its staging folder or temporary
    database or columns cache; the next one, holding the writer lock, knows no other writer can own them."""
    write_log(logs / "2025-01-14" / "a.ndjson", [track()])
    load_day(logs, warehouse, "2025-01-14")
    killed_marts = warehouse / "marts" / ".staging-0123456789ab" / "stg_tracks"
    killed_marts.mkdir(parents=True)
    (killed_marts / "stg_tracks-0123456789ab.parquet").write_bytes(b"half written")
    killed_catalog = warehouse / ".warehouse.duckdb.01234567.tmp"
    killed_catalog.write_bytes(b"half written")
    killed_columns = warehouse / ".catalog.columns.json.01234567.tmp"
    killed_columns.write_bytes(b"half written")
    refresh_models(warehouse, seeds_dir=write_seeds(tmp_path / "seeds"))
    assert sorted(p.name for p in (warehouse / "marts").iterdir() if p.name.startswith(".")) == []
    assert not killed_catalog.exists() and not killed_columns.exists()
