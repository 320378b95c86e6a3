"""Find a day's log files and stream their lines in bounded chunks.

Lines leave this module as raw bytes with their provenance (file, first line number), so the
validator can keep `raw` byte-exact. Memory is bounded by the chunk size, never by the file.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

LOG_SUFFIXES = (".ndjson", ".jsonl", ".json")
DAY_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")
FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(2199, 12, 31)
CHUNK_BYTES = 4 * 1024 * 1024  # 8 MB: 4 % less CPU, 165 MB more peak (main + 2 workers), measured
# Lines cost memory by count too (~400 bytes each as a quarantine row): 4 MB of `0` lines made
# 2M rows in one chunk. Real chunks have ~5,000 lines; past this many, a chunk ends early.
CHUNK_LINES = 65_536
# And by width: a frame holds 16 bytes a cell of a string column, null or not, so 65,536 short
# lines that each set one of 1,000 sparse property keys made a 1 GB event table (measured). A
# load lowers its message budget to keep a chunk's frames near this many cells (see `MessageBudget`);
# a usual chunk (5,000 lines of 80 columns) is far below it.
CHUNK_CELLS = 8 * 1024 * 1024
MIN_CHUNK_MESSAGES = 1_024
# No sender writes a line this long (Segment caps a batch at 500 KB, RudderStack at 4 MB), and a
# line is held whole, at ~12x its size once decoded and framed: a 255 KB gzip of one 250 MB line
# peaked at 3 GB. A longer line keeps only its start (see LongLine).
MAX_LINE_BYTES = 16 * 1024 * 1024
READ_BLOCK = 256 * 1024
GZIP_WBITS = 16 + zlib.MAX_WBITS


@dataclass
class MessageBudget:
    """How many messages a chunk may take, a plain line being one: the reader cuts chunks at as
    many lines, and validation stops a chunk past as many messages, inside a batch envelope if
    need be (see `validate_chunk`).

    A day starts as if its rows were 1,024 columns wide: the chunks that are cut before the first
    one is measured (five with two workers) would otherwise each take CHUNK_LINES lines however
    wide. A usual chunk is cut by its bytes before that many lines."""

    messages: int = field(default_factory=lambda: messages_making_chunk_cells(1_024))

    def fit(self, messages: int, cells: int) -> None:
        """Size the next chunks after the last: its `messages` made `cells` (the columns of its
        frames times their rows)."""
        if messages and cells:
            self.messages = messages_making_chunk_cells(cells / messages)


def messages_making_chunk_cells(cells_per_message: float) -> int:
    """About CHUNK_CELLS cells' worth of messages, within MIN_CHUNK_MESSAGES … CHUNK_LINES."""
    return min(CHUNK_LINES, max(MIN_CHUNK_MESSAGES, int(CHUNK_CELLS / cells_per_message)))


@dataclass(frozen=True)
class DayFiles:
    """The log files of one received day, and what the folder held besides."""

    day: str
    files: list[Path]
    ignored: list[Path]


class FileLines(NamedTuple):
    """Where the lines of one file sit in a joined chunk."""

    source_file: str
    first_line_number: int
    lines: int


@dataclass(frozen=True)
class LineChunk:
    """Complete lines, newline-joined, starting at `first_line_number` (1-based): of one file, or
    of several files' chunks joined (`files`), numbered on from the first file's first line as if
    they were one file; `files` says where each file's lines begin."""

    source_file: str
    first_line_number: int
    blob: bytes
    files: tuple[FileLines, ...] = ()
    # Known to the reader, which counted each block's newlines already: counting the chunk again
    # (and again to join it) took a second of the main process for 1M events, measured.
    counted_lines: int | None = field(default=None, compare=False, repr=False)
    # Where validation starts: (line offset, batch index). A chunk's validation stops after its
    # message budget, inside a batch envelope if need be, and goes on from here in the chunk
    # again (see `validate_chunk`): one 16 MB line may hold millions of messages.
    resume: tuple[int, int] = (0, 0)

    def lines(self) -> list[bytes]:
        return self.blob.split(b"\n")

    def line_count(self) -> int:
        return self.counted_lines if self.counted_lines is not None else self.blob.count(b"\n") + 1


