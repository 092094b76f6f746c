"""Synthetic inputs: frame references from cameras and readings from plant and city sensors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from consumers.pipelines.sensors.scenarios import POISON_SAMPLES, air_quality_readings, machine_readings
from consumers.runtime.ports import ProducerPort
from schemas.messages import FrameRef, SensorReading
from schemas.settings import VigilSettings


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
    """Readings from plant machines (``pump-N``: temperature, vibration) and city air-quality
    sensors (``aq-N``), one per asset per tick of ``spacing_s``, in tick order."""
    t0 = start or datetime.now(UTC)
    ticks = -(-count // assets)
    streams = [
        machine_readings(f"pump-{n + 1}", t0, ticks, seed=seed + n, period_s=spacing_s)
        if n % 2 == 0
        else air_quality_readings(f"aq-{n + 1}", t0, ticks, period_s=spacing_s, seed=seed + n)
        for n in range(assets)
    ]
    for i in range(count):
        yield streams[i % assets][i // assets]


def publish(
    producer: ProducerPort,
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
