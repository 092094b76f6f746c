"""What the serving interpreter spends per frame, with a model that costs nothing.

The vision pipeline's own work per frame (consume, validate, fetch, header check, hash, hand
the bytes to a decoder process, take its pixels, batch, run, build the result and alerts,
produce, commit) is measured with a TorchScript model that returns constant scores, so what
is left is Vigil's: the serving process's CPU time (user + system, every thread of this
process, the decoder processes excluded: they are not its children but the fork server's)
divided by the frames, over the whole pipeline on the real broker. Beside it, in the same
rounds and in rotated order:
- the pipeline's frames/s;
- its decode-only ceiling: the same JPEG bytes decoded in memory by the same number of
  worker threads, each with its decoder process, batched and run through the same free model,
  no Kafka and no files (``bench.vision.compute_ceiling``); a pipeline above it fails the run.
The frames are 512 x 512 JPEGs of generated parts, resized to the model's 224 x 224 input.

Usage: python bench/serving_cost.py [--frames 3000] [--repeats 3] [--workers N]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    Figure,
    bench_broker,
    bench_settings,
    check_below,
    median_figure,
    pin_torch_threads,
    report,
    start_runtime,
)
from bench.untrained import LABELS
from bench.vision import compute_ceiling, configure, publish_frames
from consumers.pipelines.vision.stage import VisionStage
from models.engine import default_torch_threads
from models.registry import load_model, save_model
from models.vision.serving import served
from models.vision.synthetic import encode, product_image
from schemas.messages import FrameRef
from schemas.model_card import ImageInputSpec, ModelCard
from schemas.settings import VigilSettings

SIZE = 224


class FreeModel(nn.Module):
    """Constant scores for every image: a model that costs nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.classes = len(LABELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], self.classes), 1.0 / self.classes)


def make_free_model(registry: Path) -> None:
    card = ModelCard(
        name="bench",
        version="1",
        task="defect_classification",
        architecture="torchscript",
        input=ImageInputSpec(height=SIZE, width=SIZE, channels=3, mean=[0.5] * 3, std=[0.25] * 3),
        labels=LABELS,
        thresholds={label: 0.9 for label in LABELS[1:]},
        weights_file="model.pt",
        output="probabilities",
        created_at=datetime.now(UTC),
    )
    save_model(registry, card, FreeModel())


def cpu_seconds() -> float:
    """User + system CPU of every thread of this process (not of other processes)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_pipeline(settings: VigilSettings, count: int) -> tuple[float, float]:
    """Frames/s of the whole pipeline over ``count`` frames already in the topic, and this
    process's CPU µs per frame, both from the first record read to the last result produced
    (start-up, model load and decoder processes' start left out)."""
    stage = VisionStage(settings)
    runtime, thread, observer = start_runtime(
        settings, {settings.topics.frames.name: FrameRef}, stage, "cost"
    )
    try:
        while not observer.consumed:
            time.sleep(0.001)  # polling the runtime's counters from outside its thread
        started, cpu = time.monotonic(), cpu_seconds()
        inferences = settings.topics.inferences.name
        while observer.produced[inferences] < count:
            time.sleep(0.01)
        elapsed, spent = time.monotonic() - started, cpu_seconds() - cpu
    finally:
        runtime.stop()
        thread.join()
    return count / elapsed, spent / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=VigilSettings().vision.fetch.workers)
    parser.add_argument("--batch", type=int, default=VigilSettings().vision.batching.max_batch_size)
    args = parser.parse_args()
    pin_torch_threads(default_torch_threads())
    work = Path(tempfile.mkdtemp(prefix="vigil-bench-cost-"))
    registry, frames = work / "registry", work / "frames"
    frames.mkdir()
    make_free_model(registry)
    images = []
    for n in range(64):
        path = frames / f"{n:04d}.jpg"
        path.write_bytes(encode(product_image(LABELS[n % 4], 512, seed=n), "jpeg"))
        images.append(path)
    loaded = load_model(registry, "bench")
    spec = loaded.card.input
    assert isinstance(spec, ImageInputSpec)
    engine = served(loaded, "auto", (1, args.batch))
    costs: list[float] = []
    rates: list[float] = []
    ceilings: list[float] = []
    with bench_broker() as broker:
        for round_ in range(args.repeats):
            for step in ("pipeline", "ceiling") if round_ % 2 == 0 else ("ceiling", "pipeline"):
                if step == "ceiling":
                    ceilings.append(
                        compute_ceiling(engine, spec, images, args.frames, args.batch, args.workers)
                    )
                    continue
                settings = configure(
                    bench_settings(broker.bootstrap), registry, frames, args.batch, args.workers
                )
                publish_frames(settings, images, args.frames)
                rate, cost = timed_pipeline(settings, args.frames)
                costs.append(cost)
                rates.append(rate)
            check_below("pipeline", rates[-1], "its decode-only ceiling, same round", ceilings[-1])
    figures = [
        median_figure(
            "serving interpreter CPU per frame, free model", costs, "µs", "workers' decoding excluded"
        ),
        median_figure("pipeline, free model", rates, "frames/s"),
        median_figure(f"decode-only ceiling, {args.workers} decoder processes", ceilings, "frames/s"),
        Figure(
            "pipeline / decode-only ceiling",
            statistics.median(r / c for r, c in zip(rates, ceilings, strict=True)),
            "x",
            "median of the rounds' ratios",
        ),
    ]
    print(
        report("serving-cost", figures, {"frames": args.frames, "workers": args.workers, "batch": args.batch})
    )


if __name__ == "__main__":
    main()
