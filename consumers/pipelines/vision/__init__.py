"""Visual inspection: camera frame references → fetch and decode → image models → results and alerts."""

from __future__ import annotations

from typing import Any

from consumers.pipelines.contract import PinError, Pipeline, PipelineKind
from consumers.pipelines.vision.demo import DEMO
from consumers.runtime.observer import RuntimeObserver
from schemas.messages import FrameRef
from schemas.settings import VigilSettings


def _build(settings: VigilSettings, observer: RuntimeObserver) -> Pipeline:
    from consumers.pipelines.vision.stage import VisionStage  # torch loads only for pipelines that need it

    return Pipeline({settings.topics.frames.name: FrameRef}, VisionStage(settings, observer=observer))


def _pin(settings: VigilSettings, model: str | None, version: str) -> tuple[VigilSettings, dict[str, str]]:
    """The vision section with its model pinned (``PipelineKind.pin``)."""
    from models.registry import resolve_version

    vision = settings.vision
    if model not in (None, vision.model):
        raise PinError(f"the vision pipeline serves {vision.model!r}, not {model!r}")
    served = {vision.model: resolve_version(vision.registry, vision.model, version)}
    pinned = vision.model_copy(update={"model_version": served[vision.model], "reload_interval_s": 0})
    return settings.model_copy(update={"vision": pinned}), served


PIPELINE: PipelineKind[Any] = PipelineKind(
    name="vision",
    summary="camera frames: defect classifiers and anomaly scorers (settings: vision)",
    build=_build,
    model_tasks=("defect_classification", "visual_anomaly"),
    serving=lambda settings: settings.vision,
    input_topic=lambda settings: settings.topics.frames.name,
    pin=_pin,
    demo=DEMO,
    commands="consumers.ops.vision_commands",
)
