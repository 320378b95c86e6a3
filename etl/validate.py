"""Validate one track message against the contract (section 2) and type its standard fields.

This is the one per-message step in Python: orjson parses, then every rule is checked in the
contract's order so `reasons` lists all failures and `reason` is the first. An accepted
message leaves here with its standard fields already typed, so nothing is parsed twice; its
timestamps are typed per chunk, vectorized (`settle_timestamps`).
"""

from __future__ import annotations

import codecs
import datetime as dt
import hashlib
import json
import operator
import re
import sys
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from types import NoneType
from typing import Any, NamedTuple

import orjson
import polars as pl

from etl.currencies import ISO_4217_CODES
from etl.read import MAX_LINE_BYTES, FileBreak, LineChunk, LongLine

REASON_CODES = (
    "invalid_json",
    "not_an_object",
    "payload_too_large",
    "unsupported_type",
    "missing_event",
    "event_too_long",
    "reserved_event_name",
    "missing_identity",
    "identity_too_long",
    "invalid_properties",
    "too_many_properties",
    "property_name_too_long",
    "properties_too_deep",
    "array_too_long",
    "invalid_timestamp",
    "invalid_revenue",
    "invalid_currency",
    "invalid_value",
    "duplicate_message_id",
    "unreadable_file",
)

MAX_PAYLOAD_BYTES = 32_768
MAX_EVENT_CHARS = 200
MAX_ID_CHARS = 255
MAX_PROPERTIES = 255
MAX_NAME_CHARS = 255
MAX_PROPERTY_DEPTH = 3
MAX_ARRAY_ITEMS = 255
MAX_VALUE = 2_147_483_647
TIMESTAMP_FIELDS = ("timestamp", "originalTimestamp", "sentAt", "receivedAt")
TIMESTAMP_LABELS = (*TIMESTAMP_FIELDS, "properties.occurred_at")
TEXT_OR_ABSENT = frozenset((str, NoneType))
CONTAINERS = frozenset((dict, list))  # parsed JSON holds these exact types, never subclasses
TIME_COLUMNS = ("timestamp", "original_timestamp", "sent_at", "received_at", "occurred_at")
time_texts = operator.attrgetter(*TIME_COLUMNS)
NO_TIMES = (None,) * len(TIME_COLUMNS)
VECTORIZED_FROM = 128

# The offset's hours and minutes are range-checked here: Python's parser reads "+05:99" as
# +6:39 and "+00:60" as +1:00, which ISO 8601 does not allow.
ISO_8601 = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[Tt]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:[Zz]|[+-](?:[01]\d|2[0-3])(?::?[0-5]\d)?)?)?",
    re.ASCII,
)
DECIMAL_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", re.ASCII)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
ONE_MICROSECOND = dt.timedelta(microseconds=1)
# Instants in UTC years 1-9999, the range Python (an analyst's client) can hold: "0001-01-01T00:00
# +01:00" is year 0 in UTC, which Parquet and DuckDB store but fetching it into Python fails.
FIRST_MICROS = (dt.datetime(1, 1, 1, tzinfo=dt.UTC) - EPOCH) // ONE_MICROSECOND
LAST_MICROS = (dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC) - EPOCH) // ONE_MICROSECOND


class Invalid:
    """Marks a present value that failed its rule (distinct from None, which means absent)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"


INVALID = Invalid()


class TrackFields(NamedTuple):
    """The typed standard fields of an accepted message, as `tracks` stores them (a named tuple:
    built once per message, it costs a third of a frozen dataclass). Timestamps are still the
    text sent: `settle_timestamps` checks and types them for the whole chunk at once."""

    message_id: str
    event_text: str
    user_id: str | None
    anonymous_id: str | None
    timestamp: str | None
    original_timestamp: str | None
    sent_at: str | None
    received_at: str | None
    occurred_at: str | None
    revenue: float | None
    currency: str | None
    value: int | None
    context: Any
    properties: dict
    properties_json: bytes


JSON_MAX_DEPTH = 1024  # orjson parses no deeper, so no parsed value nests further
ORJSON_TOO_DEEP = "Recursion limit reached"  # orjson writes only 254 levels


def make_room_for_deep_json(levels: int = JSON_MAX_DEPTH) -> None:
    """Let the standard library's JSON and pickle, which recurse once or twice a nesting level,
    take a value `levels` deep: orjson reads 1,024 levels but writes only 254, and Python's
    default limit of 1,000 frames (fewer under Dagster's call stack) crashed the day on valid
    JSON. The limit is only ever raised, so threads never lower it under each other."""
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    needed = depth + 2 * min(levels, JSON_MAX_DEPTH) + 100
    if sys.getrecursionlimit() < needed:
        sys.setrecursionlimit(needed)


def dump_json(value: Any, sort_keys: bool = False) -> bytes:
    """Compact JSON; the standard library only where orjson refuses (integers past 64 bits,
    nesting past 254 levels)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError as error:
        if str(error) == ORJSON_TOO_DEEP:
            make_room_for_deep_json()
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys).encode()


