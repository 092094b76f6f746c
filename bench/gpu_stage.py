"""GPU vision stage benchmark: Vigil's ``VisionStage`` against its model's compute ceiling.

The stage does everything but Kafka: frame references are handed to it as the runtime hands
them (``submit`` with at most ``--in-flight`` outstanding, ``collect``), and it fetches each
JPEG from disk, checks its header and hash, decodes it in the batch on the GPU (nvJPEG),
runs the micro-batched model (bf16, channels_last), and builds each frame's result and
alerts. The ceiling is the same lane's engine on pre-decoded tensors already on the device,
same batch size, same process; decode + inference without the stage is reported too. Each
figure is the median of ``--repeats`` timed runs, with its spread. A stage faster than its
ceiling is a measurement error and fails the run.

Kafka does not run on the GPU machine (no Java there), so this is the stage's share of the
pipeline; the broker-bound part is measured on the CPU machine (``bench/vision.py``).
Runs on a CPU too with small settings, which is how it is checked before a GPU run.

Usage: python bench/gpu_stage.py [--model resnet50] [--batch 128] [--frames 2048]
       [--workers 8] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu_vision import rate, write_result
from bench.untrained import LABELS, frame_ref, make_model
from consumers.pipelines.vision.stage import VisionStage
from consumers.runtime.records import InboundRecord, Work
from models.vision.preprocess import preprocess_on_device
from models.vision.synthetic import encode, product_image
from schemas.settings import VigilSettings

TOPIC = "vigil.frames"


def frame_work(images: list[Path], count: int) -> list[Work]:
    """``count`` frame references cycling over ``images``, as the runtime hands them over."""
    work = []
    for n in range(count):
        frame = frame_ref(n, images[n % len(images)], 64)
        record = InboundRecord(TOPIC, n % 6, n, frame.camera_id.encode(), frame.to_json_bytes())
        work.append(Work(record, frame, datetime.now(UTC)))
    return work


def run_stage(stage: VisionStage, work: list[Work], in_flight: int) -> float:
    """Frames per second through ``stage``, every frame's outcome collected; fails on a failure."""
    started = time.perf_counter()
    sent = done = 0
    while done < len(work):
        room = in_flight - (sent - done)
        if room > 0 and sent < len(work):
            chunk = work[sent : sent + room]
            stage.submit(chunk)
            sent += len(chunk)
        outcomes = stage.collect(0.005)
        for outcome in outcomes:
            if outcome.failure is not None:
                raise RuntimeError(f"a frame failed: {outcome.failure}")
        done += len(outcomes)
    return len(work) / (time.perf_counter() - started)


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224, help="model input size")
    parser.add_argument("--source-size", type=int, default=512, help="JPEG size on disk")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--frames", type=int, default=2048, help="frames per timed run")
    parser.add_argument("--images", type=int, default=256, help="distinct JPEGs")
    parser.add_argument("--workers", type=int, default=8, help="fetch workers")
    parser.add_argument("--in-flight", type=int, default=0, help="outstanding frames (default 4 batches)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per ceiling measurement")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    in_flight = args.in_flight or 4 * args.batch

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frames = root / "frames"
        frames.mkdir()
        make_model(root / "registry", args.model, args.size)
        images = []
        for n in range(args.images):
            path = frames / f"{n:04d}.jpg"
            image = product_image(LABELS[n % 4], args.source_size, seed=n).expand(3, -1, -1).contiguous()
            path.write_bytes(encode(image, "jpeg"))
            images.append(path)
        base = VigilSettings()
        vision = base.vision.model_copy(
            update={
                "registry": str(root / "registry"),
                "model": "bench",
                "device": args.device,
                "reload_interval_s": 0,
                "fetch": base.vision.fetch.model_copy(
                    update={"allowed_prefixes": [f"file://{frames}/"], "workers": args.workers}
                ),
                "batching": base.vision.batching.model_copy(
                    update={"max_batch_size": args.batch, "max_queue": 4 * in_flight}
                ),
            }
        )
        stage = VisionStage(base.model_copy(update={"vision": vision}))
        try:
            lane = stage.default_lane
            engine = lane.engine
            device = engine.device
            sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
            work = frame_work(images, args.frames)
            run_stage(stage, work[: 2 * args.batch], in_flight)  # warm-up: workers, decoders, kernels
            lane.batcher.batch_sizes.clear()
            stage_runs = [run_stage(stage, work, in_flight) for _ in range(args.repeats)]
            batch_sizes = dict(sorted(lane.batcher.batch_sizes.items()))

            jpegs = [p.read_bytes() for p in images[: args.batch]]
            jpegs = (jpegs * (args.batch // len(jpegs) + 1))[: args.batch]
            decoded = preprocess_on_device(jpegs, lane.spec, [None] * args.batch, device)
            ready = engine.prepare(torch.stack([t for t in decoded if isinstance(t, torch.Tensor)]))
            ceilings = [
                rate(lambda: engine.run(ready), args.batch, args.seconds, sync) for _ in range(args.repeats)
            ]

            def decode_and_infer() -> None:
                images_now = preprocess_on_device(jpegs, lane.spec, [None] * args.batch, device)
                engine.run(
                    engine.prepare(torch.stack([t for t in images_now if isinstance(t, torch.Tensor)]))
                )

            with_decode = [
                rate(decode_and_infer, args.batch, args.seconds, sync) for _ in range(args.repeats)
            ]
        finally:
            stage.close()

    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "model": args.model,
        "input": args.size,
        "source_jpeg": args.source_size,
        "batch": args.batch,
        "precision": str(engine.autocast_dtype or "fp32"),
        "gpu_decode": lane.gpu_decode,
        "fetch_workers": args.workers,
        "frames_per_run": args.frames,
        "stage_frames_s": spread(stage_runs),
        "ceiling_model_only_img_s": spread(ceilings),
        "ceiling_decode_plus_model_img_s": spread(with_decode),
        "stage_fraction_of_model_ceiling": round(
            statistics.median(stage_runs) / statistics.median(ceilings), 3
        ),
        "stage_fraction_of_decode_plus_model": round(
            statistics.median(stage_runs) / statistics.median(with_decode), 3
        ),
        "batch_sizes": batch_sizes,
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if device.type == "cuda"
        else None,
    }
    write_result(result, args.out)
    if statistics.median(stage_runs) > 1.1 * statistics.median(ceilings):
        sys.exit("measurement error: the stage ran faster than its model's compute ceiling")


if __name__ == "__main__":
    main()
