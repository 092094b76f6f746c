"""The pipelines ``vigil run --pipeline`` knows: which topics they read and the stage they run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from consumers.pipelines.passthrough import passthrough_stage
from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.stage import ProcessingStage
from schemas.common import Message
from schemas.messages import FrameRef, SensorReading
from schemas.settings import VigilSettings


@dataclass(frozen=True)
class Pipeline:
    """Input topics with their message types, and the processing stage."""

    inputs: dict[str, type[Message]]
    stage: ProcessingStage


def _passthrough(settings: VigilSettings, observer: RuntimeObserver) -> Pipeline:
    inputs: dict[str, type[Message]] = {
        settings.topics.frames.name: FrameRef,
        settings.topics.sensors.name: SensorReading,
    }
    return Pipeline(inputs, passthrough_stage(settings.topics.inferences.name))


def _vision(settings: VigilSettings, observer: RuntimeObserver) -> Pipeline:
    from consumers.pipelines.vision.stage import VisionStage  # torch loads only for pipelines that need it

    return Pipeline({settings.topics.frames.name: FrameRef}, VisionStage(settings, observer=observer))


def _sensors(settings: VigilSettings, observer: RuntimeObserver) -> Pipeline:
    from consumers.pipelines.sensors.stage import SensorStage

    return Pipeline({settings.topics.sensors.name: SensorReading}, SensorStage(settings, observer=observer))


PIPELINES: dict[str, Callable[[VigilSettings, RuntimeObserver], Pipeline]] = {
    "passthrough": _passthrough,
    "vision": _vision,
    "sensors": _sensors,
}


def build_pipeline(name: str, settings: VigilSettings, observer: RuntimeObserver | None = None) -> Pipeline:
    """The pipeline called ``name``, its stage reporting to ``observer``; ``KeyError`` names the known ones."""
    if name not in PIPELINES:
        raise KeyError(f"unknown pipeline {name!r}; known: {', '.join(sorted(PIPELINES))}")
    return PIPELINES[name](settings, observer or RuntimeObserver())
