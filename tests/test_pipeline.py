"""A received day through the whole library: what `tracks` and `quarantine` hold, and how they are published."""

from __future__ import annotations

import datetime as dt
import fcntl
import gzip
import json
import logging
import multiprocessing
import os
import pickle
import re
import signal
import struct
import sys
import threading
import time
import types
from collections import Counter
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import polars as pl
import pytest
from hypothesis import example, given, settings, strategies as st
from conftest import line, query, track, write_log

from etl import checks, normalize, pipeline, read, registry, validate
from etl.catalog import refresh_catalog
from etl.events import EventProperties
from etl.pipeline import ChunkWorkers, MissingLogs, PreparedChunk, load_day, prepare_chunk, prepared_in_order
from etl.read import read_chunks
from etl.validate import ValidatedChunk
from etl import write
from etl.write import WRITER_LOCK, PartitionWriter, file_lock, partition_dir

DAY = "2025-01-15"
UTC = dt.UTC


def context_columns(contexts: list) -> list[pl.Series]:
    """The context columns of `contexts` flattened at once, as one batch of a chunk."""
    flattener = normalize.ContextFlattener(len(contexts))
    flattener.add(contexts)
    return flattener.series()


def tracks_rows(warehouse: Path, day: str = DAY) -> pl.DataFrame:
    """All parts of a day in write order (parts may differ in their `context_` columns)."""
    parts = sorted(partition_dir(warehouse, "tracks", day).glob("*.parquet"))
    return pl.concat([pl.read_parquet(p) for p in parts], how="diagonal_relaxed")


def quarantine_rows(warehouse: Path, day: str = DAY) -> pl.DataFrame:
    return pl.read_parquet(partition_dir(warehouse, "quarantine", day) / "*.parquet")


def test_accepted_event_has_typed_standard_fields_and_flattened_context(logs, warehouse):
    write_log(logs / DAY / "web.ndjson", [track(
        "Order Completed", user_id=4242, anonymousId="a-1", messageId="m-1",
        timestamp="2025-01-15T10:00:00.123Z", receivedAt="2025-01-15T10:00:01Z",
        properties={"revenue": "19.99", "currency": "eur", "productName": "Mug"},
        context={"page": {"url": "https://shop.example/checkout"}, "campaign": {"source": "google"}, "active": True},
    )])
    load_day(logs, warehouse, DAY)
    row = tracks_rows(warehouse).row(0, named=True)
    assert row["message_id"] == "m-1"
    assert row["event"] == "order_completed"
    assert row["event_text"] == "Order Completed"
    assert row["user_id"] == "4242"
    assert row["anonymous_id"] == "a-1"
    assert row["timestamp"] == dt.datetime(2025, 1, 15, 10, 0, 0, 123000, tzinfo=UTC)
    assert row["event_date"] == dt.date(2025, 1, 15)
    assert row["revenue"] == pytest.approx(19.99)
    assert row["currency"] == "EUR"
    assert row["context_page_url"] == "https://shop.example/checkout"
    assert row["context_campaign_source"] == "google"
    assert row["context_active"] == "true"
    assert row["properties"] == '{"revenue":"19.99","currency":"eur","productName":"Mug"}'
    assert (row["source_file"], row["line_number"], row["batch_index"]) == (f"{DAY}/web.ndjson", 1, None)


def test_two_context_keys_of_one_message_with_one_column_name_both_keep_their_value(logs, warehouse):
    write_log(logs / DAY / "web.ndjson", [
        track("A", messageId="both", context={"pageUrl": "/flat", "page_url": "/snake", "page": {"url": "/nested"}}),
        track("A", messageId="one", context={"page": {"url": "/only"}}),
    ])
    load_day(logs, warehouse, DAY)
    rows = {r["message_id"]: r for r in tracks_rows(warehouse).iter_rows(named=True)}
    both = rows["both"]
    assert [both["context_page_url"], both["context_page_url_2"], both["context_page_url_3"]] == ["/flat", "/snake", "/nested"]
    assert (rows["one"]["context_page_url"], rows["one"]["context_page_url_2"]) == ("/only", None)
    assert checks.schema_matches_contract(warehouse, DAY).passed


def context_values(row: dict) -> dict[str, str]:
    """Every context value of a `tracks` row, from its columns and its `context_other` object."""
    values = {k: v for k, v in row.items() if k.startswith("context_") and k != "context_other" and v is not None}
    return {**values, **json.loads(row["context_other"] or "{}")}


def test_context_keys_past_the_column_cap_keep_their_values_in_context_other(logs, warehouse, monkeypatch):
    monkeypatch.setattr(normalize, "MAX_CONTEXT_COLUMNS", 3)
    write_log(logs / DAY / "web.ndjson", [
        track("A", messageId="m1", context={"a": 1, "b": {"c": "x"}}),
        track("A", messageId="m2", context={"d": "y", "e": "z", "a": 2}),
    ])
    load_day(logs, warehouse, DAY, workers=1)
    rows = {r["message_id"]: r for r in tracks_rows(warehouse).iter_rows(named=True)}
    assert [c for c in tracks_rows(warehouse).columns if c.startswith("context")] == [
        "context_a", "context_b_c", "context_d", "context_other"]
    assert context_values(rows["m1"]) == {"context_a": "1", "context_b_c": "x"}
    assert context_values(rows["m2"]) == {"context_a": "2", "context_d": "y", "context_e": "z"}
    assert rows["m2"]["context_other"] == '{"context_e":"z"}'
    assert checks.schema_matches_contract(warehouse, DAY).passed


@pytest.mark.parametrize("chunk_bytes", [200, 1 << 20], ids=["across chunks", "in one chunk"])
def test_a_context_key_named_other_never_takes_the_overflow_column(logs, warehouse, monkeypatch, chunk_bytes):
    monkeypatch.setattr(normalize, "MAX_CONTEXT_COLUMNS", 3)
    write_log(logs / DAY / "a.ndjson", [
        track("A", messageId="m1", context={"a": 1, "b": 2, "c": 3, "d": 4}),
        track("A", messageId="m2", context={"other": "hello", "zz": 1}),
    ])
    load_day(logs, warehouse, DAY, chunk_bytes=chunk_bytes, workers=1)
    rows = {r["message_id"]: r for r in tracks_rows(warehouse).iter_rows(named=True)}
    assert context_values(rows["m1"]) == {"context_a": "1", "context_b": "2", "context_c": "3", "context_d": "4"}
    assert context_values(rows["m2"]) == {"context_other_2": "hello", "context_zz": "1"}


def test_clashing_context_keys_are_named_in_key_order_each_object_after_its_levels_values():
    series = context_columns([{"a": {"b_c": "first"}, "a_b": {"c": "second"}, "a_b_c": "third"}])
    assert {s.name: s.to_list() for s in series} == {
        "context_a_b_c": ["third"], "context_a_b_c_2": ["first"], "context_a_b_c_3": ["second"],
    }


def test_objects_below_context_other_keep_their_names():
    series = context_columns([{"other": {"x": 1}}, {"other": "leaf"}])
    assert {s.name: s.to_list() for s in series} == {"context_other_x": ["1", None], "context_other_2": [None, "leaf"]}


CONTEXT_KEYS = st.sampled_from(["a", "A", "b", "aB", "a_b", "other"])  # several map to one name
CONTEXT_LEAVES = st.none() | st.text(max_size=2) | st.integers(-5, 5) | st.booleans() | st.lists(st.integers(0, 2), max_size=2)
CONTEXTS = st.recursive(CONTEXT_LEAVES, lambda inner: st.dictionaries(CONTEXT_KEYS, inner, max_size=4), max_leaves=12)


def context_leaves(node: dict, prefix: str = "context") -> list[tuple[str, str]]:
    """(column name the path asks for, text) of every non-null leaf, in no particular order."""
    leaves = []
    for key, value in node.items():
        if isinstance(value, dict):
            leaves += context_leaves(value, normalize.context_path_name(prefix, key))
        elif value is not None:
            leaves.append((normalize.context_column_name(prefix, key), normalize.json_text(value)))
    return leaves


@settings(max_examples=300)
@given(st.lists(st.dictionaries(CONTEXT_KEYS, CONTEXTS, max_size=5) | st.none(), min_size=1, max_size=6))
def test_every_context_value_lands_once_in_its_paths_column_or_a_numbered_one(contexts):
    columns = {series.name: series.to_list() for series in context_columns(contexts)}
    for row, context in enumerate(contexts):
        expected = sorted(context_leaves(context or {}))
        asked = Counter(name for name, _ in expected)
        cells = [
            (name if name in asked else re.sub(r"_[0-9]+$", "", name), values[row])
            for name, values in columns.items() if values[row] is not None
        ]
        assert sorted(cells) == expected
        # A name asked for by one leaf of the row only is that leaf's own column, unnumbered.
        for name, text in expected:
            if asked[name] == 1:
                assert columns[name][row] == text


