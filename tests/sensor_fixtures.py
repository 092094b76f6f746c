"""A small machine anomaly model trained once per test session on generated histories."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from kafka import KafkaProducer

from consumers.pipelines.sensors.scenarios import air_quality_readings, machine_readings
from models.sensors.synthetic import normal_machines, runs_to_failure
from models.sensors.training import SensorTraining, train_sensor_model
from schemas.messages import SensorReading
from schemas.settings import (
    AlertRule,
    BatchingSettings,
    SensorModelBinding,
    SensorRule,
    SensorSettings,
    VigilSettings,
)
from tests.kafka_helpers import unique_settings


@dataclass(frozen=True)
class SensorModels:
    """A registry holding ``machine-ae`` (GRU autoencoder over temperature and vibration)."""

    registry: Path
    autoencoder: str = "machine-ae"
    rul: str = "machine-rul"
    """Trained on runs to failure sampled once a minute; alerts below 1.5 h of life."""
    window: int = 32
    stride: int = 8


@pytest.fixture(scope="session")
def sensor_models(tmp_path_factory: pytest.TempPathFactory) -> SensorModels:
    registry = tmp_path_factory.mktemp("sensor-registry")
    models = SensorModels(registry)
    train_sensor_model(
        normal_machines(4, 600),
        registry,
        models.autoencoder,
        "1",
        SensorTraining(window=models.window, stride=models.stride, epochs=4, hidden=16, normal_fraction=1.0),
    )
    train_sensor_model(
        runs_to_failure(4, 400, period_s=60.0),
        registry,
        models.rul,
        "1",
        SensorTraining(
            task="sensor_rul",
            window=models.window,
            stride=models.stride,
            epochs=10,
            hidden=16,
            life_unit="hours",
            life_alert=1.5,
        ),
    )
    return models


CITY, PLANT = 0, 1
"""Partitions: the city's sensors share one, so the silent sensor's neighbours move its clock on."""


def sensor_settings(bootstrap: str, models: SensorModels) -> VigilSettings:
    settings = unique_settings(bootstrap, partitions=2)
    sensors = SensorSettings(
        registry=str(models.registry),
        models=[SensorModelBinding(assets="machine-*", sensor_kind="machine", model=models.autoencoder)],
        batching=BatchingSettings(max_batch_size=16, max_wait_ms=10.0, max_queue=1024),
        # Configured, not the card's default: a drift scores tens, healthy windows about 1.
        alert_rules=[AlertRule(name="machine-anomaly", label="anomaly", hi=4.0, lo=2.0, n=2, m=3)],
        rules=[
            SensorRule(
                name="pm25-10min",
                kind="threshold",
                channel="pm25_ug_m3",
                sensor_kind="air_quality",
                limit=35.0,
                for_s=600.0,
            ),
            SensorRule(name="silent", kind="stale", sensor_kind="air_quality", for_s=120.0),
        ],
    )
    return settings.model_copy(update={"sensors": sensors})


def scenario(start: datetime, first: bool | None = None) -> list[tuple[int, SensorReading]]:
    """The plant (a machine that degrades and is repaired, a healthy one) and the city district.

    ``first`` True/False gives the first or second half of every stream, None all of it.
    """
    streams = {
        "machine-1": (PLANT, machine_readings("machine-1", start, 560, seed=11, fault=(200, 60, 380))),
        "machine-2": (PLANT, machine_readings("machine-2", start, 560, seed=12)),
        "aq-1": (CITY, air_quality_readings("aq-1", start, 150, episode=(30, 100), seed=1)),
        "aq-2": (CITY, air_quality_readings("aq-2", start, 150, silent_from=50, seed=2)),
        "aq-3": (CITY, air_quality_readings("aq-3", start, 150, seed=3)),
    }
    out = []
    for partition, readings in streams.values():
        half = len(readings) // 2
        part = readings if first is None else readings[:half] if first else readings[half:]
        out.extend((partition, r) for r in part)
    return sorted(out, key=lambda pr: pr[1].event_time)


def publish(bootstrap: str, topic: str, items: list[tuple[int, bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        for future in [producer.send(topic, key=k, value=v, partition=p) for p, k, v in items]:
            future.get(timeout=30)
    finally:
        producer.close()


def publish_readings(
    bootstrap: str, settings: VigilSettings, readings: list[tuple[int, SensorReading]]
) -> None:
    items = [(p, r.asset_id.encode(), r.to_json_bytes()) for p, r in readings]
    publish(bootstrap, settings.topics.sensors.name, items)
