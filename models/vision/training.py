"""Training of vision registry entries: a defect classifier on a pretrained backbone, or a
PatchCore anomaly scorer fitted on normal images.

Both split the data the same way: a stratified hold-out share that training never sees
(recorded in the entry's ``holdout.txt`` for ``vigil eval vision``), and from the rest a
stratified validation share that chooses the model and the epoch (classifier) or calibrates
the threshold (anomaly scorer). The dataclasses' defaults are the CLI's defaults.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from models.cpu_engine import CpuPrecision
from models.engine import int8_gap
from models.registry import file_sha256, save_model
from models.vision.anomaly import fit_patchcore
from models.vision.architectures import BACKBONE_LINEAR, BackboneClassifier, build_classifier
from models.vision.augment import surface_augment
from models.vision.backbones import FeatureTrunk, Level, backbone
from models.vision.dataset import LabelledImage, image_folder, load_pixels, split, write_holdout
from models.vision.evaluation import ClassificationReport, DefectAlerts, anomaly_report, predict
from models.vision.preprocess import normalise
from models.vision.probe import Probe, ProbeSelection, select_probe
from models.vision.serving import PATCHCORE, served_classifier
from schemas.model_card import BackboneInfo, CpuEngineSpec, ImageInputSpec, ModelCard, TrainingSummary

log = logging.getLogger(__name__)

NORMAL_NAMES = re.compile(r"(^|[_\-\s])(ok|good|normal|free|no[_\-\s]?defect|pass)$", re.IGNORECASE)


TrainScope = Literal["head", "top", "top2", "all"]
"""What a backbone classifier trains: the linear head on frozen features; the top stage too
(the stride-32 blocks, fed from cached stride-16 maps: minutes on a CPU); the top two (the
stride-16 and 32 blocks, from cached stride-8 maps); or every weight."""


@dataclass(frozen=True)
class ClassifierTraining:
    """How a defect classifier is trained. ``architecture`` ``backbone_linear`` is a pretrained
    ``backbone`` with a linear head. With ``scopes`` ``("head",)`` (the default) the head is the
    linear probe (``models.vision.probe``) chosen by ``folds``-fold cross-validation over every
    image but the hold-out; with several scopes each is trained on the training share and the
    one with the best validation macro-F1 is kept. Any other architecture is trained from
    scratch end to end."""

    architecture: str = BACKBONE_LINEAR
    backbone: str = "efficientnet_lite0"
    checkpoint: str | None = None
    size: int = 224
    scopes: tuple[TrainScope, ...] = ("head",)
    folds: int = 5
    """The linear probe's cross-validation folds."""
    epochs: int = 40
    patience: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr: float = 2e-4
    weight_decay: float = 1e-2
    holdout: float = 0.25
    validation: float = 0.2
    normal_label: str | None = None
    false_alarm_budget: float = 0.02
    """The share of normal validation images that may raise an alert: every defect class's
    threshold is the probability that keeps the most likely defect class of no more than
    this share of them at or above it."""
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.scopes) - set(get_args(TrainScope))
        if unknown or not self.scopes:
            raise ValueError(f"scopes must be among {', '.join(get_args(TrainScope))}; got {self.scopes}")


@dataclass(frozen=True)
class AnomalyFitting:
    """How a PatchCore anomaly scorer is fitted on the normal class."""

    backbone: str = "efficientnet_lite0"
    checkpoint: str | None = None
    levels: tuple[Level, ...] = (4, 5)
    size: int = 224
    memory_size: int = 10_000
    holdout: float = 0.25
    calibration: float = 0.2
    false_alarm_budget: float = 0.02
    """The share of held-out normal (calibration) images at or above the threshold."""
    normal_label: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class TrainedEntry:
    """Where a trained model was written, its card, its hold-out images and any warnings."""

    folder: Path
    card: ModelCard
    holdout: list[LabelledImage]
    warnings: list[str] = field(default_factory=list)


def budget_threshold(normal_scores: torch.Tensor, budget: float) -> float:
    """The lowest threshold that no more than ``budget`` of ``normal_scores`` reach (an alert
    fires at or above it)."""
    if not 0 <= budget < 1:
        raise ValueError(f"a false-alarm budget is a share in [0, 1); got {budget}")
    ordered = normal_scores.sort(descending=True).values
    allowed = int(budget * len(ordered))  # normals that may reach it
    # just above the first score that must stay below it, in the scores' own precision
    return float(torch.nextafter(ordered[allowed], torch.tensor(float("inf"), dtype=ordered.dtype)))


