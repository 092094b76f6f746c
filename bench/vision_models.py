"""Frames/s of the default vision models on each CPU engine, and of the models they
replaced, on the real broker.

Each contender (a model under a ``vision.engine`` setting) is served by the whole pipeline
(fetch, decode in child processes, micro-batched inference, produce, commit) over the same JPEG
frames, and its model also runs alone on pre-decoded tensors (its ceiling: as many batches as
``--ceiling-batches``, at the same torch threads, in every round, alternating with the
pipeline, at the batch size the pipeline reached most; a pipeline above its ceiling fails the
run). The models carry their real architecture and input size; their weights are untrained
(speed does not depend on them):
- classifier, now: EfficientNet-Lite0 with a linear head at the default size, letterboxed, on
  the default engine (OpenVINO at the card's precision) and on torch (its TorchScript trace);
- classifier, before: the small CNN at 128 px;
- anomaly scorer, now: PatchCore on EfficientNet-Lite0 stride-16 features, 224 px, 10,000
  patches, on both engines;
- anomaly scorer, before: PatchCore on ResNet-18 layer2 and layer3, 128 px, 4,000 patches.
The "now" cards say ``fp32``, the precision ``vigil train vision`` wrote for both models on the
magnetic tiles (int8 failed its check there: see ``models/cpu_engine.py``).

Usage: python bench/vision_models.py [--frames 400] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Figure, bench_broker, bench_settings, check_below, pin_torch_threads, report
from bench.vision import (
    LABELS,
    configure,
    make_images,
    model_only,
    publish_frames,
    run_pipeline,
    serving_engine,
)
from models.engine import default_torch_threads
from models.registry import load_model, save_model
from models.vision.anomaly import PatchCoreScorer
from models.vision.architectures import BackboneClassifier, SmallCnn
from models.vision.backbones import FeatureTrunk, backbone
from models.vision.preprocess import decode_and_resize, preprocess
from models.vision.synthetic import encode, product_image
from models.vision.training import AnomalyFitting, ClassifierTraining
from schemas.model_card import BackboneInfo, CpuEngineSpec, ImageInputSpec, ModelCard


def _card(
    name: str, task: str, architecture: str, size: int, net: str | None, levels: list[int]
) -> ModelCard:
    """A card as training writes it: a CPU engine section for the pretrained models."""
    spec = backbone(net) if net else None
    mean, std = (list(spec.mean), list(spec.std)) if spec else ([0.5] * 3, [0.25] * 3)
    anomaly = task == "visual_anomaly"
    return ModelCard(
        name=name,
        version="1",
        task=task,  # type: ignore[arg-type]
        architecture=architecture,
        input=ImageInputSpec(height=size, width=size, channels=3, mean=mean, std=std, resize="letterbox"),
        labels=["anomaly"] if anomaly else LABELS,
        normal_label="ok",
        thresholds={"anomaly": 1e9} if anomaly else {label: 0.5 for label in LABELS[1:]},
        output=None if anomaly else "logits",
        backbone=BackboneInfo(name=net, levels=levels) if net else None,
        cpu_engine=CpuEngineSpec(precision="fp32") if net else None,
        created_at=datetime.now(UTC),
    )


def _check_pixels(size: int) -> torch.Tensor:
    """Check images as training keeps them: frames like the bench's, at the input size."""
    spec = ImageInputSpec(
        height=size, width=size, channels=3, mean=[0.5] * 3, std=[0.25] * 3, resize="letterbox"
    )
    return torch.stack(
        [decode_and_resize(encode(product_image(LABELS[n % 4], 384, seed=n), "jpeg"), spec) for n in range(8)]
    )


