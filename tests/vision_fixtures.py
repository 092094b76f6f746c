"""Small vision models trained once per test session on generated images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from models.vision.synthetic import write_dataset
from models.vision.training import AnomalyFitting, ClassifierTraining, fit_anomaly_scorer, train_classifier

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
