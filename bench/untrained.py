"""Untrained vision models for speed benchmarks: torch, the registry and schemas only, so the
GPU benches can import it on a machine without Kafka's clients."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import torch

from models.registry import save_model
from models.vision.architectures import build_classifier
from schemas.messages import FrameRef
from schemas.model_card import ImageInputSpec, ModelCard

LABELS = ["ok", "crack", "scratch", "spot"]


def make_model(registry: Path, architecture: str, size: int) -> None:
    """An untrained classifier named ``bench``: the benchmark measures speed, not accuracy."""
    torch.manual_seed(0)
    card = ModelCard(
        name="bench",
        version="1",
        task="defect_classification",
        architecture=architecture,
        input=ImageInputSpec(height=size, width=size, channels=3, mean=[0.5] * 3, std=[0.25] * 3),
        labels=LABELS,
        thresholds={label: 0.5 for label in LABELS[1:]},
        created_at=datetime.now(UTC),
    )
    save_model(registry, card, build_classifier(architecture, len(LABELS)).eval())


def frame_ref(n: int, image: Path, cameras: int) -> FrameRef:
    """Frame reference ``n`` to ``image``, from one of ``cameras`` cameras, captured now."""
    return FrameRef(
        frame_id=f"f-{n}",
        camera_id=f"cam-{n % cameras}",
        site="bench",
        uri=f"file://{image}",
        captured_at=datetime.now(UTC),
    )