def defect_thresholds(
    probabilities: torch.Tensor, truth: torch.Tensor, labels: list[str], normal: int, budget: float
) -> dict[str, float]:
    """One threshold for every defect class: ``budget_threshold`` of the normal images' most
    likely defect class."""
    defect = [k for k in range(len(labels)) if k != normal]
    strongest = probabilities[truth == normal][:, defect].amax(dim=1)
    threshold = min(1.0, budget_threshold(strongest, budget)) if len(strongest) else 0.5
    return {labels[k]: threshold for k in defect}


def normal_class(labels: list[str], items: list[LabelledImage], asked: str | None) -> str:
    """The class meaning "no defect": ``asked``, else the one named like it, else the largest."""
    if asked is not None:
        if asked not in labels:
            raise ValueError(f"no class {asked!r}; classes: {', '.join(labels)}")
        return asked
    named = [label for label in labels if NORMAL_NAMES.search(label)]
    if len(named) == 1:
        return named[0]
    counts = torch.bincount(torch.tensor([i.label for i in items]), minlength=len(labels))
    return labels[int(counts.argmax())]


def _input_spec(size: int, mean: list[float], std: list[float]) -> ImageInputSpec:
    return ImageInputSpec(height=size, width=size, channels=3, mean=mean, std=std, resize="letterbox")


def _backbone_info(name: str, levels: tuple[Level, ...], checkpoint: str | None) -> BackboneInfo:
    path = backbone(name).find_checkpoint(Path(checkpoint) if checkpoint else None)
    return BackboneInfo(
        name=name, levels=list(levels), checkpoint=path.name, checkpoint_sha256=file_sha256(path)
    )


class _Progress:
    """A progress bar with the loss and the validation macro-F1 of the last epoch."""

    def __init__(self, description: str, total: int) -> None:
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
        )
        self._task = self._bar.add_task(description, total=total, status="")

    def __enter__(self) -> _Progress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(None, None, None)

    def epoch(self, loss: float, val_f1: float, best: float) -> None:
        status = f"loss {loss:.3f}  val macro-F1 {val_f1:.3f} (best {best:.3f})"
        self._bar.update(self._task, advance=1, status=status)

    def finish(self, epochs: int, best: int) -> None:
        """Say where training ended: the bar stays at the epochs run, not the most allowed."""
        total = self._bar.tasks[0].total
        ended = "all epochs run" if epochs == total else f"stopped early after {epochs} of {total:g} epochs"
        self._bar.update(self._task, status=f"{ended}; best epoch {best + 1}")


def balanced_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One epoch of indices drawn with replacement so each class is drawn equally often."""
    counts = torch.bincount(labels).float()
    weights = (1.0 / counts.clamp(min=1))[labels]
    return torch.multinomial(weights, len(labels), replacement=True, generator=generator)


def random_flips(maps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each map flipped left-right and up-down at random: the cached-feature stand-in for
    flipping the image (exact for the pooled features, close for the maps)."""
    out = maps.clone()
    flip_h = torch.rand(len(maps), generator=generator) < 0.5
    flip_v = torch.rand(len(maps), generator=generator) < 0.5
    out[flip_h] = out[flip_h].flip(-1)
    out[flip_v] = out[flip_v].flip(-2)
    return out


@dataclass
class _Best:
    """The best epoch so far, by validation macro-F1 (then loss), and early stopping."""

    patience: int
    score: tuple[float, float] = (-1.0, 0.0)
    epoch: int = -1
    state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, score: tuple[float, float], model: nn.Module) -> bool:
        """Record ``epoch``; False once ``patience`` epochs passed without improvement."""
        if score > self.score:
            self.score, self.epoch = score, epoch
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return epoch - self.epoch < self.patience


@dataclass(frozen=True)
class _Inputs:
    """What a training loop feeds its forward function: images or cached feature maps."""

    train: torch.Tensor
    train_labels: torch.Tensor
    val: torch.Tensor
    val_labels: torch.Tensor


