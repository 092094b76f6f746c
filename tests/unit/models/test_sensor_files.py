"""Offline sensor files the way users hand them over: a channel the model needs is missing,
timestamps repeat."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.registry import load_model
from models.sensors.scoring import score_series
from models.sensors.series import load_history
from tests.sensor_fixtures import SensorModels


def test_a_missing_channel_names_the_file_the_model_and_the_channel(
    tmp_path: Path, sensor_models: SensorModels
) -> None:
    history = tmp_path / "press-7.csv"
    history.write_text("timestamp,temp_c\n" + "".join(f"{t},{20 + t % 3}\n" for t in range(100)))
    model = load_model(sensor_models.registry, sensor_models.autoencoder)
    [series] = load_history(history)
    with pytest.raises(ValueError) as refused:
        score_series(model.module, model.card, series)
    message = str(refused.value)
    assert str(history) in message and sensor_models.autoencoder in message
    assert "requires channel(s)" in message and "vibration" in message


def test_repeated_timestamps_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    history = tmp_path / "aq-1.csv"
    rows = [(t, 10.0) for t in range(10)] + [(4, 11.0), (7, 12.0)]
    history.write_text("timestamp,pm25\n" + "".join(f"{t},{v}\n" for t, v in rows))
    with caplog.at_level("WARNING"):
        [series] = load_history(history)
    assert len(series.times) == 12
    assert "aq-1.csv: asset aq-1: 2 rows repeat the timestamp" in caplog.text