def prepared_in_batches(lines: list, lines_per_batch: int) -> tuple[pl.DataFrame, dict]:
    chunk = read.LineChunk("a.ndjson", 1, b"\n".join(map(line, lines)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validate, "LINES_PER_BATCH", lines_per_batch)
        prepared = prepare_chunk(chunk, dt.date(2025, 1, 15))
    return prepared.tracks, {event: (sink.positions, sink.cells) for event, sink in prepared.gathered.items()}


MESSAGES = st.builds(
    lambda event, context, properties, bad_time: track(
        event, context=context, properties=properties, **({"timestamp": "2025-02-30T00:00:00Z"} if bad_time else {}),
    ),
    st.sampled_from(["A", "B", "b"]),
    CONTEXTS,
    st.dictionaries(CONTEXT_KEYS, CONTEXT_LEAVES | st.dictionaries(CONTEXT_KEYS, CONTEXT_LEAVES, max_size=2), max_size=3),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(MESSAGES | st.lists(MESSAGES, min_size=1, max_size=4).map(lambda batch: {"batch": batch}), min_size=1, max_size=12))
def test_context_and_properties_walked_batch_by_batch_as_validated_are_those_of_the_whole_chunk(lines):
    # Batches of 1-3 lines: columns open in later batches, and envelopes outgrow the rows reserved
    # per line; a timestamp quarantined after its walk (no 30 February) makes the chunk walk anew.
    whole_tracks, whole_gathered = prepared_in_batches(lines, 10_000)
    for lines_per_batch in (1, 2, 3):
        tracks, gathered = prepared_in_batches(lines, lines_per_batch)
        assert tracks.equals(whole_tracks) and tracks.columns == whole_tracks.columns
        assert gathered == whole_gathered


def test_a_chunk_never_builds_more_context_columns_than_the_cap(monkeypatch):
    monkeypatch.setattr(normalize, "MAX_CONTEXT_COLUMNS", 3)
    series = context_columns([{f"key{i}": i} for i in range(1000)])
    assert [s.name for s in series] == ["context_key0", "context_key1", "context_key2", "context_other"]
    assert series[-1][999] == '{"context_key999":"999"}' and series[-1][2] is None


class CountedLookups(dict):
    lookups = 0

    def get(self, *args):
        CountedLookups.lookups += 1
        return super().get(*args)


def test_many_keys_of_one_message_mapping_to_one_name_are_named_in_linear_steps(monkeypatch):
    # `a!`, `!a`, `A#`, … are all `context_a`: each key searched the numbered names from `_2` on,
    # k² steps a message (a 55 KB line of 1,000 such messages ran past 300 s).
    monkeypatch.setattr(normalize, "MAX_CONTEXT_COLUMNS", 100)
    keys = ["a"] + [f"a{'!' * n}" for n in range(1, 400)]
    flattener = normalize.ContextFlattener(2)
    flattener.out.columns = CountedLookups()
    flattener.add([{key: key for key in keys}] * 2)
    series = {s.name: s.to_list() for s in flattener.series()}
    assert series["context_a"] == ["a", "a"] and series["context_a_100"] == ["a" + "!" * 99] * 2
    assert json.loads(series["context_other"][1]) == {f"context_a_{n + 1}": "a" + "!" * n for n in range(100, 400)}
    assert CountedLookups.lookups < 20 * len(keys)


def test_keys_past_the_cap_that_map_to_one_name_are_numbered_in_linear_steps(monkeypatch):
    # Past the cap (or too long for a column) they are keys of `context_other`, whose numbering
    # searched from `_2` on for each: 500 distinct keys first made a 2,800-key envelope 100 s again.
    monkeypatch.setattr(normalize, "MAX_CONTEXT_COLUMNS", 100)
    steps, unique_name, next_free = [], normalize.unique_name, normalize.ContextColumns.next_free

    class Counted:
        def __init__(self, inner) -> None:
            self.inner = inner

        def __contains__(self, name: str) -> bool:
            steps.append(name)
            return name in self.inner

    monkeypatch.setattr(normalize, "unique_name", lambda base, taken: unique_name(base, Counted(taken)))
    monkeypatch.setattr(normalize.ContextColumns, "next_free", lambda self, name, row, taken: next_free(
        self, name, row, lambda candidate: steps.append(candidate) or taken(candidate),
    ))
    context = {f"k{n}": "v" for n in range(100)} | {"z" + "!" * n: str(n) for n in range(400)}
    series = {s.name: s.to_list() for s in context_columns([context, context])}
    assert json.loads(series["context_other"][1]) == {"context_z": "0"} | {f"context_z_{n + 1}": str(n) for n in range(1, 400)}
    assert len(steps) < 10 * len(context)


def test_a_context_key_too_long_for_a_column_name_keeps_its_value_in_context_other():
    # Every event table carries every context column: 500 keys of 30,000 characters made 50-row
    # files of 65 MB and a 1.8 GB warehouse.duckdb.
    long_key = "k" * 300
    series = {s.name: s.to_list() for s in context_columns([{long_key: "v", "page": "p"}])}
    assert series == {"context_page": ["p"], "context_other": [f'{{"context_{long_key}":"v"}}']}


def test_the_context_column_cap_holds_for_the_whole_day_across_chunks(logs, warehouse, monkeypatch):
    monkeypatch.setattr(normalize, "MAX_CONTEXT_COLUMNS", 3)
    write_log(logs / DAY / "a.ndjson", [track("A", messageId=f"m{i}", context={f"k{i}": i, "shared": "s"}) for i in range(6)])
    load_day(logs, warehouse, DAY, chunk_bytes=200, workers=1)
    tracks = tracks_rows(warehouse)
    assert {c for c in tracks.columns if c.startswith("context") and c != "context_other"} == {"context_k0", "context_shared", "context_k1"}
    for i, row in enumerate(tracks.sort("line_number").iter_rows(named=True)):
        assert context_values(row) == {f"context_k{i}": str(i), "context_shared": "s"}


@pytest.mark.parametrize("chunk_bytes", [60, 1 << 20], ids=["a chunk per line", "one chunk"])
def test_the_context_keys_that_stay_columns_are_the_first_seen_wherever_chunks_end(logs, warehouse, monkeypatch, chunk_bytes):
    # Chunk by chunk, the day took a chunk's new names in name order (`w` before `y`), and a name
    # a chunk's own cap had spilled (`z` below) stayed in `context_other` though the day had its
    # column: where chunks ended (and so the worker count) decided where a value landed.
    monkeypatch.setattr(normalize, "MAX_CONTEXT_COLUMNS", 3)
    write_log(logs / DAY / "a.ndjson", [
        track("A", messageId="m1", context={"z": 1}),
        track("A", messageId="m2", context={"y": 2, "x": 2, "w": 2, "z": 2}),
    ])
    load_day(logs, warehouse, DAY, chunk_bytes=chunk_bytes, workers=1)
    tracks = tracks_rows(warehouse)
    rows = {r["message_id"]: r for r in tracks.iter_rows(named=True)}
    assert {c for c in tracks.columns if c.startswith("context")} == {"context_z", "context_y", "context_x", "context_other"}
    assert rows["m2"]["context_z"] == "2" and rows["m2"]["context_other"] == '{"context_w":"2"}'
    assert context_values(rows["m2"]) == {"context_y": "2", "context_x": "2", "context_w": "2", "context_z": "2"}


def day_context(contexts: list, cuts: list[int], cap: int) -> list[dict]:
    """Each row's context columns and `context_other` text once the day's cap is applied, the
    rows cut into chunks at `cuts` as a load would flatten and cap them."""
    day, rows = set(), []
    bounds = sorted({0, len(contexts), *(cut for cut in cuts if cut < len(contexts))})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(normalize, "MAX_CONTEXT_COLUMNS", cap)
        for start, end in zip(bounds, bounds[1:]):
            flattener = normalize.ContextFlattener(end - start)
            flattener.add(contexts[start:end])
            frame = pl.DataFrame({"row": range(start, end)}).hstack(flattener.series())
            frame = normalize.capped_context(frame, day, flattener.names_in_order())
            rows += [{k: v for k, v in row.items() if k != "row" and v is not None} for row in frame.iter_rows(named=True)]
    assert len(day) <= cap
    return rows


# Keys whose names clash, some with the numbered names clashes take (`a_2`, `a.2`, `a` > `2`).
NUMBERED_KEYS = st.sampled_from(["a", "A", "a!", "a_2", "a.2", "2", "b", "other"])
NUMBERED_CONTEXTS = st.recursive(CONTEXT_LEAVES, lambda inner: st.dictionaries(NUMBERED_KEYS, inner, max_size=4), max_leaves=12)


@settings(max_examples=300)
@given(
    st.lists(st.dictionaries(CONTEXT_KEYS, CONTEXTS, max_size=5) | st.dictionaries(NUMBERED_KEYS, NUMBERED_CONTEXTS, max_size=5), min_size=1, max_size=8),
    st.lists(st.integers(1, 7), max_size=4), st.integers(1, 4),
)
@example(contexts=[{"x_2": "0"}, {"x": "1", "x!": "2"}], cuts=[1], cap=1)  # `x!` took `x_2` twice over
def test_where_chunks_end_never_changes_where_a_context_value_lands(contexts, cuts, cap):
    assert day_context(contexts, cuts, cap) == day_context(contexts, [], cap)


@pytest.mark.parametrize("chunk_bytes", [60, 1 << 20], ids=["a chunk per line", "one chunk"])
def test_a_context_key_only_duplicates_sent_is_no_column_wherever_chunks_end(logs, warehouse, chunk_bytes):
    # A duplicate in a chunk of its own writes no rows, so its keys made no column; in the
    # chunk of the message it repeats, they made a column of NULLs in `tracks` and event tables.
    write_log(logs / DAY / "a.ndjson", [
        track("A", messageId="m1", context={"a": 1}), track("A", messageId="m1", context={"zz": 1}),
        track("B", messageId="m2", context={"b": 2}),
    ])
    load_day(logs, warehouse, DAY, chunk_bytes=chunk_bytes, workers=1)
    for table in ("tracks", "events/a", "events/b"):
        columns = {c for part in partition_dir(warehouse, table, DAY).glob("*.parquet") for c in pl.read_parquet_schema(part)}
        assert {c for c in columns if c.startswith("context")} == {"context_a", "context_b"}, table


def test_context_other_holds_its_keys_sorted_by_name(monkeypatch):
    # The same text whichever keys a chunk's cap spilled and which the day's cap folded in later.
    monkeypatch.setattr(normalize, "MAX_CONTEXT_COLUMNS", 1)
    series = {s.name: s.to_list() for s in context_columns([{"b": 1, "c": 1, "a": 1}])}
    assert series == {"context_b": ["1"], "context_other": ['{"context_a":"1","context_c":"1"}']}


def test_a_clashing_keys_name_does_not_depend_on_which_names_the_cap_spilled(monkeypatch):
    # `x!` and `x!!` both map to `context_x`: the next free name skips `context_x_3`, taken in
    # this row whether as a column or, past the cap, as a key of `context_other`.
    contexts = [{"q": 0, "x": 1, "x!": 2}, {"x": "a", "x!": "b", "x_3": "c", "x!!": "d"}]

    def names_and_values(cap: int) -> list[dict[str, str]]:
        monkeypatch.setattr(normalize, "MAX_CONTEXT_COLUMNS", cap)
        series = {s.name: s.to_list() for s in context_columns(contexts)}
        rows = []
        for row in range(len(contexts)):
            values = {name: texts[row] for name, texts in series.items() if name != "context_other" and texts[row] is not None}
            rows.append(values | json.loads((series.get("context_other") or [None] * len(contexts))[row] or "{}"))
        return rows

    assert names_and_values(3) == names_and_values(100)
    assert names_and_values(3)[1] == {"context_x": "a", "context_x_2": "b", "context_x_3": "c", "context_x_4": "d"}


def test_a_context_that_is_not_an_object_is_kept_as_text_and_passes_the_schema_check(logs, warehouse):
    write_log(logs / DAY / "a.ndjson", [track(context="mobile-app"), track(context=[1, 2])])
    load_day(logs, warehouse, DAY)
    refresh_catalog(warehouse)
    assert tracks_rows(warehouse)["context"].to_list() == ["mobile-app", "[1,2]"]
    assert query(warehouse, "select context from product_viewed order by line_number") == [("mobile-app",), ("[1,2]",)]
    assert checks.schema_matches_contract(warehouse, DAY).passed
    assert checks.registry_matches_parquet(warehouse, DAY).passed


def test_missing_currency_means_usd(logs, warehouse):
    write_log(logs / DAY / "a.ndjson", [track(properties={"revenue": 5})])
    load_day(logs, warehouse, DAY)
    assert tracks_rows(warehouse)["currency"].to_list() == ["USD"]


def test_timestamp_is_corrected_for_client_clock_skew(logs, warehouse):
    # The client clock is 10 minutes fast: sent 10:10 by its clock, received 10:00 by ours.
    write_log(logs / DAY / "a.ndjson", [track(
        originalTimestamp="2025-01-15T10:05:00Z", sentAt="2025-01-15T10:10:00Z", receivedAt="2025-01-15T10:00:00Z",
    )])
    load_day(logs, warehouse, DAY)
    assert tracks_rows(warehouse)["timestamp"].to_list() == [dt.datetime(2025, 1, 15, 9, 55, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"originalTimestamp": "2025-01-14T08:00:00Z"}, dt.datetime(2025, 1, 14, 8, tzinfo=UTC)),
        ({"properties": {"occurred_at": "2025-01-13T07:00:00Z"}}, dt.datetime(2025, 1, 13, 7, tzinfo=UTC)),
        ({"receivedAt": "2025-01-15T06:00:00Z"}, dt.datetime(2025, 1, 15, 6, tzinfo=UTC)),
    ],
)
def test_timestamp_falls_back_to_original_then_occurred_at_then_received(logs, warehouse, fields, expected):
    write_log(logs / DAY / "a.ndjson", [track(**fields)])
    load_day(logs, warehouse, DAY)
    assert tracks_rows(warehouse)["timestamp"].to_list() == [expected]


