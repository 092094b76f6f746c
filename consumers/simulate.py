"""Synthetic inputs: frame references from cameras and readings from plant and city sensors."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from kafka import KafkaProducer

from schemas.messages import FrameRef, SensorReading
from schemas.settings import VigilSettings

POISON_SAMPLES: tuple[bytes, ...] = (
    b"\xff\xfe not utf-8",
    b'{"asset_id": "pump-1", "values": ',
    b'{"asset_id": "pump-1", "sensor_id": "t1", "kind": "temperature", '
    b'"event_time": "2026-11-28T10:00:00", "values": {"temp_c": 71.5}}',
)
"""Undecodable bytes, truncated JSON, and a reading with a naive timestamp."""


def synthetic_frames(
    count: int, cameras: int = 4, start: datetime | None = None, spacing_s: float = 0.1
) -> Iterator[FrameRef]:
    """Frame references from ``cameras`` cameras on one line, one frame per camera per tick."""
    t0 = start or datetime.now(UTC)
    for i in range(count):
        camera = f"cam-{i % cameras + 1}"
        yield FrameRef(
            frame_id=f"{camera}-{i // cameras:06d}",
            camera_id=camera,
            site="plant-a",
            line="press-line-1",
            uri=f"file:///var/lib/vigil/frames/{camera}/{i // cameras:06d}.png",
            captured_at=t0 + timedelta(seconds=spacing_s * (i // cameras)),
            content_type="image/png",
        )


def synthetic_readings(
    count: int, assets: int = 6, start: datetime | None = None, seed: int = 7, spacing_s: float = 1.0
) -> Iterator[SensorReading]:
    """Readings from plant machines (temperature, vibration) and city air-quality sensors."""
    rnd = random.Random(seed)
    t0 = start or datetime.now(UTC)
    for i in range(count):
        n = i % assets
        tick = i // assets
        at = t0 + timedelta(seconds=spacing_s * tick)
        if n % 2 == 0:
            yield SensorReading(
                asset_id=f"pump-{n + 1}",
                sensor_id=f"pump-{n + 1}-th",
                kind="machine",
                event_time=at,
                values={
                    "temp_c": 60 + 5 * math.sin(tick / 30) + rnd.gauss(0, 0.3),
                    "vibration_mm_s": 2.0 + rnd.gauss(0, 0.1),
                },
                units={"temp_c": "C", "vibration_mm_s": "mm/s"},
                site="plant-a",
            )
        else:
            yield SensorReading(
                asset_id=f"aq-{n + 1}",
                sensor_id=f"aq-{n + 1}",
                kind="air_quality",
                event_time=at,
                values={
                    "pm25_ug_m3": max(0.0, 12 + rnd.gauss(0, 3)),
                    "no2_ug_m3": max(0.0, 30 + rnd.gauss(0, 5)),
                },
                units={"pm25_ug_m3": "ug/m3", "no2_ug_m3": "ug/m3"},
                site="district-7",
            )


def publish(
    producer: KafkaProducer,
    settings: VigilSettings,
    frames: list[FrameRef],
    readings: list[SensorReading],
    poison: int = 0,
    poison_start: int = 0,
) -> int:
    """Send inputs (and ``poison`` malformed records to the sensors topic); return the count."""
    for frame in frames:
        producer.send(settings.topics.frames.name, key=frame.camera_id.encode(), value=frame.to_json_bytes())
    for reading in readings:
        producer.send(
            settings.topics.sensors.name, key=reading.asset_id.encode(), value=reading.to_json_bytes()
        )
    for i in range(poison):
        producer.send(
            settings.topics.sensors.name,
            key=b"pump-1",
            value=POISON_SAMPLES[(poison_start + i) % len(POISON_SAMPLES)],
        )
    return len(frames) + len(readings) + poison
