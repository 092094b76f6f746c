"""GPU vision benchmark: batched GPU JPEG decode + ResNet-50 (bf16, channels_last) against the
model-only ceiling on pre-decoded tensors, same batch size, same process.

Made for one H200 (a few minutes); runs on a CPU too with small settings, which is how it is tested.
It needs torch, torchvision and pydantic (``models`` and ``schemas`` only: no Kafka there).

Usage: python bench/gpu_vision.py [--batch 256] [--images 4096] [--seconds 20] [--compile]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.engine import InferenceEngine
from models.vision.architectures import build_classifier
from models.vision.preprocess import preprocess_on_device
from models.vision.synthetic import encode, product_image
from schemas.model_card import ImageInputSpec

SPEC = ImageInputSpec(
    height=224, width=224, channels=3, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]
)


def rate(step, items_per_step: int, seconds: float, sync) -> float:
    """Items per second of ``step`` run repeatedly for about ``seconds`` (after one warm-up call)."""
    step()
    sync()
    calls = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        calls += 1
    sync()
    return calls * items_per_step / (time.perf_counter() - started)


def write_result(result: dict, out: str) -> None:  # type: ignore[type-arg]
    """Print ``result`` as JSON, and write it to ``out`` when given."""
    print(json.dumps(result, indent=2))
    if out:
        Path(out).write_text(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--images", type=int, default=512, help="distinct JPEGs (1080p-like sizes are slower)"
    )
    parser.add_argument("--source-size", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    engine = InferenceEngine(
        build_classifier(args.model, 6), "auto", args.precision, channels_last=True, compile=args.compile
    )
    device = engine.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    jpegs = [
        encode(
            product_image("crack" if i % 5 == 0 else "ok", args.source_size, seed=i)
            .expand(3, -1, -1)
            .contiguous(),
            "jpeg",
        )
        for i in range(args.images)
    ]
    batches = [
        jpegs[(k * args.batch) % len(jpegs) :][: args.batch] for k in range(max(1, len(jpegs) // args.batch))
    ]
    batches = [b if len(b) == args.batch else (b * args.batch)[: args.batch] for b in batches]
    rois = [None] * args.batch

    decoded = preprocess_on_device(batches[0], SPEC, rois, device)
    pre = engine.prepare(torch.stack([t for t in decoded if isinstance(t, torch.Tensor)]))
    engine.warm_up(pre[0], [args.batch])

    model_only = rate(lambda: engine.run(pre), args.batch, args.seconds, sync)
    state = {"k": 0}

    def decode_and_infer() -> None:
        batch = batches[state["k"] % len(batches)]
        state["k"] += 1
        images = preprocess_on_device(batch, SPEC, rois, device)
        engine.run(engine.prepare(torch.stack([t for t in images if isinstance(t, torch.Tensor)])))

    pipeline = rate(decode_and_infer, args.batch, args.seconds, sync)
    decode_only = rate(
        lambda: preprocess_on_device(batches[0], SPEC, rois, device), args.batch, args.seconds / 2, sync
    )
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "model": args.model,
        "batch": args.batch,
        "precision": args.precision,
        "compile": args.compile,
        "source_size": args.source_size,
        "model_only_img_s": round(model_only, 1),
        "decode_plus_infer_img_s": round(pipeline, 1),
        "decode_only_img_s": round(decode_only, 1),
        "fraction_of_ceiling": round(pipeline / model_only, 3),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if device.type == "cuda"
        else None,
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