def make_models(registry: Path) -> dict[str, str]:
    """The four registry entries; returns name → description."""
    checks = _check_pixels(ClassifierTraining().size)
    torch.manual_seed(0)
    now_c, now_a = ClassifierTraining(), AnomalyFitting()
    lite_classifier = BackboneClassifier(FeatureTrunk(now_c.backbone, (5,)), len(LABELS))
    save_model(
        registry,
        _card("classifier-now", "defect_classification", "backbone_linear", now_c.size, now_c.backbone, [5]),
        lite_classifier.eval(),
        checks,
    )
    save_model(
        registry,
        _card("classifier-before", "defect_classification", "small_cnn", 128, None, []),
        SmallCnn(len(LABELS)).eval(),
    )
    for name, net, size, memory, levels in (
        ("anomaly-now", now_a.backbone, now_a.size, now_a.memory_size, now_a.levels),
        ("anomaly-before", "resnet18", 128, 4_000, (3, 4)),
    ):
        trunk = FeatureTrunk(net, levels)
        scorer = PatchCoreScorer(trunk, torch.randn(memory, sum(trunk.channels)))
        card = _card(name, "visual_anomaly", "patchcore", size, net, list(levels))
        save_model(registry, card, scorer.eval(), checks if card.cpu_engine else None)
    return {
        "classifier-now": f"classifier now: {now_c.backbone} + linear head, {now_c.size} px",
        "classifier-before": "classifier before: small CNN, 128 px",
        "anomaly-now": f"anomaly now: PatchCore, {now_a.backbone} levels {now_a.levels}, {now_a.size} px, "
        f"{now_a.memory_size} patches",
        "anomaly-before": "anomaly before: PatchCore, ResNet-18 layer2+3, 128 px, 4000 patches",
    }


CONTENDERS = (
    ("classifier-now", "auto"),
    ("classifier-now", "torch"),
    ("classifier-before", "torch"),
    ("anomaly-now", "auto"),
    ("anomaly-now", "torch"),
    ("anomaly-before", "torch"),
)
"""(model, ``vision.engine``): the default engine, and torch as every model ran before it."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ceiling-batches", type=int, default=24, help="batches behind each ceiling run")
    parser.add_argument(
        "--threads",
        type=int,
        default=default_torch_threads(),
        help="torch threads of the model, pinned (default: the product's, cores - 1)",
    )
    args = parser.parse_args()
    pin_torch_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="vigil-bench-models-"))
    registry, frames = work / "registry", work / "frames"
    frames.mkdir()
    models = make_models(registry)
    images = make_images(frames, 64, 384)
    blobs = [p.read_bytes() for p in images]
    figures = []
    with bench_broker() as broker:
        for name, engine_setting in CONTENDERS:
            loaded = load_model(registry, name)
            spec = loaded.card.input
            assert isinstance(spec, ImageInputSpec)
            engine = serving_engine(loaded, args.batch, engine_setting)
            description = f"{models[name]}; {engine.engine_name()}"
            tensors = [preprocess(b, spec) for b in blobs]
            rates: list[float] = []
            ceilings: list[float] = []
            reached: Counter[int] = Counter()  # the pipeline's batch sizes: its ceiling runs the commonest
            for round_ in range(args.repeats):  # the ceiling alternates with its pipeline
                for step in ("pipeline", "ceiling") if round_ % 2 == 0 else ("ceiling", "pipeline"):
                    if step == "ceiling":
                        size = reached.most_common(1)[0][0] if reached else args.batch
                        ceilings.append(model_only(engine, tensors, size, args.ceiling_batches))
                        continue
                    settings = configure(
                        bench_settings(broker.bootstrap), registry, frames, args.batch, args.workers
                    )
                    settings = settings.model_copy(
                        update={
                            "vision": settings.vision.model_copy(
                                update={"model": name, "engine": engine_setting}
                            )
                        }
                    )
                    publish_frames(settings, images, args.frames)
                    rate, sizes = run_pipeline(settings, args.frames)
                    rates.append(rate)
                    reached.update(sizes)
                check_below(description, rates[-1], "the model alone, same round", ceilings[-1])
            spread = (
                f"runs {', '.join(f'{r:.1f}' for r in rates)}; batches mostly of "
                f"{reached.most_common(1)[0][0]}; model alone at that size "
                f"{statistics.median(ceilings):.1f} img/s ({', '.join(f'{c:.1f}' for c in ceilings)})"
            )
            figures.append(Figure(description, statistics.median(rates), "frames/s", spread))
    by_name = {
        f"{name}/{engine}": figure.value for (name, engine), figure in zip(CONTENDERS, figures, strict=True)
    }
    for kind in ("classifier", "anomaly"):
        now, on_torch = by_name[f"{kind}-now/auto"], by_name[f"{kind}-now/torch"]
        figures.append(
            Figure(f"{kind} now: default engine / torch", now / on_torch, "x", "pipeline frames/s, same run")
        )
        before = by_name[f"{kind}-before/torch"]
        figures.append(Figure(f"{kind}: now / before", now / before, "x", "pipeline frames/s, same run"))
    print(report("vision-models", figures, {"frames": args.frames, "threads": args.threads}))


if __name__ == "__main__":
    main()
