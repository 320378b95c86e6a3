"""Validation rules of CONTRACT.md section 2, one test per rule, on the smallest inline input."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import replace

import polars as pl
import pytest
from hypothesis import given, settings, strategies as st

from etl.normalize import quarantine_frame
from etl.pipeline import load_day
from etl.read import FileBreak, LineChunk
from etl import validate as validate_module
from etl.validate import INVALID, ValidatedChunk, iso_8601_micros, sdk_timestamp_micros, validate_break, validate_chunk

# The reason codes in the order the contract's table lists (and checks) them.
CONTRACT_ORDER = (
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
BOM = b"\xef\xbb\xbf"


def validate(*lines: bytes | str | dict, first_line: int = 1) -> ValidatedChunk:
    """Validate lines (bytes as given, str as UTF-8, dicts as compact JSON) as one chunk."""
    encoded = [
        line if isinstance(line, bytes) else (line if isinstance(line, str) else json.dumps(line)).encode()
        for line in lines
    ]
    return validate_chunk(LineChunk("2025-01-15/events.ndjson", first_line, b"\n".join(encoded)))


def track(**fields) -> dict:
    """The smallest accepted message, with `fields` added or replaced."""
    return {"event": "Order Completed", "userId": "u1", **fields}


def accepted(line):
    result = validate(line)
    assert result.quarantine_reasons == [], result.quarantine_message
    assert len(result.accepted) == 1
    return result.accepted[0]


def reasons(line) -> list[str]:
    result = validate(line)
    assert result.accepted == []
    assert len(result.quarantine_reasons) == 1
    return result.quarantine_reasons[0]


def quarantined_row(line) -> tuple[str, str, list[str]]:
    """(raw, message, reasons) of the one quarantined row a line gives."""
    result = validate(line)
    assert result.accepted == [] and len(result.quarantine_raw) == 1
    return result.quarantine_raw[0], result.quarantine_message[0], result.quarantine_reasons[0]


def micros(iso: str) -> int:
    return (dt.datetime.fromisoformat(iso) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def message_of_size(total_bytes: int, pad_char: str = "x") -> str:
    """A valid message of exactly `total_bytes` UTF-8 bytes, padded with `pad_char` (then "x")."""
    prefix, suffix = '{"event":"E","userId":"u","properties":{"p":"', '"}}'
    room = total_bytes - len(prefix) - len(suffix)
    width = len(pad_char.encode())
    text = prefix + pad_char * (room // width) + "x" * (room % width) + suffix
    assert len(text.encode()) == total_bytes
    return text


# --- invalid_json ---------------------------------------------------------------------------


@pytest.mark.parametrize("line", [b'{"event":"E","userId":"u"', b"not json", b"{'event': 'E'}", b'{"a":1}}'])
def test_unparseable_line_is_invalid_json(line):
    assert reasons(line)[0] == "invalid_json"


def test_invalid_utf8_is_invalid_json_with_each_bad_byte_replaced():
    raw, _, found = quarantined_row(b'{"e":"\xff\xfe"}')
    assert found == ["invalid_json"]
    assert raw == '{"e":"\ufffd\ufffd"}'


def test_truncated_utf8_sequence_gives_one_replacement_per_byte():
    raw, _, found = quarantined_row(b'{"e":"\xe2\x82"}')
    assert found == ["invalid_json"]
    assert raw == '{"e":"\ufffd\ufffd"}'


def test_invalid_utf8_in_an_otherwise_valid_message_is_invalid_json():
    raw, _, found = quarantined_row(b'{"event":"Caf\xe9","userId":"u"}')
    assert found == ["invalid_json"]
    assert raw == '{"event":"Caf\ufffd","userId":"u"}'


# --- not_an_object --------------------------------------------------------------------------


@pytest.mark.parametrize("line", ["[1,2]", '"track"', "42", "null", "true", "[]"])
def test_json_that_is_not_an_object_is_not_an_object(line):
    assert reasons(line)[0] == "not_an_object"


# --- payload_too_large ----------------------------------------------------------------------


def test_message_of_exactly_32768_bytes_is_accepted():
    accepted(message_of_size(32_768))


def test_message_over_32768_bytes_is_payload_too_large():
    assert reasons(message_of_size(32_769))[0] == "payload_too_large"


def test_payload_size_is_counted_in_utf8_bytes_not_characters():
    line = message_of_size(32_769, pad_char="é")
    assert len(line) < 32_768
    assert reasons(line)[0] == "payload_too_large"


@pytest.mark.parametrize(("line", "first"), [(b'{"event":"' + b"x" * 40_000, "invalid_json"), (b'["' + b"x" * 40_000 + b'"]', "not_an_object")])
def test_a_line_over_32kb_that_is_no_message_lists_payload_too_large_after_its_first_reason(line, first):
    assert reasons(line) == [first, "payload_too_large"]


def test_batch_message_over_32kb_is_payload_too_large_on_its_own():
    big = json.loads(message_of_size(32_769))
    result = validate({"batch": [big, track()]})
    assert result.quarantine_batch_index == [0]
    assert result.quarantine_reasons[0][0] == "payload_too_large"
    assert result.accepted_batch_index == [1]


def test_batch_message_is_measured_with_the_envelope_context_it_takes():
    small = track(messageId="small")
    result = validate({"context": {"big": "x" * 40_000}, "batch": [small, track(messageId="own", context={"big": "mine"})]})
    assert result.quarantine_batch_index == [0] and result.quarantine_reasons[0][0] == "payload_too_large"
    assert json.loads(result.quarantine_raw[0]) == small  # raw stays its own text, before the merge
    assert result.accepted_batch_index == [1]  # its own `big` wins, so it takes nothing large


BIG_CONTEXT = b"{" + b",".join(b'"k%04d":1e15' % i for i in range(1_300)) + b"}"  # 17 KB as sent, 35 KB compact


def test_what_a_batch_message_takes_from_a_short_envelope_counts_as_compact_json():
    line = b'{"batch":[{"event":"e","userId":"u","messageId":"m"}],"context":' + BIG_CONTEXT + b"}"
    assert len(line) < 32_768
    result = validate(line)
    assert result.quarantine_reasons == [["payload_too_large"]] and not result.accepted


def test_a_batch_messages_own_nulls_count_as_sent_though_the_merge_drops_them():
    own_context = b"{" + b",".join(b'"n%04d":null' % i for i in range(1_500)) + b"}"  # 19.5 KB
    shared = b"{" + b",".join(b'"e%04d":"xxxx"' % i for i in range(1_000)) + b"}"  # 15 KB
    line = b'{"batch":[{"event":"e","userId":"u","messageId":"m","context":' + own_context + b'}],"context":' + shared + b"}"
    assert validate(line).quarantine_reasons == [["payload_too_large"]]


@pytest.mark.parametrize("envelope_keys", [
    b"",
    b',"sentAt":"2025-01-15T10:00:00Z"',
    b',"context":{"big":123456789012345678901234}',  # compact JSON by the standard library, not orjson
], ids=["takes nothing", "takes sentAt", "takes a key only the standard library writes"])
@pytest.mark.parametrize("own_context", [
    BIG_CONTEXT,
    b"{" + b",".join(b'"k%04d":1e-7' % i for i in range(2_400)) + b"}",  # 1e-07 to the standard library
], ids=["1e15", "1e-7"])
def test_a_batch_messages_own_text_counts_as_sent_whatever_it_takes(envelope_keys, own_context):
    message = b'{"event":"e","userId":"u","messageId":"m","context":' + own_context + b"}"
    assert len(message) + len(envelope_keys) < 32_768
    line = b'{"batch":[' + message + b"]" + envelope_keys + b"}"
    assert validate(line).accepted_batch_index == [0]


# --- unsupported_type -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["identify", "page", "screen", "group", "alias", "Track", 1])
def test_non_track_type_is_unsupported_type(kind):
    assert reasons(track(type=kind))[0] == "unsupported_type"


def test_message_without_type_is_a_track():
    assert accepted(track()).event_text == "Order Completed"
    assert accepted(track(type="track")).event_text == "Order Completed"


def test_unsupported_message_is_kept_in_quarantine_not_lost():
    line = '{"type":"identify","userId":"u","traits":{"email":"a@b.c"}}'
    raw, _, found = quarantined_row(line)
    assert raw == line
    assert found[0] == "unsupported_type"


# --- missing_event --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [{"userId": "u"}, {"userId": "u", "event": None}, {"userId": "u", "event": 5}, {"userId": "u", "event": ["E"]},
     {"userId": "u", "event": ""}, {"userId": "u", "event": "  \t "}],
    ids=["absent", "null", "number", "array", "empty", "blank"],
)
def test_absent_null_non_string_or_blank_event_is_missing_event(message):
    _, text, found = quarantined_row(message)
    assert found == ["missing_event"]
    assert text == "Missing required field: event"


# --- event_too_long -------------------------------------------------------------------------


def test_event_of_200_characters_is_accepted():
    assert accepted(track(event="e" * 200)).event_text == "e" * 200


def test_event_over_200_characters_is_event_too_long():
    assert reasons(track(event="e" * 201))[0] == "event_too_long"


def test_event_length_is_counted_in_characters():
    assert accepted(track(event="é" * 200)).event_text == "é" * 200


# --- reserved_event_name --------------------------------------------------------------------


def test_an_event_name_with_a_dollar_after_its_first_character_is_not_reserved():
    assert accepted(track(event=" $x")).event_text == " $x"
    accepted(track(event="a$"))


def test_reserved_event_name_is_quarantined():
    _, text, found = quarantined_row(track(event="$identify"))
    assert found == ["reserved_event_name"]
    assert "Event name cannot start with '$'" in text


def test_dollar_inside_event_name_is_not_reserved():
    assert accepted(track(event="Paid $5")).event_text == "Paid $5"


# --- missing_identity -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "ids",
    [{}, {"userId": None}, {"userId": ""}, {"userId": "   "}, {"anonymousId": "\t"}, {"userId": True},
     {"userId": False}, {"userId": 1.5}, {"anonymousId": 1e3}, {"userId": ["u"]}, {"userId": {"id": 1}}],
    ids=["none", "null", "empty", "whitespace", "whitespace-anon", "true", "false", "fraction", "exponent",
         "array", "object"],
)
def test_no_string_or_integer_id_is_missing_identity(ids):
    assert reasons({"event": "E", **ids})[0] == "missing_identity"


def test_true_and_fractional_ids_are_not_ids():
    assert reasons('{"event":"E","userId":true}') == ["missing_identity"]
    assert reasons('{"event":"E","userId":1.5}') == ["missing_identity"]
    assert reasons('{"event":"E","anonymousId":1.0}') == ["missing_identity"]


def test_anonymous_id_alone_identifies_a_message():
    fields = accepted({"event": "E", "anonymousId": "anon-1"})
    assert (fields.user_id, fields.anonymous_id) == (None, "anon-1")


def test_whitespace_only_id_counts_as_absent():
    fields = accepted({"event": "E", "userId": "   ", "anonymousId": "a"})
    assert fields.user_id is None
    assert fields.anonymous_id == "a"


def test_ids_are_stored_untrimmed():
    assert accepted(track(userId=" u1 ")).user_id == " u1 "


@pytest.mark.parametrize("literal", ["18446744073709551616", "-9223372036854775809", "1180591620717411303424"])
@pytest.mark.parametrize("field", ["userId", "anonymousId", "messageId"])
def test_integer_id_past_64_bits_keeps_its_exact_digits(literal, field):
    line = '{"event":"E","userId":"u",' + f'"{field}":{literal}' + "}"
    fields = accepted(line)
    assert {"userId": fields.user_id, "anonymousId": fields.anonymous_id, "messageId": fields.message_id}[field] == literal


PAST_DOUBLES = "1" * 310  # a valid JSON integer that orjson refuses: past the double range


def test_an_integer_past_the_double_range_is_read_exactly_not_refused():
    fields = accepted('{"event":"E","userId":"u","messageId":' + PAST_DOUBLES + ',"properties":{"n":-' + PAST_DOUBLES + "}}")
    assert fields.message_id == PAST_DOUBLES and fields.properties == {"n": -int(PAST_DOUBLES)}
    assert reasons('{"event":"E","userId":' + PAST_DOUBLES + "}") == ["identity_too_long"]
    assert reasons('{"event":"E","userId":"u","properties":{"revenue":' + PAST_DOUBLES + "}}") == ["invalid_revenue"]


@pytest.mark.parametrize(
    "also", [b"NaN", b"-Infinity", b"1e400", rb'"\ud800"', rb'{"\udfff":1}', b"[" * 1_100 + b"]" * 1_100, b"1" * 5_000, b'"\xff"', b'"\xed\xa0\x80"'],
    ids=["NaN", "Infinity", "float past doubles", "unpaired surrogate", "surrogate key", "too deep", "over 4,300 digits", "not UTF-8",
         "encoded surrogate"],
)
def test_a_line_with_such_an_integer_is_still_refused_for_what_orjson_refuses(also):
    assert reasons(b'{"event":"E","userId":"u","a":' + PAST_DOUBLES.encode() + b',"b":' + also + b"}") == ["invalid_json"]


def test_two_messages_with_one_integer_message_id_past_64_bits_are_duplicates(tmp_path):
    day = tmp_path / "logs" / "2025-01-15"
    day.mkdir(parents=True)
    (day / "a.ndjson").write_text('{"event":"a","userId":"u","messageId":1180591620717411303424}\n'
                                  '{"event":"b","userId":"u","messageId":1180591620717411303424}\n')
    summary = load_day(tmp_path / "logs", tmp_path / "warehouse", "2025-01-15")
    assert (summary.accepted, summary.quarantined_by_reason) == (1, {"duplicate_message_id": 1})


def test_integer_user_id_is_stored_as_decimal_string():
    assert accepted('{"event":"E","userId":42}').user_id == "42"
    assert accepted('{"event":"E","anonymousId":-7}').anonymous_id == "-7"
    assert accepted('{"event":"E","userId":9223372036854775807}').user_id == "9223372036854775807"


# --- identity_too_long ----------------------------------------------------------------------


def test_ids_of_255_characters_are_accepted():
    fields = accepted({"event": "E", "userId": "u" * 255, "anonymousId": "a" * 255})
    assert fields.user_id == "u" * 255


@pytest.mark.parametrize("key", ["userId", "anonymousId"])
def test_id_over_255_characters_is_identity_too_long(key):
    assert reasons({"event": "E", "userId": "u", key: "x" * 256})[0] == "identity_too_long"


# --- invalid_properties ---------------------------------------------------------------------


@pytest.mark.parametrize("properties", [[], [{"a": 1}], "x", 5, True])
def test_properties_that_are_not_an_object_are_invalid_properties(properties):
    assert reasons(track(properties=properties))[0] == "invalid_properties"


def test_null_properties_are_accepted_as_empty():
    assert accepted(track(properties=None)).properties == {}


# --- too_many_properties --------------------------------------------------------------------


def test_255_properties_are_accepted():
    assert len(accepted(track(properties={f"p{i}": i for i in range(255)})).properties) == 255


def test_more_than_255_properties_is_too_many_properties():
    assert reasons(track(properties={f"p{i}": i for i in range(256)}))[0] == "too_many_properties"


def test_property_count_is_top_level_only():
    accepted(track(properties={"nested": {f"p{i}": i for i in range(256)}}))


# --- property_name_too_long -----------------------------------------------------------------


def test_property_name_of_255_characters_is_accepted():
    accepted(track(properties={"k" * 255: 1, "a": {"b": {"k" * 255: 1}}}))


@pytest.mark.parametrize(
    "properties",
    [{"k" * 256: 1}, {"a": {"b": {"k" * 256: 1}}}, {"items": [{"k" * 256: 1}]}],
    ids=["top-level", "nested", "inside-array"],
)
def test_property_name_over_255_characters_at_any_depth_is_property_name_too_long(properties):
    assert reasons(track(properties=properties))[0] == "property_name_too_long"


# --- properties_too_deep --------------------------------------------------------------------


def test_objects_three_levels_below_properties_are_accepted():
    assert accepted(track(properties={"a": {"b": {"c": 1}}})).properties == {"a": {"b": {"c": 1}}}


def test_objects_four_levels_below_properties_are_properties_too_deep():
    assert reasons(track(properties={"a": {"b": {"c": {"d": 1}}}}))[0] == "properties_too_deep"


def test_an_object_inside_an_array_sits_at_the_arrays_own_level():
    # Arrays are transparent: `c` is three levels below properties, as in {"a": {"b": {"c": 1}}}.
    accepted(track(properties={"a": [{"b": {"c": 1}}]}))
    assert reasons(track(properties={"a": [{"b": {"c": {"d": 1}}}]}))[0] == "properties_too_deep"


# --- array_too_long -------------------------------------------------------------------------


def test_a_256_element_array_on_a_line_of_exactly_255_commas_is_array_too_long():
    line = '{"a":[' + ",".join(["0"] * 256) + "]}"
    assert line.count(",") == 255 and "array_too_long" in reasons(line)


def test_array_of_255_elements_is_accepted():
    accepted(track(properties={"items": list(range(255))}))


@pytest.mark.parametrize(
    "where",
    [{"properties": {"items": list(range(256))}},
     {"properties": {"a": {"b": [list(range(256))]}}},
     {"context": {"tags": ["t"] * 256}},
     {"extra": [None] * 256}],
    ids=["properties", "nested-in-properties", "context", "top-level"],
)
def test_array_over_255_elements_anywhere_is_array_too_long(where):
    assert reasons(track(**where))[0] == "array_too_long"


# --- invalid_timestamp ----------------------------------------------------------------------

NOT_ISO_8601 = ["yesterday", "12/01/2025", "15.01.2025", 1736935800, 1736935800000, 1736935800.5, "1736935800",
                "2025-W01-1", "20250115T100000Z", "20250115", "2025-02-30T00:00:00Z", "", True, {"t": 1}]


@pytest.mark.parametrize("value", NOT_ISO_8601, ids=repr)
def test_timestamp_that_is_not_iso_8601_is_invalid_timestamp(value):
    assert reasons(track(timestamp=value))[0] == "invalid_timestamp"


@pytest.mark.parametrize("field", ["timestamp", "originalTimestamp", "sentAt", "receivedAt"])
def test_every_timestamp_field_is_checked(field):
    assert reasons(track(**{field: "yesterday"}))[0] == "invalid_timestamp"


@pytest.mark.parametrize("value", ["yesterday", 1736935800, "2025-W01-1"])
def test_drip_occurred_at_property_is_checked(value):
    assert reasons(track(properties={"occurred_at": value}))[0] == "invalid_timestamp"


@pytest.mark.parametrize(
    "value, expected",
    [("2025-01-15T10:30:00Z", "2025-01-15T10:30:00+00:00"),
     ("2025-01-15T10:30:00.123456+02:00", "2025-01-15T10:30:00.123456+02:00"),
     ("2025-01-15", "2025-01-15T00:00:00+00:00")],
)
def test_iso_8601_timestamps_are_accepted_and_typed(value, expected):
    result = validate(track(timestamp=value, sentAt=value, originalTimestamp=value, receivedAt=value,
                            properties={"occurred_at": value}))
    assert result.times.row(0) == (micros(expected),) * 5


def test_null_timestamps_count_as_absent():
    fields = accepted(track(timestamp=None, receivedAt=None))
    assert (fields.timestamp, fields.received_at) == (None, None)



# A valid SDK-shaped timestamp, then at most one part swapped for an edge case, so most examples
# sit one step from the short cut's boundary.
SDK_FRACTIONS = ["", ".123", ".123456"]
TIMESTAMP_EDITS = {
    "year": ["0000", "٢٠٢٥", "+2025", "99999"],
    "month": ["00", "13", "1"],
    "second": ["60", "61", "99", "٥٥", "5"],
    "minute": ["60", "٥9"],
    "hour": ["24", "2٣"],
    "day": ["29", "30", "31", "32", "00"],
    "separator": ["t", " ", "_"],
    "fraction": [".1", ".12345", ".1234567", ",123", ".12a", ".٣٣٣"],
    "zone": ["z", "", "+02:00", "ZZ", "+00:00", "-08:00", "+23:59", "+24:00", "+00:60", "+0530", "+05"],
}


@pytest.mark.parametrize("offset", ["+05:99", "+00:60", "-0360", "+24:00", "+25"])
def test_an_offset_past_23_hours_or_59_minutes_is_not_iso_8601(offset):
    result = validate(track(timestamp=f"2025-01-15T10:00:00{offset}"))
    assert result.quarantine_reasons == [["invalid_timestamp"]]


@st.composite
def sdk_like_timestamps(draw):
    moment = draw(st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31)))
    parts = {
        "year": f"{moment.year:04d}", "month": f"{moment.month:02d}", "day": f"{moment.day:02d}", "separator": "T",
        "hour": f"{moment.hour:02d}", "minute": f"{moment.minute:02d}", "second": f"{moment.second:02d}",
        "fraction": draw(st.sampled_from(SDK_FRACTIONS)), "zone": "Z",
    }
    edit = draw(st.sampled_from([None, *TIMESTAMP_EDITS]))
    if edit is not None:
        parts[edit] = draw(st.sampled_from(TIMESTAMP_EDITS[edit]))
    return "{year}-{month}-{day}{separator}{hour}:{minute}:{second}{fraction}{zone}".format(**parts)


@settings(max_examples=300)
@given(sdk_like_timestamps())
def test_timestamps_are_typed_or_quarantined_as_the_exact_parser_says(value):
    exact = iso_8601_micros.__wrapped__(value)
    result = validate(track(timestamp=value, properties={"occurred_at": value}))
    if exact is INVALID:
        assert result.quarantine_reasons == [["invalid_timestamp"]]
        assert result.quarantine_message[0].startswith("timestamp, properties.occurred_at not ISO-8601")
    else:
        assert result.times.select("timestamp", "occurred_at").row(0) == (exact, exact)


@settings(max_examples=30, deadline=None)
@given(st.lists(sdk_like_timestamps(), min_size=validate_module.VECTORIZED_FROM, max_size=validate_module.VECTORIZED_FROM + 40))
def test_a_large_chunk_settles_timestamps_as_a_small_one_does(values):
    """Chunks of VECTORIZED_FROM messages or more take the vectorized pass, smaller ones the exact
    parser alone: the same messages must come out the same either way."""
    lines = [track(messageId=f"m{n}", timestamp=value, sentAt=value) for n, value in enumerate(values)]
    vectorized = validate(*lines)
    original, validate_module.VECTORIZED_FROM = validate_module.VECTORIZED_FROM, len(values) + 1
    try:
        exact = validate(*lines)
    finally:
        validate_module.VECTORIZED_FROM = original
    assert vectorized.times.equals(exact.times) and vectorized.accepted_line == exact.accepted_line
    assert (vectorized.quarantine_line, vectorized.quarantine_message) == (exact.quarantine_line, exact.quarantine_message)


@settings(max_examples=300)
@given(st.lists(sdk_like_timestamps(), min_size=1, max_size=20))
def test_vectorized_timestamp_short_cut_types_only_what_the_exact_parser_accepts(values):
    short_cut = sdk_timestamp_micros(pl.DataFrame({"t": values}, schema={"t": pl.String}))["t"].to_list()
    for value, micros in zip(values, short_cut):
        assert micros in (None, iso_8601_micros.__wrapped__(value))


@given(
    st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31)), st.sampled_from(["seconds", "milliseconds", "microseconds"]),
    st.sampled_from(["Z", "+00:00", "+05:30", "-08:00"]),
)
def test_vectorized_timestamp_short_cut_types_the_sdk_shapes_itself(moment, precision, zone):
    value = moment.isoformat(timespec=precision) + zone
    short_cut = sdk_timestamp_micros(pl.DataFrame({"t": [value]})).item()
    exact = iso_8601_micros.__wrapped__(value)
    assert short_cut == (None if exact is INVALID else exact)  # past UTC 1-9999: left to the exact parser


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-02:00", "0001-01-01"])
@pytest.mark.parametrize("messages", [1, validate_module.VECTORIZED_FROM], ids=["exact parser", "vectorized"])
def test_a_time_outside_utc_years_1_to_9999_is_invalid_timestamp(value, messages):
    # Parquet and DuckDB hold year 0 and 10000, but an analyst's Python client cannot fetch them.
    result = validate(*[track(timestamp=value, messageId=f"m{n}") for n in range(messages)])
    if value == "0001-01-01":
        assert len(result.accepted) == messages
    else:
        assert result.accepted == [] and {r[0] for r in result.quarantine_reasons} == {"invalid_timestamp"}
        assert "in UTC years 1–9999" in result.quarantine_message[0]


def test_a_skew_correction_outside_utc_years_1_to_9999_is_invalid_timestamp():
    skewed = track(originalTimestamp="0001-01-01T00:00:00Z", sentAt="9999-12-31T00:00:00Z", receivedAt="2025-02-28T00:00:00Z")
    result = validate(skewed, track(originalTimestamp="2025-02-27T23:59:00Z", sentAt="2025-02-28T00:00:00Z", receivedAt="2025-02-28T00:00:05Z"))
    assert result.quarantine_reasons == [["invalid_timestamp"]] and result.quarantine_line == [1]
    assert result.quarantine_message[0].startswith("timestamp corrected for clock skew")
    assert result.times["original_timestamp"].to_list() == [micros("2025-02-27T23:59:00+00:00")]


def test_a_skew_correction_outside_utc_years_1_to_9999_is_listed_among_other_failures():
    skewed = track(
        originalTimestamp="0001-01-01T00:00:00Z", sentAt="9999-12-31T00:00:00Z", receivedAt="2025-02-28T00:00:00Z",
        properties={"revenue": "x"},
    )
    assert reasons(skewed) == ["invalid_timestamp", "invalid_revenue"]


def test_messages_around_a_late_invalid_timestamp_keep_their_own_times():
    result = validate(track(timestamp="2025-01-15T10:00:00Z"), track(timestamp="2025-02-30T00:00:00Z"),
                      track(timestamp="2025-01-15T12:00:00.5+01:00"))
    assert result.accepted_line == [1, 3] and result.quarantine_line == [2]
    assert result.times["timestamp"].to_list() == [micros("2025-01-15T10:00:00+00:00"), micros("2025-01-15T11:00:00.5+00:00")]


@pytest.mark.parametrize("value", ["0000-12-31T23:30:00-01:00", "0000-06-15T10:00:00Z", "0000-01-01T00:00:00.000+00:00"])
def test_year_zero_is_invalid_whatever_its_offset(value):
    assert reasons(track(timestamp=value)) == ["invalid_timestamp"]


def test_a_day_that_does_not_exist_leaves_the_rest_of_its_column_to_the_short_cut():
    short_cut = sdk_timestamp_micros(pl.DataFrame({"t": ["2025-02-30T00:00:00Z", "2025-01-15T10:30:00.123Z"]}))
    assert short_cut["t"].to_list() == [None, micros("2025-01-15T10:30:00.123+00:00")]


# --- invalid_revenue ------------------------------------------------------------------------


@pytest.mark.parametrize("revenue", ["abc", "", "19,99", "$5", True, [1], {"amount": 1}], ids=repr)
def test_revenue_that_is_not_a_number_is_invalid_revenue(revenue):
    assert reasons(track(properties={"revenue": revenue}))[0] == "invalid_revenue"


def test_numeric_string_revenue_is_converted_to_float():
    revenue = accepted(track(properties={"revenue": "19.99"})).revenue
    assert isinstance(revenue, float) and revenue == 19.99


def test_number_revenue_is_accepted_as_float():
    for sent, expected in [(20, 20.0), (19.99, 19.99), ("1e3", 1000.0)]:
        revenue = accepted(track(properties={"revenue": sent})).revenue
        assert type(revenue) is float and revenue == expected


# --- invalid_currency -----------------------------------------------------------------------


@pytest.mark.parametrize("currency", ["DEM", "FRF", "HRK", "BGN", "US", "EURO", "usd ", "", 978], ids=repr)
def test_currency_that_is_not_a_current_iso_4217_code_is_invalid_currency(currency):
    assert reasons(track(properties={"currency": currency}))[0] == "invalid_currency"


@pytest.mark.parametrize("currency", ["u\u017fd", "\u00dfp", "\u0131nr"], ids=["long s", "sharp s", "dotless i"])
def test_a_non_ascii_look_alike_that_upper_cases_to_a_code_is_invalid_currency(currency):
    """Python upper-cases `uſd` to `USD` and `ßp` to `SSP`: the code must be those three letters."""
    assert reasons(track(properties={"currency": currency}))[0] == "invalid_currency"


def test_precious_metal_x_code_is_a_currency():
    assert accepted(track(properties={"currency": "XAU"})).currency == "XAU"


def test_currency_case_is_normalised_to_upper():
    assert accepted(track(properties={"currency": "eur"})).currency == "EUR"


# --- invalid_value --------------------------------------------------------------------------


def test_value_at_the_int32_maximum_is_accepted():
    assert accepted(track(properties={"value": 2147483647})).value == 2147483647
    assert accepted(track(properties={"value": 0})).value == 0


@pytest.mark.parametrize(
    "value", [2147483648, -1, 20.5, "20.5", "abc", True, "2147483648", "20.0000000000000001", "2147483647.0000001", "1e-400"],
    ids=repr,
)
def test_value_that_is_not_a_whole_number_in_range_is_invalid_value(value):
    assert reasons(track(properties={"value": value}))[0] == "invalid_value"


@pytest.mark.parametrize("text", ["1e9999999999999999999", "1e-9999999999999999999", "-5E+99999999999999999999"])
def test_value_string_with_an_exponent_past_what_decimals_hold_is_invalid_value_not_a_crash(text):
    assert reasons(track(properties={"value": text})) == ["invalid_value"]


@pytest.mark.parametrize("text", ["0e-10000000000000000000", "-0.000E99999999999999999999"])
def test_value_string_of_zero_with_any_exponent_is_zero(text):
    assert accepted(track(properties={"value": text})).value == 0


def test_integer_string_value_is_converted():
    value = accepted(track(properties={"value": "2000"})).value
    assert value == 2000 and type(value) is int


# --- reasons, reason and message ------------------------------------------------------------


def test_all_failing_rules_are_listed_in_contract_order_and_reason_is_the_first():
    everything = {
        "type": "page",
        "event": "$" + "e" * 200,
        "userId": "u" * 256,
        "properties": {
            **{f"p{i}": i for i in range(254)},
            "k" * 256: {"b": {"c": {"d": 1}}},
            "items": list(range(256)),
            "occurred_at": "yesterday",
            "revenue": "abc",
            "currency": "DEM",
            "value": -1,
            "pad": "x" * 33_000,
        },
    }
    missing = {"properties": [1], "sentAt": "yesterday"}
    result = validate(everything, missing)
    expected = [
        ["payload_too_large", "unsupported_type", "event_too_long", "reserved_event_name", "identity_too_long",
         "too_many_properties", "property_name_too_long", "properties_too_deep", "array_too_long",
         "invalid_timestamp", "invalid_revenue", "invalid_currency", "invalid_value"],
        ["missing_event", "missing_identity", "invalid_properties", "invalid_timestamp"],
    ]
    assert result.quarantine_reasons == expected
    for found in result.quarantine_reasons:
        assert found == sorted(found, key=CONTRACT_ORDER.index)
    frame = quarantine_frame(result, dt.datetime(2025, 1, 15, tzinfo=dt.UTC))
    assert frame["reason"].to_list() == ["payload_too_large", "missing_event"]
    assert frame["reasons"].to_list() == expected
    assert frame["message"][1] == (
        "Missing required field: event (also: missing_identity, invalid_properties, invalid_timestamp)"
    )


def test_message_names_the_first_failure():
    _, text, found = quarantined_row({"properties": [1]})
    assert found == ["missing_event", "missing_identity", "invalid_properties"]
    assert text.startswith("Missing required field: event")


@pytest.mark.parametrize(
    "line",
    [b'{"event":', b'{"e":"\xff"}', "[1, 2]", track(type="a\nb\rc"),
     track(event="$a\nb"), track(timestamp="2025\n01"), track(properties={"occurred_at": "x\r\ny"}),
     track(properties={"revenue": "1\n2", "currency": "e\nur", "value": "\n"}),
     {"type": "x\n", "event": "\n", "userId": "\n", "properties": "\n", "sentAt": "\n"},
     track(properties={"k\n" * 200: 1}), json.dumps(track(event="e" * 201)).replace(",", ",\t"),
     track(type=["x\u2028y"]), track(properties={"revenue": {"k": "x\x85y\u2029"}})],
)
def test_message_is_one_line(line):
    _, text, _ = quarantined_row(line)
    assert len(text.splitlines()) == 1


# --- lines: blank, BOM, CRLF, raw -----------------------------------------------------------


def test_blank_lines_are_counted_not_stored():
    result = validate(b"", b"   ", json.dumps(track()), b"\t", b"\r", first_line=10)
    assert result.lines == 5
    assert result.blank_lines == 4
    assert result.messages == 1
    assert result.accepted_line == [12]
    assert result.quarantine_raw == []


def test_byte_order_mark_is_stripped():
    assert accepted(BOM + json.dumps(track()).encode()).event_text == "Order Completed"
    raw, _, _ = quarantined_row(BOM + b'{"event":"$x","userId":"u"}')
    assert raw == '{"event":"$x","userId":"u"}'


def test_crlf_line_ending_is_stripped():
    assert accepted(json.dumps(track()).encode() + b"\r").event_text == "Order Completed"
    raw, _, _ = quarantined_row(b'{"event":"$x","userId":"u"}\r')
    assert raw == '{"event":"$x","userId":"u"}'


def test_bom_and_crlf_together_are_stripped():
    raw, _, _ = quarantined_row(BOM + b'{"event":"$x"}\r')
    assert raw == '{"event":"$x"}'


@pytest.mark.parametrize(
    "line",
    ['{ "userId" :"u",\t"event":  "$x" ,   "z":[1, 2.50, 1E2] }', '{"event":"$Café ☕","userId":"\\u00e9"}',
     '  {"event":"E"}  ', "[1, 2]", '"just text"', '{"event":"E","userId":"u","properties":[ 1 ]}'],
)
def test_raw_is_the_original_line_byte_for_byte(line):
    raw, _, _ = quarantined_row(line.encode())
    assert raw == line


def test_plain_line_has_no_batch_index_and_its_physical_line_number():
    result = validate(b"", track(), track(event="$x"), first_line=7)
    assert result.accepted_line == [8] and result.accepted_batch_index == [None]
    assert result.quarantine_line == [9] and result.quarantine_batch_index == [None]


# --- batch envelopes ------------------------------------------------------------------------


BUDGET_LINES = st.sampled_from([
    json.dumps(track(messageId="plain")), "", "not json", "[1]",
    json.dumps({"sentAt": "2025-01-15T10:00:00Z", "context": {"ip": "1.1.1.1"}, "batch": [
        track(messageId="b0"), 7, track(event="$bad"), track(timestamp="noon"), track(context={"ip": None}), {"userId": "u"},
    ]}),
    json.dumps({"batch": [track(messageId=f"m{n}") for n in range(3)], "batch ": 1}),
])


def quarantine_rows(chunk: ValidatedChunk) -> list[tuple]:
    return list(zip(
        chunk.quarantine_line, [-1 if index is None else index for index in chunk.quarantine_batch_index], chunk.quarantine_raw,
        chunk.quarantine_reasons, chunk.quarantine_message, chunk.quarantine_message_id,
    ))


def validated_in_parts(chunk: LineChunk, max_messages: int) -> list[ValidatedChunk]:
    parts = [validate_chunk(chunk, max_messages=max_messages)]
    while parts[-1].resume is not None:
        parts.append(validate_chunk(replace(chunk, resume=parts[-1].resume), max_messages=max_messages))
    return parts


@settings(max_examples=150)
@given(st.lists(BUDGET_LINES, min_size=1, max_size=8), st.integers(1, 8))
def test_a_chunk_validated_in_parts_of_its_message_budget_gives_what_one_pass_gives(lines, max_messages):
    # One line may hold millions of messages, so a chunk stops after its budget, inside a batch
    # envelope if need be, and goes on from there: nothing is validated twice or skipped.
    chunk = LineChunk("2025-01-15/events.ndjson", 1, "\n".join(lines).encode())
    whole = validate_chunk(chunk)
    parts = validated_in_parts(chunk, max_messages)
    assert all(part.messages <= max_messages for part in parts[:-1]) and whole.resume is None
    assert all(part.messages >= 1 or part.lines for part in parts)  # each part makes progress
    for name in ("lines", "blank_lines", "envelopes", "messages"):
        assert sum(getattr(part, name) for part in parts) == getattr(whole, name), name
    for name in ("accepted", "accepted_line", "accepted_batch_index"):
        assert [row for part in parts for row in getattr(part, name)] == getattr(whole, name), name
    assert pl.concat([part.times for part in parts]).equals(whole.times)
    # Quarantine rows keep no order within a chunk (a late timestamp failure comes last).
    assert sorted(row for part in parts for row in quarantine_rows(part)) == sorted(quarantine_rows(whole))


def test_a_batch_envelope_stops_at_the_message_budget_and_goes_on_from_the_next_message():
    envelope = {"batch": [track(messageId=f"m{n}") for n in range(5)]}
    chunk = LineChunk("2025-01-15/events.ndjson", 1, f"{json.dumps(track())}\n{json.dumps(envelope)}".encode())
    parts = [validate_chunk(chunk, max_messages=2)]
    kept = [validate_module.stopped_envelope]
    while parts[-1].resume is not None:
        parts.append(validate_chunk(replace(chunk, resume=parts[-1].resume), max_messages=2))
        kept.append(validate_module.stopped_envelope)
    assert [part.resume for part in parts] == [(1, 1), (1, 3), None]
    # Kept parsed for the parts that go on with it, let go after its last.
    assert kept[0] is kept[1] is not None and kept[0].line == json.dumps(envelope).encode() and kept[2] is None
    assert [part.accepted_batch_index for part in parts] == [[None, 0], [1, 2], [3, 4]]
    assert [(part.lines, part.envelopes, part.messages) for part in parts] == [(2, 1, 2), (0, 0, 2), (0, 0, 2)]


def test_batch_gives_one_result_per_message_with_index_and_envelope_line():
    envelope = {"batch": [track(event="A"), track(event="$B"), track(event="C"), {"event": "D"}]}
    result = validate(track(), envelope, first_line=4)
    assert result.lines == 2
    assert result.messages == 5
    assert [f.event_text for f in result.accepted] == ["Order Completed", "A", "C"]
    assert result.accepted_line == [4, 5, 5]
    assert result.accepted_batch_index == [None, 0, 2]
    assert result.quarantine_line == [5, 5]
    assert result.quarantine_batch_index == [1, 3]
    assert result.quarantine_reasons == [["reserved_event_name"], ["missing_identity"]]


def test_batch_message_inherits_envelope_sent_at_unless_it_has_its_own():
    envelope = {
        "sentAt": "2025-01-15T10:00:00Z",
        "batch": [track(), track(sentAt="2025-01-15T09:00:00Z")],
    }
    result = validate(envelope)
    assert result.times["sent_at"].to_list() == [micros("2025-01-15T10:00:00+00:00"), micros("2025-01-15T09:00:00+00:00")]


def test_batch_message_inherits_context_keys_it_lacks_and_its_own_win():
    envelope = {
        "context": {"ip": "1.1.1.1", "library": {"name": "analytics.js"}, "locale": "en-US"},
        "batch": [track(), track(context={"ip": "2.2.2.2", "library": {"version": "2"}})],
    }
    result = validate(envelope)
    assert [f.context for f in result.accepted] == [
        {"ip": "1.1.1.1", "library": {"name": "analytics.js"}, "locale": "en-US"},
        {"ip": "2.2.2.2", "library": {"version": "2"}, "locale": "en-US"},
    ]


def test_batch_messages_that_take_the_envelope_context_whole_share_it_rather_than_copy_it():
    # A copy each of a 500-key context held 40 KB a message: 4 GB for an envelope of 100,000.
    envelope = {"context": {f"k{n}": n for n in range(500)}, "batch": [track(), track(context={"k1": None}), track(context={"k1": 1})]}
    shared, with_null, own = (f.context for f in validate(envelope).accepted)
    assert shared is with_null and shared == envelope["context"]
    assert own is not shared and own == envelope["context"]


def test_batch_message_with_a_null_context_key_takes_the_envelopes():
    result = validate({"context": {"ip": "1.1.1.1"}, "batch": [track(context={"ip": None, "locale": None})]})
    assert [f.context for f in result.accepted] == [{"ip": "1.1.1.1"}]


def test_envelope_keys_other_than_sent_at_and_context_are_not_inherited():
    envelope = {"userId": "envelope-user", "batch": [{"event": "E"}]}
    assert validate(envelope).quarantine_reasons == [["missing_identity"]]


def test_quarantined_batch_message_raw_is_its_text_in_the_envelope_before_merge():
    line = ('{"sentAt":"2025-01-15T10:00:00Z","context":{"ip":"1.1.1.1"},'
            '"batch":[ {"event" : "$x",  "userId":"é"} ,{"event":"ok","userId":"u"},\t{"event":"[,]"}\t]}')
    result = validate(line)
    assert result.quarantine_raw == ['{"event" : "$x",  "userId":"é"}', '{"event":"[,]"}']
    assert result.quarantine_batch_index == [0, 2]


def test_non_object_batch_element_is_not_an_object():
    result = validate('{"batch":[1, "x",null ,[2],{"event":"E","userId":"u"}]}')
    assert result.quarantine_reasons == [["not_an_object"]] * 4
    assert result.quarantine_raw == ["1", '"x"', "null", "[2]"]
    assert result.quarantine_batch_index == [0, 1, 2, 3]
    assert result.accepted_batch_index == [4]


def test_envelope_bad_sent_at_quarantines_each_message_with_its_own_raw():
    result = validate('{"sentAt":"yesterday","batch":[{"event":"E","userId":"u"}]}')
    assert result.quarantine_reasons == [["invalid_timestamp"]]
    assert result.quarantine_raw == ['{"event":"E","userId":"u"}']


def test_empty_batch_is_one_message_not_zero():
    result = validate('{"batch":[]}')
    assert result.messages == 1
    assert len(result.quarantine_reasons) + len(result.accepted) == 1


# --- accepted details -----------------------------------------------------------------------


def test_message_id_is_kept_when_given():
    assert accepted(track(messageId="m-1")).message_id == "m-1"


def test_missing_message_id_is_derived_deterministically_from_content():
    first = accepted(track()).message_id
    again = validate(b"", track(), first_line=99).accepted[0].message_id
    other = accepted(track(event="Other")).message_id
    assert first and first == again
    assert other != first


def test_blank_message_id_counts_as_absent():
    message_id = accepted(track(messageId="   ")).message_id
    assert message_id.strip() and message_id == accepted(track(messageId="   ")).message_id


# --- property: nothing is dropped, nothing raises -------------------------------------------

MESSAGE_KEYS = ["type", "event", "userId", "anonymousId", "messageId", "properties", "context", "timestamp",
                "originalTimestamp", "sentAt", "receivedAt", "batch"]
# Number-like text, exponents of any length included: `revenue` and `value` read such strings.
numeric_texts = st.builds(
    lambda mantissa, exponent: f"{mantissa}e{exponent}" if exponent is not None else mantissa,
    st.from_regex(r"-?[0-9]{1,3}(\.[0-9]{1,3})?", fullmatch=True),
    st.none() | st.integers(-10**25, 10**25),
)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text() | numeric_texts
PROPERTY_KEYS = ["revenue", "currency", "value", "occurred_at"]
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.sampled_from(PROPERTY_KEYS) | st.text(), children, max_size=5),
    max_leaves=20,
)
messages = st.dictionaries(st.sampled_from(MESSAGE_KEYS) | st.text(max_size=5), json_values, max_size=8)
envelopes = st.builds(
    lambda batch, extra: {**extra, "batch": batch},
    st.lists(messages | json_values, max_size=6),
    st.dictionaries(st.sampled_from(["sentAt", "context", "type"]), json_values, max_size=3),
)
json_lines = st.builds(
    lambda value, ascii_only: json.dumps(value, ensure_ascii=ascii_only).encode(),
    json_values | messages | envelopes,
    st.booleans(),
)
byte_lines = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))
decorated = st.builds(lambda line, bom, cr: (BOM if bom else b"") + line + (b"\r" if cr else b""),
                      json_lines | byte_lines, st.booleans(), st.booleans())


def reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def expected_rows(line: bytes) -> int:
    """How many rows a line must give, by the contract: 0 if blank, len(batch) for an envelope, else 1."""
    line = line.removesuffix(b"\r").removeprefix(BOM)
    if not line.strip():
        return 0
    try:
        value = json.loads(line.decode("utf-8"), parse_constant=reject_constant)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included
        return 1
    batch = value.get("batch") if isinstance(value, dict) else None
    return len(batch) if isinstance(batch, list) and batch else 1


@settings(max_examples=500)
@given(st.sampled_from(["revenue", "value", "currency"]), numeric_texts | scalars)
def test_any_money_field_value_is_accepted_or_quarantined_never_raised(field, value):
    result = validate(track(properties={field: value}))
    assert len(result.accepted) + len(result.quarantine_line) == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(decorated, max_size=8), st.integers(min_value=1, max_value=10_000))
def test_every_line_gives_one_row_per_message_and_nothing_raises(lines, first_line):
    result = validate(*lines, first_line=first_line)
    rows = Counter(result.accepted_line) + Counter(result.quarantine_line)
    expected = [expected_rows(line) for line in (lines or [b""])]
    assert [rows[first_line + i] for i in range(len(expected))] == expected
    assert sum(rows.values()) == result.messages == sum(expected)
    assert result.blank_lines == expected.count(0)
    assert result.lines == len(expected)
    assert len(result.quarantine_reasons) == len(result.quarantine_raw) == len(result.quarantine_message)
    assert all(found for found in result.quarantine_reasons)


def test_an_unreadable_files_raw_has_no_leading_byte_order_mark():
    result = validate_break(FileBreak("a.ndjson.gz", 3, b'\xef\xbb\xbf{"event":"b', "GzipBroken: truncated"))
    assert result.quarantine_raw == ['{"event":"b'] and result.quarantine_reasons == [["unreadable_file"]]
