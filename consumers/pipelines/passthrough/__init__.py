"""A stage with no model: records every valid input as an ``InferenceResult``.

It proves the plumbing (decode, produce, commit) end to end, serves the foundation demo and
the pass-through benchmark, and its output depends only on the input, which makes it the
oracle for fault tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from consumers.pipelines.contract import Pipeline, PipelineKind
from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.records import Outcome, Output, Work
from consumers.runtime.stage import SyncStage
from schemas.common import Evidence, Message
from schemas.messages import FrameRef, InferenceResult, SensorReading
from schemas.settings import VigilSettings


def result_for(work: Work, inferences_topic: str, inferred_at: datetime | None = None) -> Output:
    """The pass-through result of one input, inferred at ``inferred_at`` (now by default)."""
    message = work.message
    record = work.record
    scores: dict[str, float] = {}
    if isinstance(message, SensorReading):
        source, captured = message.asset_id, message.event_time
        scores = dict(message.values or {})
    elif isinstance(message, FrameRef):
        source, captured = message.camera_id, message.captured_at
    else:
        raise TypeError(f"no pass-through for {type(message).__name__}")
    result = InferenceResult(
        result_id=record.item_id(),
        pipeline="passthrough",
        source_id=source,
        scores=scores,
        score=max(scores.values()) if scores else None,
        evidence=Evidence(topic=record.topic, partition=record.partition, offset=record.offset),
        captured_at=captured,
        inferred_at=inferred_at or datetime.now(UTC),
    )
    return Output(inferences_topic, source.encode(), result.to_json_bytes())


def passthrough_stage(inferences_topic: str) -> SyncStage:
    """A ``SyncStage`` that emits one pass-through result per input."""

    def process(batch: Sequence[Work]) -> list[Outcome]:
        now = datetime.now(UTC)  # one batch, one inference time, as in the model stages
        return [Outcome(w.record, (result_for(w, inferences_topic, now),)) for w in batch]

    return SyncStage("passthrough", process)


def _build(settings: VigilSettings, observer: RuntimeObserver) -> Pipeline:
    inputs: dict[str, type[Message]] = {
        settings.topics.frames.name: FrameRef,
        settings.topics.sensors.name: SensorReading,
    }
    return Pipeline(inputs, passthrough_stage(settings.topics.inferences.name))


PIPELINE: PipelineKind[Any] = PipelineKind(
    name="passthrough",
    summary="validate frames and readings and publish one result each, without models (smoke tests)",
    build=_build,
)
