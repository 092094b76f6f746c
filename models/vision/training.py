"""Training of vision registry entries: a defect classifier, or an anomaly scorer from normal images."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from rich.progress import track
from torch import nn

from models.registry import save_model
from models.vision.anomaly import fit_patchcore
from models.vision.architectures import build_classifier
from models.vision.dataset import LabelledImage, image_folder, load_batch, split
from models.vision.evaluation import auroc, classification_report
from models.vision.serving import PATCHCORE_PREFIX
from schemas.model_card import ImageInputSpec, ModelCard, TrainingSummary

HOLDOUT_FILE = "holdout.txt"


@dataclass(frozen=True)
class TrainedEntry:
    """Where a trained model was written, its card and its held-out images."""

    folder: Path
    card: ModelCard
    holdout: list[LabelledImage]


def _spec(size: int, channels: int, mean: float, std: float) -> ImageInputSpec:
    return ImageInputSpec.model_validate(
        {
            "height": size,
            "width": size,
            "channels": channels,
            "mean": [mean] * channels,
            "std": [std] * channels,
        }
    )


def _pixel_stats(items: list[LabelledImage], size: int, channels: int) -> tuple[float, float]:
    images, _ = load_batch(items[:256], _spec(size, channels, 0.0, 1.0))
    return float(images.mean()), float(images.std().clamp(min=1e-3))


def _write_holdout(folder: Path, root: Path, holdout: list[LabelledImage]) -> None:
    (folder / HOLDOUT_FILE).write_text("".join(f"{i.path.relative_to(root)}\n" for i in holdout))


def train_classifier(
    data: str | Path,
    registry: str | Path,
    name: str,
    version: str,
    architecture: str = "mobilenet_v3_small",
    size: int = 128,
    channels: int = 3,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 2e-3,
    holdout: float = 0.25,
    normal_label: str = "ok",
    seed: int = 0,
) -> TrainedEntry:
    """Train a multi-class defect classifier on ``<data>/<class>/*`` and write it to the registry."""
    torch.manual_seed(seed)
    root = Path(data)
    labels, items = image_folder(root)
    train, held = split(items, holdout, seed)
    mean, std = _pixel_stats(train, size, channels)
    spec = _spec(size, channels, mean, std)
    images, targets = load_batch(train, spec)
    model = build_classifier(architecture, len(labels))
    counts = torch.bincount(targets, minlength=len(labels)).float().clamp(min=1)
    loss_fn = nn.CrossEntropyLoss(weight=(counts.sum() / counts).sqrt())  # rare defects weigh more
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * max(1, len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
    model.train()
    for _ in track(range(epochs), description=f"training {name} ({architecture})"):
        order = torch.randperm(len(images))
        for start in range(0, len(images) - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            batch = images[index]
            flips = torch.rand(2)
            if flips[0] < 0.5:
                batch = batch.flip(-1)
            if flips[1] < 0.5:
                batch = batch.flip(-2)
            optimiser.zero_grad()
            loss_fn(model(batch), targets[index]).backward()
            optimiser.step()
            schedule.step()
    model.eval()
    metrics: dict[str, float] = {}
    if held:
        report = classification_report(model, held, spec, labels)
        metrics = report.summary()
    card = ModelCard(
        name=name,
        version=version,
        task="defect_classification",
        architecture=architecture,
        input=spec,
        labels=labels,
        normal_label=normal_label,
        thresholds={label: 0.5 for label in labels if label != normal_label},
        training=TrainingSummary(
            dataset=str(root),
            samples=len(train),
            epochs=epochs,
            metrics=metrics,
            notes=f"held out {len(held)} images",
        ),
        created_at=datetime.now(UTC),
    )
    folder = save_model(registry, card, model)
    _write_holdout(folder, root, held)
    return TrainedEntry(folder, card, held)


def fit_anomaly_scorer(
    data: str | Path,
    registry: str | Path,
    name: str,
    version: str,
    normal_label: str = "ok",
    trunk: str = "resnet18",
    trunk_weights: str | Path | None = None,
    size: int = 128,
    holdout: float = 0.2,
    memory_size: int = 4000,
    quantile: float = 0.99,
    seed: int = 0,
) -> TrainedEntry:
    """Fit a PatchCore-style scorer on the normal images of ``data``; calibrate its threshold."""
    root = Path(data)
    labels, items = image_folder(root)
    if normal_label not in labels:
        raise ValueError(f"no normal class {normal_label!r} under {root}; classes: {', '.join(labels)}")
    normal = labels.index(normal_label)
    normal_items = [i for i in items if i.label == normal]
    fit_items, calibration = split(normal_items, holdout, seed)
    mean, std = _pixel_stats(fit_items, size, 3)
    spec = _spec(size, 3, mean, std)
    batches = [
        load_batch(fit_items[k : k + 32], spec)[0]
        for k in track(range(0, len(fit_items), 32), description="features")
    ]
    state = None
    if trunk_weights is not None:
        from safetensors.torch import load_file

        state = load_file(str(trunk_weights))
    scorer = fit_patchcore(batches, trunk, state, memory_size=memory_size, seed=seed)
    calibration_scores = _scores(scorer, calibration, spec)
    threshold = (
        float(torch.quantile(calibration_scores, quantile)) if len(calibration_scores) else float("nan")
    )
    defects = [i for i in items if i.label != normal]
    metrics = {"calibration_normals": float(len(calibration)), "threshold_quantile": quantile}
    if defects and len(calibration_scores):
        defect_scores = _scores(scorer, defects, spec)
        metrics["image_auroc"] = auroc(calibration_scores, defect_scores)
    card = ModelCard(
        name=name,
        version=version,
        task="visual_anomaly",
        architecture=f"{PATCHCORE_PREFIX}{trunk}",
        input=spec,
        labels=["anomaly"],
        normal_label=normal_label,
        thresholds={"anomaly": threshold},
        training=TrainingSummary(
            dataset=str(root),
            samples=len(fit_items),
            metrics=metrics,
            notes="trunk from local weights"
            if state
            else "trunk random init, batch norm calibrated on normals",
        ),
        created_at=datetime.now(UTC),
    )
    folder = save_model(registry, card, scorer)
    _write_holdout(folder, root, calibration + defects)
    return TrainedEntry(folder, card, calibration + defects)


def _scores(model: nn.Module, items: list[LabelledImage], spec: ImageInputSpec) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for k in range(0, len(items), 32):
            out.append(model(load_batch(items[k : k + 32], spec)[0]).reshape(-1))
    return torch.cat(out) if out else torch.empty(0)
