"""Evaluation of vision models: classification reports against the majority baseline, image
AUROC overall and per defect class, and the operating point at the card's threshold."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from models.vision import classical
from models.vision.anomaly import PatchCoreScorer
from models.vision.dataset import LabelledImage, load_batch
from models.vision.localisation import Localisation, localise
from schemas.model_card import ImageInputSpec


def auroc(normal_scores: torch.Tensor, anomaly_scores: torch.Tensor) -> float:
    """Area under the ROC curve: the chance an anomaly outscores a normal image (ties count half)."""
    normal = normal_scores.reshape(-1, 1).double()
    anomalous = anomaly_scores.reshape(1, -1).double()
    wins = (anomalous > normal).double().sum() + 0.5 * (anomalous == normal).double().sum()
    return float(wins / (normal.numel() * anomalous.numel()))


def roc_curve(normal_scores: torch.Tensor, anomaly_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """False- and true-positive rates at every threshold, from the highest score down."""
    scores = torch.cat([normal_scores, anomaly_scores]).double()
    is_anomaly = torch.cat([torch.zeros(len(normal_scores)), torch.ones(len(anomaly_scores))])
    order = scores.argsort(descending=True)
    hits = is_anomaly[order].cumsum(0)
    false = (1 - is_anomaly[order]).cumsum(0)
    zero = torch.zeros(1)
    return (
        torch.cat([zero, false / max(1, len(normal_scores))]),
        torch.cat([zero, hits / max(1, len(anomaly_scores))]),
    )


@dataclass(frozen=True)
class ClassificationReport:
    """The confusion matrix (rows: truth, columns: prediction) and what follows from it."""

    labels: list[str]
    confusion: torch.Tensor

    @classmethod
    def of(cls, labels: list[str], truth: torch.Tensor, predicted: torch.Tensor) -> ClassificationReport:
        """The report of ``predicted`` class indices against ``truth``."""
        k = len(labels)
        confusion = torch.bincount(truth * k + predicted, minlength=k * k).reshape(k, k)
        return cls(labels, confusion)

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

    def f1(self, k: int) -> float:
        """F1 of class ``k`` (0 when it is never predicted nor present correctly)."""
        hits = float(self.confusion[k, k])
        errors = float(self.confusion[:, k].sum() + self.confusion[k].sum()) - 2 * hits
        return 0.0 if hits == 0 else 2 * hits / (2 * hits + errors)

    @property
    def macro_f1(self) -> float:
        """F1 averaged over the classes present in the data, each weighing the same."""
        present = [k for k in range(len(self.labels)) if self.confusion[k].sum() > 0]
        return sum(self.f1(k) for k in present) / max(1, len(present))

    def majority(self) -> ClassificationReport:
        """The report of always answering the most frequent true class."""
        truth = self.confusion.sum(dim=1)
        confusion = torch.zeros_like(self.confusion)
        confusion[:, int(truth.argmax())] = truth
        return ClassificationReport(self.labels, confusion)

    def beats(self, baseline: ClassificationReport) -> bool:
        """Whether this is better than ``baseline`` on both accuracy and macro-F1."""
        return self.accuracy > baseline.accuracy and self.macro_f1 > baseline.macro_f1

    def summary(self) -> dict[str, float]:
        """Flat metrics for a model card."""
        metrics = {"accuracy": self.accuracy, "macro_f1": self.macro_f1}
        majority = self.majority()
        metrics["majority_accuracy"] = majority.accuracy
        metrics["majority_macro_f1"] = majority.macro_f1
        for k, label in enumerate(self.labels):
            metrics[f"precision/{label}"] = self.precision(k)
            metrics[f"recall/{label}"] = self.recall(k)
        return metrics


@dataclass(frozen=True)
class DefectAlerts:
    """What a classifier's card thresholds make of images: an image raises an alert when any
    defect class reaches its threshold (the service's rule)."""

    normals: int
    normals_flagged: int
    defects: int
    defects_flagged: int

    @classmethod
    def of(
        cls, probabilities: torch.Tensor, truth: torch.Tensor, labels: list[str], thresholds: dict[str, float]
    ) -> DefectAlerts:
        """Count the alerts of ``probabilities`` (N, K) against ``truth``; classes without a
        threshold (the normal one) never alert."""
        limits = torch.tensor([thresholds.get(label, float("inf")) for label in labels])
        flagged = (probabilities >= limits).any(dim=1)
        normal = torch.tensor([label not in thresholds for label in labels])[truth]
        return cls(
            int(normal.sum()), int(flagged[normal].sum()), int((~normal).sum()), int(flagged[~normal].sum())
        )

    @property
    def false_alarm_rate(self) -> float:
        """Normal images that raised an alert, over normal images."""
        return self.normals_flagged / max(1, self.normals)

    @property
    def defect_recall(self) -> float:
        """Defect images that raised an alert (of any defect class), over defect images."""
        return self.defects_flagged / max(1, self.defects)

    def summary(self) -> dict[str, float]:
        """Flat metrics for a model card."""
        return {"defect_recall": self.defect_recall, "false_alarm_rate": self.false_alarm_rate}


def batches(items: list[LabelledImage], spec: ImageInputSpec, size: int = 32) -> Iterator[torch.Tensor]:
    """Preprocessed images of ``items``, ``size`` at a time."""
    for start in range(0, len(items), size):
        yield load_batch(items[start : start + size], spec)[0]


def predict(
    model: Callable[[torch.Tensor], torch.Tensor], items: list[LabelledImage], spec: ImageInputSpec
) -> torch.Tensor:
    """Model outputs (N, K) for ``items``."""
    with torch.inference_mode():
        outputs = [model(batch).float() for batch in batches(items, spec)]
    return torch.cat(outputs) if outputs else torch.empty(0, 0)


@dataclass(frozen=True)
class AnomalyReport:
    """Image scores of normal and defect images, and what the card's threshold makes of them."""

    normal_scores: torch.Tensor
    defect_scores: dict[str, torch.Tensor]
    threshold: float

    @property
    def all_defects(self) -> torch.Tensor:
        """Every defect image's score."""
        return torch.cat(list(self.defect_scores.values())) if self.defect_scores else torch.empty(0)

    @property
    def auroc(self) -> float:
        """Image AUROC, normal against every defect."""
        return auroc(self.normal_scores, self.all_defects)

    def auroc_of(self, label: str) -> float:
        """Image AUROC, normal against the defect class ``label``."""
        return auroc(self.normal_scores, self.defect_scores[label])

    def flagged(self, scores: torch.Tensor) -> float:
        """Share of ``scores`` at or above the threshold."""
        return float((scores >= self.threshold).float().mean()) if len(scores) else float("nan")

    def summary(self) -> dict[str, float]:
        """Flat metrics for a model card."""
        metrics = {
            "image_auroc": self.auroc,
            "normals_flagged": self.flagged(self.normal_scores),
            "defects_flagged": self.flagged(self.all_defects),
        }
        for label in self.defect_scores:
            metrics[f"auroc/{label}"] = self.auroc_of(label)
        return metrics


def anomaly_report(
    scores: torch.Tensor, items: list[LabelledImage], labels: list[str], normal: int, threshold: float
) -> AnomalyReport:
    """Split ``scores`` of ``items`` into normal and per-defect-class scores."""
    truth = torch.tensor([i.label for i in items])
    defects = {
        labels[k]: scores[truth == k] for k in range(len(labels)) if k != normal and bool((truth == k).any())
    }
    return AnomalyReport(scores[truth == normal], defects, threshold)


@dataclass
class EntryEvaluation:
    """An entry evaluated on a folder of labelled images."""

    title: str
    items: list[LabelledImage]
    labels: list[str]
    outputs: torch.Tensor
    spec: ImageInputSpec
    classification: ClassificationReport | None = None
    alerts: DefectAlerts | None = None
    """A classifier's alerts at its card's thresholds."""
    anomaly: AnomalyReport | None = None
    localisation: Localisation | None = None
    """An anomaly scorer's pixel AUROC and region hits, where the data set ships masks."""
    classical: ClassificationReport | AnomalyReport | None = None
    """The classical baseline (``models.vision.classical``) trained on the entry's training images."""
    heatmaps: list[tuple[LabelledImage, float, torch.Tensor]] = field(default_factory=list)


def evaluate_entry(
    registry: str | Path,
    name: str,
    version: str | None,
    data: str | Path,
    split: str,
    heatmaps: int = 0,
    engine: str = "auto",
) -> EntryEvaluation:
    """Evaluate a registry entry on ``data`` (its recorded hold-out images, or all of them),
    scored by the engine serving would run it in (``engine``: ``VisionSettings.engine``); for
    anomaly scorers, keep the anomaly maps of the ``heatmaps`` highest-scoring images."""
    from models.registry import load_model
    from models.vision.dataset import image_folder, read_holdout
    from models.vision.serving import served

    model = load_model(registry, name, version)
    spec = model.card.input
    if not isinstance(spec, ImageInputSpec):
        raise ValueError(f"{name} is not a vision model")
    root = Path(data)
    classifier = model.card.task == "defect_classification"
    labels, items = image_folder(root, model.card.labels if classifier else None)
    trained_on: list[LabelledImage] = []
    if split == "holdout":
        held = read_holdout(model.path)
        trained_on = [i for i in items if str(i.path.relative_to(root)) not in held]
        items = [i for i in items if str(i.path.relative_to(root)) in held]
        if not items:
            raise ValueError(f"none of {name}'s hold-out images are under {root}")
    normal_label = model.card.normal_label
    located: Localisation | None = None
    runner = served(model, engine)

    def maps(batch: torch.Tensor) -> torch.Tensor:
        return runner.run_stem(runner.prepare(batch))

    if not classifier and isinstance(model.module, PatchCoreScorer) and normal_label in labels:
        outputs, located = localise(maps, model.module, items, spec, labels, labels.index(normal_label))
    else:
        outputs = predict(lambda batch: runner.run(runner.prepare(batch)), items, spec)
    title = f"{name} {model.card.version} on {len(items)} images of {root} ({split}, {runner.engine_name()})"
    evaluation = EntryEvaluation(title, items, labels, outputs, spec)
    evaluation.localisation = located
    truth = torch.tensor([i.label for i in items])
    if classifier:
        evaluation.classification = ClassificationReport.of(labels, truth, outputs.argmax(dim=1))
        if model.card.thresholds:
            evaluation.alerts = DefectAlerts.of(outputs, truth, labels, model.card.thresholds)
        if trained_on:
            fitted = classical.fit_linear(
                classical.features_of(trained_on), torch.tensor([i.label for i in trained_on]), len(labels)
            )
            with torch.inference_mode():
                predicted = fitted(classical.features_of(items)).argmax(dim=1)
            evaluation.classical = ClassificationReport.of(labels, truth, predicted)
        return evaluation
    if normal_label not in labels:
        raise ValueError(f"the normal class {normal_label!r} of {name} is not a folder of {root}")
    threshold = model.card.thresholds.get("anomaly", float("inf"))
    normal = labels.index(normal_label)
    evaluation.anomaly = anomaly_report(outputs[:, 0], items, labels, normal, threshold)
    normals_trained_on = [i for i in trained_on if i.label == normal]
    if normals_trained_on:
        distances = classical.nearest_normal_distance(
            classical.features_of(normals_trained_on), classical.features_of(items)
        )
        evaluation.classical = anomaly_report(distances, items, labels, normal, float("inf"))
    if heatmaps:
        top = outputs[:, 0].argsort(descending=True)[:heatmaps].tolist()
        chosen = [items[k] for k in top]
        chosen_maps = maps(load_batch(chosen, spec)[0])
        evaluation.heatmaps = [
            (items[k], float(outputs[k, 0]), m) for k, m in zip(top, chosen_maps, strict=True)
        ]
    return evaluation