def test_original_timestamp_comes_before_occurred_at_when_both_are_sent(logs, warehouse):
    write_log(logs / DAY / "a.ndjson", [track(originalTimestamp="2025-01-14T08:00:00Z", properties={"occurred_at": "2025-01-13T07:00:00Z"})])
    load_day(logs, warehouse, DAY)
    assert tracks_rows(warehouse)["timestamp"].to_list() == [dt.datetime(2025, 1, 14, 8, tzinfo=UTC)]


def test_event_date_is_the_utc_date_of_timestamp_not_of_received_at(logs, warehouse):
    write_log(logs / DAY / "a.ndjson", [track(timestamp="2025-01-14T23:30:00-01:00", receivedAt="2025-01-16T00:10:00Z")])
    load_day(logs, warehouse, DAY)
    assert tracks_rows(warehouse)["event_date"].to_list() == [dt.date(2025, 1, 15)]


def test_a_duplicate_in_files_named_in_different_case_is_won_by_the_first_name_by_code_point(logs, warehouse):
    write_log(logs / DAY / "a.ndjson", [track(messageId="m1", event="From a")])
    write_log(logs / DAY / "B.ndjson", [track(messageId="m1", event="From B")])  # "B" < "a" by code point
    load_day(logs, warehouse, DAY)
    assert tracks_rows(warehouse).select("event_text", "source_file").rows() == [("From B", f"{DAY}/B.ndjson")]


def test_without_any_time_event_date_is_the_received_day_and_received_at_is_null(logs, warehouse):
    write_log(logs / DAY / "a.ndjson", [track()])
    load_day(logs, warehouse, DAY)
    row = tracks_rows(warehouse).row(0, named=True)
    assert (row["timestamp"], row["received_at"], row["event_date"]) == (None, None, dt.date(2025, 1, 15))


def test_late_event_keeps_the_day_it_happened(logs, warehouse):
    write_log(logs / DAY / "a.ndjson", [track(timestamp="2025-01-12T23:59:00Z")])
    load_day(logs, warehouse, DAY)
    assert tracks_rows(warehouse)["event_date"].to_list() == [dt.date(2025, 1, 12)]


def test_duplicate_message_id_first_by_file_name_then_line_wins(logs, warehouse):
    write_log(logs / DAY / "b.ndjson", [track("From B", messageId="dup")])
    write_log(logs / DAY / "a.ndjson", [track("First In A", messageId="dup"), track("Second In A", messageId="dup")])
    load_day(logs, warehouse, DAY)
    assert tracks_rows(warehouse)["event_text"].to_list() == ["First In A"]
    quarantined = quarantine_rows(warehouse).sort("source_file", "line_number")
    assert quarantined.select("source_file", "line_number", "reason").rows() == [
        (f"{DAY}/a.ndjson", 2, "duplicate_message_id"),
        (f"{DAY}/b.ndjson", 1, "duplicate_message_id"),
    ]
    assert '"From B"' in quarantined["raw"][1]


def test_duplicates_are_found_across_chunks(logs, warehouse):
    lines = [track(messageId=f"m{i % 7}", user_id=f"u{i}") for i in range(30)]
    path = write_log(logs / DAY / "a.ndjson", lines)
    assert len(list(read_chunks(path, "a.ndjson", 64))) > 20
    summary = load_day(logs, warehouse, DAY, chunk_bytes=64)
    assert sorted(tracks_rows(warehouse)["user_id"].to_list()) == sorted(f"u{i}" for i in range(7))
    assert summary.duplicates == 23


