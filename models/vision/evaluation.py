"""Evaluation of vision models: classification report and image AUROC."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.vision.dataset import LabelledImage, load_batch
from schemas.model_card import ImageInputSpec


def auroc(normal_scores: torch.Tensor, anomaly_scores: torch.Tensor) -> float:
    """Area under the ROC curve: the chance an anomaly outscores a normal image (ties count half)."""
    normal = normal_scores.reshape(-1, 1).double()
    anomalous = anomaly_scores.reshape(1, -1).double()
    wins = (anomalous > normal).double().sum() + 0.5 * (anomalous == normal).double().sum()
    return float(wins / (normal.numel() * anomalous.numel()))


@dataclass(frozen=True)
class ClassificationReport:
    """Accuracy, per-class precision and recall, and the confusion matrix (rows: truth)."""

    labels: list[str]
    confusion: torch.Tensor

    @property
    def accuracy(self) -> float:
        """Correct predictions over all."""
        return float(self.confusion.diag().sum() / self.confusion.sum().clamp(min=1))

    def precision(self, k: int) -> float:
        """Precision of class ``k``."""
        return float(self.confusion[k, k] / self.confusion[:, k].sum().clamp(min=1))

    def recall(self, k: int) -> float:
        """Recall of class ``k``."""
        return float(self.confusion[k, k] / self.confusion[k].sum().clamp(min=1))

    def summary(self) -> dict[str, float]:
        """Flat metrics for a model card."""
        metrics = {"accuracy": self.accuracy}
        for k, label in enumerate(self.labels):
            metrics[f"precision/{label}"] = self.precision(k)
            metrics[f"recall/{label}"] = self.recall(k)
        return metrics


def predict(
    model: nn.Module, items: list[LabelledImage], spec: ImageInputSpec, batch_size: int = 32
) -> torch.Tensor:
    """Model outputs (N, K) for ``items``."""
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            outputs.append(model(load_batch(items[start : start + batch_size], spec)[0]).float())
    return torch.cat(outputs)


def classification_report(
    model: nn.Module, items: list[LabelledImage], spec: ImageInputSpec, labels: list[str]
) -> ClassificationReport:
    """Confusion of ``model``'s arg-max predictions against the true labels of ``items``."""
    predicted = predict(model, items, spec).argmax(dim=1)
    truth = torch.tensor([i.label for i in items])
    confusion = torch.zeros(len(labels), len(labels), dtype=torch.long)
    for t, p in zip(truth.tolist(), predicted.tolist(), strict=True):
        confusion[t, p] += 1
    return ClassificationReport(labels, confusion)
