"""Serving modules for the vision tasks, registered with the model registry."""

from __future__ import annotations

import torch
from torch import nn

from models.engine import CpuPlan, InferenceEngine, static_graph
from models.registry import LoadedModel, ProbabilitiesFromLogits, register_builder
from models.vision.anomaly import PatchCoreScorer
from models.vision.architectures import build_classifier
from models.vision.backbones import FeatureTrunk
from models.vision.preprocess import normalise
from schemas.model_card import ImageInputSpec, ModelCard

PATCHCORE = "patchcore"


def served_classifier(logits_model: nn.Module) -> nn.Module:
    """A logits classifier as it serves: class probabilities, one static graph."""
    return static_graph(ProbabilitiesFromLogits(logits_model.eval()))


def classifier_module(card: ModelCard, state: dict[str, torch.Tensor]) -> nn.Module:
    """Class probabilities (N, labels) from a classifier's logits weights, loaded strictly."""
    model = build_classifier(card.architecture, len(card.labels), card.backbone)
    model.load_state_dict(state)
    return served_classifier(model)


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


def cpu_plan(model: LoadedModel, engine: str = "auto") -> CpuPlan | None:
    """How ``model`` may serve through OpenVINO on a CPU under the ``engine`` setting
    (``VisionSettings.engine``); None: torch only."""
    spec = model.card.cpu_engine
    if engine == "torch" or (spec is None and engine != "openvino"):
        return None
    if spec is None:
        return CpuPlan(("fp32",))
    checks = None
    if model.checks is not None and isinstance(model.card.input, ImageInputSpec):
        checks = normalise(model.checks, model.card.input)
    key = f"{model.card.name}/{model.card.version}/{model.card.weights_sha256}"
    return CpuPlan(("int8", "fp32") if spec.precision == "int8" else ("fp32",), spec.tolerance, checks, key)


def served(
    model: LoadedModel, engine: str = "auto", batch_sizes: tuple[int, ...] = (1, 32)
) -> InferenceEngine:
    """``model`` in the engine a vision lane would serve it in (device, trace, OpenVINO under
    ``engine``), warmed up: offline tools score through it, so their figures are serving's."""
    spec = model.card.input
    if not isinstance(spec, ImageInputSpec):
        raise ValueError(f"{model.card.name} is not a vision model")
    runner = InferenceEngine(model.module, trace=True, cpu_plan=cpu_plan(model, engine))
    runner.warm_up(torch.zeros(spec.channels, spec.height, spec.width), batch_sizes)
    return runner


register_builder("defect_classification", classifier_module)
register_builder("visual_anomaly", anomaly_module)
