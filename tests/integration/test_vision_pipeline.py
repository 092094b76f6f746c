"""Frames on disk → the vision pipeline on a real broker → results, alerts and dead letters."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from consumers.ops.topics import create_topics
from consumers.pipelines.vision.stage import VisionStage
from consumers.runtime.dead_letters import original_value
from consumers.runtime.loop import StreamRuntime
from models.registry import load_model
from models.vision.preprocess import preprocess
from models.vision.synthetic import encode, product_image
from schemas.messages import Alert, DeadLetter, FrameRef, InferenceResult, RegionOfInterest
from schemas.model_card import ImageInputSpec
from tests.integration.runtime_harness import running
from tests.kafka_helpers import produce, read_all
from tests.vision_fixtures import LABELS, VisionModels, frame, vision_settings

pytestmark = pytest.mark.integration
Scorer = Callable[[torch.Tensor], torch.Tensor]


def add_other_formats(registry: Path, classifier: str, work: Path) -> dict[str, Scorer]:
    """Beside the trained classifier: a torchvision MobileNetV3 entry, and two models brought by
    a user through ``import_model``, a seed-layout ResNet-50 state dict (``backbone.*`` + ``fc.*``)
    and a TorchScript file emitting logits; each with its direct scorer (probabilities)."""
    from models.registry import save_model, versions
    from models.vision.architectures import SmallCnn, build_classifier
    from models.vision.importing import ImportRequest, import_model

    source = load_model(registry, classifier)
    labels = source.card.labels
    torch.manual_seed(0)
    mobilenet = build_classifier("mobilenet_v3_small", len(labels)).eval()
    if not versions(registry, "tiles-mobilenet"):
        card = source.card.model_copy(
            update={
                "name": "tiles-mobilenet",
                "architecture": "mobilenet_v3_small",
                "backbone": None,
                "cpu_engine": None,
            }
        )
        save_model(registry, card, mobilenet)
    trunk = tvm.resnet50(weights=None)
    trunk.fc = nn.Identity()  # type: ignore[assignment]
    fc = nn.Linear(2048, len(labels))
    seed_model = nn.Sequential(trunk, fc).eval()
    seed_file = work / "seed-resnet50.pt"
    state = {f"backbone.{k}": v for k, v in trunk.state_dict().items()}
    torch.save(state | {f"fc.{k}": v for k, v in fc.state_dict().items()}, seed_file)
    scripted = torch.jit.script(SmallCnn(len(labels)).eval())
    scripted_file = work / "logits.torchscript.pt"
    scripted.save(str(scripted_file))
    spec = ImageInputSpec(
        height=64,
        width=64,
        channels=3,
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
        resize="letterbox",
    )
    for name, path in (("seed-resnet50", seed_file), ("scripted-logits", scripted_file)):
        if not versions(registry, name):
            import_model(ImportRequest(path, name, "1", labels, spec, normal_label="ok"), registry)
    return {
        "tiles-mobilenet": lambda x: mobilenet(x).softmax(dim=1),
        "seed-resnet50": lambda x: seed_model(x).softmax(dim=1),
        "scripted-logits": lambda x: scripted(x).softmax(dim=1),
    }


def test_frames_become_results_alerts_and_precise_dead_letters(
    kafka_bootstrap: str, vision_models: VisionModels, tmp_path: Path
) -> None:
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    settings = vision_settings(kafka_bootstrap, vision_models, frames_dir)
    create_topics(settings)
    good: list[FrameRef] = []
    for n, label in enumerate(LABELS):
        path = frames_dir / f"{n}.png"
        path.write_bytes(encode(product_image(label, 64, seed=7000 + n)))
        good.append(frame(n, path, sha256=hashlib.sha256(path.read_bytes()).hexdigest()))
    extra_models = add_other_formats(vision_models.registry, vision_models.classifier, tmp_path)
    for k, name in enumerate(extra_models):
        path = frames_dir / f"format-{k}.png"
        path.write_bytes(encode(product_image("scratch", 64, seed=7200 + k)))
        good.append(frame(40 + k, path, model=name))
    anomaly_path = frames_dir / "anomaly.png"
    anomaly_path.write_bytes(encode(product_image("crack", 64, seed=7100), "jpeg"))
    good.append(frame(20, anomaly_path, model=vision_models.anomaly))
    corrupt = frames_dir / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "outside.png").write_bytes(encode(product_image("ok", 64)))
    bad = {
        "disallowed_uri": frame(30, "file:///etc/passwd"),
        "missing_object": frame(31, frames_dir / "missing.png"),
        "corrupt_image": frame(32, corrupt),
        "checksum_mismatch": frame(33, frames_dir / "0.png", sha256="0" * 64),
        "invalid_roi": frame(34, frames_dir / "1.png", roi=RegionOfInterest(x=60, y=60, width=30, height=30)),
        "unknown_model": frame(35, frames_dir / "2.png", model="no-such-model"),
    }
    escape = frame(36, f"file://{frames_dir}/../outside.png")
    records = [(f.camera_id.encode(), f.to_json_bytes()) for f in [*good, *bad.values(), escape]]
    records.append((b"cam-x", json.dumps({"frame_id": "x", "uri": "file:///x.png"}).encode()))
    produce(kafka_bootstrap, settings.topics.frames.name, records)

    runtime = StreamRuntime(settings, {settings.topics.frames.name: FrameRef}, VisionStage(settings))
    with running(runtime):
        results = [
            InferenceResult.from_json_bytes(r.value)
            for r in read_all(kafka_bootstrap, settings.topics.inferences.name, len(good))
        ]
        letters = [
            DeadLetter.from_json_bytes(r.value)
            for r in read_all(kafka_bootstrap, settings.topics.dlq.name, len(bad) + 2)
        ]

    # Every failure kind has its reason and origin, and the good frames were unaffected.
    by_frame = {json.loads(original_value(d) or b"{}").get("frame_id"): d for d in letters}
    assert {
        frame_id: by_frame[f.frame_id].reason for frame_id, f in ((f.frame_id, f) for f in bad.values())
    } == {f.frame_id: reason for reason, f in bad.items()}
    assert by_frame[escape.frame_id].reason == "disallowed_uri"  # the ../ escape
    assert by_frame["x"].reason == "schema_violation"
    assert all(d.origin_topic == settings.topics.frames.name for d in letters)
    assert len(results) == len(good)

    # Scores equal direct torch inference on the same images (for the imported models: the
    # user's own modules, with the card's preprocessing); anomaly results say where.
    classifier = load_model(vision_models.registry, vision_models.classifier)
    expected_alerts = set()
    for result in results:
        source = next(f for f in good if f.camera_id == result.source_id)
        model = load_model(vision_models.registry, source.model) if source.model else classifier
        image = preprocess(Path(source.uri.removeprefix("file://")).read_bytes(), model.card.input)  # type: ignore[arg-type]
        scorer = extra_models.get(source.model or "", model.module)
        with torch.inference_mode():
            direct = scorer(image.unsqueeze(0))[0, : len(model.card.labels)].tolist()
        assert result.scores == pytest.approx(dict(zip(model.card.labels, direct, strict=True)), abs=1e-4)
        if model.card.task == "visual_anomaly":
            region = result.evidence.region
            assert region is not None and region.x <= region.peak_x <= region.x + region.width <= 64
            assert region.y <= region.peak_y <= region.y + region.height <= 64
        else:
            assert result.evidence.region is None
        assert result.model is not None and result.model.weights_sha256 == model.weights_sha256
        assert result.evidence.frame_uri == source.uri and result.evidence.frame_sha256 is not None
        for label, threshold in model.card.thresholds.items():
            if result.scores[label] >= threshold:
                expected_alerts.add((result.source_id, label))

    alerts = [
        Alert.from_json_bytes(r.value)
        for r in read_all(kafka_bootstrap, settings.topics.alerts.name, len(expected_alerts))
    ]
    assert {(a.source_id, a.label) for a in alerts} == expected_alerts
    assert ("cam-1", "crack") in expected_alerts and ("cam-20", "anomaly") in expected_alerts
    for alert in alerts:
        assert (
            alert.state == "firing"
            and alert.model is not None
            and alert.config_hash == settings.config_hash()
        )
        stamps = alert.timestamps
        assert stamps.captured_at <= stamps.received_at <= stamps.inferred_at <= stamps.published_at
        assert alert.kind == ("visual_anomaly" if alert.label == "anomaly" else "visual_defect")
        assert (alert.evidence.region is not None) == (alert.kind == "visual_anomaly")