def test_duplicate_inside_a_batch_keeps_its_exact_raw_text(logs, warehouse):
    envelope = '{"batch": [ {"event":"A","userId":"u","messageId":"x"} ,  {"messageId":"x", "event":"B","userId":"u"} ]}'
    write_log(logs / DAY / "a.ndjson", [envelope])
    load_day(logs, warehouse, DAY)
    assert quarantine_rows(warehouse).select("batch_index", "raw").rows() == [(1, '{"messageId":"x", "event":"B","userId":"u"}')]


def test_a_quarantined_message_repeating_an_accepted_id_also_fails_duplicate_message_id(logs, warehouse):
    """`reasons` lists every rule that fails, and a messageId already accepted earlier is one."""
    write_log(logs / DAY / "a.ndjson", [
        track(messageId="m1"),
        {"userId": "u", "messageId": "m1"},
        track(messageId="m1", timestamp="yesterday"),
    ])
    load_day(logs, warehouse, DAY)
    assert quarantine_rows(warehouse).sort("line_number").select("line_number", "reasons", "message").rows() == [
        (2, ["missing_event", "duplicate_message_id"], "Missing required field: event (also: duplicate_message_id)"),
        (3, ["invalid_timestamp", "duplicate_message_id"],
         "timestamp not ISO-8601 (e.g. 2024-01-15T10:30:00Z) in UTC years 1–9999: 'yesterday' (also: duplicate_message_id)"),
    ]


def test_an_id_accepted_in_an_earlier_chunk_or_file_also_marks_a_quarantined_message(logs, warehouse):
    write_log(logs / DAY / "a.ndjson", [track(messageId="m1"), *[track(messageId=f"x{i}") for i in range(20)], {"messageId": "m1"}])
    write_log(logs / DAY / "b.ndjson", [{"userId": "u", "messageId": "x3"}])
    load_day(logs, warehouse, DAY, chunk_bytes=64)
    assert quarantine_rows(warehouse).sort("source_file").select("source_file", "reasons").rows() == [
        (f"{DAY}/a.ndjson", ["missing_event", "missing_identity", "duplicate_message_id"]),
        (f"{DAY}/b.ndjson", ["missing_event", "duplicate_message_id"]),
    ]


def test_an_id_accepted_only_later_or_only_quarantined_is_no_duplicate(logs, warehouse):
    envelope = {"batch": [{"userId": "u", "messageId": "b1"}, track(messageId="b1"), {"userId": "u", "messageId": "b1"}]}
    write_log(logs / DAY / "a.ndjson", [
        {"userId": "u", "messageId": "m1"}, track(messageId="m1"),
        {"userId": "u", "messageId": "q"}, {"userId": "u", "messageId": "q"},
        envelope,
    ])
    load_day(logs, warehouse, DAY)
    assert quarantine_rows(warehouse).select("line_number", "batch_index", "reasons").rows() == [
        (1, None, ["missing_event"]),
        (3, None, ["missing_event"]),
        (4, None, ["missing_event"]),
        (5, 0, ["missing_event"]),
        (5, 2, ["missing_event", "duplicate_message_id"]),
    ]


def test_a_retried_batch_is_split_once_per_line_not_once_per_duplicate(logs, warehouse, monkeypatch):
    """An SDK retry re-sends a whole batch: finding each duplicate's text must not re-tokenize the
    envelope per message (quadratic: a 4,000-message batch took two minutes)."""
    batch = json.dumps({"batch": [track(messageId=f"m{i}", user_id=f"u{i}") for i in range(50)]})
    write_log(logs / DAY / "a.ndjson", [batch, batch])
    splits = Counter()
    split = validate.batch_item_spans
    monkeypatch.setattr(validate, "batch_item_spans", lambda text: splits.update([text]) or split(text))
    summary = load_day(logs, warehouse, DAY)
    assert summary.duplicates == 50
    assert max(splits.values()) == 1
    assert quarantine_rows(warehouse).sort("batch_index")["raw"][7] == json.dumps(track(messageId="m7", user_id="u7"))


