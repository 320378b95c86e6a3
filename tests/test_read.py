"""The reader (CONTRACT.md section 1, and `unreadable_file` of section 2): files, lines, breaks."""

from __future__ import annotations

import cProfile
import gzip
import pstats
import os
import signal
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import etl.read
from etl.read import (
    FileBreak, FileLines, MessageBudget, LineChunk, LongLine, coalesced, list_day_files, list_days, read_chunks, readable_path,
    skipped_entries,
)

LINES = [b'{"event":"A","userId":"u"}', b"", b'{"event":"B","userId":"\xc3\xa9"}', b"not json", b"  "]


def read_all(path: Path, **kwargs) -> tuple[list[LineChunk], list[FileBreak]]:
    pieces = list(read_chunks(path, path.name, **kwargs))
    chunks = [p for p in pieces if isinstance(p, LineChunk)]
    breaks = [p for p in pieces if isinstance(p, FileBreak)]
    assert pieces == chunks + breaks, "a FileBreak comes last"
    return chunks, breaks


def lines_of(path: Path, **kwargs) -> list[bytes]:
    chunks, breaks = read_all(path, **kwargs)
    assert breaks == []
    return [line for chunk in chunks for line in chunk.lines()]


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def gzip_prefix(*texts: bytes) -> bytes:
    """A gzip stream holding `texts`, flushed after each, and cut off before its end."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return b"".join(compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH) for text in texts)


# --- lines ----------------------------------------------------------------------------------


def test_plain_and_gzip_files_give_the_same_lines(tmp_path):
    data = b"\n".join(LINES) + b"\n"
    plain = write(tmp_path / "a.ndjson", data)
    zipped = write(tmp_path / "a.ndjson.gz", gzip.compress(data))
    assert lines_of(plain) == LINES
    assert lines_of(zipped) == LINES


def test_multi_member_gzip_is_read_fully(tmp_path):
    path = write(tmp_path / "a.jsonl.gz", gzip.compress(b"one\ntwo\n") + gzip.compress(b"three\nfour\n"))
    assert lines_of(path) == [b"one", b"two", b"three", b"four"]


def test_a_gzip_member_ending_past_a_read_blocks_output_hands_on_to_the_next_member(tmp_path):
    # The first member decompresses to more than a block (600 KB): it ends in a call cut short by
    # the output limit, where zlib keeps the next member both as unused data and as unconsumed
    # input. The read hung there for ever; an alarm fails this test instead.
    path = write(tmp_path / "a.ndjson.gz", gzip.compress(b"a\n" * 300_000) + gzip.compress(b"b\n"))
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("reading a multi-member gzip did not end"))
    signal.alarm(20)
    try:
        assert lines_of(path) == [b"a"] * 300_000 + [b"b"]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("padding", [16, 600_000], ids=["16 bytes", "over two read blocks"])
def test_zero_bytes_padding_a_gzip_file_are_skipped_as_gzip_does(tmp_path, padding):
    zeros = b"\0" * padding
    path = write(tmp_path / "a.jsonl.gz", gzip.compress(b"one\n") + zeros + gzip.compress(b"two\n") + zeros)
    assert lines_of(path) == [b"one", b"two"]


def test_a_gzip_file_of_zero_bytes_only_is_unreadable(tmp_path):
    chunks, breaks = read_all(write(tmp_path / "a.jsonl.gz", b"\0" * 64))
    assert chunks == [] and len(breaks) == 1 and breaks[0].line_number == 1


def test_multi_member_gzip_without_newline_between_members_joins_the_line(tmp_path):
    path = write(tmp_path / "a.jsonl.gz", gzip.compress(b"one\ntw") + gzip.compress(b"o\nthree"))
    assert lines_of(path) == [b"one", b"two", b"three"]


@pytest.mark.parametrize("suffix", [".ndjson", ".ndjson.gz"])
def test_final_newline_does_not_add_a_line(tmp_path, suffix):
    data = b"one\ntwo\n"
    path = write(tmp_path / f"a{suffix}", gzip.compress(data) if suffix.endswith(".gz") else data)
    assert lines_of(path) == [b"one", b"two"]


@pytest.mark.parametrize("suffix", [".ndjson", ".ndjson.gz"])
def test_last_line_without_newline_is_kept(tmp_path, suffix):
    data = b"one\ntwo"
    path = write(tmp_path / f"a{suffix}", gzip.compress(data) if suffix.endswith(".gz") else data)
    assert lines_of(path) == [b"one", b"two"]


def test_trailing_blank_line_is_kept_as_a_line(tmp_path):
    assert lines_of(write(tmp_path / "a.ndjson", b"one\n\n")) == [b"one", b""]


def test_empty_plain_file_has_no_lines(tmp_path):
    assert read_all(write(tmp_path / "a.ndjson", b"")) == ([], [])


def assert_numbered_in_order(chunks: list[LineChunk], expected: list[bytes]) -> None:
    next_line = 1
    for chunk in chunks:
        assert chunk.first_line_number == next_line
        next_line += len(chunk.lines())
    assert [line for chunk in chunks for line in chunk.lines()] == expected


def test_line_numbers_are_1_based_and_continue_across_chunks(tmp_path):
    expected = [f'{{"event":"E","n":{n}}}'.encode() + b" " * (n % 50) for n in range(1, 20_001)]
    path = write(tmp_path / "big.ndjson", b"\n".join(expected))  # ~1.3 MB: several read blocks
    chunks, breaks = read_all(path, chunk_bytes=64)
    assert breaks == [] and len(chunks) >= 3
    assert chunks[0].first_line_number == 1
    assert_numbered_in_order(chunks, expected)


@pytest.mark.parametrize("suffix", [".ndjson", ".ndjson.gz"])
def test_chunks_never_split_a_line_when_blocks_do(tmp_path, monkeypatch, suffix):
    monkeypatch.setattr(etl.read, "READ_BLOCK", 7)  # blocks that end mid-line, and mid-gzip
    expected = [f"line {n}".encode() * (n % 4) for n in range(1, 200)]
    data = b"\n".join(expected) + b"\n"
    path = write(tmp_path / f"a{suffix}", gzip.compress(data) if suffix.endswith(".gz") else data)
    chunks, breaks = read_all(path, chunk_bytes=64)
    assert breaks == [] and len(chunks) > 10
    assert_numbered_in_order(chunks, expected)


# --- breaks ---------------------------------------------------------------------------------


def test_truncated_gzip_gives_lines_before_the_break_then_one_break(tmp_path):
    path = write(tmp_path / "a.ndjson.gz", gzip_prefix(b"one\ntwo\nthr", b"ee is cut"))
    chunks, breaks = read_all(path)
    assert [line for chunk in chunks for line in chunk.lines()] == [b"one", b"two"]
    assert len(breaks) == 1
    assert breaks[0].line_number == 3
    assert breaks[0].partial_line == b"three is cut"
    assert breaks[0].source_file == "a.ndjson.gz"


def test_gzip_break_on_a_line_boundary_gives_next_line_and_empty_partial(tmp_path):
    path = write(tmp_path / "a.ndjson.gz", gzip_prefix(b"one\ntwo\n"))
    chunks, breaks = read_all(path)
    assert [line for chunk in chunks for line in chunk.lines()] == [b"one", b"two"]
    assert [(b.line_number, b.partial_line) for b in breaks] == [(3, b"")]


def test_gzip_missing_only_its_trailer_still_breaks_after_the_last_line(tmp_path):
    path = write(tmp_path / "a.ndjson.gz", gzip.compress(b"one\ntwo\n")[:-8])
    chunks, breaks = read_all(path)
    assert [line for chunk in chunks for line in chunk.lines()] == [b"one", b"two"]
    assert [(b.line_number, b.partial_line) for b in breaks] == [(3, b"")]


def test_corrupt_gzip_data_keeps_the_lines_before_the_corruption(tmp_path):
    # 0xff starts a deflate block of the reserved type 3: corrupt, not merely truncated.
    path = write(tmp_path / "a.ndjson.gz", gzip_prefix(b"one\ntwo\nthr") + b"\xff" * 64)
    chunks, breaks = read_all(path)
    assert [line for chunk in chunks for line in chunk.lines()] == [b"one", b"two"]
    assert [(b.line_number, b.partial_line) for b in breaks] == [(3, b"thr")]


def test_truncated_gzip_break_is_numbered_after_many_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(etl.read, "READ_BLOCK", 5)
    lines = [f"line {n}".encode() for n in range(1, 101)]
    path = write(tmp_path / "a.ndjson.gz", gzip_prefix(b"\n".join(lines) + b"\npart"))
    chunks, breaks = read_all(path, chunk_bytes=32)
    assert len(chunks) > 1
    assert_numbered_in_order(chunks, lines)
    assert [(b.line_number, b.partial_line) for b in breaks] == [(101, b"part")]


@pytest.mark.parametrize("data", [b"this is not gzip at all\n{}\n", b""], ids=["garbage", "empty"])
def test_unreadable_gz_file_breaks_at_line_1(tmp_path, data):
    chunks, breaks = read_all(write(tmp_path / "a.ndjson.gz", data))
    assert chunks == []
    assert len(breaks) == 1
    assert breaks[0].line_number == 1
    assert breaks[0].error


# --- folders --------------------------------------------------------------------------------


def test_day_files_are_sorted_by_name_and_other_entries_are_ignored(tmp_path):
    day = tmp_path / "2025-01-15"
    for name in ["c.json", "b.jsonl.gz", "README.txt", "a.ndjson", "a.ndjson.gz", "notes.txt.gz", "d.json.bak"]:
        write(day / name, b"")
    (day / "sub").mkdir()
    (day / "folder.ndjson").mkdir()
    found = list_day_files(tmp_path, "2025-01-15")
    assert found.day == "2025-01-15"
    assert [p.name for p in found.files] == ["a.ndjson", "a.ndjson.gz", "b.jsonl.gz", "c.json"]
    assert sorted(p.name for p in found.ignored) == ["README.txt", "d.json.bak", "folder.ndjson", "notes.txt.gz",
                                                     "sub"]


def test_a_broken_link_named_as_a_log_is_a_log_file_that_cannot_be_read_and_a_fifo_is_ignored(tmp_path):
    day = tmp_path / "2025-01-15"
    day.mkdir()
    (day / "gone.ndjson").symlink_to(tmp_path / "rotated-away.ndjson")
    os.mkfifo(day / "pipe.ndjson")
    found = list_day_files(tmp_path, "2025-01-15")
    assert ([p.name for p in found.files], [p.name for p in found.ignored]) == (["gone.ndjson"], ["pipe.ndjson"])
    (only,) = read_chunks(found.files[0], "2025-01-15/gone.ndjson")
    assert isinstance(only, FileBreak) and only.line_number == 1 and only.error.startswith("FileNotFoundError")


def test_missing_day_folder_has_no_files(tmp_path):
    found = list_day_files(tmp_path, "2025-01-15")
    assert (found.files, found.ignored) == ([], [])


def test_days_are_only_valid_date_folders_in_ascending_order(tmp_path):
    for name in ["2025-01-16", "2025-01-02", "2024-12-31", "2025-13-01", "2025-02-30", "2025-1-05", "notes", "20250103"]:
        (tmp_path / name).mkdir()
    write(tmp_path / "2025-01-03", b"a file, not a folder")
    write(tmp_path / "2025-01-04.ndjson", b"")
    assert list_days(tmp_path) == ["2024-12-31", "2025-01-02", "2025-01-16"]


def test_a_skipped_folder_whose_name_is_not_utf8_is_named_with_escaped_bytes(tmp_path):
    os.mkdir(os.fsencode(tmp_path) + b"/archiv\xe9")
    assert skipped_names(tmp_path) == ["archiv\\xe9"]


def skipped_names(logs_root: Path) -> list[str]:
    return [readable_path(path.name) for path, _ in skipped_entries(logs_root)]


def test_missing_logs_root_has_no_days(tmp_path):
    assert list_days(tmp_path / "missing") == []


def test_a_line_longer_than_a_chunk_is_joined_once_not_once_per_block(tmp_path, monkeypatch):
    monkeypatch.setattr(etl.read, "READ_BLOCK", 100)
    long_line = b'{"batch":[' + b'{"event":"E"},' * 10_000 + b"{}]}"  # 140 KB: 1,400 blocks
    path = write(tmp_path / "export.json", long_line + b"\nnext")
    profile = cProfile.Profile()
    chunks, breaks = profile.runcall(read_all, path, chunk_bytes=1_000)
    joins = pstats.Stats(profile).stats[("~", 0, "<method 'join' of 'bytes' objects>")][1]
    assert [line for chunk in chunks for line in chunk.lines()] == [long_line, b"next"] and breaks == []
    assert joins <= 3


def test_a_day_folder_outside_1900_to_2199_is_skipped_and_named(tmp_path):
    for name in ("1899-12-31", "1900-01-01", "2199-12-31", "2200-01-01", "9999-12-31"):
        (tmp_path / name).mkdir()
    assert list_days(tmp_path) == ["1900-01-01", "2199-12-31"]
    assert [(path.name, advice) for path, advice in skipped_entries(tmp_path)] == [
        (name, etl.read.OUT_OF_RANGE) for name in ("1899-12-31", "2200-01-01", "9999-12-31")
    ]


def test_a_log_file_or_a_day_named_file_directly_under_the_logs_root_is_skipped_and_named(tmp_path):
    # Neither is loaded: a run that passed them over in silence lost their logs without a word.
    write(tmp_path / "mobile.ndjson.gz", b"")
    write(tmp_path / "2025-01-14", b"")
    write(tmp_path / "README.txt", b"")
    (tmp_path / "2025-01-15").mkdir()
    skipped = dict((path.name, advice) for path, advice in skipped_entries(tmp_path))
    assert skipped.keys() == {"mobile.ndjson.gz", "2025-01-14"}
    assert skipped["mobile.ndjson.gz"].startswith("a log file outside any day folder")
    assert skipped["2025-01-14"].startswith("a file, not a folder")


def test_a_chunk_of_tiny_lines_ends_after_about_chunk_lines_lines(tmp_path, monkeypatch):
    # 4 MB of `0` lines were 2M quarantine rows in one chunk: 10.5 GB, measured.
    monkeypatch.setattr(etl.read, "CHUNK_LINES", 100)
    monkeypatch.setattr(etl.read, "READ_BLOCK", 64)  # 32 lines a block
    expected = [b"0"] * 1_000
    chunks, breaks = read_all(write(tmp_path / "zeros.ndjson", b"\n".join(expected)))
    assert breaks == [] and len(chunks) >= 8
    assert max(len(chunk.lines()) for chunk in chunks) <= 100 + 32
    assert_numbered_in_order(chunks, expected)


def test_a_chunk_takes_no_more_lines_than_its_budget_says_when_cut(tmp_path, monkeypatch):
    # The load lowers the budget as it learns how wide the day's rows are; the next chunk obeys.
    monkeypatch.setattr(etl.read, "READ_BLOCK", 64)  # 32 lines a block
    expected = [b"0"] * 1_000
    budget = MessageBudget(messages=500)
    pieces = read_chunks(write(tmp_path / "zeros.ndjson", b"\n".join(expected)), "zeros.ndjson", budget=budget)
    chunks = [next(pieces)]
    budget.messages = 100
    chunks.extend(pieces)
    assert 500 <= len(chunks[0].lines()) <= 500 + 32
    assert max(len(chunk.lines()) for chunk in chunks[1:]) <= 100 + 32
    assert_numbered_in_order(chunks, expected)


def test_small_files_are_joined_only_up_to_the_line_budget():
    pieces = [LineChunk(f"{n}.ndjson", 1, b"0\n0") for n in range(10)]
    assert [chunk.line_count() for chunk in coalesced(pieces, budget=MessageBudget(messages=5))] == [4, 4, 4, 4, 4]


@pytest.mark.parametrize(
    ("lines", "cells", "budget"),
    [(4_096, 4_096 * 2_048, 4_096), (4_096, 4_096 * 10, 65_536), (4_096, 4_096 * 100_000, 1_024), (4_096, 0, 8_192)],
    ids=["2,048 columns", "narrow rows: the line cap", "very wide rows: the floor", "nothing measured"],
)
def test_the_message_budget_aims_at_chunk_cells_within_its_bounds(monkeypatch, lines, cells, budget):
    monkeypatch.setattr(etl.read, "CHUNK_CELLS", 8 * 1024 * 1024)
    monkeypatch.setattr(etl.read, "CHUNK_LINES", 65_536)
    monkeypatch.setattr(etl.read, "MIN_CHUNK_MESSAGES", 1_024)
    measured = MessageBudget()
    assert measured.messages == 8_192  # a day starts as if 1,024 columns wide
    measured.fit(lines, cells)
    assert measured.messages == budget


@pytest.mark.parametrize("suffix", [".ndjson", ".ndjson.gz"])
def test_a_line_over_the_line_limit_is_read_past_keeping_its_start_and_length(tmp_path, monkeypatch, suffix):
    monkeypatch.setattr(etl.read, "MAX_LINE_BYTES", 1_000)
    monkeypatch.setattr(etl.read, "READ_BLOCK", 100)
    long_line = bytes(range(48, 58)) * 500  # 5,000 bytes
    data = b"first\n" + long_line + b"\nthird\n" + long_line
    path = write(tmp_path / f"a{suffix}", gzip.compress(data) if suffix.endswith(".gz") else data)
    assert list(read_chunks(path, "a")) == [
        LineChunk("a", 1, b"first"),
        LongLine("a", 2, long_line[:1_000], 5_000),
        LineChunk("a", 3, b"third"),
        LongLine("a", 4, long_line[:1_000], 5_000),
    ]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 1_300), min_size=1, max_size=8), st.booleans(), st.sampled_from([64, 2_000, 1 << 20]))
def test_every_line_over_the_limit_and_none_under_it_is_read_past(tmp_path_factory, lengths, gzipped, chunk_bytes):
    # Wherever a line's end falls among the read blocks: a line that ends in the block that takes
    # it past the limit was once held whole.
    limit, path = 1_000, tmp_path_factory.mktemp("lines") / ("a.ndjson.gz" if gzipped else "a.ndjson")
    lines = [bytes([48 + i % 10]) * length for i, length in enumerate(lengths)]
    data = b"\n".join(lines) + b"\n"
    write(path, gzip.compress(data) if gzipped else data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(etl.read, "MAX_LINE_BYTES", limit)
        patch.setattr(etl.read, "READ_BLOCK", 100)
        pieces = list(read_chunks(path, "a", chunk_bytes=chunk_bytes))
    seen = []
    for piece in pieces:
        if isinstance(piece, LongLine):
            seen.append((piece.line_number, piece.start, piece.length))
        else:
            seen += [(piece.first_line_number + i, line, len(line)) for i, line in enumerate(piece.lines())]
    assert seen == [(n, line[:limit], len(line)) for n, line in enumerate(lines, 1)]
    assert all(p.length > limit for p in pieces if isinstance(p, LongLine))
    assert all(len(line) <= limit for p in pieces if isinstance(p, LineChunk) for line in p.lines())
    assert all(p.line_count() == len(p.lines()) for p in pieces if isinstance(p, LineChunk))  # counted as read


def test_a_file_breaking_inside_a_long_line_breaks_there_with_its_start(tmp_path, monkeypatch):
    monkeypatch.setattr(etl.read, "MAX_LINE_BYTES", 1_000)
    monkeypatch.setattr(etl.read, "READ_BLOCK", 100)
    path = write(tmp_path / "a.ndjson.gz", gzip_prefix(b"first\n", b"x" * 5_000))
    *_, last = read_chunks(path, "a")
    assert isinstance(last, FileBreak) and (last.line_number, last.partial_line) == (2, b"x" * 1_000)
    assert last.cut_line_length == 5_000  # the quarantine row's message says raw is only its start


def test_a_file_breaking_inside_a_short_line_gives_no_cut_line_length(tmp_path):
    path = write(tmp_path / "a.ndjson.gz", gzip_prefix(b"first\n", b'{"cut'))
    *_, last = read_chunks(path, "a")
    assert isinstance(last, FileBreak) and (last.partial_line, last.cut_line_length) == (b'{"cut', None)


def test_a_gzip_breaking_after_a_long_line_reads_what_it_salvaged_whatever_the_block_size(tmp_path, monkeypatch):
    # What decompresses before the break can end a long line being read past and hold lines after
    # it: they were lost, or the long line became the break's partial line, with small blocks.
    monkeypatch.setattr(etl.read, "MAX_LINE_BYTES", 300)
    data = b"\n".join([b'{"a":1}', b"x" * 400, b'{"b":2}', b'{"c":3}']) + b"\n"
    for cut in range(1, 30):
        path = write(tmp_path / f"cut{cut}.ndjson.gz", gzip.compress(data, mtime=0)[:-cut])
        outcomes = set()
        for block, chunk_bytes in ((64, 1 << 22), (1, 1), (64, 1), (7, 50)):
            monkeypatch.setattr(etl.read, "READ_BLOCK", block)
            outcome = []
            for piece in read_chunks(path, "a", chunk_bytes):
                if isinstance(piece, LineChunk):
                    outcome += [(piece.first_line_number + i, line) for i, line in enumerate(piece.lines())]
                elif isinstance(piece, LongLine):
                    outcome.append((piece.line_number, "long", piece.length))
                else:
                    outcome.append((piece.line_number, "break", piece.partial_line))
            outcomes.add(tuple(outcome))
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        *complete, partial = (decompressor.decompress(path.read_bytes()) + decompressor.flush()).split(b"\n")
        expected = [(n, "long", len(line)) if len(line) > 300 else (n, line) for n, line in enumerate(complete, 1)]
        assert outcomes == {(*expected, (len(complete) + 1, "break", partial[:300]))}, cut


def test_small_chunks_join_in_order_up_to_one_chunk_and_a_break_passes_between(monkeypatch):
    monkeypatch.setattr(etl.read, "CHUNK_LINES", 4)
    pieces = [
        LineChunk("a", 1, b"x" * 10), LineChunk("b", 7, b"y\nz"), FileBreak("b", 9, b"", "GzipBroken: truncated"),
        LineChunk("c", 1, b"w" * 30), LineChunk("d", 1, b"v"), LineChunk("e", 1, b"1\n2\n3\n4"),
    ]
    out = list(coalesced(pieces, chunk_bytes=32))
    assert out[1:] == pieces[2:]  # c is full with d (32 bytes), and d is full with e (5 lines)
    assert out[0].lines() == [b"x" * 10, b"y", b"z"] and out[0].line_count() == 3
    assert (out[0].source_file, out[0].first_line_number) == ("a", 1)
    assert out[0].files == (FileLines("a", 1, 1), FileLines("b", 7, 2))
