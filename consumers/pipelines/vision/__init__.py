"""Visual inspection: camera frame references → fetch and decode → image models → results and alerts."""

from __future__ import annotations

from typing import Any

from consumers.pipelines.contract import Pipeline, PipelineKind
from consumers.runtime.observer import RuntimeObserver
from schemas.messages import FrameRef
from schemas.settings import VigilSettings


def _build(settings: VigilSettings, observer: RuntimeObserver) -> Pipeline:
    from consumers.pipelines.vision.stage import VisionStage  # torch loads only for pipelines that need it

    return Pipeline({settings.topics.frames.name: FrameRef}, VisionStage(settings, observer=observer))


PIPELINE: PipelineKind[Any] = PipelineKind(
    name="vision",
    summary="camera frames: defect classifiers and anomaly scorers (settings: vision)",
    build=_build,
    model_tasks=("defect_classification", "visual_anomaly"),
    serving=lambda settings: settings.vision,
)