def _evaluate(
    forward: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    truth: torch.Tensor,
    labels: list[str],
) -> tuple[ClassificationReport, float]:
    logits = _logits(forward, inputs)
    loss = float(nn.functional.cross_entropy(logits, truth))
    return ClassificationReport.of(labels, truth, logits.argmax(dim=1)), loss


def _logits(forward: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([forward(chunk) for chunk in inputs.split(64)])


def _fit(
    model: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    groups: list[dict[str, Any]],
    inputs: _Inputs,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    config: ClassifierTraining,
    labels: list[str],
    description: str,
) -> tuple[float, int]:
    """Train on class-balanced, augmented batches with a cosine learning rate; keep the epoch
    with the best validation macro-F1. Returns (its macro-F1, its index)."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    optimiser = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(inputs.train) // config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, config.epochs * steps_per_epoch)
    best = _Best(config.patience)
    with _Progress(description, config.epochs) as progress:
        for epoch in range(config.epochs):
            _train_mode(model)
            losses = []
            order = balanced_order(inputs.train_labels, generator)
            for index in order[: steps_per_epoch * config.batch_size].split(config.batch_size):
                optimiser.zero_grad()
                loss = nn.functional.cross_entropy(
                    forward(augment(inputs.train[index], generator)), inputs.train_labels[index]
                )
                loss.backward()
                optimiser.step()
                schedule.step()
                losses.append(loss.item())
            model.eval()
            report, val_loss = _evaluate(forward, inputs.val, inputs.val_labels, labels)
            going = best.update(epoch, (report.macro_f1, -val_loss), model)
            progress.epoch(sum(losses) / len(losses), report.macro_f1, best.score[0])
            if not going:
                break
        progress.finish(epoch + 1, best.epoch)
    assert best.state is not None
    model.load_state_dict(best.state)
    return best.score[0], best.epoch


def _train_mode(model: nn.Module) -> None:
    """Training mode, except that a pretrained trunk keeps its ImageNet batch-norm statistics
    (small batches of one product would overwrite them)."""
    model.train()
    if isinstance(model, BackboneClassifier):
        for module in model.trunk.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()


def _image_augment(spec: ImageInputSpec) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    def augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return normalise(surface_augment(pixels, generator), spec)

    return augment


def _cached(trunk: FeatureTrunk, pixels: torch.Tensor, spec: ImageInputSpec, level: Level) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([trunk.to_level(normalise(chunk, spec), level) for chunk in pixels.split(16)])


def _train_backbone_classifier(
    model: BackboneClassifier,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    config: ClassifierTraining,
    labels: list[str],
    spec: ImageInputSpec,
) -> tuple[float, int, TrainScope]:
    """Train each of ``config.scopes`` from the pretrained weights; keep the best on validation."""
    trunk = model.trunk.eval()
    top_level = trunk.levels[-1]
    cut = top_level - 1
    below = (_cached(trunk, train[0], spec, cut), _cached(trunk, val[0], spec, cut))
    with torch.inference_mode():
        tops = torch.cat([trunk.from_level(chunk, cut) for chunk in below[0].split(64)])
        val_tops = torch.cat([trunk.from_level(chunk, cut) for chunk in below[1].split(64)])
    pooled = _pooled(tops)
    model.feature_mean.copy_(pooled.mean(dim=0))
    model.feature_std.copy_(pooled.std(dim=0).clamp(min=1e-4))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    chosen: tuple[float, int, TrainScope, dict[str, torch.Tensor]] | None = None
    for scope in config.scopes:
        model.load_state_dict(start)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        head = {"params": list(model.head.parameters()), "lr": config.lr}
        if scope == "all":
            trainable = list(model.trunk.parameters())
            inputs = _Inputs(train[0], train[1], normalise(val[0], spec), val[1])
            forward: Callable[[torch.Tensor], torch.Tensor] = model
            augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] = _image_augment(spec)
        elif scope in ("top", "top2"):
            level = cut if scope == "top" else cut - 1
            maps = (
                below
                if level == cut
                else (_cached(trunk, train[0], spec, level), _cached(trunk, val[0], spec, level))
            )
            trainable = trunk.parameters_after(level)
            inputs = _Inputs(maps[0], train[1], maps[1], val[1])
            forward = _from_level(model, level)
            augment = random_flips
        else:  # the linear probe: convex, fitted to convergence on the pooled top maps
            selection = select_probe(pooled, train[1], labels, config.folds, config.seed)
            install_probe(model, selection.probe)
            report, _ = _evaluate(lambda maps: model.head(model.pooled(maps)), val_tops, val[1], labels)
            score, epoch = report.macro_f1, 0
            if chosen is None or score > chosen[0]:
                chosen = (score, epoch, scope, {k: v.clone() for k, v in model.state_dict().items()})
            continue
        for parameter in [*trainable, *model.head.parameters()]:
            parameter.requires_grad_(True)
        groups = [head] + ([{"params": trainable, "lr": config.backbone_lr}] if trainable else [])
        score, epoch = _fit(model, forward, groups, inputs, augment, config, labels, f"training: {scope}")
        if chosen is None or score > chosen[0]:
            chosen = (score, epoch, scope, {k: v.clone() for k, v in model.state_dict().items()})
    assert chosen is not None
    model.load_state_dict(chosen[3])
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return chosen[0], chosen[1], chosen[2]


def _pooled(maps: torch.Tensor) -> torch.Tensor:
    """The classifier's pooled features of top maps, before standardisation."""
    return torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1).float()


