"""A small machine anomaly model trained once per test session on generated histories."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from models.sensors.synthetic import normal_machines
from models.sensors.training import train_sensor_model


@dataclass(frozen=True)
class SensorModels:
    """A registry holding ``machine-ae`` (GRU autoencoder over temperature and vibration)."""

    registry: Path
    autoencoder: str = "machine-ae"
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
        window=models.window,
        stride=models.stride,
        epochs=4,
        hidden=16,
    )
    return models