def in_provenance_order(tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    keys = ("source_file", "line_number", "batch_index", "message_id")
    return {name: rows.sort([key for key in keys if key in rows.columns], nulls_last=True) for name, rows in tables.items()}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_batch_envelope_over_the_message_budget_loads_in_parts_as_it_loads_whole(logs, tmp_path, monkeypatch, workers):
    # One 16 MB line may hold millions of messages, each taking the envelope's context: a chunk
    # stops after its message budget, inside the envelope, and the rest goes on as the next chunk.
    # Duplicates, rejects and raw texts come out as they do from the line loaded in one piece.
    envelope = {
        "sentAt": "2025-01-15T10:00:00Z", "context": {"ip": "1.1.1.1", "app": {"name": "shop"}},
        "batch": [track(messageId=f"m{n % 40}", properties={"n": n}) if n % 7 else 7 for n in range(60)],
    }
    write_log(logs / DAY / "a.ndjson", [track(messageId="m5"), envelope, "", track(messageId="m3"), {"batch": [track()] * 3}])
    whole_summary, whole = loaded_tables(logs, tmp_path / "whole", workers=workers)
    monkeypatch.setattr(read, "CHUNK_LINES", 8)  # at most 8 messages a chunk
    monkeypatch.setattr(read, "MIN_CHUNK_MESSAGES", 1)
    parts: list[tuple[int, int]] = []
    going_on = pipeline.going_on
    monkeypatch.setattr(pipeline, "going_on", lambda piece, prepared: parts.append(prepared.chunk.resume) or going_on(piece, prepared))
    summary, in_parts = loaded_tables(logs, tmp_path / "in-parts", workers=workers)
    assert [resume for resume in parts if resume is not None][:3] == [(1, 7), (1, 15), (1, 23)]
    assert summary == whole_summary and summary["quarantined_by_reason"]["duplicate_message_id"] > 0
    assert in_parts.keys() == whole.keys()
    for table, rows in in_provenance_order(whole).items():
        assert in_provenance_order(in_parts)[table].equals(rows), table


@pytest.mark.parametrize("workers", [1, 2])
def test_a_batch_envelope_in_parts_is_parsed_and_split_once_by_each_process(logs, warehouse, monkeypatch, workers):
    # Each part needs raw texts (rejects, late timestamp failures, duplicates): splitting the line
    # again for each part took 31 splits and 37 s for a 15 MB envelope instead of 3.
    items = [7, track(timestamp="noon"), track(messageId="twice"), track(messageId="twice"), track()] * 6
    write_log(logs / DAY / "a.ndjson", [{"batch": items}])
    monkeypatch.setattr(read, "CHUNK_LINES", 4)
    monkeypatch.setattr(read, "MIN_CHUNK_MESSAGES", 1)
    splits, parses = Counter(), Counter()
    split, parse = validate.batch_item_spans, validate.parse_line
    monkeypatch.setattr(validate, "batch_item_spans", lambda text: splits.update([text]) or split(text))
    monkeypatch.setattr(validate, "parse_line", lambda line: parses.update([line]) or parse(line))
    summary = load_day(logs, warehouse, DAY, workers=workers)
    assert summary.quarantined == 6 + 6 + 11 + 5 and summary.accepted == 2  # 7, noon, "twice" and plain track() again
    assert sorted(quarantine_rows(warehouse).filter(pl.col("batch_index") % 5 == 0)["raw"]) == ["7"] * 6
    assert list(splits.values()) == [1]  # in this process: all of it, or the duplicates' texts
    assert list(parses.values()) == ([1] if workers == 1 else [])
    assert validate.stopped_envelope is None  # nothing held once the line is done


def test_a_chunks_original_texts_are_let_go_once_it_is_finished(logs, warehouse, monkeypatch):
    # Kept for the parts of a chunk, they held a 15 MB envelope's split (167 MB) until another
    # chunk had duplicates.
    write_log(logs / DAY / "a.ndjson", [{"batch": [track(messageId="m1")] * 3}])
    write_log(logs / DAY / "b.ndjson", [track(messageId="m2")])
    held_at_start: list[bool] = []
    finish = pipeline.finish_chunk

    def recorded(prepared, piece, *args):
        held_at_start.append(args[-1].originals is not None)
        return finish(prepared, piece, *args)

    monkeypatch.setattr(pipeline, "finish_chunk", recorded)
    summary = load_day(logs, warehouse, DAY, chunk_bytes=1, workers=1)  # a chunk per file
    assert summary.duplicates == 2 and held_at_start == [False, False]


def test_a_retried_batch_measures_as_wide_as_its_first_sending(logs, warehouse, monkeypatch):
    # Measured in the frames left once its duplicates are dropped, a retried wide batch made the
    # budget jump to its cap and the next chunk 8 times the cells aimed at.
    envelope = {"batch": [track(messageId=f"m{n}", properties={f"p{(5 * n + k) % 200}": n for k in range(5)}) for n in range(40)]}
    write_log(logs / DAY / "a.ndjson", [envelope, envelope])
    monkeypatch.setattr(read, "CHUNK_LINES", 8)  # parts of 8 messages, whatever they measure
    fits: list[tuple[int, int]] = []
    fit = read.MessageBudget.fit
    monkeypatch.setattr(read.MessageBudget, "fit", lambda budget, messages, cells: fits.append((messages, cells)) or fit(budget, messages, cells))
    summary = load_day(logs, warehouse, DAY, workers=1)
    assert summary.duplicates == 40 and len(fits) == 10
    first_sending, retried = fits[:5], fits[5:]
    assert all(again >= sent for (_, again), (_, sent) in zip(retried, first_sending))  # plus the quarantine rows
    assert all(cells > 8 * 40 for _, cells in retried)  # 8 messages of 5 new paths each, at least


def test_a_name_that_is_not_utf8_and_one_spelling_its_escape_stay_two_source_files(logs, warehouse):
    write_log(logs / DAY / "caf\\xe9.ndjson", [track(messageId="typed")])
    with open(os.fsencode(logs / DAY) + b"/caf\xe9.ndjson", "wb") as log_file:
        log_file.write(line(track(messageId="latin-1")) + b"\n")
    load_day(logs, warehouse, DAY)
    assert sorted(tracks_rows(warehouse)["source_file"].to_list()) == [f"{DAY}/caf\\\\xe9.ndjson", f"{DAY}/caf\\xe9.ndjson"]
    assert checks.conservation(warehouse, DAY).passed


def test_a_log_file_whose_name_is_not_utf8_is_loaded_with_its_bytes_escaped_in_source_file(logs, warehouse):
    """A Latin-1 `café.ndjson` from an old drop used to crash the day: `source_file` held a lone
    surrogate that no Parquet string can store."""
    write_log(logs / DAY / "good.ndjson", [track(messageId="m1")])
    with open(os.fsencode(logs / DAY) + b"/caf\xe9.ndjson", "wb") as log_file:
        log_file.write(b'{"event":"E","userId":"u","messageId":"m2"}\n{"event":"E"}\n')
    summary = load_day(logs, warehouse, DAY)
    assert summary.files == [f"{DAY}/caf\\xe9.ndjson", f"{DAY}/good.ndjson"]
    assert sorted(tracks_rows(warehouse)["source_file"].to_list()) == [f"{DAY}/caf\\xe9.ndjson", f"{DAY}/good.ndjson"]
    assert quarantine_rows(warehouse)["source_file"].to_list() == [f"{DAY}/caf\\xe9.ndjson"]


def test_an_integer_past_64_bits_in_properties_or_context_keeps_its_exact_digits(logs, warehouse):
    """orjson reads such an integer as a double; `tracks.properties` is the original properties."""
    (logs / DAY).mkdir()
    (logs / DAY / "a.ndjson").write_text(
        '{"event":"E","userId":"u","messageId":"m1","context":{"order":123456789012345678901234567890},'
        '"properties":{"order_no":123456789012345678901234567890,"n":-9223372036854775809,"batch":{"id":1}}}\n'
    )
    load_day(logs, warehouse, DAY)
    row = tracks_rows(warehouse).row(0, named=True)
    assert row["properties"] == '{"order_no":123456789012345678901234567890,"n":-9223372036854775809,"batch":{"id":1}}'
    assert row["context_order"] == "123456789012345678901234567890"
    discards = pl.read_parquet(partition_dir(warehouse, "discards", DAY) / "*.parquet").sort("column_name")
    assert discards.select("column_name", "value").rows() == [
        ("n", "-9223372036854775809"), ("order_no", "123456789012345678901234567890"),
    ]


def called_from_a_deep_stack(depth: int, function, *args, **kwargs):
    """As under Dagster, whose call stack is a hundred frames deep when an asset runs."""
    if depth:
        return called_from_a_deep_stack(depth - 1, function, *args, **kwargs)
    return function(*args, **kwargs)


@pytest.mark.parametrize("workers", [1, 2])
def test_json_nested_as_deep_as_the_parser_reads_is_loaded_not_a_crash(logs, warehouse, workers):
    """orjson reads 1,024 levels but writes 254; the standard library's fallback used to overflow
    Python's stack and lose the whole day. Arrays add no `properties_too_deep` level."""
    deep_array = "[" * 1022 + "]" * 1022  # in {"properties":{"a": …}}: 1,024 levels in all
    deep_object = '{"a":' * 1023 + "1" + "}" * 1023
    lines = [
        f'{{"event":"E","userId":"u","messageId":"m1","properties":{{"a":{deep_array}}}}}',
        f'{{"event":"E","userId":"u","context":{deep_object}}}',
        f'{{"type":{deep_array},"event":"E","userId":"u"}}',
        f'{{"event":"E","userId":"u","messageId":18446744073709551616,"properties":{{"a":{deep_array}}}}}',
    ]
    (logs / DAY).mkdir()
    (logs / DAY / "deep.ndjson").write_text("\n".join(lines) + "\n")
    summary = called_from_a_deep_stack(300, load_day, logs, warehouse, DAY, workers=workers)
    assert (summary.accepted, summary.quarantined_by_reason) == (3, {"unsupported_type": 1})
    tracks = tracks_rows(warehouse).sort("line_number")
    assert tracks["message_id"][2] == "18446744073709551616"
    assert tracks["properties"][0] == f'{{"a":{deep_array}}}'


def test_rerun_replaces_exactly_its_partition(logs, warehouse):
    write_log(logs / "2025-01-14" / "a.ndjson", [track("Day One")])
    write_log(logs / DAY / "a.ndjson", [track("Day Two")])
    load_day(logs, warehouse, "2025-01-14")
    load_day(logs, warehouse, DAY)
    other = {p: p.stat().st_ino for p in partition_dir(warehouse, "tracks", "2025-01-14").glob("*")}
    write_log(logs / DAY / "a.ndjson", [track("Day Two Corrected"), track("Day Two Extra")])
    load_day(logs, warehouse, DAY)
    assert {p: p.stat().st_ino for p in partition_dir(warehouse, "tracks", "2025-01-14").glob("*")} == other
    assert sorted(tracks_rows(warehouse)["event_text"].to_list()) == ["Day Two Corrected", "Day Two Extra"]


def test_two_runs_give_identical_rows(logs, warehouse, tmp_path):
    write_log(logs / DAY / "a.ndjson", [track(), "not json", track("No Id"), {"batch": [track("In Batch"), 3]}])
    load_day(logs, warehouse, DAY)
    first = (tracks_rows(warehouse), quarantine_rows(warehouse).drop("quarantined_at"))
    load_day(logs, warehouse, DAY)
    second = (tracks_rows(warehouse), quarantine_rows(warehouse).drop("quarantined_at"))
    assert first[0].equals(second[0]) and first[1].equals(second[1])


def test_a_run_killed_before_publishing_leaves_the_previous_partition(logs, warehouse, monkeypatch):
    write_log(logs / DAY / "a.ndjson", [track("Before")])
    load_day(logs, warehouse, DAY)
    write_log(logs / DAY / "a.ndjson", [track("After")])

    def killed(self, retired_tables=()):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(PartitionWriter, "publish", killed)
    with pytest.raises(KeyboardInterrupt):
        load_day(logs, warehouse, DAY)
    assert tracks_rows(warehouse)["event_text"].to_list() == ["Before"]
    monkeypatch.undo()
    load_day(logs, warehouse, DAY)
    assert tracks_rows(warehouse)["event_text"].to_list() == ["After"]
    assert [p.name for p in (warehouse / ".staging").iterdir()] == [f"{DAY}.lock"]  # the day's lock, no debris


def test_every_day_has_tracks_and_quarantine_files_even_when_empty(logs, warehouse):
    write_log(logs / DAY / "a.ndjson", ["", "   "])
    summary = load_day(logs, warehouse, DAY)
    assert (summary.lines, summary.blank_lines, summary.accepted, summary.quarantined) == (2, 2, 0, 0)
    assert list(partition_dir(warehouse, "tracks", DAY).glob("*.parquet"))
    assert list(partition_dir(warehouse, "quarantine", DAY).glob("*.parquet"))


def test_warehouse_duckdb_answers_from_any_working_directory(logs, warehouse, tmp_path, monkeypatch):
    write_log(logs / DAY / "a.ndjson", [track(), track("Other")])
    load_day(logs, warehouse, DAY)
    refresh_catalog(warehouse)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert query(warehouse, "select count(*), min(received_date) from tracks") == [(2, dt.date(2025, 1, 15))]
    assert query(warehouse, "select count(*) from quarantine") == [(0,)]


def test_an_error_under_a_readers_lock_without_a_lock_file_is_not_chained_to_the_missing_file(tmp_path):
    with pytest.raises(ValueError) as caught, file_lock(tmp_path / "never-written.lock", shared=True):
        raise ValueError("the reader's own failure")
    assert caught.value.__context__ is None


def test_readers_keep_the_last_complete_catalog_while_it_is_rebuilt(logs, warehouse):
    import duckdb

    write_log(logs / DAY / "a.ndjson", [track()])
    load_day(logs, warehouse, DAY)
    refresh_catalog(warehouse)
    reader = duckdb.connect(str(warehouse / "warehouse.duckdb"), read_only=True)
    refresh_catalog(warehouse)
    assert reader.execute("select count(*) from tracks").fetchone() == (1,)
    reader.close()


def test_a_day_is_swapped_in_under_the_warehouse_writer_lock(logs, warehouse, monkeypatch):
    """A model refresh reads every day's files under that lock: a rerun must not swap a day's
    files away under it (`IO Error: Cannot open file`)."""
    write_log(logs / DAY / "a.ndjson", [track(properties={"n": 1})])
    held, swap_in = [], write.swap_in

    def swap_noting_the_lock(staged, target):
        with open(warehouse / WRITER_LOCK, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append(False)
            except BlockingIOError:
                held.append(True)
        swap_in(staged, target)

    monkeypatch.setattr(write, "swap_in", swap_noting_the_lock)
    load_day(logs, warehouse, DAY)
    assert len(held) >= 4 and all(held)


@pytest.mark.parametrize("name", ["wh[1]", "wh*", "wh?", "wh{1,2} 'ü'"])
def test_a_warehouse_path_with_glob_characters_reads_only_its_own_files(logs, tmp_path, name):
    # A sibling `wh1` matches the path read as a glob; the views must still see later days.
    write_log(logs / DAY / "a.ndjson", [track("Mine")])
    write_log(logs / "2025-01-16" / "a.ndjson", [track("Mine")])
    for warehouse, event in ((tmp_path / "wh1", "Theirs"), (tmp_path / name, "Mine")):
        load_day(logs, warehouse, DAY)
        (warehouse / "marts" / "m").mkdir(parents=True)
        pl.DataFrame({"event": [event]}).write_parquet(warehouse / "marts" / "m" / "m.parquet")
        refresh_catalog(warehouse)
    load_day(logs, warehouse, "2025-01-16")
    assert query(warehouse, "select event_text, count(*) from tracks group by 1") == [("Mine", 2)]
    assert query(warehouse, "select count(*) from mine") == [(2,)]
    assert query(warehouse, "select event from m") == [("Mine",)]


def test_a_warehouse_path_with_a_backslash_is_refused_rather_than_read_elsewhere(logs, tmp_path):
    # DuckDB splits a glob at `\`, so `wh\x` would read the warehouse `wh/x`.
    write_log(logs / DAY / "a.ndjson", [track()])
    load_day(logs, tmp_path / "wh" / "x", DAY)
    load_day(logs, tmp_path / "wh\\x", DAY)
    with pytest.raises(ValueError, match="folder separator"):
        refresh_catalog(tmp_path / "wh\\x")


# Each check must fail on a partition crafted to break the property it proves.


def loaded_day(logs: Path, warehouse: Path) -> None:
    write_log(logs / DAY / "a.ndjson", [track(messageId="m1"), track(messageId="m2"), "oops"])
    load_day(logs, warehouse, DAY)


def test_a_line_over_the_line_limit_is_one_payload_too_large_row_keeping_its_start(logs, warehouse, monkeypatch):
    monkeypatch.setattr(read, "MAX_LINE_BYTES", 1_000)
    monkeypatch.setattr(read, "READ_BLOCK", 100)
    huge = json.dumps(track(properties={"x": "y" * 5_000}))
    write_log(logs / DAY / "a.ndjson", [track(messageId="before"), huge, track(messageId="after")])
    summary = load_day(logs, warehouse, DAY)
    row = quarantine_rows(warehouse).row(0, named=True)
    assert (row["line_number"], row["reasons"], row["raw"]) == (2, ["payload_too_large"], huge[:1_000])
    assert f"Line is {len(huge):,} bytes" in row["message"]
    assert tracks_rows(warehouse)["line_number"].to_list() == [1, 3]
    assert (summary.lines, summary.messages) == (3, 3) and checks.conservation(warehouse, DAY).passed


def test_a_file_breaking_inside_a_line_over_the_limit_says_its_raw_keeps_only_the_start(logs, warehouse, monkeypatch):
    monkeypatch.setattr(read, "MAX_LINE_BYTES", 1_000)
    monkeypatch.setattr(read, "READ_BLOCK", 100)
    data = gzip.compress(b'{"a":1}\n' + b"x" * 5_000, mtime=0)[:-8]  # no trailer: it breaks in line 2
    (logs / DAY).mkdir(parents=True)
    (logs / DAY / "a.ndjson.gz").write_bytes(data)
    load_day(logs, warehouse, DAY)
    row = quarantine_rows(warehouse).filter(pl.col("reason") == "unreadable_file").row(0, named=True)
    assert (row["line_number"], row["raw"]) == (2, "x" * 1_000)
    assert "that line had 5,000 bytes when it broke" in row["message"] and "raw keeps its first" in row["message"]


@pytest.mark.parametrize(("rotate", "said"), [
    (lambda folder: folder.rmdir(), "no folder"),
    (lambda folder: None, "no log files in"),
    (lambda folder: (folder / "notes.txt").write_text("rotated to S3"), "no log files in"),
    (lambda folder: (folder / "a.ndjson").write_bytes(b""), "only empty log files in"),
], ids=["folder gone", "folder empty", "only other files", "an emptied log file"])
def test_a_loaded_day_whose_log_files_are_gone_is_refused_and_left_as_it_was(logs, warehouse, rotate, said):
    write_log(logs / DAY / "a.ndjson", [track(messageId="m1")])
    load_day(logs, warehouse, DAY)
    (logs / DAY / "a.ndjson").unlink()
    rotate(logs / DAY)
    with pytest.raises(MissingLogs, match=f"{said} .*{DAY}, yet the warehouse holds 1 messages"):
        load_day(logs, warehouse, DAY)
    assert tracks_rows(warehouse)["message_id"].to_list() == ["m1"]


def test_a_missing_logs_root_is_refused_rather_than_loaded_as_empty_days(tmp_path, warehouse):
    with pytest.raises(MissingLogs, match="logs root .* does not exist"):
        load_day(tmp_path / "mistyped", warehouse, DAY)
    assert not (warehouse / "tracks").exists()


def test_a_day_never_loaded_and_without_a_folder_loads_as_an_empty_partition(logs, warehouse):
    assert load_day(logs, warehouse, DAY).messages == 0 and tracks_rows(warehouse).height == 0


def test_conservation_check_passes_on_a_clean_load_and_fails_when_rows_go_missing(logs, warehouse):
    loaded_day(logs, warehouse)
    assert checks.conservation(warehouse, DAY).passed
    for part in partition_dir(warehouse, "quarantine", DAY).glob("*.parquet"):
        os.remove(part)
    outcome = checks.conservation(warehouse, DAY)
    assert not outcome.passed and ": 1 missing" in outcome.description


def test_unique_message_id_check_fails_on_a_repeated_id(logs, warehouse):
    loaded_day(logs, warehouse)
    assert checks.unique_message_id(warehouse, DAY).passed
    folder = partition_dir(warehouse, "tracks", DAY)
    pl.read_parquet(next(folder.glob("*.parquet"))).head(1).write_parquet(folder / "part-99999.parquet")
    assert not checks.unique_message_id(warehouse, DAY).passed


def test_quarantine_rate_check_fails_above_its_threshold(logs, warehouse):
    loaded_day(logs, warehouse)
    assert checks.quarantine_rate(warehouse, DAY, warn_above=0.5).passed
    outcome = checks.quarantine_rate(warehouse, DAY, warn_above=0.2)
    assert not outcome.passed and outcome.metadata["quarantine_rate"] == pytest.approx(1 / 3)


def test_schema_check_fails_on_a_column_of_the_wrong_type(logs, warehouse):
    loaded_day(logs, warehouse)
    assert checks.schema_matches_contract(warehouse, DAY).passed
    folder = partition_dir(warehouse, "tracks", DAY)
    part = next(folder.glob("*.parquet"))
    broken = pl.read_parquet(part).with_columns(pl.col("line_number").cast(pl.String))
    broken.write_parquet(part)
    outcome = checks.schema_matches_contract(warehouse, DAY)
    assert not outcome.passed and "line_number is String" in outcome.description


def test_parallel_workers_write_exactly_what_one_process_writes(logs, tmp_path):
    lines = []
    for i in range(400):
        lines.append(track(f"Event {i % 5}", messageId=f"m{i % 350}", properties={"n": i if i % 7 else "text", "tags": [i]}))
        if i % 50 == 0:
            lines += ["not json", {"batch": [track("In Batch", messageId=f"m{i}"), 5]}]
    write_log(logs / DAY / "a.ndjson", lines)
    write_log(logs / DAY / "b.ndjson.gz", lines[::3])
    serial_summary, serial = loaded_tables(logs, tmp_path / "serial", chunk_bytes=2048, workers=1)
    parallel_summary, parallel = loaded_tables(logs, tmp_path / "parallel", chunk_bytes=2048, workers=2)
    assert serial_summary == parallel_summary and serial_summary["quarantined_by_reason"]["duplicate_message_id"] > 0
    assert "events/event_3" in serial
    for table in serial:
        assert serial[table].equals(parallel[table]), table


def test_workers_send_the_context_names_the_day_cap_needs_and_write_what_one_process_writes(logs, tmp_path):
    # Past the real cap of 500 (workers do not see a patched one): without the chunks' names in
    # order, the main process could neither take the first seen as columns nor lift spilled ones.
    write_log(logs / DAY / "a.ndjson", [
        track("A", messageId=f"m{i}", context={f"k{(i * 7) % 700}": i, f"k{(i * 11) % 700}": i, "shared": "s"}) for i in range(1_400)
    ])
    serial = loaded_tables(logs, tmp_path / "serial", chunk_bytes=20_000, workers=1)
    parallel = loaded_tables(logs, tmp_path / "parallel", chunk_bytes=20_000, workers=2)
    tracks = serial[1]["tracks"]
    assert len([c for c in tracks.columns if c.startswith("context_") and c != "context_other"]) == 500
    assert tracks["context_other"].is_not_null().any()
    assert serial[0] == parallel[0] and serial[1].keys() == parallel[1].keys()
    for table in serial[1]:
        assert serial[1][table].equals(parallel[1][table]), table


def test_a_full_event_tables_other_paths_are_dropped_before_the_main_process_with_the_same_result(logs, tmp_path, monkeypatch):
    # A table at its column cap can never take another path: its values are dropped where they
    # are gathered and counted per row (the main process decoded and walked 4 million of them,
    # 27 s of CPU where a whole load in one process took 14 s). Duplicates' values still do not
    # count past the cap, and revenue, first sent once the table is full, is never capped.
    monkeypatch.setattr(registry, "MAX_PROPERTY_COLUMNS", 3)
    write_log(logs / DAY / "a.ndjson", [
        track("A", messageId=f"m{i % 40}", properties={"a": 1, f"k{i}": i, "n": {f"x{i}": 1}, **({"b": "s"} if i % 3 else {}), **({"revenue": i} if i >= 30 else {})})
        for i in range(60)
    ])
    dropped, finish_chunk = [], pipeline.finish_chunk

    def received(prepared, *args):  # in the main process: what the workers sent
        dropped.append(sum(sum(sink.dropped) for sink in prepared.gathered.values()))
        return finish_chunk(prepared, *args)

    monkeypatch.setattr(pipeline, "finish_chunk", received)
    one_process = loaded_tables(logs, tmp_path / "one", chunk_bytes=1_000, workers=1)
    assert sum(dropped) > 0
    dropped.clear()
    two_workers = loaded_tables(logs, tmp_path / "two", chunk_bytes=1_000, workers=2)
    assert sum(dropped) > 0
    monkeypatch.setattr(pipeline, "drop_paths_full_tables_cannot_take", lambda gathered, full_tables: None)
    undropped = loaded_tables(logs, tmp_path / "undropped", chunk_bytes=1_000, workers=1)
    assert one_process[0]["values_over_column_cap"] > 0
    for loaded in (one_process, two_workers):
        assert loaded[0] == undropped[0]
        assert loaded[1].keys() == undropped[1].keys() and all(loaded[1][t].equals(undropped[1][t]) for t in loaded[1])


def loaded_tables(logs: Path, warehouse: Path, **options) -> tuple[dict, dict[str, pl.DataFrame]]:
    """Load DAY; return its summary and every table's rows in write order (no load times)."""
    summary = load_day(logs, warehouse, DAY, **options)
    tables = {}
    for folder in sorted(warehouse.glob("*/**/received_date=*")):
        if frames := [pl.read_parquet(p) for p in sorted(folder.glob("*.parquet"))]:
            rows = pl.concat(frames, how="diagonal_relaxed").drop("quarantined_at", strict=False)
            tables[folder.parent.relative_to(warehouse).as_posix()] = rows
    counts = {key: value for key, value in summary.as_dict().items() if key != "parquet_sha256"}  # names carry the run
    return counts, tables


SMALL_FILE_LINES = st.sampled_from([
    track("Signed Up", messageId="m1", properties={"plan": "pro"}),
    track("Signed Up", messageId="m2", properties={"plan": 3}),
    track("Order Completed", messageId="m1", timestamp="2025-01-15T10:00:00+01:00"),
    track("Order Completed", timestamp="yesterday", properties={"revenue": 5}),
    track("Order Completed", properties={"revenue": "lots"}, messageId="m3"),
    {"batch": [track("In Batch", messageId="m2"), 7, track("In Batch", timestamp="noon")], "sentAt": "2025-01-15T09:00:00Z"},
    "not json", "[1]", "", "   ", b"\xef\xbb\xbf" + line(track("With BOM")), line(track("Ends In CR")) + b"\r",
])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.lists(SMALL_FILE_LINES, max_size=5), st.booleans(), st.booleans()), min_size=2, max_size=6))
def test_small_files_joined_into_one_chunk_load_as_each_line_alone(tmp_path_factory, files):
    # Joined, a chunk numbers lines on across its files; every row must get its own file and
    # line back, and duplicates across files must resolve as they do chunk by chunk.
    root = tmp_path_factory.mktemp("joined")
    for index, (lines, gzipped, final_newline) in enumerate(files):
        path = write_log(root / "logs" / DAY / f"part-{index}.ndjson{'.gz' if gzipped else ''}", lines)
        if not final_newline and lines:
            data = gzip.decompress(path.read_bytes()) if gzipped else path.read_bytes()
            path.write_bytes(gzip.compress(data[:-1]) if gzipped else data[:-1])
    joined = loaded_tables(root / "logs", root / "joined")
    alone = loaded_tables(root / "logs", root / "alone", chunk_bytes=1)  # a chunk per line, none joined
    assert joined[0] == alone[0]
    assert joined[1].keys() == alone[1].keys()
    for table, rows in joined[1].items():
        assert rows.equals(alone[1][table]), table


