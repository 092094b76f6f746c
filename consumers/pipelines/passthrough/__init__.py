"""A stage with no model: records every valid input as an ``InferenceResult``.

It proves the plumbing (decode, produce, commit) end to end, serves the foundation demo and
the pass-through benchmark, and its output depends only on the input, which makes it the
oracle for fault tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json

from consumers.pipelines.contract import Pipeline, PipelineKind
from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.records import Outcome, Output, Work
from consumers.runtime.stage import SyncStage
from schemas.common import SCHEMA_VERSION, Message
from schemas.messages import FrameRef, SensorReading
from schemas.settings import VigilSettings


def result_for(work: Work, inferences_topic: str, inferred_at: datetime | None = None) -> Output:
    """The pass-through result of one input, inferred at ``inferred_at`` (now by default).

    The bytes are those of ``InferenceResult(...).to_json_bytes()``, encoded from a plain dict
    without validating the result again: every value in it comes from a message already
    validated or from the record's position (``item_id`` is an ``Identifier`` by
    construction). That is 2.4 µs a result against 8.9 through the model, which was half of
    the pass-through's thread; ``test_passthrough_result`` holds the two to the same bytes.
    """
    message = work.message
    record = work.record
    scores: dict[str, float]
    if isinstance(message, SensorReading):
        source, captured = message.asset_id, message.event_time
        scores = message.values or {}
    elif isinstance(message, FrameRef):
        source, captured = message.camera_id, message.captured_at
        scores = {}
    else:
        raise TypeError(f"no pass-through for {type(message).__name__}")
    # In the model's field order, None left out, as ``to_json_bytes`` writes them.
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "result_id": record.item_id(),
        "pipeline": "passthrough",
        "source_id": source,
        "outcome": "scored",
    }
    if scores:
        result["score"] = max(scores.values())
    result["scores"] = scores
    result["evidence"] = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
    result["captured_at"] = captured
    result["inferred_at"] = inferred_at or datetime.now(UTC)
    return Output(inferences_topic, source.encode(), to_json(result))


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