def install_probe(model: BackboneClassifier, probe: Probe) -> None:
    """Make ``model``'s standardisation and head those of ``probe``."""
    with torch.no_grad():
        model.feature_mean.copy_(probe.mean)
        model.feature_std.copy_(probe.std)
        model.head.weight.copy_(probe.weight)
        model.head.bias.copy_(probe.bias)


def _train_probe_on_all(
    model: BackboneClassifier,
    pixels: torch.Tensor,
    truth: torch.Tensor,
    config: ClassifierTraining,
    labels: list[str],
    spec: ImageInputSpec,
) -> ProbeSelection:
    """The default: the linear probe chosen by k-fold over every image but the hold-out."""
    trunk = model.trunk.eval()
    with torch.inference_mode():
        features = torch.cat([_pooled(trunk(normalise(chunk, spec))[-1]) for chunk in pixels.split(16)])
    selection = select_probe(features, truth, labels, config.folds, config.seed)
    install_probe(model, selection.probe)
    return selection


def _from_level(model: BackboneClassifier, level: Level) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(maps: torch.Tensor) -> torch.Tensor:
        return model.head(model.pooled(model.trunk.from_level(maps, level)))

    return forward


CHECK_IMAGES = 32
"""How many training images a card keeps to calibrate and check its OpenVINO graph."""


def check_images(
    pixels: torch.Tensor, labels: torch.Tensor, seed: int, count: int = CHECK_IMAGES
) -> torch.Tensor:
    """Up to ``count`` of ``pixels`` (uint8), drawn class by class in turn so every class is
    among them (the card's check images, ``schemas.model_card.CpuEngineSpec``)."""
    generator = torch.Generator().manual_seed(seed)
    queues = [
        members[torch.randperm(len(members), generator=generator)].tolist()
        for members in (torch.nonzero(labels == k).flatten() for k in labels.unique())
    ]
    chosen: list[int] = []
    while len(chosen) < count and any(queues):
        chosen += [queue.pop() for queue in queues if queue][: count - len(chosen)]
    return pixels[sorted(chosen)].contiguous()


def cpu_engine_spec(
    model: nn.Module, checks: torch.Tensor, spec: ImageInputSpec
) -> tuple[CpuEngineSpec, dict[str, float]]:
    """The card's CPU engine section: int8 where the quantized graph stays within the
    tolerance of torch on the check images (the check serving repeats at load), else fp32;
    with the measured gap for the card's metrics."""
    tolerance = CpuEngineSpec().tolerance
    gap = int8_gap(model.eval(), normalise(checks, spec))
    precision: CpuPrecision = "int8" if gap is not None and gap <= tolerance else "fp32"
    log.info(
        "CPU engine: %s (int8 %s)",
        precision,
        "could not be built" if gap is None else f"gap {gap:.3g}, tolerance {tolerance:g}",
    )
    return CpuEngineSpec(precision=precision, tolerance=tolerance), (
        {"cpu_int8_gap": gap} if gap is not None else {}
    )


