"""Small vision models trained once per test session on generated images."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from models.vision.synthetic import write_dataset
from models.vision.training import AnomalyFitting, ClassifierTraining, fit_anomaly_scorer, train_classifier
from schemas.messages import FrameRef
from schemas.settings import VigilSettings
from tests.kafka_helpers import unique_settings

IMAGE_SIZE = 64


@dataclass(frozen=True)
class VisionModels:
    """A registry with a defect classifier and an anomaly scorer, and their training images."""

    registry: Path
    images: Path
    classifier: str = "tiles-defects"
    anomaly: str = "tiles-anomaly"


@pytest.fixture(scope="session")
def vision_models(tmp_path_factory: pytest.TempPathFactory) -> VisionModels:
    images = tmp_path_factory.mktemp("images")
    registry = tmp_path_factory.mktemp("registry")
    write_dataset(images, per_class=40, size=IMAGE_SIZE, seed=1)
    models = VisionModels(registry, images)
    # The defaults (a probe of the pretrained EfficientNet-Lite0), at a small input size.
    train_classifier(images, registry, models.classifier, "1", ClassifierTraining(size=IMAGE_SIZE, epochs=25))
    fit_anomaly_scorer(
        images, registry, models.anomaly, "1", AnomalyFitting(size=IMAGE_SIZE, memory_size=500)
    )
    return models


T0 = datetime(2026, 11, 28, 8, tzinfo=UTC)
LABELS = ["ok", "crack", "spot", "scratch", "ok", "crack", "ok", "spot"]


def vision_settings(bootstrap: str, models: VisionModels, frames: Path) -> VigilSettings:
    settings = unique_settings(bootstrap)
    vision = settings.vision.model_copy(
        update={
            "registry": str(models.registry),
            "model": models.classifier,
            "fetch": settings.vision.fetch.model_copy(update={"allowed_prefixes": [f"file://{frames}/"]}),
            "batching": settings.vision.batching.model_copy(update={"max_batch_size": 4, "max_wait_ms": 20}),
        }
    )
    return settings.model_copy(update={"vision": vision})


def frame(n: int, path: Path | str, **extra: object) -> FrameRef:
    uri = path if isinstance(path, str) else f"file://{path}"
    return FrameRef(
        frame_id=f"f-{n}",
        camera_id=f"cam-{n}",
        site="plant-a",
        uri=uri,
        captured_at=T0 + timedelta(seconds=n),
        **extra,
    )  # type: ignore[arg-type]