def json_type_name(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


# Line breaks that JSON text may hold raw (it escapes only C0 controls): `message` is one line.
JSON_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def short_repr(value: Any, limit: int = 60) -> str:
    text = dump_json(value).decode().translate(JSON_LINE_BREAKS) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_timestamp(value: Any) -> int | None | Invalid:
    """ISO-8601 (extended format) to UTC epoch microseconds; naive times are read as UTC."""
    if value is None:
        return None
    if type(value) is not str:
        return INVALID
    return iso_8601_micros(value)


@lru_cache(maxsize=65_536)
def iso_8601_micros(value: str) -> int | Invalid:
    """The exact check and conversion. Remembered per process: a batch shares its `sentAt` and
    `receivedAt`, and the check costs more than the lookup."""
    if not ISO_8601.fullmatch(value):
        return INVALID
    try:
        parsed = dt.datetime.fromisoformat(value.upper().replace(",", "."))
    except ValueError:
        return INVALID
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    micros = (parsed - EPOCH) // ONE_MICROSECOND
    return micros if FIRST_MICROS <= micros <= LAST_MICROS else INVALID


# The shapes SDKs send ("2024-01-15T10:30:00.123Z", or "+00:00" as Python's isoformat writes),
# in ASCII digits (`\d` would take any script's), a year from 0001 (Python has no year 0, chrono
# does), hours, minutes, seconds and offsets in range: only the day of the month is left for the
# parser to check.
SDK_TIMESTAMP = (
    r"^(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])-[0-9]{2}-[0-9]{2}"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{3}|\.[0-9]{6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)


def sdk_timestamp_micros(texts: pl.DataFrame) -> pl.DataFrame:
    """Vectorized `iso_8601_micros` for the SDK shapes, column by column: epoch microseconds, or
    null for any other shape and for a day that does not exist (those go to the exact parser).

    chrono's RFC 3339 parser (`%+`, 0.2 µs a value) once the shape is known; Arrow's cast is
    faster (0.03 µs) but importing pyarrow costs each worker 34 MB, measured. Each value is parsed
    once: written inside `when` and `then`, Polars parsed it twice (0.44 against 0.25 µs a value).
    """
    parsed = texts.select(
        *(pl.col(n).str.contains(SDK_TIMESTAMP).alias(f"{n}_shaped") for n in texts.columns),
        *(pl.col(n).str.strptime(pl.Datetime("us", "UTC"), "%+", strict=False).dt.epoch("us") for n in texts.columns),
    )
    return parsed.select(
        pl.when(pl.col(f"{name}_shaped") & pl.col(name).is_between(FIRST_MICROS, LAST_MICROS)).then(pl.col(name)).alias(name)
        for name in texts.columns
    )


def corrected_timestamp() -> pl.Expr:
    """Segment's skew correction: receivedAt − (sentAt − originalTimestamp) when no timestamp."""
    ts, original, sent, received = (pl.col(n) for n in ("timestamp", "original_timestamp", "sent_at", "received_at"))
    return (
        pl.when(ts.is_not_null())
        .then(ts)
        .when(original.is_not_null() & sent.is_not_null() & received.is_not_null())
        .then(received - (sent - original))
        .otherwise(pl.coalesce(original, pl.col("occurred_at"), received))
    )


SKEW_OUT_OF_RANGE = (
    "invalid_timestamp",
    "timestamp corrected for clock skew, receivedAt − (sentAt − originalTimestamp), falls outside years 1–9999",
)


def skew_out_of_range(times: list[int | None]) -> bool:
    """`corrected_timestamp` for one message, where only its skew branch can leave years 1–9999."""
    timestamp, original, sent, received, _ = times
    if timestamp is not None or original is None or sent is None or received is None:
        return False
    return not FIRST_MICROS <= received - (sent - original) <= LAST_MICROS


def timestamp_failure(texts: list[Any], times: list[int | None | Invalid]) -> tuple[str, str] | None:
    """The invalid_timestamp failure naming every bad timestamp field, or None."""
    bad = [label for label, parsed in zip(TIMESTAMP_LABELS, times) if parsed is INVALID]
    if not bad:
        return SKEW_OUT_OF_RANGE if skew_out_of_range(times) else None
    shown = short_repr(texts[TIMESTAMP_LABELS.index(bad[0])])
    return "invalid_timestamp", f"{', '.join(bad)} not ISO-8601 (e.g. 2024-01-15T10:30:00Z) in UTC years 1–9999: {shown}"


def as_float(value: int) -> float | Invalid:
    """An integer as a double (a float column, `revenue`), past 64 bits too (2**63 is a double
    exactly); only one beyond the double range (about 1.8e308) does not fit."""
    try:
        return float(value)
    except OverflowError:
        return INVALID


def parse_number(value: Any) -> float | None | Invalid:
    """A JSON number or a plain decimal string ("19.99"); booleans are not numbers."""
    if value is None:
        return None
    if isinstance(value, bool):
        return INVALID
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        return as_float(value)
    if isinstance(value, str) and DECIMAL_NUMBER.fullmatch(value):
        number = float(value)
        return number if number not in (float("inf"), float("-inf")) else INVALID
    return INVALID


def parse_value_cents(value: Any) -> int | None | Invalid:
    """Drip's `value`: a whole number of cents in 0 … 2,147,483,647 (integer strings too). A
    string is read exactly: as a float, "20.0000000000000001" would round to a whole 20."""
    if type(value) is int:
        return value if 0 <= value <= MAX_VALUE else INVALID
    if type(value) is str and DECIMAL_NUMBER.fullmatch(value):
        try:
            exact = Decimal(value)
        except InvalidOperation:  # an exponent of 19 digits or more: the value is 0, or far from a whole number in range
            return 0 if not value.lower().partition("e")[0].strip("-0.") else INVALID
        return int(exact) if 0 <= exact <= MAX_VALUE and exact == exact.to_integral_value() else INVALID
    number = parse_number(value)
    if number is None or number is INVALID:
        return number
    if not number.is_integer() or not 0 <= number <= MAX_VALUE:
        return INVALID
    return int(number)


def parse_currency(value: Any) -> str | None | Invalid:
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.upper() in ISO_4217_CODES:
        return value.upper()
    return INVALID


def identity(value: Any) -> str | None:
    """A usable id: a non-blank string as given, or an integer as its decimal string."""
    if isinstance(value, str):
        return value if value and not value.isspace() else None  # what `value.strip()` says, without a copy
    if type(value) is int:
        return str(value)
    return None


def derived_message_id(message: dict) -> str:
    """A stable id for a message without one: the same content always gets the same id."""
    canonical = dump_json(message, sort_keys=True)
    return "th-" + hashlib.sha1(canonical).hexdigest()


def scan_properties(properties: dict, as_json: bytes) -> tuple[bool, bool]:
    """Return (a name over 255 characters, a key nested deeper than 3 levels) anywhere below.

    Most properties are settled from their compact JSON `as_json` (which `tracks` stores anyway)
    in C: an object 4 levels deep needs 4 `{`, a name over 255 characters a text of 262 bytes
    (`{"`, the name, `":`, a value, `}`), and with one `{` no name is below the top. Only the rest
    are walked (2.2 µs a message when all were, measured)."""
    braces = as_json.count(b"{")
    if braces <= MAX_PROPERTY_DEPTH and len(as_json) < MAX_NAME_CHARS + 7:
        return False, False
    long_name = max(map(len, properties), default=0) > MAX_NAME_CHARS
    if braces == 1:
        return long_name, False
    too_deep = False
    stack: list[tuple[Any, int]] = [(child, 2) for child in properties.values() if type(child) in CONTAINERS]
    while stack and not (long_name and too_deep):
        node, depth = stack.pop()
        if type(node) is dict:
            if node and depth > MAX_PROPERTY_DEPTH:
                too_deep = True
            for key, child in node.items():
                if len(key) > MAX_NAME_CHARS:
                    long_name = True
                if type(child) in CONTAINERS:
                    stack.append((child, depth + 1))
        else:
            # Arrays are transparent: an object inside one sits at the array's own level.
            stack.extend((child, depth) for child in node if type(child) in CONTAINERS)
    return long_name, too_deep


def has_long_array(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            if len(node) > MAX_ARRAY_ITEMS:
                return True
            stack.extend(v for v in node if isinstance(v, (dict, list)))
    return False


def size_failures(size: int) -> list[tuple[str, str]]:
    """payload_too_large for a message or line over 32 KB: a size is known whether or not the
    text parses, so `reasons` lists it after invalid_json and not_an_object too."""
    return [("payload_too_large", f"Event payload exceeds 32KB limit ({size:,} bytes)")] if size > MAX_PAYLOAD_BYTES else []


def check_message(message: dict, size: int, may_have_long_array: bool) -> tuple[list[tuple[str, str]], TrackFields | None]:
    """Check every rule after JSON parsing; return the failures (code, message) or the typed fields."""
    failures = size_failures(size)
    fail = failures.append

    kind = message.get("type")
    if kind is not None and kind != "track":
        fail(("unsupported_type", f"Unsupported message type {short_repr(kind)}: only track messages are loaded"))

    event = message.get("event")
    if not isinstance(event, str) or not event or event.isspace():
        fail(("missing_event", "Missing required field: event"))
    else:
        if len(event) > MAX_EVENT_CHARS:
            fail(("event_too_long", f"Event name is {len(event)} characters, over the {MAX_EVENT_CHARS} limit"))
        if event.startswith("$"):
            fail(("reserved_event_name", "Event name cannot start with '$'"))

    user_id = identity(message.get("userId"))
    anonymous_id = identity(message.get("anonymousId"))
    if user_id is None and anonymous_id is None:
        fail(("missing_identity", "Missing identity: neither userId nor anonymousId is a non-empty string or an integer"))
    else:
        longest = max(len(user_id or ""), len(anonymous_id or ""))
        if longest > MAX_ID_CHARS:
            fail(("identity_too_long", f"userId or anonymousId is {longest} characters, over the {MAX_ID_CHARS} limit"))

    properties = message.get("properties")
    properties_json = b"{}"
    if properties is None:
        properties = {}
    elif not isinstance(properties, dict):
        fail(("invalid_properties", f"properties must be an object, got {json_type_name(properties)}"))
        properties = {}
    else:
        if len(properties) > MAX_PROPERTIES:
            fail(("too_many_properties", f"properties has {len(properties)} keys, over the {MAX_PROPERTIES} limit"))
        # Copied to a bytes object of its own size: orjson's holds a larger buffer, which kept
        # alone with the message (until `tracks` is built) added 11 MB a worker, measured.
        properties_json = bytes(memoryview(dump_json(properties)))
        long_name, too_deep = scan_properties(properties, properties_json)
        if long_name:
            fail(("property_name_too_long", f"A property name is over {MAX_NAME_CHARS} characters"))
        if too_deep:
            fail(("properties_too_deep", f"properties nest objects more than {MAX_PROPERTY_DEPTH} levels deep"))

    if may_have_long_array and has_long_array(message):
        fail(("array_too_long", f"An array has more than {MAX_ARRAY_ITEMS} elements"))

    texts = [message.get(name) for name in TIMESTAMP_FIELDS]
    texts.append(properties.get("occurred_at"))
    revenue = parse_number(properties.get("revenue"))
    currency = parse_currency(properties.get("currency"))
    value = parse_value_cents(properties.get("value"))
    # A message that fails anyway has its timestamps checked here, to list every failure in
    # order; one that passes every other rule leaves its timestamp text to `settle_timestamps`.
    if failures or INVALID in (revenue, currency, value) or not set(map(type, texts)) <= TEXT_OR_ABSENT:
        bad_time = timestamp_failure(texts, [parse_timestamp(text) for text in texts])
        if bad_time:
            fail(bad_time)
    if revenue is INVALID:
        fail(("invalid_revenue", f"properties.revenue is not a number: {short_repr(properties['revenue'])}"))
    if currency is INVALID:
        fail(("invalid_currency", f"properties.currency is not an ISO 4217 code: {short_repr(properties['currency'])}"))
    if value is INVALID:
        fail(("invalid_value", f"properties.value is not a whole number in 0 … 2,147,483,647: {short_repr(properties['value'])}"))

    if failures:
        return failures, None
    message_id = identity(message.get("messageId")) or derived_message_id(message)
    return [], TrackFields(
        message_id, event, user_id, anonymous_id, *texts, revenue, currency, value, message.get("context"), properties,
        properties_json,
    )


def _replace_each_byte(error: UnicodeDecodeError) -> tuple[str, int]:
    return "\ufffd" * (error.end - error.start), error.end


codecs.register_error("trackhouse_each_byte", _replace_each_byte)
BOM = b"\xef\xbb\xbf"
JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\],:]')


def decode_raw(line: bytes) -> str:
    """The line as text; each byte that is not valid UTF-8 becomes one U+FFFD."""
    return line.decode("utf-8", "trackhouse_each_byte")


class ItemSpans(NamedTuple):
    """Where each element of a batch array starts and ends in its line's text (character
    offsets): two arrays of integers, not a tuple each, since a 16 MB line may hold 8 million
    (1.1 GB as tuples, measured)."""

    starts: array
    ends: array

    def text(self, text: str, index: int) -> str:
        return text[self.starts[index] : self.ends[index]]


def batch_item_spans(text: str) -> ItemSpans:
    """Character spans of each element of the top-level "batch" array, as written in the line.

    Used only for quarantined batch messages, so their `raw` is the exact original text.
    The last top-level "batch" key wins, as in the JSON parser.
    """
    spans = current = ItemSpans(array("q"), array("q"))
    depth = 0
    key: str | None = None
    expecting_key = False
    in_batch = False
    item_start = 0

    def close_item(end: int) -> None:
        start = item_start + (len(text[item_start:end]) - len(text[item_start:end].lstrip()))
        stop = start + len(text[start:end].rstrip())
        if stop > start:
            current.starts.append(start)
            current.ends.append(stop)

    for token in JSON_TOKEN.finditer(text):
        kind = token.group()
        if kind in "{[":
            depth += 1
            expecting_key = kind == "{" and depth == 1
            if depth == 2 and kind == "[" and key == "batch":
                in_batch, current, item_start = True, ItemSpans(array("q"), array("q")), token.end()
        elif kind in "}]":
            if in_batch and depth == 2:
                close_item(token.start())
                spans, in_batch = current, False
            depth -= 1
        elif kind == ",":
            if in_batch and depth == 2:
                close_item(token.start())
                item_start = token.end()
            expecting_key = depth == 1
        elif kind == ":":
            expecting_key = False
        elif depth == 1:
            key = orjson.loads(kind) if expecting_key else None
    return spans


def empty_times() -> pl.DataFrame:
    return pl.DataFrame(schema={name: pl.Int64 for name in TIME_COLUMNS})


@dataclass(slots=True)
class ValidatedChunk:
    """What one chunk of lines became: accepted messages with provenance and typed timestamps
    (epoch microseconds, one row per accepted message), quarantine rows, counts.

    A quarantine row keeps its first failure's explanation (`quarantine_frame` names the others
    after it) and the message's own id, so a later step can still add `duplicate_message_id`."""

    source_file: str
    accepted: list[TrackFields]
    accepted_line: list[int]
    accepted_batch_index: list[int | None]
    quarantine_line: list[int]
    quarantine_batch_index: list[int | None]
    quarantine_raw: list[str]
    quarantine_reasons: list[list[str]]
    quarantine_message: list[str]
    quarantine_message_id: list[str | None]
    lines: int = 0
    blank_lines: int = 0
    envelopes: int = 0
    messages: int = 0
    times: pl.DataFrame = field(default_factory=empty_times)
    resume: tuple[int, int] | None = None  # where the chunk goes on, if validation stopped at its message budget

    @classmethod
    def empty(cls, source_file: str) -> "ValidatedChunk":
        return cls(source_file, [], [], [], [], [], [], [], [], [])

    def reject(
        self, line_number: int, batch_index: int | None, raw: str, failures: list[tuple[str, str]],
        message_id: str | None = None,
    ) -> None:
        self.quarantine_line.append(line_number)
        self.quarantine_batch_index.append(batch_index)
        self.quarantine_raw.append(raw)
        self.quarantine_reasons.append([code for code, _ in failures])
        self.quarantine_message.append(failures[0][1])
        self.quarantine_message_id.append(message_id)

    def accept(self, line_number: int, batch_index: int | None, fields: TrackFields) -> None:
        self.accepted.append(fields)
        self.accepted_line.append(line_number)
        self.accepted_batch_index.append(batch_index)


def clean_line(line: bytes) -> bytes:
    """A physical line without its `\\r` ending and leading byte-order mark."""
    if line.endswith(b"\r"):
        line = line[:-1]
    return line[3:] if line.startswith(BOM) else line


class OriginalTexts:
    """The exact original text of accepted messages found again from their provenance, for the
    few that move to quarantine later (duplicates, timestamps). A batch line is decoded and split
    once, however many of its messages ask: a retried batch of thousands would otherwise be
    re-tokenized per message, quadratic in its size."""

    def __init__(self, lines: list[bytes], first_line_number: int) -> None:
        self.lines = lines
        self.first_line_number = first_line_number
        self.batches: dict[int, EnvelopeLine] = {}

    def line(self, line_number: int) -> bytes:
        return clean_line(self.lines[line_number - self.first_line_number])

    def at(self, line_number: int, batch_index: int | None) -> str:
        if batch_index is None:
            return self.line(line_number).decode()
        batch = self.batches.get(line_number)
        if batch is None:
            batch = self.batches[line_number] = envelope_line(self.line(line_number))
        return batch.item_text(batch_index)


def not_an_object(value: Any, size: int) -> list[tuple[str, str]]:
    return [("not_an_object", f"Expected a JSON object, got {json_type_name(value)}"), *size_failures(size)]


def merge_envelope(message: dict, envelope: dict) -> tuple[dict, dict]:
    """A batch message takes the envelope's sentAt and top-level context keys it lacks itself;
    a key it has as null lacks it too (null counts as absent, as for `sentAt`). Returns the merged
    message (`message` itself when it takes nothing) and what it took, which its payload counts."""
    sent_at = envelope.get("sentAt")
    shared_context = envelope.get("context")
    merged, taken = message, {}
    if sent_at is not None and message.get("sentAt") is None:
        merged = {**merged, "sentAt": sent_at}
        taken["sentAt"] = sent_at
    own_context = message.get("context")
    if isinstance(shared_context, dict) and shared_context and (own_context is None or isinstance(own_context, dict)):
        own = {key: value for key, value in (own_context or {}).items() if value is not None}
        if own:
            context = {**shared_context, **own}
            taken["context"] = {key: value for key, value in shared_context.items() if key not in own}
        else:
            # The envelope's own object, shared by every message that takes it whole: a copy
            # each of a 500-key context held 40 KB a message (4 GB for 100,000, measured).
            context = taken["context"] = shared_context
        merged = {**merged, "context": context}
    return merged, taken


class EnvelopeLine:
    """A batch envelope line: parsed when validated, split into its messages' texts only once a
    raw text is needed."""

    def __init__(self, line: bytes, envelope: dict | None = None) -> None:
        self.line, self.envelope = line, envelope
        self.text: str | None = None
        self.spans: ItemSpans | None = None

    def item_text(self, index: int) -> str:
        if self.text is None or self.spans is None:
            self.text = self.line.decode("utf-8")
            self.spans = batch_item_spans(self.text)
        return self.spans.text(self.text, index)


# The envelope this process last stopped a chunk inside, kept parsed and split for the parts that
# go on with it here: splitting a 16 MB line of 8 million items takes seconds, which each part
# would pay again (for its rejects, its late timestamp failures, its duplicates). The process
# that validates its last part lets it go; with workers, another that validated an earlier part
# keeps its copy until it stops inside another envelope (letting go at each other chunk would
# parse the envelope again for each part: other chunks come between its parts).
stopped_envelope: EnvelopeLine | None = None


def forget_stopped_envelope(line: bytes | None = None) -> None:
    """Let go of the stopped envelope (only if it is `line`, when one is given)."""
    global stopped_envelope
    if line is None or (stopped_envelope is not None and stopped_envelope.line == line):
        stopped_envelope = None


def envelope_line(line: bytes) -> EnvelopeLine:
    """`line` as the envelope this process stopped inside, if it is that one (read once: a load
    in another thread may stop inside another meanwhile)."""
    stopped = stopped_envelope
    return stopped if stopped is not None and stopped.line == line else EnvelopeLine(line)


def resumed_envelope(line: bytes) -> EnvelopeLine:
    batch = envelope_line(line)
    if batch.envelope is None:
        batch.envelope = parse_line(line)
    return batch


def validate_envelope(
    result: ValidatedChunk, line_number: int, batch: EnvelopeLine, first: int, max_messages: int,
) -> int | None:
    """Validate each message of a batch on its own, from index `first`; raw text is sliced only
    for rejects. Returns the index to go on from if the chunk reached `max_messages` first."""
    global stopped_envelope
    line, envelope, item_text = batch.line, batch.envelope, batch.item_text
    items = envelope["batch"]
    may_have_long_array = line.count(b",") >= MAX_ARRAY_ITEMS
    for index in range(first, len(items)):
        if result.messages >= max_messages:
            stopped_envelope = batch
            return index
        result.messages += 1
        item = items[index]
        # Only a line over the limit can hold a message text over it: measure exactly there alone.
        size = len(item_text(index).encode()) if len(line) > MAX_PAYLOAD_BYTES else 0
        if not isinstance(item, dict):
            result.reject(line_number, index, item_text(index), not_an_object(item, size))
            continue
        message, taken = merge_envelope(item, envelope)
        if taken:
            # What is loaded is the message with the envelope keys it takes: a tiny one that takes
            # a 1 MB envelope context is over the limit (2,000 of them held 4.3 GB, measured).
            # Those keys count as compact JSON, its own text as sent, so that taking a `sentAt`
            # never changes how the rest is counted (compact JSON writes `1e15` as
            # `1000000000000000.0`).
            taken_size = len(dump_json(taken))
            if len(line) + taken_size > MAX_PAYLOAD_BYTES:  # else its text and what it takes fit for sure
                size = len(item_text(index).encode()) + taken_size
        failures, fields = check_message(message, size, may_have_long_array)
        if fields is None:
            result.reject(line_number, index, item_text(index), failures, identity(item.get("messageId")))
        else:
            result.accept(line_number, index, fields)
    return None


LONG_DIGIT_RUN = b"0" * 19  # the shortest integer past 64 bits (9223372036854775808) has 19 digits
DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")


ORJSON_PAST_DOUBLES = "number is infinity when parsed as double"


class NotOrjsonJson(ValueError):
    """Valid to the standard library, but not to orjson, which decides what is valid JSON."""


def refuse_constant(name: str) -> None:
    raise NotOrjsonJson(name)


def finite_float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise NotOrjsonJson(text)
    return number


def check_like_orjson(value: Any) -> None:
    """Refuse what orjson refuses and the standard library takes: an unpaired surrogate, nesting
    past JSON_MAX_DEPTH."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > JSON_MAX_DEPTH:
            raise NotOrjsonJson("nested too deep")
        items = node.items() if type(node) is dict else enumerate(node)
        for key, child in items:
            for text in (key, child):
                if type(text) is str and not text.isascii():
                    text.encode("utf-8")  # UnicodeEncodeError on an unpaired surrogate
            if type(child) in CONTAINERS:
                stack.append((child, depth + 1))


def exact_json(line: bytes, checked: bool) -> Any:
    """The standard library's reading, which keeps integers past 64 bits exact. Unless orjson has
    `checked` the line, it refuses what orjson would: NaN and Infinity, a float past the double
    range, an unpaired surrogate (escaped, or encoded in UTF-8) and nesting past JSON_MAX_DEPTH."""
    make_room_for_deep_json(line.count(b"[") + line.count(b"{"))  # no deeper than it opens
    if checked:
        return json.loads(line)
    value = json.loads(line, parse_constant=refuse_constant, parse_float=finite_float)
    if type(value) in CONTAINERS:
        check_like_orjson(value)
    return value


def parse_line(line: bytes) -> Any:
    """orjson for speed and for what counts as valid JSON; the standard library again for a line
    with a run of 19 or more digits, where an integer may be past 64 bits: orjson reads those as
    doubles (or refuses them past the double range), and ids and `properties` must keep their
    exact digits. Finding the run costs ~1 µs a line (measured; a regular expression took 7)."""
    try:
        parsed = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        if not (str(error).startswith(ORJSON_PAST_DOUBLES) and LONG_DIGIT_RUN in line.translate(DIGITS_AS_ZERO)):
            raise
        try:
            return exact_json(line, checked=False)
        except (ValueError, RecursionError):  # NotOrjsonJson, JSONDecodeError, UnicodeError, > 4,300 digits
            raise error from None
    if LONG_DIGIT_RUN in line.translate(DIGITS_AS_ZERO):
        return exact_json(line, checked=True)
    return parsed


def validate_line(
    result: ValidatedChunk, line_number: int, line: bytes, first: int = 0, max_messages: int = sys.maxsize,
) -> int | None:
    """Validate one line, or go on with its batch envelope from index `first`. Returns the batch
    index to go on from if the chunk reached `max_messages` inside the envelope."""
    line = clean_line(line)
    if first:
        return validate_envelope(result, line_number, resumed_envelope(line), first, max_messages)
    result.lines += 1
    if not line or line.isspace():  # what `not line.strip()` says, without copying the line
        result.blank_lines += 1
        return None
    try:
        parsed = parse_line(line)
    except orjson.JSONDecodeError as error:
        result.messages += 1
        raw = decode_raw(line)
        detail = "not valid UTF-8" if "\ufffd" in raw and raw.encode() != line else str(error).split(":")[0]
        result.reject(line_number, None, raw, [("invalid_json", f"Line is not valid JSON: {detail}"), *size_failures(len(line))])
        return None
    if not isinstance(parsed, dict):
        result.messages += 1
        result.reject(line_number, None, line.decode(), not_an_object(parsed, len(line)))
        return None
    batch = parsed.get("batch")
    if isinstance(batch, list) and batch:
        result.envelopes += 1
        return validate_envelope(result, line_number, EnvelopeLine(line, parsed), 0, max_messages)
    result.messages += 1
    failures, fields = check_message(parsed, len(line), line.count(b",") >= MAX_ARRAY_ITEMS)
    if fields is None:
        result.reject(line_number, None, line.decode(), failures, identity(parsed.get("messageId")))
    else:
        result.accept(line_number, None, fields)
    return None


def settle_timestamps(result: ValidatedChunk, lines: list[bytes], first_line_number: int) -> None:
    """Type the timestamp texts of the chunk's accepted messages: the SDK shape vectorized, any
    other text by the exact parser; a message with a timestamp that is not ISO-8601 after all
    moves to quarantine (every other rule already passed, so that is its only failure).

    A chunk of fewer than VECTORIZED_FROM messages (a day of many small files) is parsed exactly
    throughout: the vectorized pass costs ~2 ms a chunk, whatever its size."""
    rows_texts = list(map(time_texts, result.accepted))
    if len(rows_texts) >= VECTORIZED_FROM:
        texts = pl.DataFrame(
            [list(column) for column in zip(*rows_texts)], schema={name: pl.String for name in TIME_COLUMNS}, orient="col",
        )
        times = sdk_timestamp_micros(texts)
        both = texts.hstack(times.rename(lambda name: f"{name}_micros")).with_row_index("row")
        unsettled = pl.any_horizontal(pl.col(name).is_not_null() & pl.col(f"{name}_micros").is_null() for name in TIME_COLUMNS)
        to_parse = both.filter(unsettled).select("row", *TIME_COLUMNS).iter_rows()
    else:
        times = pl.DataFrame({name: pl.Series(name, [None] * len(rows_texts), dtype=pl.Int64) for name in TIME_COLUMNS})
        to_parse = ((row, *texts) for row, texts in enumerate(rows_texts) if texts != NO_TIMES)
    rejected: set[int] = set()
    originals = OriginalTexts(lines, first_line_number)
    settled_rows: list[int] = []
    settled: list[list[int | None]] = []
    # Other shapes (offsets such as "+00:00", dates alone) are parsed one by one, in bulk here:
    # a client whose SDK writes them all must not pay a Polars call per value.

    def reject(row: int, failure: tuple[str, str]) -> None:
        line_number, batch_index = result.accepted_line[row], result.accepted_batch_index[row]
        result.reject(line_number, batch_index, originals.at(line_number, batch_index), [failure], result.accepted[row].message_id)
        rejected.add(row)

    for row, *row_texts in to_parse:
        exact = [parse_timestamp(text) for text in row_texts]
        failure = timestamp_failure(row_texts, exact)
        if failure:
            reject(row, failure)
        else:
            settled_rows.append(row)
            settled.append(exact)
    if settled_rows:
        times = pl.DataFrame([
            times[name].scatter(settled_rows, [values[index] for values in settled])
            for index, name in enumerate(TIME_COLUMNS)
        ])
    # Each time is in range, yet the correction may not be (sentAt 9999 against 0001 elsewhere).
    corrected = times.select(corrected_timestamp().is_between(FIRST_MICROS, LAST_MICROS).not_().fill_null(False))
    for row in corrected.to_series().arg_true().to_list():
        if row not in rejected:
            reject(row, SKEW_OUT_OF_RANGE)
    if rejected:
        keep = [row not in rejected for row in range(times.height)]
        result.accepted, result.accepted_line, result.accepted_batch_index = (
            [item for item, kept in zip(column, keep) if kept]
            for column in (result.accepted, result.accepted_line, result.accepted_batch_index)
        )
        times = times.filter(keep)
    result.times = times


LINES_PER_BATCH = 256  # 128-1,024 measured alike; a whole chunk's messages outgrow the CPU's caches


def validate_chunk(
    chunk: LineChunk, take_accepted: Callable[[list[TrackFields]], None] | None = None, max_messages: int = sys.maxsize,
) -> ValidatedChunk:
    """Validate the lines of a chunk from `chunk.resume`; a bad line is quarantined, never raised.

    Stops once `max_messages` are validated, between lines or inside a batch envelope, and says
    in `resume` where the chunk goes on: the memory a chunk takes grows with its messages, and
    one line may hold millions of them, each taking the envelope's context.

    `take_accepted` gets the accepted messages in order, those of each LINES_PER_BATCH lines as
    soon as they are validated, so that a later walk over them finds them still in the CPU's
    cache. `settle_timestamps` may yet move some of them to quarantine."""
    result = ValidatedChunk.empty(chunk.source_file)
    lines = chunk.lines()
    offset, first = chunk.resume
    taken = 0
    while offset < len(lines):
        if result.messages >= max_messages:
            result.resume = (offset, 0)
            break
        going_on = validate_line(result, chunk.first_line_number + offset, lines[offset], first, max_messages)
        if going_on is not None:
            result.resume = (offset, going_on)
            break
        offset, first = offset + 1, 0
        if take_accepted is not None and offset % LINES_PER_BATCH == 0 and len(result.accepted) > taken:
            take_accepted(result.accepted[taken:])
            taken = len(result.accepted)
    if take_accepted is not None and len(result.accepted) > taken:
        take_accepted(result.accepted[taken:])
    settle_timestamps(result, lines, chunk.first_line_number)
    resumed_at, stopped_at = chunk.resume, result.resume
    if resumed_at[1] and (stopped_at is None or stopped_at[0] != resumed_at[0]):  # its last part is done
        forget_stopped_envelope(clean_line(lines[resumed_at[0]]))
    return result


def validate_long_line(line: LongLine) -> ValidatedChunk:
    """One quarantine row for a line too long to hold: over 32 KB whatever it holds, and not
    parsed; `raw` is its start, the log file (`source_file`, `line_number`) has the rest."""
    result = ValidatedChunk.empty(line.source_file)
    result.lines = result.messages = 1
    message = (
        f"Line is {line.length:,} bytes, over the {MAX_LINE_BYTES:,}-byte limit of one line: not parsed, "
        f"raw keeps its first {MAX_LINE_BYTES:,} bytes"
    )
    result.reject(line.line_number, None, decode_raw(clean_line(line.start)), [("payload_too_large", message)])
    return result


def validate_break(file_break: FileBreak) -> ValidatedChunk:
    """The one quarantine row that records where a file stopped being readable."""
    result = ValidatedChunk.empty(file_break.source_file)
    message = f"File could not be read from line {file_break.line_number} on: {file_break.error}"
    if file_break.cut_line_length is not None:
        message += (
            f"; that line had {file_break.cut_line_length:,} bytes when it broke, over the {MAX_LINE_BYTES:,}-byte "
            f"limit of one line: raw keeps its first {MAX_LINE_BYTES:,} bytes"
        )
    raw = decode_raw(clean_line(file_break.partial_line))
    result.reject(file_break.line_number, None, raw, [("unreadable_file", message)])
    return result