def _loaded(items: list[LabelledImage], spec: ImageInputSpec) -> tuple[torch.Tensor, torch.Tensor]:
    return load_pixels(items, spec), torch.tensor([i.label for i in items])


def train_classifier(
    data: str | Path, registry: str | Path, name: str, version: str, config: ClassifierTraining | None = None
) -> TrainedEntry:
    """Train a defect classifier on ``<data>/<class>/*`` and write it to the registry; see the
    module docstring. Warns when the chosen model does not beat the majority class on validation."""
    config = config or ClassifierTraining()
    torch.manual_seed(config.seed)
    root = Path(data)
    labels, items = image_folder(root)
    normal_label = normal_class(labels, items, config.normal_label)
    rest, held = split(items, config.holdout, config.seed)
    pretrained = config.architecture == BACKBONE_LINEAR
    probe_only = pretrained and config.scopes == ("head",)
    # the probe validates by k-fold over all of ``rest``; other training needs a validation share
    train_items, val_items = (rest, []) if probe_only else split(rest, config.validation, config.seed + 1)
    if not val_items and not probe_only:
        raise ValueError("the validation split is empty: more images or a larger --validation share")
    info: BackboneInfo | None = None
    if pretrained:
        spec_of = backbone(config.backbone)
        spec = _input_spec(config.size, list(spec_of.mean), list(spec_of.std))
        levels: tuple[Level, ...] = (5,)
        info = _backbone_info(config.backbone, levels, config.checkpoint)
        model: nn.Module = BackboneClassifier(
            FeatureTrunk.pretrained(config.backbone, levels, config.checkpoint), len(labels)
        )
    else:
        spec = _input_spec(config.size, [0.5] * 3, [0.25] * 3)
        model = build_classifier(config.architecture, len(labels))
    train = _loaded(train_items, spec)
    val = _loaded(val_items, spec) if val_items else train
    metrics: dict[str, float] = {}
    if isinstance(model, BackboneClassifier) and probe_only:
        selection = _train_probe_on_all(model, train[0], train[1], config, labels, spec)
        mean, spread = selection.macro_f1
        val_f1, epoch = mean, 0
        val_probabilities = selection.out_of_fold  # each image scored by a probe that never saw it
        note = f"{config.backbone}, linear probe, L2 {selection.strength:g} by {config.folds}-fold CV"
        metrics |= {"cv_macro_f1_std": spread, "l2_strength": selection.strength}
    elif isinstance(model, BackboneClassifier):
        val_f1, epoch, scope = _train_backbone_classifier(model, train, val, config, labels, spec)
        note = f"{config.backbone}, trained: {scope}"
    else:
        inputs = _Inputs(train[0], train[1], normalise(val[0], spec), val[1])
        groups = [{"params": list(model.parameters()), "lr": config.lr}]
        val_f1, epoch = _fit(
            model,
            model,
            groups,
            inputs,
            _image_augment(spec),
            config,
            labels,
            f"training {config.architecture} from scratch",
        )
        note = f"{config.architecture} from scratch"
    model.eval()
    if not probe_only:
        val_probabilities = _logits(model, normalise(val[0], spec)).softmax(dim=1)
    val_report = ClassificationReport.of(labels, val[1], val_probabilities.argmax(dim=1))
    thresholds = defect_thresholds(
        val_probabilities, val[1], labels, labels.index(normal_label), config.false_alarm_budget
    )
    warnings = []
    if not val_report.beats(val_report.majority()):
        warnings.append(
            f"the chosen model does NOT beat always answering {labels[int(val_report.confusion.sum(1).argmax())]!r} "
            f"on validation (accuracy {val_report.accuracy:.3f} vs {val_report.majority().accuracy:.3f}, "
            f"macro-F1 {val_report.macro_f1:.3f} vs {val_report.majority().macro_f1:.3f}): do not deploy it"
        )
        log.warning(warnings[-1])
    metrics |= {"val_macro_f1": val_f1, "val_accuracy": val_report.accuracy, "chosen_epoch": float(epoch)}
    if held:
        pixels, truth = _loaded(held, spec)
        logits = _logits(model, normalise(pixels, spec))
        report = ClassificationReport.of(labels, truth, logits.argmax(dim=1))
        alerts = DefectAlerts.of(logits.softmax(dim=1), truth, labels, thresholds)
        metrics |= {f"holdout_{k}": v for k, v in (report.summary() | alerts.summary()).items()}
    checks, cpu_engine = None, None
    if pretrained:
        checks = check_images(train[0], train[1], config.seed)
        cpu_engine, gap = cpu_engine_spec(served_classifier(model), checks, spec)
        metrics |= gap
    card = ModelCard(
        name=name,
        version=version,
        task="defect_classification",
        architecture=config.architecture,
        input=spec,
        labels=labels,
        normal_label=normal_label,
        thresholds=thresholds,
        output="logits",
        backbone=info,
        cpu_engine=cpu_engine,
        training=TrainingSummary(
            dataset=str(root),
            samples=len(train_items),
            epochs=epoch + 1,
            metrics=metrics,
            notes="; ".join(
                [
                    note,
                    f"validation {len(val_items) or f'{config.folds}-fold over {len(train_items)}'}, hold-out {len(held)} images",
                    *warnings,
                ]
            )[:256],
        ),
        created_at=datetime.now(UTC),
    )
    folder = save_model(registry, card, model, checks)
    write_holdout(folder, root, held)
    return TrainedEntry(folder, card, held, warnings)


