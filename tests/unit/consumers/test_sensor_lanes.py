from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from consumers.sensors.lanes import SensorLane, default_model_rules
from models.registry import load_model
from models.sensors.synthetic import normal_machines, runs_to_failure
from models.sensors.training import train_sensor_model
from schemas.settings import SensorSettings


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lanes")
    train_sensor_model(normal_machines(2, 200), folder, "ae", "1", window=16, stride=4, epochs=1, hidden=8)
    train_sensor_model(
        runs_to_failure(2, 200),
        folder,
        "rul",
        "1",
        task="sensor_rul",
        window=16,
        stride=4,
        epochs=1,
        hidden=8,
        rul_alert_h=2.0,
    )
    return folder


def lane(registry: Path, name: str) -> SensorLane[object]:
    settings = SensorSettings(registry=str(registry))
    return SensorLane(load_model(registry, name), settings, lambda item, result: None)


def test_an_anomaly_score_is_the_mean_channel_error_and_names_the_channels(registry: Path) -> None:
    ae = lane(registry, "ae")
    try:
        scored = ae.scores(torch.tensor([3.0, 1.0]))
        assert scored.label == "anomaly" and scored.scores == {"anomaly": 2.0}
        assert scored.explanation == {"temp_c": 0.75, "vibration_mm_s": 0.25}
        [rule] = default_model_rules(ae.model)
        assert (rule.label, rule.n, rule.m) == ("anomaly", 2, 3) and rule.hi == ae.model.card.thresholds[
            "anomaly"
        ]
        window = np.zeros((16, 2), dtype=np.float32)
        [output] = ae.score_now([window])
        assert output.shape == (2,)
    finally:
        ae.close()


def test_low_rul_reaches_one_when_the_life_left_falls_to_the_card_threshold(registry: Path) -> None:
    rul = lane(registry, "rul")
    try:
        assert rul.scores(torch.tensor([4.0])).scores == {"rul": 4.0, "low_rul": 0.5}
        assert rul.scores(torch.tensor([2.0])).scores["low_rul"] == 1.0
        [rule] = default_model_rules(rul.model)
        assert (rule.label, rule.hi) == ("low_rul", 1.0)
    finally:
        rul.close()
