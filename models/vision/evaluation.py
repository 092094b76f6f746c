"""Evaluation of vision models: classification report and image AUROC."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from rich.table import Table
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


def report_for_entry(
    registry: str | Path, name: str, version: str | None, data: str | Path, split: str
) -> Table:
    """A table of the entry's metrics on ``data`` (its recorded hold-out images, or all)."""
    from models.registry import load_model
    from models.vision.dataset import image_folder

    model = load_model(registry, name, version)
    spec = model.card.input
    if not isinstance(spec, ImageInputSpec):
        raise ValueError(f"{name} is not a vision model")
    root = Path(data)
    labels, items = image_folder(
        root, model.card.labels if model.card.task == "defect_classification" else None
    )
    if split == "holdout":
        held = set((model.path / "holdout.txt").read_text().split())
        items = [i for i in items if str(i.path.relative_to(root)) in held]
    table = Table(title=f"{name} {model.card.version} on {len(items)} images ({split})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    if model.card.task == "visual_anomaly":
        normal = model.card.normal_label or "ok"
        scores = predict(model.module, items, spec).reshape(-1)
        is_normal = torch.tensor([labels[i.label] == normal for i in items])
        table.add_row("image AUROC", f"{auroc(scores[is_normal], scores[~is_normal]):.4f}")
        threshold = model.card.thresholds["anomaly"]
        table.add_row(
            "normal images above threshold", f"{float((scores[is_normal] >= threshold).float().mean()):.3f}"
        )
        table.add_row(
            "defect images above threshold", f"{float((scores[~is_normal] >= threshold).float().mean()):.3f}"
        )
        for k, label in enumerate(labels):
            chosen = torch.tensor([i.label == k for i in items])
            if label != normal and chosen.any():
                table.add_row(f"AUROC {label} vs normal", f"{auroc(scores[is_normal], scores[chosen]):.4f}")
        return table
    report = classification_report(model.module, items, spec, labels)
    table.add_row("accuracy", f"{report.accuracy:.4f}")
    for k, label in enumerate(labels):
        table.add_row(f"{label} precision / recall", f"{report.precision(k):.3f} / {report.recall(k):.3f}")
    table.add_row(
        "confusion (rows truth)",
        "\n".join(" ".join(f"{v:4d}" for v in row) for row in report.confusion.tolist()),
    )
    return table
