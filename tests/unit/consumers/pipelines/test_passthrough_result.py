"""The pass-through result is encoded without the model: it must be the model's bytes exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.pipelines.passthrough import result_for
from consumers.runtime.records import InboundRecord, Work
from schemas.common import CHANNEL_MAX, Evidence
from schemas.messages import MAX_CHANNELS, FrameRef, InferenceResult, SensorReading

IDENTIFIER = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:@/-]{0,40}\Z")
CHANNEL = st.from_regex(rf"\A[A-Za-z][A-Za-z0-9_.]{{0,{CHANNEL_MAX - 1}}}\Z")
FINITE = st.floats(allow_nan=False, allow_infinity=False)
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))])
TIMES = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=ZONES)
TOPICS = st.sampled_from(["vigil.sensors", "plant_a.frames", "t" * 200])


def _through_model(work: Work, topic: str, inferred_at: datetime) -> bytes:
    """What ``result_for`` wrote before it skipped the model: the validated result's bytes."""
    message, record = work.message, work.record
    if isinstance(message, SensorReading):
        source, captured, scores = message.asset_id, message.event_time, dict(message.values or {})
    else:
        assert isinstance(message, FrameRef)
        source, captured, scores = message.camera_id, message.captured_at, {}
    return InferenceResult(
        result_id=record.item_id(),
        pipeline="passthrough",
        source_id=source,
        scores=scores,
        score=max(scores.values()) if scores else None,
        evidence=Evidence(topic=record.topic, partition=record.partition, offset=record.offset),
        captured_at=captured,
        inferred_at=inferred_at,
    ).to_json_bytes()


def _work(message: SensorReading | FrameRef, topic: str, partition: int, offset: int) -> Work:
    record = InboundRecord(topic, partition, offset, None, message.to_json_bytes())
    return Work(record, message, datetime.now(UTC))


@settings(max_examples=300)
@given(
    asset=IDENTIFIER,
    values=st.dictionaries(CHANNEL, FINITE, max_size=MAX_CHANNELS) | st.none(),
    event_time=TIMES,
    inferred_at=TIMES,
    topic=TOPICS,
    partition=st.integers(0, 10_000),
    offset=st.integers(0, 2**63 - 1),
)
def test_a_reading_s_result_is_the_model_s_bytes(
    asset: str,
    values: dict[str, float] | None,
    event_time: datetime,
    inferred_at: datetime,
    topic: str,
    partition: int,
    offset: int,
) -> None:
    block = None if values else {"sample_rate_hz": 100.0, "channels": {"x": [0.5, 1.0]}}
    reading = SensorReading.model_validate(
        {"asset_id": asset, "sensor_id": "s", "kind": "vibration", "event_time": event_time}
        | {"values": values or None, "block": block}
    )
    work = _work(reading, topic, partition, offset)
    encoded = result_for(work, "vigil.inferences", inferred_at).value
    assert encoded == _through_model(work, "vigil.inferences", inferred_at)
    assert InferenceResult.from_json_bytes(encoded).source_id == asset


@given(camera=IDENTIFIER, captured_at=TIMES, inferred_at=TIMES, offset=st.integers(0, 2**40))
def test_a_frame_s_result_is_the_model_s_bytes(
    camera: str, captured_at: datetime, inferred_at: datetime, offset: int
) -> None:
    frame = FrameRef(
        frame_id="f-1",
        camera_id=camera,
        site="plant-a",
        uri="file:///frames/f-1.jpg",
        captured_at=captured_at,
    )
    work = _work(frame, "vigil.frames", 2, offset)
    output = result_for(work, "vigil.inferences", inferred_at)
    assert output.value == _through_model(work, "vigil.inferences", inferred_at)
    assert (output.topic, output.key) == ("vigil.inferences", camera.encode())
    assert "score" not in InferenceResult.from_json_bytes(output.value).model_fields_set
