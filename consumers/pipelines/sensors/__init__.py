"""The sensor stream: IoT readings → per-asset windows and rules → sequence models → results and alerts."""

from __future__ import annotations

from typing import Any

from consumers.pipelines.contract import Pipeline, PipelineKind
from consumers.runtime.observer import RuntimeObserver
from schemas.messages import SensorReading
from schemas.settings import VigilSettings


def _build(settings: VigilSettings, observer: RuntimeObserver) -> Pipeline:
    from consumers.pipelines.sensors.stage import SensorStage

    return Pipeline({settings.topics.sensors.name: SensorReading}, SensorStage(settings, observer=observer))


PIPELINE: PipelineKind[Any] = PipelineKind(
    name="sensors",
    summary="IoT readings: windows, rules, anomaly and remaining-life models (settings: sensors)",
    build=_build,
    model_tasks=("sensor_autoencoder", "sensor_forecast", "sensor_rul"),
    serving=lambda settings: settings.sensors,
)
