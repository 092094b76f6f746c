"""Valid sample messages for tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.common import Evidence, ModelRef
from schemas.messages import (
    Alert,
    AlertTimestamps,
    DeadLetter,
    FrameRef,
    InferenceResult,
    RegionOfInterest,
    SensorReading,
)

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def frame(i: int = 0) -> FrameRef:
    return FrameRef(
        frame_id=f"f-{i}",
        camera_id=f"cam-{i % 3}",
        site="plant-a",
        line="l1",
        uri=f"file:///data/frames/{i}.png",
        captured_at=T0 + timedelta(seconds=i),
        content_type="image/png",
        sha256="a" * 64,
        roi=RegionOfInterest(x=0, y=0, width=64, height=64),
        attributes={"shift": "night"},
    )


def reading(i: int = 0, value: float = 20.0) -> SensorReading:
    return SensorReading(
        asset_id=f"pump-{i % 4}",
        sensor_id=f"s-{i % 4}",
        kind="temperature",
        event_time=T0 + timedelta(seconds=i),
        values={"temp_c": value + i * 0.01},
        units={"temp_c": "C"},
    )


def alert() -> Alert:
    return Alert(
        alert_id="a-1",
        kind="visual_defect",
        severity="critical",
        state="firing",
        source_id="cam-1",
        site="plant-a",
        rule="crack",
        label="crack",
        score=0.97,
        threshold=0.8,
        model=ModelRef(name="tiles", version="3", weights_sha256="b" * 64),
        evidence=Evidence(
            topic="vigil.frames", partition=0, offset=42, frame_uri="file:///f.png", frame_sha256="c" * 64
        ),
        explanation={"crack": 0.97},
        config_hash="d" * 64,
        timestamps=AlertTimestamps(captured_at=T0, received_at=T0, inferred_at=T0, published_at=T0),
    )


def inference() -> InferenceResult:
    return InferenceResult(
        result_id="r-1",
        pipeline="vision",
        source_id="cam-1",
        model=ModelRef(name="m", version="1"),
        label="ok",
        score=0.1,
        scores={"ok": 0.9, "crack": 0.1},
        evidence=Evidence(topic="vigil.frames", partition=0, offset=1),
        captured_at=T0,
        inferred_at=T0,
    )


def dead_letter() -> DeadLetter:
    return DeadLetter(
        reason="invalid_json",
        stage="decode",
        error_class="ValidationError",
        error_message="bad",
        origin_topic="vigil.sensors",
        origin_partition=0,
        origin_offset=7,
        original_key_b64="a2V5",
        original_value_b64="e30=",
        original_size=2,
        failed_at=T0,
    )