def test_chunk_workers_start_without_rerunning_the_parents_main_module(tmp_path, monkeypatch):
    # A spawned child re-runs the parent's __main__ unless told otherwise; this one would
    # leave a marker module behind in the worker.
    script = tmp_path / "heavy_main.py"
    script.write_text("import sys, types\nsys.modules['heavy_main_was_run'] = types.ModuleType('marker')\n")
    heavy_main = types.ModuleType("__main__")
    heavy_main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", heavy_main)
    with ChunkWorkers(1) as pool:
        ran_main = pool.submit(eval, "'heavy_main_was_run' in __import__('sys').modules").result()
    assert ran_main is False
    assert sys.modules["__main__"] is heavy_main


PROPERTY_VALUES = st.one_of(
    st.sampled_from([0, 7, -(2**63) - 1, 2**64, 1.5, -0.25, True, False, None, "x", "2025-01-15T10:00:00Z", [1]]),
    st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3),
)


@settings(max_examples=60)
@given(st.lists(st.tuples(PROPERTY_VALUES, PROPERTY_VALUES), min_size=1, max_size=12))
def test_event_columns_and_discards_do_not_depend_on_where_chunks_end(tmp_path_factory, values):
    # An int column that meets a float widens there: the values before it were judged as an
    # int column's, whether the float came in the same chunk or a later one.
    root = tmp_path_factory.mktemp("chunks")
    write_log(root / "logs" / DAY / "a.ndjson", [  # the standard library writes integers past 64 bits
        json.dumps(track("E", messageId=f"m{i}", properties={"n": n, "nested": {"m": m}})) for i, (n, m) in enumerate(values)
    ])
    one_chunk = loaded_tables(root / "logs", root / "one")[1]
    chunk_per_line = loaded_tables(root / "logs", root / "per-line", chunk_bytes=1)[1]
    assert one_chunk.keys() == chunk_per_line.keys()
    for table, rows in one_chunk.items():
        if table == "discards":  # written column by column in a chunk, row by row across chunks
            rows, chunk_per_line[table] = (t.sort("message_id", "column_name") for t in (rows, chunk_per_line[table]))
        assert rows.equals(chunk_per_line[table]), table


