"""Scripted sensor scenarios for the demo, the tests and the benchmarks.

- a plant machine that runs normally, drifts towards failure (hotter, rougher) and is repaired;
- a city district whose air-quality sensors see a pollution episode, one sensor going silent.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from models.sensors.synthetic import MACHINE_CHANNELS, fault_profile, machine_values
from schemas.messages import SensorReading

POISON_SAMPLES: tuple[bytes, ...] = (
    b"\xff\xfe not utf-8",
    b'{"asset_id": "pump-1", "values": ',
    b'{"asset_id": "pump-1", "sensor_id": "t1", "kind": "temperature", '
    b'"event_time": "2026-11-28T10:00:00", "values": {"temp_c": 71.5}}',
)
"""Undecodable bytes, truncated JSON, and a reading with a naive timestamp."""


def machine_readings(
    asset: str,
    start: datetime,
    samples: int,
    seed: int = 0,
    fault: tuple[int, int, int] | None = None,
    period_s: float = 1.0,
    first: int = 0,
) -> list[SensorReading]:
    """One machine's readings; ``fault`` = (start, ramp, repaired_at) in samples, or healthy.

    ``first`` skips that many samples, so a scenario can be published in parts.
    """
    profile = fault_profile(samples, *fault) if fault is not None else None
    values = machine_values(samples, seed, profile)
    return [
        SensorReading(
            asset_id=asset,
            sensor_id=f"{asset}-th",
            kind="machine",
            event_time=start + timedelta(seconds=i * period_s),
            values={name: float(v) for name, v in zip(MACHINE_CHANNELS, values[i], strict=True)},
            units={"temp_c": "C", "vibration_mm_s": "mm/s"},
            site="plant-a",
        )
        for i in range(first, samples)
    ]


def air_quality_readings(
    asset: str,
    start: datetime,
    samples: int,
    period_s: float = 10.0,
    episode: tuple[int, int] | None = None,
    silent_from: int | None = None,
    seed: int = 0,
) -> list[SensorReading]:
    """An air-quality sensor: PM2.5 near 12 µg/m³, near 60 during ``episode`` (start, end samples),
    nothing from ``silent_from`` on."""
    rnd = random.Random(seed)
    readings = []
    for i in range(samples if silent_from is None else min(samples, silent_from)):
        polluted = episode is not None and episode[0] <= i < episode[1]
        readings.append(
            SensorReading(
                asset_id=asset,
                sensor_id=asset,
                kind="air_quality",
                event_time=start + timedelta(seconds=i * period_s),
                values={
                    "pm25_ug_m3": max(0.0, (60.0 if polluted else 12.0) + rnd.gauss(0, 2)),
                    "no2_ug_m3": max(0.0, 30 + rnd.gauss(0, 4)),
                },
                units={"pm25_ug_m3": "ug/m3", "no2_ug_m3": "ug/m3"},
                site="district-7",
            )
        )
    return readings
