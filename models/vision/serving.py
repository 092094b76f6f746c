"""Serving modules for the vision tasks, registered with the model registry."""

from __future__ import annotations

import torch
from torch import nn

from models.engine import static_graph
from models.registry import ProbabilitiesFromLogits, register_builder
from models.vision.anomaly import PatchCoreScorer
from models.vision.architectures import build_classifier
from models.vision.backbones import FeatureTrunk
from schemas.model_card import ModelCard

PATCHCORE = "patchcore"


def classifier_module(card: ModelCard, state: dict[str, torch.Tensor]) -> nn.Module:
    """Class probabilities (N, labels) from a classifier's logits weights, loaded strictly."""
    model = build_classifier(card.architecture, len(card.labels), card.backbone)
    model.load_state_dict(state)
    return static_graph(ProbabilitiesFromLogits(model))


def anomaly_module(card: ModelCard, state: dict[str, torch.Tensor]) -> nn.Module:
    """Anomaly score and location (N, 7) from a PatchCore scorer, loaded strictly."""
    if card.architecture != PATCHCORE or card.backbone is None:
        raise ValueError(
            f"visual_anomaly entries are 'patchcore' with a backbone section; got {card.architecture!r} "
            "(entries fitted before Vigil 0.2 must be fitted again)"
        )
    trunk = FeatureTrunk(card.backbone.name, tuple(card.backbone.levels))
    scorer = PatchCoreScorer(trunk, torch.empty(state["memory"].shape))
    scorer.load_state_dict(state)
    return scorer  # not a static graph: its region grows for as many steps as the frame needs


register_builder("defect_classification", classifier_module)
register_builder("visual_anomaly", anomaly_module)
