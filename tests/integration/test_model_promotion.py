"""A promotion under load: the vision pipeline on a real broker switches models between
batches, losing and repeating no result, and results after the switch name the new version."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.ops.topics import create_topics
from consumers.pipelines.vision.stage import VisionStage
from consumers.runtime.loop import StreamRuntime
from consumers.runtime.observer import CountingObserver
from models.registry import promote
from models.vision.synthetic import encode, product_image
from schemas.messages import FrameRef, InferenceResult
from tests.integration.runtime_harness import running
from tests.kafka_helpers import produce, read_all, read_until_quiet, wait_for
from tests.registry_helpers import copy_entry
from tests.vision_fixtures import LABELS, VisionModels, frame, vision_settings

pytestmark = pytest.mark.integration
FIRST, SECOND = 40, 40


def test_a_promotion_under_load_switches_without_losing_or_repeating_a_result(
    kafka_bootstrap: str, vision_models: VisionModels, tmp_path: Path
) -> None:
    registry, frames_dir = tmp_path / "registry", tmp_path / "frames"
    frames_dir.mkdir()
    name = vision_models.classifier
    for version in ("1", "2"):
        copy_entry(vision_models.registry, registry, name, version)
    promote(registry, name, "1")
    settings = vision_settings(kafka_bootstrap, vision_models, frames_dir)
    vision = settings.vision.model_copy(update={"registry": str(registry), "reload_interval_s": 0.2})
    settings = settings.model_copy(update={"vision": vision})
    create_topics(settings)
    frames = []
    for n in range(FIRST + SECOND):
        path = frames_dir / f"{n}.png"
        path.write_bytes(encode(product_image(LABELS[n % len(LABELS)], 64, seed=9000 + n)))
        frames.append(frame(n, path))
    topic, results_topic = settings.topics.frames.name, settings.topics.inferences.name

    def publish(batch: list[FrameRef]) -> None:
        produce(kafka_bootstrap, topic, [(f.camera_id.encode(), f.to_json_bytes()) for f in batch])

    observer = CountingObserver()
    stage = VisionStage(settings, observer=observer)
    runtime = StreamRuntime(settings, {topic: FrameRef}, stage, observer=observer)
    with running(runtime):
        publish(frames[:FIRST])
        read_all(kafka_bootstrap, results_topic, 5)  # under way
        promote(registry, name, "2")
        wait_for(lambda: stage.default_lane.ref.version == "2", 60, what="the switch to version 2")
        publish(frames[FIRST:])
        read_all(kafka_bootstrap, results_topic, FIRST + SECOND)
        wait_for(  # the retired lane's frames too: no slot outlives its frame's outcome
            lambda: all(decoder.slots.held() == 0 for decoder in stage._decoders), 30, what="every slot back"
        )
    results = [
        InferenceResult.from_json_bytes(r.value) for r in read_until_quiet(kafka_bootstrap, results_topic)
    ]

    by_frame = {int(r.source_id.removeprefix("cam-")): r for r in results}  # one camera per frame
    assert len(results) == FIRST + SECOND == len(by_frame), "a result was lost or repeated"
    versions = [by_frame[n].model.version for n in sorted(by_frame)]  # type: ignore[union-attr]
    assert set(versions[FIRST:]) == {"2"}, "a frame read after the switch was scored by the old model"
    assert "1" in versions[:FIRST]
    assert observer.switches == [(name, "1", "2", "switched")]
