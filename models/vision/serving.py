"""Serving modules for the vision tasks, registered with the model registry."""

from __future__ import annotations

import torch
from torch import nn

from models.registry import register_builder
from models.vision.anomaly import empty_patchcore
from models.vision.architectures import Softmax, build_classifier
from schemas.model_card import ModelCard

PATCHCORE_PREFIX = "patchcore_"


def classifier_module(card: ModelCard, state: dict[str, torch.Tensor]) -> nn.Module:
    """Class probabilities (N, labels) from a classifier's logits weights."""
    model = build_classifier(card.architecture, len(card.labels))
    model.load_state_dict(state)
    return Softmax(model)


def anomaly_module(card: ModelCard, state: dict[str, torch.Tensor]) -> nn.Module:
    """Anomaly score (N, 1) from a PatchCore-style scorer."""
    if not card.architecture.startswith(PATCHCORE_PREFIX):
        raise ValueError(f"visual_anomaly needs a patchcore_<trunk> architecture, got {card.architecture!r}")
    scorer = empty_patchcore(card.architecture.removeprefix(PATCHCORE_PREFIX), tuple(state["memory"].shape))
    scorer.load_state_dict(state)
    return scorer


register_builder("defect_classification", classifier_module)
register_builder("visual_anomaly", anomaly_module)