@dataclass(frozen=True)
class LongLine:
    """A line over MAX_LINE_BYTES: its first MAX_LINE_BYTES bytes and its whole length. It is
    read past, never held, so one line cannot exhaust memory."""

    source_file: str
    line_number: int
    start: bytes
    length: int


@dataclass(frozen=True)
class FileBreak:
    """Where a file stopped being readable: the line it broke on and what of it was read."""

    source_file: str
    line_number: int
    partial_line: bytes
    error: str
    cut_line_length: int | None = None  # a cut-off line over MAX_LINE_BYTES: its length when the file broke


NOT_A_DAY = "not a YYYY-MM-DD day folder (rename it to the day its logs were received to load them)"
OUT_OF_RANGE = f"a day outside the {FIRST_DAY} … {LAST_DAY} that Dagster's daily partitions cover: check its year"
DAY_NAMED_FILE = "a file, not a folder: put that day's log files in a folder with this name"


def named_date(name: str) -> dt.date | None:
    """The real date a `YYYY-MM-DD` name gives (`2025-02-30` gives none)."""
    try:
        return dt.date.fromisoformat(name) if DAY_FOLDER.match(name) else None
    except ValueError:
        return None


def is_day_out_of_range(name: str) -> bool:
    """A real `YYYY-MM-DD` date before FIRST_DAY or after LAST_DAY."""
    date = named_date(name)
    return date is not None and not FIRST_DAY <= date <= LAST_DAY


def is_day_folder(path: Path) -> bool:
    """A `YYYY-MM-DD` folder of a real date in FIRST_DAY … LAST_DAY: Dagster's daily partitions
    cannot reach year 1 or 9999, and take seconds a lookup near the year 3000, so a folder past
    those (a typo'd year) is named and skipped rather than failing every day's run."""
    date = named_date(path.name)
    return date is not None and FIRST_DAY <= date <= LAST_DAY and path.is_dir()


def list_days(logs_root: Path) -> list[str]:
    """Every `YYYY-MM-DD` folder under the logs root, ascending: the partitions that exist."""
    if not logs_root.is_dir():
        return []
    return sorted(p.name for p in logs_root.iterdir() if is_day_folder(p))


def readable_path(path: str) -> str:
    """A path as text that any Parquet string or terminal can hold. A name that is not valid
    UTF-8 (a Latin-1 `café` from an old drop) shows each such byte as `\\xe9`: Python keeps it
    as a lone surrogate, which crashed the day when stored as `source_file`. A backslash in the
    name itself is doubled, so a name spelling `\\xe9` out never reads like one holding that byte."""
    return os.fsencode(path).replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def skipped_entries(logs_root: Path) -> list[tuple[Path, str]]:
    """What under the logs root holds logs a run never loads, each with what to do about it: a
    folder that is not a day (`2025-02-30`, `archive`) or a day out of range, a log file outside any
    day folder, a file named like a day. A run names them rather than skip them in silence."""
    if not logs_root.is_dir():
        return []
    skipped = []
    for path in sorted(logs_root.iterdir(), key=lambda p: readable_path(p.name)):
        if path.name.startswith(".") or is_day_folder(path):
            continue
        if path.is_dir():
            skipped.append((path, OUT_OF_RANGE if is_day_out_of_range(path.name) else NOT_A_DAY))
        elif is_log_file(path):
            skipped.append((path, "a log file outside any day folder: move it into the folder of the day it was received"))
        elif DAY_FOLDER.match(path.name):
            skipped.append((path, DAY_NAMED_FILE))
    return skipped