def test_workers_leave_ctrl_c_to_the_main_process():
    with ChunkWorkers(1) as pool:
        assert pool.submit(signal.getsignal, signal.SIGINT).result() == signal.SIG_IGN


def test_stopping_the_workers_ends_a_chunk_in_progress():
    # Waiting for workers after an interrupt could hang (a worker blocked on its queue).
    pool = ChunkWorkers(1)
    pool.submit(int).result()  # the worker is up
    chunk = pool.submit(time.sleep, 600)
    while not chunk.running():
        time.sleep(0.01)
    pool.stop()
    assert isinstance(chunk.exception(timeout=60), BrokenProcessPool)


def send_half_a_result_then_hang(marker: str) -> None:
    """Runs in a pool worker: write the length of a result into the pool's result pipe, but not
    the result, as a worker killed mid-send leaves it."""
    frame = sys._getframe()
    while "result_queue" not in frame.f_locals:
        frame = frame.f_back
    os.write(frame.f_locals["result_queue"]._writer.fileno(), struct.pack("!i", 1_000))
    Path(marker).touch()
    time.sleep(600)


def test_stopping_a_worker_killed_mid_result_leaves_no_thread_waiting_for_the_rest(tmp_path):
    pool = ChunkWorkers(1)
    pool.submit(send_half_a_result_then_hang, str(tmp_path / "sent"))
    while not (tmp_path / "sent").exists():
        time.sleep(0.01)
    manager = pool._executor_manager_thread
    pool.stop()
    manager.join(timeout=30)  # else the interpreter's exit joins it, and hangs
    assert not manager.is_alive()


