"""Latency at low load of the three pipelines with the default settings, capture → result,
beside the batching it replaced (``batching.close_when_idle: false``), in the same run; and
(``--backlog``) each one's rate at full load.

Per pipeline — pass-through (45 readings/s), sensors (45 readings/s, GRU autoencoder,
windows of 64 every 16) and vision (16 frames/s, MobileNetV3-Small at 224 px) — and per
policy, a fresh runtime in this process reads topics of its own while a sender process
offers the load (``bench.common.offer``: librdkafka, lingering 0 ms: the upstream's batching is
not Vigil's).
Latency is the result's append on the broker (LogAppendTime: bench output topics are created
with it) minus its input's create time, stamped by the sender (evidence gives the input). The policies alternate, ``--repeats`` times; each run's p50, p99 and max
are kept and the median over runs reported with the spread. Torch runs on the product's
default thread count for one model (``default_torch_threads``), pinned.

Usage: python bench/low_load.py [--seconds 20] [--repeats 2] [--pipelines passthrough,sensors,vision]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    Figure,
    bench_broker,
    bench_settings,
    broker_latencies_ms,
    offer,
    offer_from_elsewhere,
    pin_torch_threads,
    report,
    start_runtime,
    work_off,
)
from bench.sensors import encode, pipeline_rate, readings
from bench.sensors import make_model as make_sensor_model
from bench.untrained import frame_ref
from bench.vision import make_images, run_pipeline
from bench.vision import make_model as make_vision_model
from consumers.pipelines.passthrough import passthrough_stage
from consumers.pipelines.sensors.stage import SensorStage
from consumers.pipelines.vision.stage import VisionStage
from consumers.runtime.stage import ProcessingStage
from models.engine import default_torch_threads
from schemas.common import Message
from schemas.messages import FrameRef, SensorReading
from schemas.settings import SensorModelBinding, SensorSettings, VigilSettings

RATES = {"passthrough": 45.0, "sensors": 45.0, "vision": 16.0}


def workload(
    pipeline: str, settings: VigilSettings, work: Path, count: int, assets: int = 3
) -> tuple[VigilSettings, Callable[[], ProcessingStage], dict[str, type[Message]], list[tuple[bytes, bytes]]]:
    """The settings, stage factory, inputs and records of one run of ``pipeline``."""
    if pipeline == "vision":
        images = sorted((work / "frames").glob("*.jpg"))
        vision = settings.vision.model_copy(
            update={
                "registry": str(work / "registry"),
                "model": "bench",
                "fetch": settings.vision.fetch.model_copy(
                    update={"allowed_prefixes": [f"file://{work / 'frames'}/"]}
                ),
            }
        )
        settings = settings.model_copy(update={"vision": vision})
        frames = [frame_ref(n, images[n % len(images)], 16) for n in range(count)]
        items = [(f.camera_id.encode(), f.to_json_bytes()) for f in frames]
        return settings, partial(VisionStage, settings), {settings.topics.frames.name: FrameRef}, items
    if pipeline == "sensors":
        sensors = SensorSettings(
            registry=str(work / "registry"),
            models=[SensorModelBinding(assets="*", model="bench-gru")],
            batching=settings.sensors.batching,
            max_past_s=None,
        )
        settings = settings.model_copy(update={"sensors": sensors})
        start = datetime.now(UTC) - timedelta(hours=1)
        items = encode(readings(count, assets, start))
        return settings, partial(SensorStage, settings), {settings.topics.sensors.name: SensorReading}, items
    start = datetime.now(UTC)
    items = encode(readings(count, 16, start))
    stage = partial(passthrough_stage, settings.topics.inferences.name)
    return settings, stage, {settings.topics.sensors.name: SensorReading}, items


def with_policy(
    bootstrap: str, batching: dict[str, object], kafka: dict[str, object] | None = None
) -> VigilSettings:
    """Fresh topics, default settings, the batching policy (and Kafka options) asked for."""
    base = bench_settings(bootstrap)
    base = base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update=kafka or {}),
            "vision": base.vision.model_copy(
                update={"batching": base.vision.batching.model_copy(update=batching)}
            ),
            "sensors": base.sensors.model_copy(
                update={"batching": base.sensors.batching.model_copy(update=batching)}
            ),
        }
    )
    return base


def backlog_rate(pipeline: str, bootstrap: str, work: Path, batching: dict[str, object], count: int) -> float:
    """Items/s working off ``count`` queued inputs (full load)."""
    settings, _, inputs, items = workload(pipeline, with_policy(bootstrap, batching), work, count, assets=200)
    [topic] = inputs
    offer(settings, topic, items, None)
    if pipeline == "vision":
        return run_pipeline(settings, count)[0]
    return pipeline_rate(settings, count)[0]


def run(
    pipeline: str,
    bootstrap: str,
    work: Path,
    batching: dict[str, object],
    seconds: float,
    kafka: dict[str, object] | None = None,
    rate: float | None = None,
    assets: int = 3,
) -> list[float]:
    """Latencies (ms) of one run, at ``rate`` (the pipeline's low load by default), from
    ``assets`` sensor assets."""
    rate = rate or RATES[pipeline]
    count = int(rate * seconds)
    settings, make_stage, inputs, items = workload(
        pipeline, with_policy(bootstrap, batching, kafka), work, count, assets
    )
    stage = make_stage()
    [topic] = inputs
    runtime, thread, observer = start_runtime(settings, inputs, stage, f"low-{pipeline}")
    try:
        while not runtime.assignment:
            time.sleep(0.01)  # wait for the group join before offering load
        offer_from_elsewhere(settings, topic, items, rate, linger_ms=0)
        work_off(observer, stage, count, timeout_s=60)
    finally:
        runtime.stop()
        thread.join()
    return broker_latencies_ms(settings, topic)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


P99_SAMPLES = 1_000
"""Fewer results than this in a run and its \"p99\" is one of the last few values: it is labelled so."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--seconds", type=float, default=25.0, help="per run (25: 1,125 pass-through results)"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--pipelines", default="passthrough,sensors,vision")
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="also the rate off this many queued readings (sensors; a fortieth as frames for vision)",
    )
    args = parser.parse_args()
    threads = pin_torch_threads(default_torch_threads())
    policies: dict[str, dict[str, object]] = {
        "default batching": {},
        "fixed wait (before)": {"close_when_idle": False},
    }
    runs: dict[tuple[str, str], list[tuple[float, float, float, int]]] = {}
    rates: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, bench_broker() as broker:
        work = Path(tmp)
        (work / "frames").mkdir()
        make_sensor_model(work / "registry")
        make_vision_model(work / "registry", "mobilenet_v3_small", 224)
        make_images(work / "frames", 32, 224)
        for _ in range(args.repeats):
            for pipeline in args.pipelines.split(","):
                for policy, batching in policies.items():
                    if pipeline == "passthrough" and batching:
                        continue  # no model, no batcher: one policy says it all
                    latencies = run(pipeline, broker.bootstrap, work, batching, args.seconds)
                    summary = (
                        percentile(latencies, 50),
                        percentile(latencies, 99),
                        max(latencies),
                        len(latencies),
                    )
                    runs.setdefault((pipeline, policy), []).append(summary)
                    if args.backlog and pipeline != "passthrough":
                        count = args.backlog if pipeline == "sensors" else args.backlog // 40
                        rates.setdefault((pipeline, policy), []).append(
                            backlog_rate(pipeline, broker.bootstrap, work, batching, count)
                        )
                        print(
                            f"{pipeline}, {policy}: {rates[(pipeline, policy)][-1]:,.0f}/s off a backlog of {count}"
                        )
                    p50, p99, peak, count = summary
                    print(
                        f"{pipeline}, {policy}: p50 {p50:.1f} p99 {p99:.1f} max {peak:.1f} ms ({count} results)"
                    )
    figures = []
    for (pipeline, policy), found in runs.items():
        few = min(f[3] for f in found) < P99_SAMPLES
        for index, name in ((0, "p50"), (1, "p99"), (2, "max")):
            values = [f[index] for f in found]
            label = (
                f"{name} (under {P99_SAMPLES:,} results a run: not a p99)" if name == "p99" and few else name
            )
            figures.append(
                Figure(
                    f"{pipeline} {label}, {policy}",
                    statistics.median(values),
                    "ms",
                    f"runs {', '.join(f'{v:.0f}' for v in values)}; {RATES[pipeline]:.0f}/s, "
                    f"{sum(f[3] for f in found)} results",
                )
            )
    for (pipeline, policy), found_rates in rates.items():
        figures.append(
            Figure(
                f"{pipeline} full load, {policy}",
                statistics.median(found_rates),
                "items/s",
                f"runs {', '.join(f'{v:,.0f}' for v in found_rates)}; off a backlog",
            )
        )
    report("low-load", figures, {"args": vars(args), "torch_threads": threads})


if __name__ == "__main__":
    main()