def fit_anomaly_scorer(
    data: str | Path, registry: str | Path, name: str, version: str, config: AnomalyFitting | None = None
) -> TrainedEntry:
    """Fit a PatchCore scorer on the normal images of ``data``, calibrate its threshold on
    held-out normal images, and score the hold-out normals and every defect image."""
    config = config or AnomalyFitting()
    root = Path(data)
    labels, items = image_folder(root)
    normal_label = normal_class(labels, items, config.normal_label)
    normal = labels.index(normal_label)
    normal_items = [i for i in items if i.label == normal]
    rest, held_normals = split(normal_items, config.holdout, config.seed)
    fit_items, calibration = split(rest, config.calibration, config.seed + 1)
    if not fit_items or not calibration:
        raise ValueError(f"too few {normal_label!r} images to fit and calibrate an anomaly scorer")
    spec_of = backbone(config.backbone)
    spec = _input_spec(config.size, list(spec_of.mean), list(spec_of.std))
    trunk = FeatureTrunk.pretrained(config.backbone, config.levels, config.checkpoint)
    batches = [normalise(chunk, spec) for chunk in load_pixels(fit_items, spec).split(16)]
    scorer = fit_patchcore(batches, trunk, config.memory_size, config.seed)
    threshold = budget_threshold(predict(scorer, calibration, spec)[:, 0], config.false_alarm_budget)
    scorer.threshold.fill_(threshold)
    held = held_normals + [i for i in items if i.label != normal]
    metrics = {
        "calibration_normals": float(len(calibration)),
        "false_alarm_budget": config.false_alarm_budget,
    }
    if len(held) > len(held_normals):
        report = anomaly_report(predict(scorer, held, spec)[:, 0], held, labels, normal, threshold)
        metrics |= {f"holdout_{k}": v for k, v in report.summary().items()}
    # checked on images outside the memory bank, as served frames are: a bank patch's distance
    # is zero, and a graph's rounding near zero says nothing of its error on new frames
    held_pixels = load_pixels(calibration, spec)
    checks = check_images(held_pixels, torch.zeros(len(held_pixels), dtype=torch.long), config.seed)
    cpu_engine, gap = cpu_engine_spec(scorer, checks, spec)
    metrics |= gap
    card = ModelCard(
        name=name,
        version=version,
        task="visual_anomaly",
        architecture=PATCHCORE,
        input=spec,
        labels=["anomaly"],
        normal_label=normal_label,
        thresholds={"anomaly": threshold},
        backbone=_backbone_info(config.backbone, config.levels, config.checkpoint),
        cpu_engine=cpu_engine,
        training=TrainingSummary(
            dataset=str(root),
            samples=len(fit_items),
            metrics=metrics,
            notes=f"memory bank {len(scorer.memory)} patches; threshold: at most {config.false_alarm_budget:.1%} "
            f"of {len(calibration)} held-out normal images at or above it",
        ),
        created_at=datetime.now(UTC),
    )
    folder = save_model(registry, card, scorer, checks)
    write_holdout(folder, root, held)
    return TrainedEntry(folder, card, held)
