"""The demo's simulated world, published in real time.

- the press line: cameras writing product images to a frame store and publishing
  ``FrameRef``s; ``cam-3`` turns out cracked parts for a while;
- the plant's machines: temperature and vibration at 10 Hz; ``press-2`` drifts towards
  failure (hotter, rougher) and is repaired;
- the city district: air-quality sensors once a second; ``aq-2`` sees a pollution episode,
  and one sensor goes silent.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import cycle
from pathlib import Path

from kafka.partitioner.default import murmur2

from consumers.ops.scenarios import air_quality_readings, machine_readings
from schemas.messages import FrameRef, SensorReading

CAMERAS = ("cam-1", "cam-2", "cam-3", "cam-4")
FAULTY_CAMERA = "cam-3"
MACHINES = ("press-1", "press-2", "press-3", "press-4")
FAULTY_MACHINE = "press-2"
MACHINE_PERIOD_S = 0.1
AIR_SENSORS = tuple(f"aq-{n}" for n in range(1, 9))
POLLUTED_SENSOR = "aq-2"


class PressLine:
    """Cameras that write product images to a frame store and describe them as ``FrameRef``s."""

    def __init__(self, store: Path, real_images: Path | None = None) -> None:
        self.store = store
        self._real = (
            cycle(sorted(p for p in real_images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")))
            if real_images
            else None
        )
        self._count = 0

    def tick(self, per_camera: int, faulty: bool, now: datetime) -> list[FrameRef]:
        """One round of frames; the faulty camera makes cracked parts while ``faulty``."""
        from models.vision.synthetic import encode, product_image

        frames = []
        for camera in CAMERAS:
            for _ in range(per_camera):
                self._count += 1
                if self._real is not None:
                    path = next(self._real)
                else:
                    label = (
                        "crack"
                        if faulty and camera == FAULTY_CAMERA
                        else ("spot" if self._count % 41 == 0 else "ok")
                    )
                    path = self.store / camera / f"{self._count:07d}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(encode(product_image(label, 64, seed=self._count)))
                frames.append(
                    FrameRef(
                        frame_id=f"{camera}-{self._count:07d}",
                        camera_id=camera,
                        site="plant-a",
                        line="press-line-1",
                        uri=f"file://{path}",
                        captured_at=now,
                    )
                )
        return frames


class SensorWorld:
    """The plant's machines and the city's air-quality sensors, scripted over ``duration_s``."""

    def __init__(self, start: datetime, duration_s: float, partitions: int) -> None:
        self.start = start
        ticks = int(duration_s / MACHINE_PERIOD_S) + 1
        fault = (int(ticks * 0.2), int(2 / MACHINE_PERIOD_S), int(ticks * 0.6))
        seconds = int(duration_s) + 1
        self.silent = silent_sensor(partitions)
        readings: list[SensorReading] = []
        for n, machine in enumerate(MACHINES):
            readings += machine_readings(
                machine,
                start,
                ticks,
                seed=100 + n,
                fault=fault if machine == FAULTY_MACHINE else None,
                period_s=MACHINE_PERIOD_S,
            )
        for n, sensor in enumerate(AIR_SENSORS):
            readings += air_quality_readings(
                sensor,
                start,
                seconds,
                period_s=1.0,
                seed=200 + n,
                episode=(int(seconds * 0.15), int(seconds * 0.55)) if sensor == POLLUTED_SENSOR else None,
                silent_from=int(seconds * 0.3) if sensor == self.silent else None,
            )
        self._pending = sorted(readings, key=lambda r: r.event_time)
        self._next = 0

    def due(self, now: datetime) -> list[SensorReading]:
        """Readings whose event time has come."""
        first = self._next
        while self._next < len(self._pending) and self._pending[self._next].event_time <= now:
            self._next += 1
        return self._pending[first : self._next]


def partition_of(key: str, partitions: int) -> int:
    """The partition kafka-python's default partitioner gives ``key``."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def silent_sensor(partitions: int) -> str:
    """A sensor whose partition other sources share: stale sources are judged on its event-time clock."""
    keys = [*MACHINES, *AIR_SENSORS]
    for candidate in reversed(AIR_SENSORS):
        if candidate == POLLUTED_SENSOR:
            continue
        shared = [
            k
            for k in keys
            if k != candidate and partition_of(k, partitions) == partition_of(candidate, partitions)
        ]
        if shared:
            return candidate
    return AIR_SENSORS[-1]


def demo_start(now: datetime) -> datetime:
    """Whole seconds, so the machines' 10 Hz grid lines up with event time."""
    return now.replace(microsecond=0) + timedelta(seconds=1)