def test_a_load_that_stops_midway_stops_its_workers(logs, monkeypatch):
    write_log(logs / DAY / "a.ndjson", [track(messageId=f"m{i}") for i in range(2_000)])
    stopped = []
    monkeypatch.setattr(ChunkWorkers, "stop", lambda pool: stopped.append(pool) or pool.shutdown(wait=False, cancel_futures=True))
    prepared = prepared_in_order(read_chunks(logs / DAY / "a.ndjson", "a.ndjson", chunk_bytes=4_096), dt.date(2025, 1, 15), workers=2, full_tables={})
    next(prepared)
    prepared.close()  # as an interrupt or an error in the main process does
    assert len(stopped) == 1


JSON_VALUES = st.recursive(
    st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner | st.none(), max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=200)
@given(st.lists(JSON_VALUES, min_size=1, max_size=5), st.booleans())
def test_gathered_values_reach_the_main_process_exactly_as_gathered(values, with_huge_integer):
    # orjson carries them (1 and 1.0 and True stay apart); pickle takes over for what it cannot hold.
    if with_huge_integer:
        values = [*values, 2**70]
    sink = EventProperties(list(range(len(values))), {("p",): (list(range(len(values))), values), ("q", "r"): ([0], [1.0])})
    prepared = PreparedChunk(ValidatedChunk.empty("a.ndjson"), pl.DataFrame({"x": [1]}), {"e": sink})
    sent = pickle.loads(pickle.dumps(prepared))
    assert repr(sent.gathered) == repr(prepared.gathered)
    assert sent.tracks.equals(prepared.tracks)


def test_the_writer_writes_a_part_once_its_buffered_rows_hold_enough_bytes(tmp_path, monkeypatch):
    # Quarantine rows carry whole lines: a few long ones must not wait for 100,000 rows.
    monkeypatch.setattr(write, "BYTES_PER_PART", 1_000_000)
    monkeypatch.setattr(write, "MAX_BUFFERED_BYTES", 1_500_000)
    with PartitionWriter(tmp_path, DAY) as writer:
        for _ in range(3):
            writer.append("quarantine", pl.DataFrame({"raw": ["x" * 400_000]}))
        assert writer.parts == {"quarantine": 1} and writer.buffered_bytes == {}
        writer.append("quarantine", pl.DataFrame({"raw": ["x" * 400_000]}))
        writer.append("tracks", pl.DataFrame({"raw": ["y" * 800_000]}))
        writer.append("discards", pl.DataFrame({"raw": ["z" * 400_000]}))  # 1.6 MB in all: every table written
        assert writer.parts == {"quarantine": 2, "tracks": 1, "discards": 1} and writer.buffers == {}


def test_the_writer_counts_the_views_polars_leaves_out_of_its_estimate(tmp_path, monkeypatch):
    # A string cell holds a 16-byte view, null or not: 1,000 sparse columns of 65,536 rows held
    # 1 GB that `estimated_size` called 66 KB, so wide chunks piled up in the buffer.
    monkeypatch.setattr(write, "BYTES_PER_PART", 1_000_000)
    sparse = pl.DataFrame({f"p{n}": pl.Series([None] * 5_000, dtype=pl.String) for n in range(20)})
    assert sparse.estimated_size() < 1_000_000 <= write.held_bytes(sparse)  # 20 x 5,000 x 16 bytes
    assert write.held_bytes(pl.DataFrame({"reasons": [["a", "b"], []]})) >= 2 * write.VIEW_BYTES
    with PartitionWriter(tmp_path, DAY) as writer:
        writer.append("events/e", sparse)
        assert writer.parts == {"events/e": 1} and writer.buffers == {}


def test_a_day_of_wide_sparse_rows_is_cut_into_chunks_as_narrow_as_its_width_allows(logs, warehouse, tmp_path, monkeypatch):
    # Each line sets 5 of 500 property keys: a few hundred lines make event tables hundreds of
    # columns wide. Each chunk is cut by what the last chunk's frames held, and the rows loaded
    # are those of a load in one chunk.
    write_log(logs / DAY / "a.ndjson", [
        track("Wide", messageId=f"m{n}", properties={f"p{(5 * n + k) % 500}": n for k in range(5)}) for n in range(600)
    ])
    _, one_chunk = loaded_tables(logs, tmp_path / "one-chunk", workers=1)
    monkeypatch.setattr(read, "CHUNK_CELLS", 20_480)  # a day starts at 20 lines a chunk
    monkeypatch.setattr(read, "MIN_CHUNK_MESSAGES", 1)
    monkeypatch.setattr(read, "READ_BLOCK", 64)  # chunks are cut at block ends: here about every line
    fits: list[tuple[int, int, int]] = []
    fit = read.MessageBudget.fit

    def recorded_fit(budget: read.MessageBudget, lines: int, cells: int) -> None:
        fit(budget, lines, cells)
        fits.append((lines, cells, budget.messages))

    monkeypatch.setattr(read.MessageBudget, "fit", recorded_fit)
    _, chunked = loaded_tables(logs, warehouse, workers=1)
    assert fits[0][0] <= 20 + 1 and sum(lines for lines, _, _ in fits) == 600
    for (_, _, budget), (lines, _, _) in zip(fits, fits[1:]):
        assert lines <= budget + 1
    assert min(budget for _, _, budget in fits) < 20_480 / 300  # some chunk's rows were 300 cells wide
    assert chunked.keys() == one_chunk.keys()
    for table, rows in one_chunk.items():
        assert chunked[table].select(sorted(rows.columns)).equals(rows.select(sorted(rows.columns))), table


def test_a_second_run_of_a_day_waits_for_the_first_to_publish(tmp_path, caplog):
    # The schedule and a backfill may run one day at once: the second run must neither take the
    # first's staging folder for debris nor publish in between; it replaces the first whole. It
    # says that it waits, or it would look stuck for as long as a big day takes.
    caplog.set_level(logging.INFO, logger="trackhouse")
    first = PartitionWriter(tmp_path, DAY)
    first.write("tracks", pl.DataFrame({"run": ["first"]}))
    second_started, first_checked = threading.Event(), threading.Event()

    def second_run() -> None:
        with PartitionWriter(tmp_path, DAY) as second:
            second_started.set()
            first_checked.wait(30)
            second.write("tracks", pl.DataFrame({"run": ["second"]}))
            second.publish()

    thread = threading.Thread(target=second_run)
    thread.start()
    assert not second_started.wait(0.5)
    assert caplog.messages == [f"{DAY}: waiting for another run of this day to finish"]
    with first:
        first.publish()
    assert second_started.wait(30)
    assert pl.read_parquet(partition_dir(tmp_path, "tracks", DAY))["run"].to_list() == ["first"]
    first_checked.set()
    thread.join(30)
    assert pl.read_parquet(partition_dir(tmp_path, "tracks", DAY))["run"].to_list() == ["second"]


def test_no_two_runs_of_a_day_write_a_file_of_the_same_name(logs, warehouse):
    # A reader that listed the old folder must fail at the swap, not open a new file of the
    # same name and read its rows through the old footer.
    write_log(logs / DAY / "a.ndjson", [track("A"), "[]"])
    names = []
    for _ in range(2):
        load_day(logs, warehouse, DAY)
        names.append({p.relative_to(warehouse) for table in ("tracks", "quarantine", "events/a") for p in partition_dir(warehouse, table, DAY).iterdir()})
    assert len(names[0]) == 3 and not names[0] & names[1]
