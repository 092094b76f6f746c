"""The sensor stream: IoT readings → per-asset windows and rules → sequence models → results and alerts."""

from __future__ import annotations

from typing import Any

from consumers.pipelines.contract import PinError, Pipeline, PipelineKind
from consumers.pipelines.sensors.demo import DEMO
from consumers.runtime.observer import RuntimeObserver
from schemas.messages import SensorReading
from schemas.settings import VigilSettings


def _build(settings: VigilSettings, observer: RuntimeObserver) -> Pipeline:
    from consumers.pipelines.sensors.stage import SensorStage

    return Pipeline({settings.topics.sensors.name: SensorReading}, SensorStage(settings, observer=observer))


def _pin(settings: VigilSettings, model: str | None, version: str) -> tuple[VigilSettings, dict[str, str]]:
    """The sensor bindings with ``model`` pinned, the others at their alias's version now
    (``PipelineKind.pin``)."""
    from models.registry import resolve_version

    sensors = settings.sensors
    names = {binding.model for binding in sensors.models}
    if model is None and len(names) != 1:
        raise PinError(
            f"name the model to pin (--model): the sensor pipeline serves {', '.join(sorted(names))}"
        )
    pinned = model or next(iter(names))
    if pinned not in names:
        raise PinError(f"the sensor pipeline serves {', '.join(sorted(names))}, not {pinned!r}")
    served: dict[str, str] = {}
    bindings = []
    for binding in sensors.models:
        asked = version if binding.model == pinned else binding.model_version
        served[binding.model] = resolve_version(sensors.registry, binding.model, asked)
        bindings.append(binding.model_copy(update={"model_version": served[binding.model]}))
    section = sensors.model_copy(update={"models": bindings, "reload_interval_s": 0})
    return settings.model_copy(update={"sensors": section}), served


PIPELINE: PipelineKind[Any] = PipelineKind(
    name="sensors",
    summary="IoT readings: windows, rules, anomaly and remaining-life models (settings: sensors)",
    build=_build,
    model_tasks=("sensor_autoencoder", "sensor_forecast", "sensor_rul"),
    serving=lambda settings: settings.sensors,
    input_topic=lambda settings: settings.topics.sensors.name,
    pin=_pin,
    demo=DEMO,
    commands="consumers.ops.sensor_commands",
)
