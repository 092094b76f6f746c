from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from consumers.pipelines.sensors.lanes import SensorLane
from models.registry import load_model
from models.sensors.synthetic import normal_machines, runs_to_failure
from models.sensors.training import SensorTraining, train_sensor_model
from schemas.settings import SensorSettings
from tests.operator_calls import OperatorCalls


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lanes")
    train_sensor_model(
        normal_machines(2, 200),
        folder,
        "ae",
        "1",
        SensorTraining(window=16, stride=4, epochs=1, hidden=8, normal_fraction=1.0),
    )
    train_sensor_model(
        runs_to_failure(2, 200),
        folder,
        "rul",
        "1",
        SensorTraining(
            task="sensor_rul", window=16, stride=4, epochs=1, hidden=8, life_unit="hours", life_alert=2.0
        ),
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
        [rule] = ae.rules
        assert (rule.label, rule.n, rule.m) == ("anomaly", 2, 3) and rule.hi == ae.model.card.thresholds[
            "anomaly"
        ]
        window = np.zeros((16, 2), dtype=np.float32)
        [output] = ae.score_now([window])
        assert output.shape == (2,)
    finally:
        ae.close()


def test_scoring_a_window_makes_no_operator_call(registry: Path) -> None:
    ae = lane(registry, "ae")
    try:
        output = torch.tensor([3.0, 1.0])
        with OperatorCalls() as calls:
            ae.scores(output)
        assert calls.releasing_the_gil() == []
    finally:
        ae.close()


def test_low_rul_reaches_one_when_the_life_left_falls_to_the_card_threshold(registry: Path) -> None:
    rul = lane(registry, "rul")
    try:
        assert rul.scores(torch.tensor([4.0])).scores == {"rul": 4.0, "low_rul": 0.5}
        assert rul.scores(torch.tensor([2.0])).scores["low_rul"] == 1.0
        [rule] = rul.rules
        assert (rule.label, rule.hi) == ("low_rul", 1.0)
    finally:
        rul.close()


class _HotShortensLife(torch.nn.Module):
    """Life falls with the first channel's level and ignores the second."""

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(10.0 - windows[:, :, 0].mean(dim=1, keepdim=True))


def test_a_life_estimate_names_the_channels_that_took_the_life_off(registry: Path) -> None:
    from models.registry import LoadedModel

    trained = load_model(registry, "rul")
    model = LoadedModel(trained.card, _HotShortensLife(), trained.path)
    rul = SensorLane(model, SensorSettings(registry=str(registry)), lambda item, result: None)
    try:
        spec = trained.card.input
        window = np.tile(np.asarray(spec.mean, dtype=np.float32), (16, 1))  # type: ignore[union-attr]
        window[:, 0] += 5 * np.asarray(spec.std, dtype=np.float32)[0]  # type: ignore[union-attr]
        assert rul.explain(window) == {"temp_c": 1.0, "vibration_mm_s": 0.0}
    finally:
        rul.close()


def test_a_model_binding_batches_as_configured_and_others_as_their_section(registry: Path) -> None:
    from consumers.pipelines.sensors.stage import SensorStage
    from schemas.settings import BatchingSettings, SensorModelBinding, VigilSettings

    own = BatchingSettings(max_batch_size=7, max_wait_ms=3, max_queue=70)
    sensors = SensorSettings(
        registry=str(registry),
        models=[
            SensorModelBinding(assets="a-*", model="ae", model_version="1", batching=own),
            SensorModelBinding(model="rul", model_version="1"),
        ],
        reload_interval_s=0,
    )
    stage = SensorStage(VigilSettings(sensors=sensors))
    try:
        own_lane, section_lane = stage.lanes
        assert (own_lane.batcher.max_batch_size, own_lane.batcher.max_wait_s) == (7, 0.003)
        assert section_lane.batcher.max_batch_size == sensors.batching.max_batch_size
    finally:
        stage.close()
