from __future__ import annotations

import contextlib
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.messages import MESSAGE_TYPES, FrameRef, SensorReading
from tests import sample_messages as samples

SAMPLES = [samples.frame(3), samples.reading(4), samples.alert(), samples.inference(), samples.dead_letter()]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_wire_round_trip(message) -> None:
    data = message.to_json_bytes()
    assert json.loads(data)["schema_version"] == 1
    assert type(message).from_json_bytes(data) == message


def frame_doc(**changes: object) -> dict:
    doc = json.loads(samples.frame(1).to_json_bytes())
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


@pytest.mark.parametrize(
    "changes",
    [
        {"captured_at": "2026-11-01T08:00:00"},  # naive timestamp
        {"uri": "ftp://host/x.png"},  # unknown scheme
        {"uri": "file:///" + "a" * 3000},  # too long
        {"camera_id": ""},
        {"camera_id": "cam 1"},  # whitespace in an id
        {"sha256": "ABC"},
        {"schema_version": 2},
        {"unexpected": 1},
        {"attributes": {f"k{i}": "v" for i in range(33)}},
        {"roi": {"x": 0, "y": 0, "width": 0, "height": 5}},
        {"frame_id": 5},  # strict: no number-to-string coercion
    ],
)
def test_invalid_frames_are_rejected(changes: dict) -> None:
    with pytest.raises(ValidationError):
        FrameRef.model_validate_json(json.dumps(frame_doc(**changes)))


def reading_doc(**changes: object) -> dict:
    doc = json.loads(samples.reading(1).to_json_bytes())
    doc.update(changes)
    return doc


@pytest.mark.parametrize(
    "changes",
    [
        {"values": {"t": "NaN"}},
        {"values": {"t": "1.5"}},  # strings are not numbers
        {"values": {}},
        {"values": {f"c{i}": 1.0 for i in range(65)}},
        {"values": None, "block": None},
        {"block": {"sample_rate_hz": 100.0, "channels": {"x": [1.0, 2.0], "y": [1.0]}}},
        {"block": {"sample_rate_hz": 0.0, "channels": {"x": [1.0]}}},
        {"kind": "Air Quality"},
    ],
)
def test_invalid_readings_are_rejected(changes: dict) -> None:
    with pytest.raises(ValidationError):
        SensorReading.model_validate_json(json.dumps(reading_doc(**changes)))


def test_non_finite_floats_are_rejected_from_python_too() -> None:
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValidationError):
            samples.reading(0).model_validate({**samples.reading(0).model_dump(), "values": {"t": bad}})
    with pytest.raises(ValidationError):
        SensorReading.model_validate_json(
            b'{"asset_id":"a","sensor_id":"s","kind":"k","event_time":"2026-01-01T00:00:00Z","values":{"t":Infinity}}'
        )


def test_block_readings_are_accepted() -> None:
    reading = SensorReading.model_validate_json(
        json.dumps(
            reading_doc(
                values=None, block={"sample_rate_hz": 1000.0, "channels": {"x": [0.1, 0.2], "y": [0.3, 0.4]}}
            )
        )
    )
    assert reading.block is not None and reading.block.channels["y"] == [0.3, 0.4]


def test_messages_are_immutable() -> None:
    with pytest.raises(ValidationError):
        samples.frame(0).camera_id = "other"  # type: ignore[misc]


@given(st.dictionaries(st.text(max_size=12), st.text(max_size=12) | st.integers() | st.floats(), max_size=8))
def test_fuzzed_documents_fail_only_with_validation_errors(document: dict) -> None:
    for model in MESSAGE_TYPES.values():
        with contextlib.suppress(ValidationError):
            model.model_validate_json(json.dumps(document))
