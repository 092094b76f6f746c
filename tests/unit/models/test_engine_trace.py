"""Serving a model as its TorchScript trace: only marked modules, only where the trace agrees."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from torch import nn

from consumers.pipelines.sensors.stage import SensorStage
from models.engine import InferenceEngine, static_graph
from models.registry import ProbabilitiesFromLogits
from models.sensors.networks import build_sensor_model
from models.vision.architectures import build_classifier
from schemas.settings import SensorModelBinding, SensorSettings, VigilSettings
from tests.sensor_fixtures import SensorModels


class _ScalesByBatchSize(nn.Module):
    """Uses the batch size as a Python number: a trace keeps the size it was traced on."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).sum(dim=1, keepdim=True) * len(x)


def _engine(module: nn.Module, example: torch.Tensor, trace: bool = True) -> InferenceEngine:
    engine = InferenceEngine(module, device="cpu", channels_last=False, trace=trace)
    engine.warm_up(example, (1, 16))
    return engine


@pytest.mark.parametrize(
    ("module", "example"),
    [
        (build_sensor_model("sensor_autoencoder", 3, 16, 2), torch.randn(32, 3)),
        (build_sensor_model("sensor_rul", 3, 16, 2), torch.randn(20, 3)),
        (ProbabilitiesFromLogits(build_classifier("small_cnn", 4)), torch.randn(3, 48, 48)),
    ],
    ids=["gru-autoencoder", "gru-life", "small-cnn"],
)
def test_a_marked_model_serves_its_trace_with_the_eager_outputs_at_any_batch_size(
    module: nn.Module, example: torch.Tensor
) -> None:
    torch.manual_seed(0)
    engine = _engine(static_graph(module), example)
    assert engine.traced
    assert isinstance(engine.module, torch.jit.ScriptModule)
    for size in (1, 5, 40):
        batch = torch.randn(size, *example.shape)
        with torch.inference_mode():
            expected = module.eval()(batch)
        torch.testing.assert_close(engine.run(batch), expected, rtol=1e-5, atol=1e-6)


def test_an_unmarked_model_is_served_eagerly() -> None:
    module = build_sensor_model("sensor_autoencoder", 3, 16, 1)
    engine = _engine(module, torch.randn(32, 3))
    assert not engine.traced
    assert engine.module is module


def test_tracing_can_be_turned_off() -> None:
    engine = _engine(
        static_graph(build_sensor_model("sensor_autoencoder", 3, 16, 1)), torch.randn(32, 3), False
    )
    assert not engine.traced


def test_a_trace_that_disagrees_is_dropped_and_the_model_serves_eagerly(caplog) -> None:
    module = static_graph(_ScalesByBatchSize())
    with caplog.at_level(logging.WARNING, logger="models.engine"):
        engine = _engine(module, torch.ones(2, 2))
    assert not engine.traced
    assert "could not be traced" in caplog.text
    assert engine.run(torch.ones(5, 2, 2)).squeeze(1).tolist() == [20.0] * 5


def test_the_sensor_stage_serves_its_models_traced_unless_told_not_to(sensor_models: SensorModels) -> None:
    base = VigilSettings()
    for trace in (True, False):
        sensors = SensorSettings(
            registry=str(sensor_models.registry),
            models=[SensorModelBinding(model=sensor_models.autoencoder)],
            reload_interval_s=0,
            trace=trace,
        )
        stage = SensorStage(base.model_copy(update={"sensors": sensors}))
        try:
            assert stage.lanes[0].engine.traced is trace
        finally:
            stage.close()


def test_tracing_leaves_other_warnings_alone_and_shows_none_of_torchscripts() -> None:
    class _WarnsWhenCalled(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > -1e9:  # a branch on a value: the tracer warns about it
                return x * 2
            return x

    with warnings.catch_warnings(record=True) as seen:
        engine = _engine(static_graph(_WarnsWhenCalled()), torch.randn(4))
        warnings.warn("a warning of the service's own", UserWarning, stacklevel=1)
    assert engine.traced
    assert [str(w.message) for w in seen] == ["a warning of the service's own"]