def is_log_file(path: Path) -> bool:
    """A regular file with a log suffix, or a broken link with one: that is a log file that
    cannot be read (an `unreadable_file` row), not another kind of file. Folders and FIFOs are
    not log files (reading a FIFO would wait for ever)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return (path.is_file() or (path.is_symlink() and not path.exists())) and name.endswith(LOG_SUFFIXES)


class UnreadableDayFolder(Exception):
    """A day folder that cannot be listed: loading it as an empty day would lose its logs."""


def list_day_files(logs_root: Path, day: str) -> DayFiles:
    """Log files of a day sorted by name (the order that decides which duplicate wins)."""
    folder = logs_root / day
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name) if folder.is_dir() else []
    except OSError as error:
        raise UnreadableDayFolder(
            f"cannot read day folder {readable_path(str(folder))} ({error.strerror}): give this user read access to it, then rerun the day"
        ) from None
    files = [p for p in entries if is_log_file(p)]
    ignored = [p for p in entries if not is_log_file(p)]
    return DayFiles(day=day, files=files, ignored=ignored)


def _plain_blocks(path: Path, block_size: int) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(block_size):
            yield block


def _salvage(decompressor, data: bytes) -> bytes:
    """Decompress byte by byte up to a corrupt spot, so no line before the break is lost."""
    out = []
    for i in range(len(data)):
        try:
            out.append(decompressor.decompress(data[i : i + 1]))
        except zlib.error:
            break
    return b"".join(out)


class GzipBroken(Exception):
    """A gzip stream that ended early or is corrupt; carries what was decompressed before it."""

    def __init__(self, message: str, tail: bytes = b""):
        super().__init__(message)
        self.tail = tail


def _gzip_blocks(path: Path, block_size: int) -> Iterator[bytes]:
    """Decompress gzip (multi-member included) in bounded blocks; raise GzipBroken at a break."""
    decompressor = zlib.decompressobj(GZIP_WBITS)
    started = False
    for block in _plain_blocks(path, block_size):
        pending = block
        while pending:
            started = True
            if decompressor is None:
                # Between members: zero bytes may pad a file after a member (tape blocks), and
                # gzip itself skips them; anything else starts the next member.
                pending = pending.lstrip(b"\0")
                if not pending:
                    break
                decompressor = zlib.decompressobj(GZIP_WBITS)
            checkpoint = decompressor.copy()
            try:
                out = decompressor.decompress(pending, block_size)
            except zlib.error as error:
                raise GzipBroken(f"corrupt gzip data ({error})", _salvage(checkpoint, pending)) from error
            if out:
                yield out
            # A member that ends in a call cut short by the output limit leaves the bytes after it
            # in both `unused_data` and `unconsumed_tail`: read as more of the ended member, they
            # gave nothing, for ever (a multi-member gzip whose first member ends mid-block hung).
            if decompressor.eof:
                pending, decompressor = decompressor.unused_data, None
            elif decompressor.unconsumed_tail:
                pending = decompressor.unconsumed_tail
            else:
                pending = b""
    if not started:
        raise GzipBroken("empty file, not a gzip stream")
    if decompressor is not None and not decompressor.eof:
        raise GzipBroken("gzip stream truncated before its end", decompressor.flush())


def _decoded_blocks(path: Path, block_size: int) -> Iterator[bytes]:
    if path.name.lower().endswith(".gz"):
        return _gzip_blocks(path, block_size)
    return _plain_blocks(path, block_size)


Piece = LineChunk | LongLine | FileBreak


def read_chunks(
    path: Path, source_file: str, chunk_bytes: int = CHUNK_BYTES, budget: MessageBudget | None = None,
) -> Iterator[Piece]:
    """Yield a file's complete lines in chunks of about `chunk_bytes` (or `budget.messages` lines),
    a LongLine for each line over MAX_LINE_BYTES, then a FileBreak if the file broke.

    A chunk never splits a line. A line cut off by a break is not yielded as a line: it is the
    `partial_line` of the FileBreak, numbered as the line it would have been.
    """
    budget = budget or MessageBudget()
    parts: list[bytes] = []
    size = newlines = tail = 0  # `tail`: bytes of the unfinished last line in `parts`
    next_line = 1
    long_start: bytes | None = None  # the start of a LongLine being read past
    long_length = 0

    def complete_lines(data: bytes, newlines_in_data: int | None = None) -> tuple[LineChunk | None, bytes]:
        """The lines `data` completes (all up to its last newline) as a chunk, and the rest."""
        nonlocal next_line
        cut = data.rfind(b"\n")
        if cut < 0:
            return None, data
        lines = newlines_in_data if newlines_in_data is not None else data.count(b"\n", 0, cut) + 1
        chunk = LineChunk(source_file, next_line, data[:cut], counted_lines=lines)
        next_line += lines
        return chunk, data[cut + 1 :]

    def take(block: bytes) -> Iterator[Piece]:
        """The pieces one more block of decompressed bytes completes."""
        nonlocal parts, size, newlines, tail, next_line, long_start, long_length
        if long_start is not None:
            end = block.find(b"\n")
            long_length += len(block) if end < 0 else end
            if end < 0:
                return
            yield LongLine(source_file, next_line, long_start, long_length)
            next_line, long_start, block = next_line + 1, None, block[end + 1 :]
        parts.append(block)
        size += len(block)
        in_block = block.count(b"\n")
        newlines += in_block
        if in_block and tail + block.find(b"\n") > MAX_LINE_BYTES:
            # A line that ends in this block yet began more than MAX_LINE_BYTES before.
            data, ending = b"".join(parts), block.find(b"\n")
            start = len(data) - len(block) - tail
            if start:
                chunk, _ = complete_lines(data[:start])
                yield chunk
            yield LongLine(source_file, next_line, data[start : start + MAX_LINE_BYTES], tail + ending)
            rest = block[ending + 1 :]
            next_line, parts, size, newlines = next_line + 1, [rest], len(rest), in_block - 1
            tail = len(rest) - rest.rfind(b"\n") - 1 if newlines else len(rest)
            return
        tail = len(block) - block.rfind(b"\n") - 1 if in_block else tail + len(block)
        if tail > MAX_LINE_BYTES:
            chunk, rest = complete_lines(b"".join(parts))
            if chunk is not None:
                yield chunk
            long_start, long_length = rest[:MAX_LINE_BYTES], len(rest)
            parts, size, newlines, tail = [], 0, 0, 0
            return
        # Blocks are joined only when a full chunk has a line end to cut at: a line longer
        # than a chunk is gathered whole and joined once (joining it again at every block
        # took 10 s for a 94 MB one-line `.json` export, quadratic in its length).
        if (size < chunk_bytes and newlines < budget.messages) or not in_block:
            return
        chunk, rest = complete_lines(b"".join(parts), newlines)
        parts, size, newlines = [rest], len(rest), 0
        if chunk is not None:
            yield chunk

    try:
        for block in _decoded_blocks(path, min(READ_BLOCK, chunk_bytes)):
            yield from take(block)
    except (GzipBroken, OSError) as error:
        # What was decompressed before the break is read like any block: it may end a long line
        # and hold whole lines after it.
        yield from take(getattr(error, "tail", b""))
        if long_start is not None:
            partial, cut_length = long_start, long_length
        else:
            chunk, partial = complete_lines(b"".join(parts))
            cut_length = None
            if chunk is not None:
                yield chunk
        yield FileBreak(source_file, next_line, partial, f"{type(error).__name__}: {error}", cut_length)
        return
    if long_start is not None:
        yield LongLine(source_file, next_line, long_start, long_length)
        return
    rest = b"".join(parts)
    if rest:
        # A final newline ends the last line; it does not start another one.
        yield LineChunk(source_file, next_line, rest[:-1] if rest.endswith(b"\n") else rest)


def joined(chunks: list[LineChunk]) -> LineChunk:
    if len(chunks) == 1:
        return chunks[0]
    files = tuple(FileLines(c.source_file, c.first_line_number, c.line_count()) for c in chunks)
    blob = b"\n".join(c.blob for c in chunks)
    return LineChunk(chunks[0].source_file, chunks[0].first_line_number, blob, files, sum(f.lines for f in files))


def coalesced(pieces: Iterable[Piece], chunk_bytes: int = CHUNK_BYTES, budget: MessageBudget | None = None) -> Iterator[Piece]:
    """Join consecutive line chunks, in order, while they fit in one chunk (`chunk_bytes`,
    `budget.messages`): every chunk costs a few ms of frame building whatever its size, which a day
    of thousands of small files paid per file. A chunk that is full already passes as it is."""
    budget = budget or MessageBudget()
    pending: list[LineChunk] = []
    size = lines = 0
    for piece in pieces:
        if not isinstance(piece, LineChunk):
            if pending:
                yield joined(pending)
                pending, size, lines = [], 0, 0
            yield piece
            continue
        count = piece.line_count()
        if pending and (size + len(piece.blob) >= chunk_bytes or lines + count > budget.messages):
            yield joined(pending)
            pending, size, lines = [], 0, 0
        pending.append(piece)
        size, lines = size + len(piece.blob) + 1, lines + count
        if size >= chunk_bytes or lines >= budget.messages:  # no piece can join it: cut before the budget changes
            yield joined(pending)
            pending, size, lines = [], 0, 0
    if pending:
        yield joined(pending)
