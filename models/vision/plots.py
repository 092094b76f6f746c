"""PNG plots of a vision evaluation: confusion matrix; ROC curve, score histograms and anomaly
map overlays of the highest-scoring images."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F

from models.plotting import plt, save_figure
from models.vision.evaluation import ClassificationReport, EntryEvaluation, roc_curve
from models.vision.preprocess import decode, letterbox_geometry


def confusion_plot(report: ClassificationReport, path: Path) -> Path:
    """Confusion matrix, rows normalised to recall, counts written in the cells."""
    counts = report.confusion.float()
    shares = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    figure, axes = plt.subplots(figsize=(1.2 * len(report.labels) + 2, 1.1 * len(report.labels) + 1.5))
    axes.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(report.labels))
    axes.set_xticks(ticks, report.labels, rotation=45, ha="right")
    axes.set_yticks(ticks, report.labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (row, col), value in zip(
        [(r, c) for r in ticks for c in ticks], counts.flatten().int().tolist(), strict=True
    ):
        axes.text(
            col,
            row,
            str(value),
            ha="center",
            va="center",
            color="white" if shares[row, col] > 0.5 else "black",
        )
    axes.set_title(f"accuracy {report.accuracy:.3f}, macro-F1 {report.macro_f1:.3f}")
    return save_figure(figure, path)


def roc_plot(evaluation: EntryEvaluation, path: Path) -> Path:
    """ROC curve of every defect image, and of each defect class, against the normal images."""
    anomaly = evaluation.anomaly
    assert anomaly is not None
    figure, axes = plt.subplots(figsize=(5.5, 5))
    fpr, tpr = roc_curve(anomaly.normal_scores, anomaly.all_defects)
    axes.plot(fpr, tpr, color="black", linewidth=2, label=f"all defects (AUROC {anomaly.auroc:.3f})")
    for label, scores in anomaly.defect_scores.items():
        fpr, tpr = roc_curve(anomaly.normal_scores, scores)
        axes.plot(fpr, tpr, linewidth=1, label=f"{label} ({anomaly.auroc_of(label):.3f})")
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    axes.set_xlabel("normal images flagged (false-positive rate)")
    axes.set_ylabel("defect images flagged (true-positive rate)")
    axes.legend(fontsize=8, loc="lower right")
    return save_figure(figure, path)


def histogram_plot(evaluation: EntryEvaluation, path: Path) -> Path:
    """Score histograms of normal and defect images, with the card's threshold."""
    anomaly = evaluation.anomaly
    assert anomaly is not None
    figure, axes = plt.subplots(figsize=(6.5, 4))
    scores = torch.cat([anomaly.normal_scores, anomaly.all_defects])
    bins = torch.linspace(float(scores.min()), float(scores.max()), 40).tolist()
    axes.hist(anomaly.normal_scores.numpy(), bins=bins, alpha=0.6, label="normal", density=True)
    axes.hist(anomaly.all_defects.numpy(), bins=bins, alpha=0.6, label="defect", density=True)
    axes.axvline(anomaly.threshold, color="red", linestyle="--", label="threshold")
    axes.set_xlabel("anomaly score")
    axes.set_ylabel("density")
    axes.legend()
    return save_figure(figure, path)


def heatmap_plot(evaluation: EntryEvaluation, index: int, path: Path) -> Path:
    """The ``index``-th highest-scoring image with its anomaly map laid over it."""
    spec = evaluation.spec
    item, score, anomaly_map = evaluation.heatmaps[index]
    image = decode(item.path.read_bytes(), spec)
    height, width = image.shape[-2:]
    full = F.interpolate(anomaly_map[None, None], size=(spec.height, spec.width), mode="bilinear")[0, 0]
    if spec.resize == "letterbox":
        _, new_h, new_w, top, left = letterbox_geometry(height, width, spec)
        full = full[top : top + new_h, left : left + new_w]
    full = F.interpolate(full[None, None], size=(height, width), mode="bilinear")[0, 0]
    figure, axes = plt.subplots(figsize=(6, 6 * height / max(width, 1) + 0.6))
    axes.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray")
    axes.imshow(full.numpy(), cmap="jet", alpha=0.4)
    axes.set_title(f"{evaluation.labels[item.label]}/{item.path.name}: score {score:.3f}", fontsize=9)
    axes.axis("off")
    return save_figure(figure, path)


def write_plots(evaluation: EntryEvaluation, folder: Path) -> list[Path]:
    """Every plot that fits the evaluation, as PNG files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if evaluation.classification is not None:
        written.append(confusion_plot(evaluation.classification, folder / "confusion.png"))
    if evaluation.anomaly is not None:
        written.append(roc_plot(evaluation, folder / "roc.png"))
        written.append(histogram_plot(evaluation, folder / "scores.png"))
        for k in range(len(evaluation.heatmaps)):
            written.append(heatmap_plot(evaluation, k, folder / f"heatmap-{k + 1:02d}.png"))
    return written
