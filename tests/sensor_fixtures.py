"""A small machine anomaly model trained once per test session on generated histories."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from models.sensors.synthetic import normal_machines, runs_to_failure
from models.sensors.training import SensorTraining, train_sensor_model


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
