"""Per-event tables: names, types fixed by the registry, discards, and hostile names."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import multiprocessing
import os
import shutil
import sqlite3
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest
from conftest import query, track, write_log

from etl import catalog, checks, registry, write
from etl.catalog import refresh_catalog
from etl.events import EventProperties, drop_paths_full_tables_cannot_take, event_tables
from etl.names import event_table_name, snake_case
from etl.pipeline import load_day
from etl.registry import Column, SchemaRegistry, read_registry
from etl.write import partition_dir

DAY = "2025-01-15"


def load(logs: Path, warehouse: Path, days: dict[str, list]) -> None:
    for day, lines in days.items():
        write_log(logs / day / "a.ndjson", lines)
        load_day(logs, warehouse, day)
    refresh_catalog(warehouse)


def registered(warehouse: Path, event: str) -> list[tuple[str, str]]:
    reg = SchemaRegistry(warehouse)
    try:
        return [(c.name, c.type) for c in reg.columns(event).values()]
    finally:
        reg.close()


@pytest.mark.parametrize(
    ("key", "column"),
    [
        ("productName", "product_name"), ("productID", "product_id"), ("HTMLParser", "html_parser"),
        ("p000", "p000"), ("address2", "address2"), ("line2Text", "line2_text"),
        ("Straße Nummer", "straße_nummer"), ("--weird  key--", "weird_key"),
        ("हिन्दी नाम", "हिन्दी_नाम"), ("e\u0301t\u00e9", "été"), ("Preis٣", "preis٣"),
        ("x²", "x"), ("½ off", "off"), ("Ⅻ Tour", "tour"), ("ΟΔΟΣ Αθηνάς", "οδος_αθηνάς"),
        ("_private", "private"), ("--a--", "a"),
    ],
    ids=repr,
)
def test_property_key_becomes_lower_snake_case(key, column):
    assert snake_case(key) == column


@pytest.mark.parametrize(
    ("event_text", "table"),
    [("1st Order", "event_1st_order"), (" !!! ", "event_" + hashlib.sha1(" !!! ".encode()).hexdigest()[:8])],
    ids=["starts with a digit", "nothing left"],
)
def test_an_event_name_starting_with_a_digit_or_left_empty_is_prefixed_event(event_text, table):
    assert event_table_name(event_text) == table


def test_nested_properties_join_with_underscore_and_arrays_are_json_text(logs, warehouse):
    load(logs, warehouse, {DAY: [track("Order Completed", properties={
        "shippingAddress": {"city": "Lyon", "geo": {"lat": 45.7}}, "tags": ["a", "b"], "productName": "Mug",
    })]})
    row = query(warehouse, "select shipping_address_city, shipping_address_geo_lat, tags, product_name from order_completed")
    assert row == [("Lyon", 45.7, '["a","b"]', "Mug")]


def test_property_clashing_with_a_standard_column_is_prefixed(logs, warehouse):
    load(logs, warehouse, {DAY: [track("A", properties={"userId": "p-user", "timestamp": "x", "context": {"ip": "1"}, "2fa": True})]})
    assert [name for name, _ in registered(warehouse, "a")] == [
        "property_user_id", "property_timestamp", "property_context_ip", "property_2fa",
    ]
    assert query(warehouse, "select property_user_id, user_id from a") == [("p-user", "u1")]


def test_a_key_with_no_letter_or_digit_adds_nothing_and_an_empty_name_is_prefixed(logs, warehouse):
    load(logs, warehouse, {DAY: [track("A", properties={"!!!": 1, "": 2, "shipping": {"??": "x"}})]})
    assert [name for name, _ in registered(warehouse, "a")] == ["property_", "property__2", "shipping"]


def test_two_keys_with_one_name_keep_the_first_and_number_the_next(logs, warehouse):
    load(logs, warehouse, {DAY: [track("A", properties={"productName": "first", "product_name": "second"})]})
    assert query(warehouse, "select product_name, product_name_2 from a") == [("first", "second")]


def test_a_rerun_never_renames_a_column(logs, warehouse):
    load(logs, warehouse, {DAY: [track("A", properties={"productName": "first", "product_name": "second"})]})
    load(logs, warehouse, {DAY: [track("A", properties={"product_name": "now first", "productName": "now second"})]})
    assert query(warehouse, "select product_name, product_name_2 from a") == [("now second", "now first")]


def test_event_names_differing_in_case_or_punctuation_share_a_table(logs, warehouse):
    load(logs, warehouse, {DAY: [track("Order Completed"), track("order_completed"), track("ORDER-completed!")]})
    assert query(warehouse, "select count(*), count(distinct event_text) from order_completed") == [(3, 2 + 1)]


def test_long_event_names_differing_only_in_case_share_a_table(logs, warehouse):
    """A name over 120 bytes is cut and suffixed with a hash: of the name, so both texts agree."""
    text = "Заказ оформлен через мобильное приложение после повторного входа в аккаунт"
    load(logs, warehouse, {DAY: [track(text), track(text.upper())]})
    tables = [p.name for p in (warehouse / "events").iterdir()]
    assert len(tables) == 1 and len(tables[0].encode()) <= 120
    assert query(warehouse, f'select count(*) from events."{tables[0]}"') == [(2,)]


def test_column_type_is_fixed_by_the_first_value_and_misfits_become_discards(logs, warehouse):
    load(logs, warehouse, {DAY: [
        track("A", messageId="m1", properties={"quantity": 2, "label": "x", "when": "2025-01-15T10:00:00Z", "ok": True}),
        track("A", messageId="m2", properties={"quantity": "two", "label": 7, "when": "tomorrow", "ok": "yes"}),
        track("A", messageId="m3", properties={"quantity": "3"}),
    ]})
    assert registered(warehouse, "a") == [("quantity", "int"), ("label", "string"), ("when", "timestamp"), ("ok", "bool")]
    assert query(warehouse, "select message_id, quantity, label, \"when\", ok from a order by 1") == [
        ("m1", 2, "x", dt.datetime(2025, 1, 15, 10, tzinfo=dt.UTC), True),
        ("m2", None, "7", None, None),
        ("m3", None, None, None, None),
    ]
    assert query(warehouse, "select message_id, column_name, value, expected_type, received_date from discards order by 1, 2") == [
        ("m2", "ok", "yes", "bool", dt.date(2025, 1, 15)),
        ("m2", "quantity", "two", "int", dt.date(2025, 1, 15)),
        ("m2", "when", "tomorrow", "timestamp", dt.date(2025, 1, 15)),
        ("m3", "quantity", "3", "int", dt.date(2025, 1, 15)),
    ]


@pytest.mark.parametrize(("first", "kind"), [(1, "int"), (1.5, "float")])
def test_a_boolean_never_fits_a_number_column(logs, warehouse, first, kind):
    load(logs, warehouse, {DAY: [track("A", messageId="m1", properties={"n": first}), track("A", messageId="m2", properties={"n": True})]})
    assert query(warehouse, "select message_id, n from a order by 1") == [("m1", first), ("m2", None)]
    assert query(warehouse, "select message_id, value, expected_type from discards") == [("m2", "true", kind)]


def test_a_discard_names_its_own_message_when_other_events_interleave(logs, warehouse):
    load(logs, warehouse, {DAY: [
        track("B", messageId="b1"), track("A", messageId="a1", properties={"n": 1}),
        track("B", messageId="b2"), track("A", messageId="a2", properties={"n": "x"}),
    ]})
    assert query(warehouse, "select event, message_id, column_name, value from discards") == [("a", "a2", "n", "x")]


def test_int_widens_to_float_and_older_partitions_read_with_it(logs, warehouse):
    load(logs, warehouse, {"2025-01-14": [track("A", properties={"price": 3})], DAY: [track("A", properties={"price": 2.5})]})
    assert registered(warehouse, "a") == [("price", "float")]
    assert query(warehouse, "select received_date, price from a order by 1") == [
        (dt.date(2025, 1, 14), 3.0), (dt.date(2025, 1, 15), 2.5),
    ]
    assert query(warehouse, "select count(*) from discards") == [(0,)]


def test_a_reader_on_the_catalog_before_a_widening_reads_the_widened_values_intact(logs, warehouse):
    """A view outlives its catalog (an analyst's open session, or the moment between a day's
    publishing and the rebuild): once a later day widens a column, it must not round 1.5 to 2."""
    load(logs, warehouse, {"2025-01-14": [track("A", messageId="m1", properties={"price": 3})]})
    with duckdb.connect(str(warehouse / "warehouse.duckdb"), read_only=True) as reader:
        load(logs, warehouse, {DAY: [track("A", messageId="m2", properties={"price": 2.5})]})
        assert reader.execute("select message_id, price from a order by 1").fetchall() == [("m1", 3.0), ("m2", 2.5)]
    assert query(warehouse, "select typeof(price) from a limit 1") == [("DOUBLE",)]


def test_an_int_column_reads_as_bigint_with_partitions_that_lack_it(logs, warehouse):
    load(logs, warehouse, {"2025-01-14": [track("A", messageId="m1")], DAY: [track("A", messageId="m2", properties={"n": 7})]})
    assert query(warehouse, "select message_id, n, typeof(n) from a order by 1") == [("m1", None, "BIGINT"), ("m2", 7, "BIGINT")]


def test_an_integer_past_64_bits_fits_a_float_column(logs, warehouse):
    load(logs, warehouse, {DAY: [
        track("A", messageId="m1", properties={"price": 2.5}),
        track("A", messageId="m2", properties={"price": 2**63 - 1}),
        '{"type":"track","event":"A","userId":"u1","messageId":"m3","properties":{"price":%d}}' % 2**64,
    ]})
    assert query(warehouse, "select message_id, price from a order by 1") == [("m1", 2.5), ("m2", 2.0**63), ("m3", 2.0**64)]
    assert query(warehouse, "select count(*) from discards") == [(0,)]


def test_values_before_a_widening_float_are_judged_as_an_int_columns_unless_another_run_made_it_float(logs, warehouse, monkeypatch):
    lines = ['{"type":"track","event":"A","userId":"u1","messageId":"m1","properties":{"n":%d}}' % 2**64,
             track("A", messageId="m2", properties={"n": 1.5})]
    load(logs, warehouse, {DAY: lines})  # one chunk: 2^64 came while n was an int column
    assert query(warehouse, "select message_id, value, expected_type from discards") == [("m1", str(2**64), "int")]

    # Another run registers n as float just before this run first asks: 2^64 then fits.
    register = SchemaRegistry.register

    def after_another_run(self, event, proposals):
        other = SchemaRegistry(self.path.parent)
        register(other, event, {registry.path_key(("n",)): (("n",), "float")})
        other.close()
        return register(self, event, proposals)

    monkeypatch.setattr(SchemaRegistry, "register", after_another_run)
    raced = warehouse.parent / "raced"
    load_day(logs, raced, DAY)
    refresh_catalog(raced)
    assert query(raced, "select message_id, n from a order by 1") == [("m1", 2.0**64), ("m2", 1.5)]
    assert query(raced, "select count(*) from discards") == [(0,)]


@pytest.mark.parametrize("chunk_bytes", [1 << 20, 1], ids=["one chunk", "a chunk per line"])
def test_a_rerun_of_the_day_that_widened_a_column_judges_its_values_as_its_first_run_did(logs, warehouse, chunk_bytes):
    """Contract §3: a rerun leaves the same result as one clean run, though the registry now
    holds the column as float: values before the day's first float are still an int column's."""
    write_log(logs / DAY / "a.ndjson", [
        track("A", messageId="m1", properties={"n": 1}),
        '{"type":"track","event":"A","userId":"u1","messageId":"m2","properties":{"n":%d}}' % 2**64,
        track("A", messageId="m3", properties={"n": True}),
        track("A", messageId="m4", properties={"n": 1.5}),
        track("A", messageId="m5", properties={"n": False}),
    ])

    def loaded() -> tuple[list, list]:
        load_day(logs, warehouse, DAY, chunk_bytes=chunk_bytes, workers=1)
        refresh_catalog(warehouse)
        return (
            query(warehouse, "select message_id, n from a order by 1"),
            query(warehouse, "select message_id, value, expected_type from discards order by 1"),
        )

    first = loaded()
    assert first == (
        [("m1", 1.0), ("m2", None), ("m3", None), ("m4", 1.5), ("m5", None)],
        [("m2", str(2**64), "int"), ("m3", "true", "int"), ("m5", "false", "float")],
    )
    assert loaded() == first


@pytest.mark.parametrize(
    "load_order",
    [["2025-01-14", "2025-01-15"], ["2025-01-14", "2025-01-15", "2025-01-14", "2025-01-15"], ["2025-01-15", "2025-01-14", "2025-01-15"]],
    ids=["in received order", "etl run twice", "the later day first, then rerun"],
)
@pytest.mark.parametrize("later_day_starts_with_a_float", [False, True], ids=["later day int first", "later day float first"])
@pytest.mark.parametrize("earlier_day_has_a_float", [True, False], ids=["both days have a float", "only the later day"])
def test_a_widening_judges_each_day_as_a_clean_run_in_received_order_would(
    logs, warehouse, load_order, earlier_day_has_a_float, later_day_starts_with_a_float,
):
    big = '{"type":"track","event":"A","userId":"u1","messageId":"%s","properties":{"n":%d}}'
    after_a_float = [track("A", messageId="a4", properties={"n": 1.5}), big % ("a5", 2**64)] if earlier_day_has_a_float else []
    write_log(logs / "2025-01-14" / "a.ndjson", [
        track("A", messageId="a1", properties={"n": 1}), big % ("a2", 2**64), track("A", messageId="a3", properties={"n": True}),
        *after_a_float,
    ])
    later = [track("A", messageId="b1", properties={"n": 2}), track("A", messageId="b2", properties={"n": 2.5})]
    write_log(logs / "2025-01-15" / "a.ndjson", later[::-1] if later_day_starts_with_a_float else later)
    for day in load_order:
        load_day(logs, warehouse, day)
    refresh_catalog(warehouse)
    after_a_float_rows = [("a4", 1.5), ("a5", 2.0**64)] if earlier_day_has_a_float else []
    assert query(warehouse, "select message_id, n from a order by 1") == [
        ("a1", 1.0), ("a2", None), ("a3", None), *after_a_float_rows, ("b1", 2.0), ("b2", 2.5),
    ]
    assert query(warehouse, "select message_id, expected_type from discards order by 1") == [("a2", "int"), ("a3", "int")]


def test_a_registry_written_before_widenings_were_dated_opens_and_keeps_its_columns(warehouse):
    warehouse.mkdir()
    with sqlite3.connect(warehouse / registry.REGISTRY_FILE) as old:
        old.execute("create table columns (event text not null, path text not null, name text not null, type text not null,"
                    " position integer not null, primary key (event, path), unique (event, name))")
        old.execute("""insert into columns values ('a', '["n"]', 'n', 'float', 0)""")
    assert registered(warehouse, "a") == [("n", "float")]
    assert registered(warehouse, "a") == [("n", "float")]  # opened again: the column is added once


@pytest.mark.parametrize("rows_per_part", [write.ROWS_PER_PART, 1], ids=["rows-still-buffered", "every-part-written"])
def test_an_event_table_has_every_context_column_of_the_days_tracks(logs, warehouse, monkeypatch, rows_per_part):
    """Contract §3: an event table holds the `context_…` columns of `tracks`; where its events
    never sent a key, the column is NULL (in the Parquet files, not only in the view)."""
    monkeypatch.setattr(write, "ROWS_PER_PART", rows_per_part)
    load(logs, warehouse, {DAY: [
        track("Order Completed", messageId="o1", context={"ip": "1.2.3.4"}),
        track("Product Viewed", messageId="p1", context={"page": {"url": "/p"}}),
    ]})

    def context_columns(table: str) -> list[str]:
        files = f"'{partition_dir(warehouse, table, DAY)}/*.parquet'"
        rows = query(warehouse, f"select name from parquet_schema({files}) where name like 'context%'")
        return sorted({name for (name,) in rows})

    assert context_columns("tracks") == ["context_ip", "context_page_url"]
    assert context_columns("events/order_completed") == context_columns("events/product_viewed") == ["context_ip", "context_page_url"]
    assert query(warehouse, "select context_ip, context_page_url from order_completed") == [("1.2.3.4", None)]
    assert query(warehouse, "select context_ip, context_page_url from product_viewed") == [(None, "/p")]
    assert checks.event_rows_match_tracks(warehouse, DAY).passed


def test_older_partitions_read_a_newer_column_as_null(logs, warehouse):
    load(logs, warehouse, {"2025-01-14": [track("A", properties={"old": 1})], DAY: [track("A", properties={"old": 2, "new": "n"})]})
    assert query(warehouse, "select received_date, old, new from a order by 1") == [
        (dt.date(2025, 1, 14), 1, None), (dt.date(2025, 1, 15), 2, "n"),
    ]


def test_revenue_currency_and_value_appear_converted_and_never_as_discards(logs, warehouse):
    load(logs, warehouse, {DAY: [
        track("Order Completed", messageId="m1", properties={"revenue": "19.99", "currency": "eur", "value": "2000"}),
        track("Order Completed", messageId="m2", properties={"revenue": 5}),
    ]})
    assert query(warehouse, "select message_id, revenue, currency, value from order_completed order by 1") == [
        ("m1", 19.99, "EUR", 2000), ("m2", 5.0, None, None),
    ]
    assert query(warehouse, "select count(*) from discards") == [(0,)]


def test_revenue_currency_and_value_are_columns_even_past_the_column_cap(logs, warehouse, monkeypatch):
    monkeypatch.setattr(registry, "MAX_PROPERTY_COLUMNS", 2)
    load(logs, warehouse, {DAY: [
        track("Buy", properties={"a": 1, "b": 2, "c": 3}),
        track("Buy", properties={"revenue": "19.99", "currency": "eur", "value": 5}),
    ]})
    assert [name for name, _ in registered(warehouse, "buy")] == ["a", "b", "revenue", "currency", "value"]
    assert query(warehouse, "select revenue, currency, value from buy where revenue is not null") == [(19.99, "EUR", 5)]


def test_a_chunk_whose_past_the_cap_paths_were_dropped_still_reads_what_other_runs_registered(warehouse, monkeypatch):
    # Proposing a path past the cap made the registry read the table afresh (another day's run
    # may have widened a column meanwhile); a chunk whose such paths the workers dropped must too.
    monkeypatch.setattr(registry, "MAX_PROPERTY_COLUMNS", 2)
    this_day, other_day = SchemaRegistry(warehouse, loading_day="2025-01-02"), SchemaRegistry(warehouse, loading_day="2025-01-03")
    this_day.register("ev", {registry.path_key(("x",)): (("x",), "int"), registry.path_key(("y",)): (("y",), "int")})
    full = {"ev": this_day.full_columns("ev")}
    other_day.register("ev", {registry.path_key(("x",)): (("x",), "float")})  # x widened by the other run
    gathered = {"ev": EventProperties([0], {("x",): ([0], [2**63]), ("z",): ([0], [1])})}
    drop_paths_full_tables_cannot_take(gathered, full)
    assert gathered["ev"].dropped == [1] and ("z",) not in gathered["ev"].cells
    out = event_tables(pl.DataFrame({"message_id": ["m0"], "event": ["ev"]}), gathered, this_day)
    assert out.frames["ev"]["x"].to_list() == [float(2**63)] and out.discards_frame().height == 0
    assert out.over_cap_values == 1
    this_day.close()
    other_day.close()


def test_a_rerun_removes_event_tables_the_day_no_longer_has(logs, warehouse):
    load(logs, warehouse, {DAY: [track("Gone Event"), track("Kept")]})
    load(logs, warehouse, {DAY: [track("Kept")]})
    assert not partition_dir(warehouse, "events/gone_event", DAY).exists()
    assert partition_dir(warehouse, "events/kept", DAY).exists()


@pytest.mark.parametrize(
    "event",
    ["../../etc/passwd", "'; drop table tracks; --", "select", "🎉" * 200, "!!!", "a/b\\c", 'x"y', "tracks"],
)
def test_hostile_event_names_get_safe_tables_inside_the_warehouse(logs, warehouse, tmp_path, event):
    load(logs, warehouse, {DAY: [track(event, properties={"../k": 1, "'; drop": 2})]})
    outside = {p for p in tmp_path.rglob("*") if not p.is_relative_to(warehouse) and not p.is_relative_to(logs)}
    assert outside == set()
    (table,) = [p.name for p in (warehouse / "events").iterdir()]
    assert all(c.isalnum() or c == "_" for c in table) and not table[0].isdigit()
    assert query(warehouse, f'select count(*) from events."{table}"') == [(1,)]
    assert query(warehouse, "select count(*) from tracks") == [(1,)]


def test_past_the_column_cap_values_stay_in_tracks_properties_and_a_check_warns(logs, warehouse, monkeypatch):
    monkeypatch.setattr(registry, "MAX_PROPERTY_COLUMNS", 2)
    load(logs, warehouse, {DAY: [track("A", properties={"a": 1, "b": 2, "c": 3})]})
    assert [name for name, _ in registered(warehouse, "a")] == ["a", "b"]
    assert query(warehouse, "select properties from tracks") == [('{"a":1,"b":2,"c":3}',)]
    outcome = checks.columns_within_cap(warehouse, DAY)
    assert not outcome.passed and outcome.metadata["values_over_column_cap"] == 1


def test_properties_only_a_duplicate_sent_are_not_counted_past_the_column_cap(logs, warehouse):
    load(logs, warehouse, {DAY: [track("A", messageId="m1"), track("A", messageId="m1", properties={"x": 1})]})
    outcome = checks.columns_within_cap(warehouse, DAY)
    assert outcome.passed and outcome.metadata["values_over_column_cap"] == 0


def test_event_rows_check_fails_when_an_event_table_loses_rows(logs, warehouse):
    load(logs, warehouse, {DAY: [track("A"), track("B")]})
    assert checks.event_rows_match_tracks(warehouse, DAY).passed
    for part in partition_dir(warehouse, "events/b", DAY).glob("*.parquet"):
        part.unlink()
    assert not checks.event_rows_match_tracks(warehouse, DAY).passed


def test_discards_check_fails_on_a_discard_without_its_message(logs, warehouse):
    load(logs, warehouse, {DAY: [track("A", messageId="m1", properties={"n": 1}), track("A", messageId="m2", properties={"n": "x"})]})
    assert checks.discards_point_to_messages(warehouse, DAY).passed
    folder = partition_dir(warehouse, "discards", DAY)
    orphan = pl.read_parquet(next(folder.glob("*.parquet"))).with_columns(message_id=pl.lit("nobody"))
    orphan.write_parquet(folder / "part-orphan.parquet")
    assert not checks.discards_point_to_messages(warehouse, DAY).passed


def test_registry_check_fails_when_a_file_disagrees_with_the_registry(logs, warehouse):
    load(logs, warehouse, {DAY: [track("A", properties={"n": 1})]})
    assert checks.registry_matches_parquet(warehouse, DAY).passed
    part = next(partition_dir(warehouse, "events/a", DAY).glob("*.parquet"))
    pl.read_parquet(part).with_columns(pl.col("n").cast(pl.String)).write_parquet(part)
    outcome = checks.registry_matches_parquet(warehouse, DAY)
    assert not outcome.passed and "a.n is String" in outcome.description


def load_conflicting_day(args: tuple[str, str, str]) -> None:
    logs, warehouse, day = args
    load_day(Path(logs), Path(warehouse), day, chunk_bytes=512)


def test_two_concurrent_partition_runs_agree_on_one_registry(logs, warehouse):
    # Day one sends every property as an int, day two as a string: whoever registers first wins,
    # the other's values become discards, and no column is lost or typed twice.
    keys = [f"k{i}" for i in range(60)]
    write_log(logs / "2025-01-14" / "a.ndjson", [track("A", properties={k: i for k in keys}) for i in range(40)])
    write_log(logs / DAY / "a.ndjson", [track("A", properties={k: f"s{i}" for k in keys}) for i in range(40)])
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        pool.map(load_conflicting_day, [(str(logs), str(warehouse), d) for d in ("2025-01-14", DAY)])
    columns = registered(warehouse, "a")
    assert sorted(name for name, _ in columns) == sorted(keys)
    for day in ("2025-01-14", DAY):
        assert checks.registry_matches_parquet(warehouse, day).passed
        assert checks.event_rows_match_tracks(warehouse, day).passed
    refresh_catalog(warehouse)
    typed = query(warehouse, f"select count(*) from a, unnest([{', '.join(keys)}]) as v(x) where x is not null")[0][0]
    discarded = query(warehouse, "select count(*) from discards")[0][0]
    assert typed + discarded == 2 * 40 * 60


def test_the_registry_commits_without_waiting_for_the_disk(warehouse):
    # A sync per transaction took 13 of the 41 s that a day of 10,000 event names took to load;
    # the Parquet files are not synced either. WAL keeps the file whole whatever happens.
    registry = SchemaRegistry(warehouse)
    try:
        assert registry.connection.execute("pragma journal_mode").fetchone() == ("wal",)
        assert registry.connection.execute("pragma synchronous").fetchone() == (1,)  # NORMAL
    finally:
        registry.close()


def open_registry_at(args: tuple[str, float]) -> bool:
    warehouse, start = args
    while time.time() < start:
        pass
    SchemaRegistry(Path(warehouse)).close()
    return True


def reading_as_an_auditor(monkeypatch, modes_that_open: tuple[str, ...]) -> None:
    """As for a user who may not write the warehouse: `os.access` says no, and SQLite opens only
    `modes_that_open` (a plain connection needs to write; a read-only one, to find or make `-shm`)."""
    monkeypatch.setattr(os, "access", lambda *_: False)
    connect = sqlite3.connect

    def as_for_a_reader(database, *args, **kwargs):
        if not str(database).endswith(modes_that_open):
            raise sqlite3.OperationalError("unable to open database file")
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", as_for_a_reader)


def test_an_emptied_registry_reads_as_a_new_one_and_the_check_names_the_columns_it_lacks(logs, warehouse):
    load(logs, warehouse, {DAY: [track("A", properties={"n": 1})]})
    (warehouse / "_registry.sqlite").write_bytes(b"")
    assert read_registry(warehouse) == {}
    outcome = checks.registry_matches_parquet(warehouse, DAY)
    assert not outcome.passed and outcome.description.startswith("a.n is Int64 in ") and "registry says nothing" in outcome.description


def test_an_auditor_reads_a_registry_no_writer_has_open_as_the_file_it_is(logs, warehouse, monkeypatch):
    load(logs, warehouse, {DAY: [track("A", properties={"n": 1, "s": "x"})]})
    reading_as_an_auditor(monkeypatch, ("?immutable=1",))
    assert read_registry(warehouse) == {"a": [Column("n", "int", 0), Column("s", "string", 1)]}


def reading_while_a_load_writes(
    monkeypatch, warehouse: Path, reads_seen: list[str], as_first_reads, open_writers: list | None = None,
) -> None:
    """As `reading_as_an_auditor` (the file is read as it is), where a load registers a column
    while the auditor's read is under way: the first read gets what `as_first_reads` makes of it.
    The load ends there, folding its `-wal` in, unless `open_writers` is given to hold it."""
    writers_connect = sqlite3.connect
    reading_as_an_auditor(monkeypatch, (registry.IMMUTABLE, "?mode=ro"))
    connect = sqlite3.connect

    def torn(database, *args, **kwargs):
        if "?" not in str(database):  # the load's own connection, not a reader's URI
            return writers_connect(database, *args, **kwargs)
        reads_seen.append(database)
        if len(reads_seen) > 1:
            return connect(database, *args, **kwargs)
        stale = warehouse.parent / "before-the-load.sqlite"
        shutil.copy(warehouse / "_registry.sqlite", stale)
        writer = SchemaRegistry(warehouse, loading_day=DAY)
        writer.register("a", {"t": (("t",), "bool")})
        writer.close() if open_writers is None else open_writers.append(writer)
        return as_first_reads(connect(f"{stale.resolve().as_uri()}{registry.IMMUTABLE}", *args, **kwargs))

    monkeypatch.setattr(sqlite3, "connect", torn)


def test_an_auditor_reads_again_a_registry_a_load_changed_during_the_read(logs, warehouse, monkeypatch):
    load(logs, warehouse, {DAY: [track("A", properties={"n": 1})]})
    reads: list[str] = []
    reading_while_a_load_writes(monkeypatch, warehouse, reads, lambda stale: stale)
    assert read_registry(warehouse) == {"a": [Column("n", "int", 0), Column("t", "bool", 1)]}
    assert len(reads) == 2


def test_an_auditor_reads_again_through_the_wal_of_a_load_that_began_during_the_read(logs, warehouse, monkeypatch):
    load(logs, warehouse, {DAY: [track("A", properties={"n": 1})]})
    reads: list[str] = []
    writers: list[SchemaRegistry] = []
    reading_while_a_load_writes(monkeypatch, warehouse, reads, lambda stale: stale, writers)
    try:
        assert read_registry(warehouse) == {"a": [Column("n", "int", 0), Column("t", "bool", 1)]}
        assert reads[-1].endswith("?mode=ro")
    finally:
        writers[0].close()


def test_a_read_torn_by_a_load_is_read_again_not_called_damage(logs, warehouse, monkeypatch):
    load(logs, warehouse, {DAY: [track("A", properties={"n": 1})]})

    def malformed(stale):
        stale.close()
        error = sqlite3.DatabaseError("database disk image is malformed")
        error.sqlite_errorcode = sqlite3.SQLITE_CORRUPT
        raise error

    reading_while_a_load_writes(monkeypatch, warehouse, [], malformed)
    assert read_registry(warehouse) == {"a": [Column("n", "int", 0), Column("t", "bool", 1)]}


def test_an_auditor_is_told_to_wait_for_a_load_that_changes_the_registry_on_every_read(logs, warehouse, monkeypatch):
    load(logs, warehouse, {DAY: [track("A", properties={"n": 1})]})
    reading_as_an_auditor(monkeypatch, (registry.IMMUTABLE,))
    path = warehouse / "_registry.sqlite"
    connect = sqlite3.connect

    def written_each_time(database, *args, **kwargs):
        os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns + 1_000_000))
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", written_each_time)
    with pytest.raises(registry.UnreadableRegistry, match=r"kept changing over 3 tries to read it, as a load wrote it: rerun when the load is done$"):
        read_registry(warehouse)


def test_an_auditor_reads_the_columns_a_running_writer_has_only_in_its_wal(logs, warehouse, monkeypatch):
    load(logs, warehouse, {DAY: [track("A", properties={"n": 1})]})
    writer = SchemaRegistry(warehouse, loading_day=DAY)  # a load in progress: -wal and -shm exist
    writer.register("a", {"t": (("t",), "bool")})
    reading_as_an_auditor(monkeypatch, ("?mode=ro",))
    try:
        assert read_registry(warehouse) == {"a": [Column("n", "int", 0), Column("t", "bool", 1)]}
    finally:
        writer.close()


def test_an_auditor_waits_out_a_wal_a_writer_leaves_without_its_shm_for_a_moment(logs, warehouse, monkeypatch):
    load(logs, warehouse, {DAY: [track("A", properties={"n": 1})]})
    wal = warehouse / "_registry.sqlite-wal"
    wal.write_bytes(b"")  # as while a writer's connection closes: its -shm is gone, its -wal not yet
    reading_as_an_auditor(monkeypatch, (registry.IMMUTABLE,))
    monkeypatch.setattr(registry.time, "sleep", lambda _: wal.unlink())  # the close ends during the pause
    assert read_registry(warehouse) == {"a": [Column("n", "int", 0)]}


def test_an_auditor_is_told_who_can_read_a_wal_a_killed_writer_left(logs, warehouse, monkeypatch):
    load(logs, warehouse, {DAY: [track("A", properties={"n": 1})]})
    (warehouse / "_registry.sqlite-wal").write_bytes(b"")  # its -shm gone: a read-only reader would have to make one
    reading_as_an_auditor(monkeypatch, ())
    with pytest.raises(registry.UnreadableRegistry, match="only a user who may write the warehouse can fold in"):
        read_registry(warehouse)


def test_runs_starting_together_on_a_new_warehouse_all_open_the_registry(tmp_path):
    # A backfill starts several partitions at once on an empty warehouse: SQLite refuses a
    # journal-mode change while another connection holds the file, whatever its busy timeout.
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        for trial in range(20):
            start = time.time() + 0.05
            assert pool.map(open_registry_at, [(str(tmp_path / f"w{trial}"), start)] * 4) == [True] * 4


def test_catalog_is_rebuilt_only_when_a_table_or_column_changes(logs, warehouse):
    load(logs, warehouse, {DAY: [track("A", properties={"n": 1})]})
    database = warehouse / "warehouse.duckdb"
    built = database.stat().st_ino
    load(logs, warehouse, {"2025-01-14": [track("A", properties={"n": 2})]})
    assert database.stat().st_ino == built
    assert query(warehouse, "select count(*) from a") == [(2,)]
    load(logs, warehouse, {"2025-01-13": [track("A", properties={"n": 3, "new": "x"}), track("B")]})
    assert database.stat().st_ino != built
    assert query(warehouse, "select count(new), (select count(*) from b) from a") == [(1, 1)]


def scans_recorded(monkeypatch) -> list[Path]:
    """Every event Parquet file whose footer a catalog refresh reads from now on."""
    scanned, scan = [], catalog.scanned_columns

    def recorded(files: list[Path]) -> dict[str, list[str]]:
        scanned.extend(files)
        return scan(files)

    monkeypatch.setattr(catalog, "scanned_columns", recorded)
    return scanned


def test_a_catalog_refresh_reads_only_the_footers_of_folders_changed_since_the_last(logs, warehouse, monkeypatch):
    # A partition run refreshes the catalog: reading every day's footers made each run of a
    # year-long backfill slower than the one before.
    load(logs, warehouse, {DAY: [track("A", properties={"n": 1}), track("B")]})
    scanned = scans_recorded(monkeypatch)
    load(logs, warehouse, {"2025-01-16": [track("A", properties={"n": 2, "new": "x"})]})
    assert scanned and {path.parent.name for path in scanned} == {"received_date=2025-01-16"}
    assert query(warehouse, "select count(new), (select count(*) from b) from a") == [(1, 1)]
    scanned.clear()
    refresh_catalog(warehouse)
    assert scanned == []


def test_a_damaged_event_file_of_one_day_fails_no_other_days_load_and_is_named(logs, warehouse, caplog):
    # A partition run refreshes the catalog after publishing: it failed on another day's damaged
    # footer, so Dagster recorded a failure for a day already published, and so on for every day after.
    load(logs, warehouse, {DAY: [track("A", properties={"n": 1})]})
    (part,) = partition_dir(warehouse / "events", "a", DAY).glob("*.parquet")
    part.write_bytes(part.read_bytes()[:100])
    load(logs, warehouse, {"2025-01-16": [track("A", properties={"n": 2})]})
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "was not rebuilt" in r.getMessage()]
    assert said and said[0].endswith(f"rerun {DAY} (`etl run --date {DAY}`) to rewrite events/a/received_date={DAY}/{part.name}")
    assert query(warehouse, "select count(*) from tracks") == [(2,)]


def test_a_catalog_rebuild_error_that_names_no_warehouse_file_still_fails_the_load(logs, warehouse, monkeypatch):
    # A full disk writing warehouse.duckdb is no other day's damage: the run must not pass it over.
    load(logs, warehouse, {DAY: [track("A")]})

    def disk_full(_):
        raise duckdb.IOException("IO Error: Could not write file \"warehouse.duckdb.tmp\": No space left on device")

    monkeypatch.setattr(catalog, "rebuild_catalog", disk_full)
    with pytest.raises(duckdb.IOException, match="No space left"):
        refresh_catalog(warehouse)


def test_a_damaged_mart_is_named_with_the_command_that_rewrites_it(warehouse):
    error = duckdb.InvalidInputException(f"No magic bytes found at end of file '{warehouse.resolve()}/marts/fct_orders/fct_orders-1.parquet'")
    assert catalog.damaged_file_advice(warehouse, error) == f"run `etl models --warehouse {warehouse}` to rewrite marts/fct_orders/fct_orders-1.parquet"


def test_the_footer_cache_skips_a_file_named_like_a_day_folder_and_a_folder_named_like_a_part(logs, warehouse):
    load(logs, warehouse, {DAY: [track("A", properties={"n": 1})]})
    (warehouse / "events" / "a" / "received_date=notes.txt").write_text("left here by hand")
    (partition_dir(warehouse / "events", "a", DAY) / "copy.parquet").mkdir()  # nor a folder named like a part
    assert "n" in catalog.event_columns_written(warehouse)["a"]


def test_an_event_file_rewritten_under_its_name_is_read_again_even_with_its_old_size_and_time(logs, warehouse):
    load(logs, warehouse, {DAY: [track("A", properties={"n": 1})]})
    (part,) = partition_dir(warehouse / "events", "a", DAY).glob("*.parquet")
    before = part.stat()
    pl.read_parquet(part).rename({"n": "m"}).write_parquet(part)  # as many bytes
    os.utime(part, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert part.stat().st_size == before.st_size
    columns = catalog.event_columns_written(warehouse)["a"]
    assert "m" in columns and "n" not in columns


def test_a_hidden_part_counts_for_its_tables_columns_as_the_views_read_its_rows(logs, warehouse):
    load(logs, warehouse, {DAY: [track("A", properties={"n": 1})], "2025-01-16": [track("A", properties={"n": 2, "new": "x"})]})
    (part,) = partition_dir(warehouse / "events", "a", "2025-01-16").glob("*.parquet")
    part.rename(part.with_name(f".{part.name}"))
    refresh_catalog(warehouse)
    assert query(warehouse, "select count(*), count(new) from a") == [(2, 1)]


def test_footers_are_scanned_a_batch_of_files_at_a_time_with_the_same_columns(logs, warehouse, monkeypatch):
    # A day's folder may hold several parts (a part per 100,000 rows): its columns are all of theirs.
    load(logs, warehouse, {DAY: [track("A", properties={"n": 1}), track("B", properties={"m": 1})], "2025-01-16": [track("A", properties={"new": "x"})]})
    (part,) = partition_dir(warehouse / "events", "a", DAY).glob("*.parquet")
    pl.read_parquet(part).rename({"n": "second_part"}).write_parquet(part.with_name("part-second.parquet"))
    expected = catalog.event_columns_written(warehouse)
    (warehouse / catalog.COLUMNS_CACHE_FILE).unlink()
    monkeypatch.setattr(catalog, "FILES_PER_SCAN", 1)
    assert catalog.event_columns_written(warehouse) == expected and {"n", "second_part", "new"} <= expected["a"]


@pytest.mark.parametrize("damage", [
    lambda cache: "{",
    lambda cache: "[]",
    lambda cache: json.dumps({**json.loads(cache), "column_sets": []}),  # folders point at no list
    lambda cache: json.dumps({**json.loads(cache), "column_sets": [[1]]}),  # a list of no names
], ids=["cut short", "a list", "no column lists", "numbers for names"])
def test_a_damaged_columns_cache_is_read_as_no_cache(logs, warehouse, damage):
    load(logs, warehouse, {DAY: [track("A", properties={"n": 1})]})
    expected = catalog.event_columns_written(warehouse)
    cache = warehouse / catalog.COLUMNS_CACHE_FILE
    cache.write_text(damage(cache.read_text()))
    assert catalog.event_columns_written(warehouse) == expected and "n" in expected["a"]


@pytest.mark.parametrize("damage", [
    lambda database: database.write_bytes(b"\0" * 7_000 + database.read_bytes()[7_000:]),
    lambda database: database.write_bytes(b""),
], ids=["overwritten", "emptied"])
def test_a_damaged_catalog_is_rebuilt_though_no_table_changed(logs, warehouse, damage):
    load(logs, warehouse, {DAY: [track("A", properties={"n": 1})]})
    damage(warehouse / "warehouse.duckdb")
    refresh_catalog(warehouse)
    assert query(warehouse, "select count(*) from a") == [(1,)]


def test_an_event_named_like_a_table_never_hides_the_event_whose_name_it_would_take(logs, warehouse):
    load(logs, warehouse, {DAY: [track("Tracks", properties={"a": 1}), track("event_tracks", properties={"b": 2})]})
    assert query(warehouse, "select b from event_tracks") == [(2,)]
    assert query(warehouse, "select a from event_tracks_2") == [(1,)]
    assert query(warehouse, "select a from events.tracks") == [(1,)]


def test_an_event_alias_never_hides_a_model_of_that_name(logs, warehouse):
    (warehouse / "marts" / "event_tracks").mkdir(parents=True)
    pl.DataFrame({"model": ["yes"]}).write_parquet(warehouse / "marts" / "event_tracks" / "m.parquet")
    load(logs, warehouse, {DAY: [track("Tracks", properties={"a": 1})]})
    assert query(warehouse, "select model from event_tracks") == [("yes",)]
    assert query(warehouse, "select a from event_tracks_2") == [(1,)]


def test_event_views_answer_from_a_database_that_attaches_the_warehouse_as_events(logs, warehouse):
    # The README has analysts attach the warehouse to their own database. A view reading through
    # `events.<name>` would be ambiguous there between the schema and a database named `events`.
    load(logs, warehouse, {DAY: [track("Order Completed", properties={"a": 1})]})
    with duckdb.connect() as analyst:
        analyst.execute(f"attach '{warehouse / 'warehouse.duckdb'}' as events (read_only)")
        assert analyst.execute("select a from events.main.order_completed").fetchall() == [(1,)]
        assert analyst.execute("select a from events.events.order_completed").fetchall() == [(1,)]


def test_an_event_never_hides_a_model_whose_name_differs_only_in_case(logs, warehouse):
    # DuckDB compares view names without ASCII case.
    (warehouse / "marts" / "Order_Completed").mkdir(parents=True)
    pl.DataFrame({"model": ["yes"]}).write_parquet(warehouse / "marts" / "Order_Completed" / "m.parquet")
    load(logs, warehouse, {DAY: [track("Order Completed")]})
    assert query(warehouse, 'select model from "Order_Completed"') == [("yes",)]
    assert query(warehouse, "select count(*) from event_order_completed") == [(1,)]


def test_a_quarantined_duplicate_never_names_types_or_discards_a_column(logs, warehouse):
    load(logs, warehouse, {DAY: [
        track("A", messageId="m1", properties={"n": 1}),
        track("A", messageId="m1", properties={"n": "text", "only_in_duplicate": True}),
    ]})
    assert registered(warehouse, "a") == [("n", "int")]
    assert query(warehouse, "select count(*) from discards") == [(0,)]
    assert query(warehouse, "select message_id, n from a") == [("m1", 1)]
