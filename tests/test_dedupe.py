"""`duplicate_message_id` inside a partition (CONTRACT.md section 2): the first accepted copy wins,
however many chunks apart the copies are."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings, strategies as st

from etl import dedupe
from etl.dedupe import SeenMessageIds


def oracle(chunks: list[list[str]]) -> list[list[bool]]:
    seen: set[str] = set()
    marks = []
    for chunk in chunks:
        marks.append([])
        for message_id in chunk:
            marks[-1].append(message_id in seen)
            seen.add(message_id)
    return marks


def marked(chunks: list[list[str]]) -> list[list[bool]]:
    seen = SeenMessageIds()
    return [seen.mark_duplicates(pl.Series(chunk, dtype=pl.String)).to_list() for chunk in chunks]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from([f"m{i}" for i in range(40)] + ["", "é", "m1 "]), max_size=30), max_size=40),
    st.sampled_from([1, 7, dedupe.RECENT_KEYS]),
)
def test_an_id_is_a_duplicate_exactly_when_an_earlier_chunk_or_row_accepted_it(chunks, recent_keys):
    # As few recent keys as 1 or 7: most ids live in sorted runs, as they do on a big day.
    original, dedupe.RECENT_KEYS = dedupe.RECENT_KEYS, recent_keys
    try:
        assert marked(chunks) == oracle(chunks)
    finally:
        dedupe.RECENT_KEYS = original


def test_ids_stay_seen_across_many_merged_runs(monkeypatch):
    monkeypatch.setattr(dedupe, "RECENT_KEYS", 50)  # a run per chunk, as past 65,536 ids
    chunks = [[f"id-{chunk}-{row}" for row in range(50)] for chunk in range(300)]
    resent = [chunks[0][7], chunks[150][0], chunks[299][49], "new"]
    seen = SeenMessageIds()
    for chunk in chunks:
        assert not seen.mark_duplicates(pl.Series(chunk)).any()
    assert len(seen.runs) < 10 and len(seen) == 300 * 50
    assert seen.mark_duplicates(pl.Series(resent)).to_list() == [True, True, True, False]
