"""``vigil replay`` on the real broker: a range through a pinned model, and the alert diff."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumers.ops.cli import main
from consumers.ops.topics import create_topics
from consumers.pipelines.vision.stage import VisionStage
from consumers.runtime.loop import StreamRuntime
from models.registry import CARD_FILE, promote
from models.vision.synthetic import encode, product_image
from schemas.messages import Alert, FrameRef, InferenceResult
from tests.integration.runtime_harness import running
from tests.kafka_helpers import committed_offsets, produce, read_all, read_until_quiet
from tests.registry_helpers import copy_entry
from tests.vision_fixtures import LABELS, VisionModels, frame, vision_settings

pytestmark = pytest.mark.integration
FRAMES = 16


def _replay(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[dict, list[dict]]:
    assert main(["replay", "vision", "--config", str(config), "--output", "json", *extra]) == 0
    summary, changes = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    [row] = summary["rows"]
    return row, changes["rows"]


def test_a_replay_pins_the_model_leaves_production_alone_and_diffs_the_alerts(
    kafka_bootstrap: str, vision_models: VisionModels, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry, frames_dir = tmp_path / "registry", tmp_path / "frames"
    frames_dir.mkdir()
    name = vision_models.classifier
    copy_entry(vision_models.registry, registry, name, "1")
    # version 2 raises no crack alerts: its card has no crack threshold
    card_file = copy_entry(vision_models.registry, registry, name, "2") / CARD_FILE
    card = json.loads(card_file.read_text())
    card_file.write_text(
        json.dumps({**card, "thresholds": {k: v for k, v in card["thresholds"].items() if k != "crack"}})
    )
    promote(registry, name, "1")
    settings = vision_settings(kafka_bootstrap, vision_models, frames_dir)
    settings = settings.model_copy(
        update={"vision": settings.vision.model_copy(update={"registry": str(registry)})}
    )
    create_topics(settings)
    config = tmp_path / "vigil.yaml"
    config.write_text(settings.model_dump_json())
    frames = []
    for n in range(FRAMES):
        path = frames_dir / f"{n}.png"
        path.write_bytes(encode(product_image(LABELS[n % len(LABELS)], 64, seed=7000 + n)))
        frames.append(frame(n, path))
    topic = settings.topics.frames.name
    produce(kafka_bootstrap, topic, [(f.camera_id.encode(), f.to_json_bytes()) for f in frames])

    # production: version 1, through the production alias
    runtime = StreamRuntime(settings, {topic: FrameRef}, VisionStage(settings))
    with running(runtime):
        read_all(kafka_bootstrap, settings.topics.inferences.name, FRAMES)
    production = [
        Alert.from_json_bytes(r.value) for r in read_until_quiet(kafka_bootstrap, settings.topics.alerts.name)
    ]
    cracks = [a for a in production if a.label == "crack"]
    assert cracks and len(production) > len(cracks), "the scene needs crack and other alerts"
    offsets = committed_offsets(kafka_bootstrap, settings.kafka.group_id)

    runs = settings.topics.frames.name  # the replays' topics are unique to this test too
    same, changes = _replay(config, capsys, "--version", "1", "--into", f"{runs}.r1")
    assert (same["added"], same["removed"], same["changed"]) == (0, 0, 0) and changes == []
    assert same["same"] == len(production) and same["records"] == FRAMES and same["models"] == f"{name}:1"
    replayed = [
        InferenceResult.from_json_bytes(r.value)
        for r in read_until_quiet(kafka_bootstrap, f"{runs}.r1.inferences")
    ]
    assert len(replayed) == FRAMES and {r.model.version for r in replayed} == {"1"}  # type: ignore[union-attr]

    other, changes = _replay(config, capsys, "--version", "2", "--partition", "0", "--into", f"{runs}.r2")
    on_zero = [a for a in cracks if a.evidence.partition == 0]
    assert (other["added"], other["removed"], other["changed"]) == (0, len(on_zero), 0)
    assert 0 < other["records"] < FRAMES, "the range was not cut to partition 0"
    assert {(c["change"], c["label"], c["evidence"]) for c in changes} == {
        ("removed", "crack", f"{topic}[0]@{a.evidence.offset}") for a in on_zero
    }
    assert committed_offsets(kafka_bootstrap, settings.kafka.group_id) == offsets, (
        "production's offsets moved"
    )

    assert (
        main(
            ["replay", "vision", "--config", str(config), "--version", "1", "--since", "2100-01-01T00:00:00Z"]
        )
        == 5
    )
    assert "holds no records" in capsys.readouterr().err
