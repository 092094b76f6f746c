from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.runtime.dead_letters import dead_letter_output, original_value
from consumers.runtime.decoding import decode_record, decode_records
from consumers.runtime.records import Failure, InboundRecord
from schemas.messages import DeadLetter, FrameRef, SensorReading
from tests import sample_messages as samples


def record(value: bytes | None, offset: int = 3) -> InboundRecord:
    return InboundRecord("vigil.sensors", 1, offset, b"pump-1", value, (("trace", b"abc"),))


def test_valid_reading_decodes() -> None:
    reading = samples.reading(1)
    assert decode_record(record(reading.to_json_bytes()), SensorReading, 10_000) == reading


def test_each_poison_kind_has_its_reason() -> None:
    cases = {
        b"\xff\xfe": "undecodable",
        b"{not json": "invalid_json",
        b'{"asset_id": "x"}': "schema_violation",
        b"[]": "schema_violation",
        b'"a string"': "schema_violation",
    }
    for value, reason in cases.items():
        result = decode_record(record(value), SensorReading, 10_000)
        assert isinstance(result, Failure), value
        assert result.reason == reason, value
    assert decode_record(record(None), SensorReading, 10).reason == "undecodable"  # type: ignore[union-attr]
    assert decode_record(record(b"x" * 11), SensorReading, 10).reason == "oversize"  # type: ignore[union-attr]


def test_a_poll_batch_splits_into_work_and_dead_letters_in_offset_order() -> None:
    readings = [samples.reading(i) for i in range(3)]
    values = [readings[0].to_json_bytes(), None, b"{not json", readings[1].to_json_bytes(), b"x" * 2000]
    values.append(readings[2].to_json_bytes())
    now = datetime.now(UTC)
    work, poison = decode_records(
        [record(value, offset) for offset, value in enumerate(values)], SensorReading, 1000, now
    )
    assert [(w.record.offset, w.message, w.received_at) for w in work] == [
        (0, readings[0], now),
        (3, readings[1], now),
        (5, readings[2], now),
    ]
    assert [(o.record.offset, o.failure.reason) for o in poison if o.failure] == [
        (1, "undecodable"),
        (2, "invalid_json"),
        (4, "oversize"),
    ]


def test_schema_violation_names_the_field_without_echoing_values() -> None:
    value = json.dumps({**json.loads(samples.reading(0).to_json_bytes()), "values": {"t": "secret-token"}})
    failure = decode_record(record(value.encode()), SensorReading, 10_000)
    assert isinstance(failure, Failure)
    assert "values.t" in failure.error_message
    assert "secret-token" not in failure.error_message


@settings(max_examples=300)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(value: bytes) -> None:
    result = decode_record(record(value), FrameRef, 1024)
    assert isinstance(result, FrameRef | Failure)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=8,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["asset_id", "sensor_id", "kind", "event_time", "values", "block", "units", "extra"]),
        json_values,
    )
)
def test_any_json_document_is_a_reading_or_a_schema_violation(document: dict) -> None:
    result = decode_record(record(json.dumps(document).encode()), SensorReading, 100_000)
    assert isinstance(result, SensorReading) or result.reason == "schema_violation"


def test_dead_letter_carries_origin_and_original_bytes() -> None:
    value = b"\x00\x01binary"
    failure = Failure("undecodable", "decode", "UnicodeDecodeError", "bad byte")
    output = dead_letter_output(record(value, offset=77), failure, "vigil.dlq")
    headers = dict(output.headers)
    assert output.topic == "vigil.dlq" and output.key == b"pump-1"
    assert headers["vigil.origin.topic"] == b"vigil.sensors"
    assert headers["vigil.origin.partition"] == b"1"
    assert headers["vigil.origin.offset"] == b"77"
    assert headers["vigil.reason"] == b"undecodable"
    assert headers["vigil.error.class"] == b"UnicodeDecodeError"
    assert headers["trace"] == b"abc"  # the original headers ride along
    letter = DeadLetter.from_json_bytes(output.value)
    assert original_value(letter) == value
    assert letter.original_size == len(value)


def test_a_dead_letter_always_fits_its_topic_and_says_what_it_cut() -> None:
    import hashlib

    value = b"x" * 7_000_000  # a record the broker accepted, too big to copy whole as base64
    failure = Failure("oversize", "decode", "OversizeMessage", "too big")
    output = dead_letter_output(record(value), failure, "dlq", record_limit=1_048_576)
    size = len(output.value) + len(output.key or b"") + sum(len(k) + len(v) for k, v in output.headers)
    assert size <= 1_048_576
    letter = DeadLetter.from_json_bytes(output.value)
    assert letter.original_truncated and letter.original_size == len(value)
    assert letter.original_sha256 == hashlib.sha256(value).hexdigest()
    copy = original_value(letter)
    assert copy is not None and 500_000 < len(copy) < len(value) and value.startswith(copy)
    headers = dict(output.headers)
    assert headers["vigil.original.truncated"] == b"true" and headers["trace"] == b"abc"
    assert headers["vigil.origin.offset"] == b"3"

    small = DeadLetter.from_json_bytes(dead_letter_output(record(b"{}"), failure, "dlq").value)
    assert not small.original_truncated and original_value(small) == b"{}"


def test_invalid_utf8_inside_valid_json_is_undecodable_not_invalid_json() -> None:
    value = samples.reading(1).to_json_bytes().replace(b'"units":{', b'"units":{"x":"\xc3\x28",')
    failure = decode_record(record(value), SensorReading, 10_000)
    assert isinstance(failure, Failure)
    assert (failure.reason, failure.error_class) == ("undecodable", "UnicodeDecodeError")
