"""Vision benchmark on the real broker: the whole pipeline beside its baselines from the same run.

Figures:
- pipeline frames/s (fetch, decode, micro-batched inference, produce, commit), with decoding
  isolated in child processes (the default) and in-process, to show what isolation costs;
- (a) a per-message loop: fetch, decode, infer, produce and commit one frame at a time;
- (b) the compute ceiling: decode + inference on the same bytes held in memory, same batch size,
  same decode workers each with its decoder process (the pipeline's default), no Kafka; (b')
  the same decoding in this process, the ceiling of ``vision.decode.isolate: false``;
- (c) the model-only ceiling on pre-decoded tensors;
- latency p50/p95/p99 from capture to publish at 50% of the measured pipeline capacity;
- batch sizes reached; peak RSS of a process working off a 20,000-frame backlog.

Every throughput runs ``--repeats`` times, in rounds (model, ceiling, pipeline, pipeline with
decoding in the process, per-message loop; each pipeline on topics of its own); a figure is
the median with the runs beside it, and the ratios are taken round by round, so each compares
measurements minutes apart. A round whose pipeline beats its own compute ceiling fails the
run. Latency runs ``--repeats`` times at half the median capacity; peak RSS once (a backlog's
memory does not vary with a busy machine the way a rate does).

Usage: python bench/vision.py [--model mobilenet_v3_small] [--size 96] [--frames 3000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from kafka import KafkaConsumer, KafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    Figure,
    bench_broker,
    bench_settings,
    check_below,
    current_rss_mib,
    median_figure,
    peak_rss_mib,
    pin_torch_threads,
    plain_consumer,
    report,
    start_runtime,
)
from bench.untrained import LABELS, frame_ref, make_model
from consumers.pipelines.vision.decoder import IsolatedDecoder
from consumers.pipelines.vision.fetch import FrameFetcher
from consumers.pipelines.vision.stage import VisionStage
from consumers.runtime.kafka_clients import make_producer
from consumers.runtime.loop import StreamRuntime
from consumers.runtime.observer import CountingObserver
from models.engine import InferenceEngine, single_torch_thread
from models.registry import LoadedModel, load_model
from models.vision.image_header import check_header
from models.vision.preprocess import preprocess, stack_inputs
from models.vision.serving import served
from models.vision.synthetic import encode, product_image
from schemas.common import Evidence
from schemas.messages import FrameRef, InferenceResult
from schemas.model_card import ImageInputSpec
from schemas.settings import DecodeSettings, FetchSettings, VigilSettings


def make_images(folder: Path, count: int, size: int) -> list[Path]:
    paths = []
    for n in range(count):
        path = folder / f"{n:04d}.jpg"
        path.write_bytes(encode(product_image(LABELS[n % 4], size, seed=n), "jpeg"))
        paths.append(path)
    return paths


def configure(
    settings: VigilSettings, registry: Path, frames: Path, batch: int, workers: int, isolate: bool = True
) -> VigilSettings:
    vision = settings.vision.model_copy(
        update={
            "decode": settings.vision.decode.model_copy(update={"isolate": isolate}),
            "registry": str(registry),
            "model": "bench",
            "fetch": settings.vision.fetch.model_copy(
                update={"allowed_prefixes": [f"file://{frames}/"], "workers": workers}
            ),
            "batching": settings.vision.batching.model_copy(
                update={"max_batch_size": batch, "max_wait_ms": 20}
            ),
        }
    )
    return settings.model_copy(update={"vision": vision})


def publish_frames(
    settings: VigilSettings, images: list[Path], count: int, rate: float | None = None
) -> None:
    """Frame references cycling over ``images``; at ``rate`` per second when given."""
    producer = make_producer(settings.kafka)
    started = time.monotonic()
    for n in range(count):
        if rate is not None:
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the offered load, not synchronisation
        frame = frame_ref(n, images[n % len(images)], 16)
        producer.send(settings.topics.frames.name, key=frame.camera_id.encode(), value=frame.to_json_bytes())
    producer.flush()
    producer.close()


def serving_engine(loaded: LoadedModel, batch: int, engine: str = "auto") -> InferenceEngine:
    """The model's engine as a lane builds it under the ``vision.engine`` setting ``engine``
    (OpenVINO or traced where it may be), so that the ceilings run the model the pipeline runs."""
    return served(loaded, engine, (1, batch))


def model_only(engine: InferenceEngine, tensors: list[torch.Tensor], batch: int, batches: int) -> float:
    stacked = torch.stack([tensors[i % len(tensors)] for i in range(batch)])
    engine.run(engine.prepare(stacked))
    started = time.monotonic()
    for _ in range(batches):
        engine.run(engine.prepare(stacked))
    return batch * batches / (time.monotonic() - started)


def compute_ceiling(
    engine: InferenceEngine,
    spec: ImageInputSpec,
    images: list[Path],
    count: int,
    batch: int,
    workers: int,
    isolate: bool = True,
) -> float:
    """Fetch and decode as the pipeline does while batches infer, no Kafka: ``workers`` threads,
    each driving a worker process of its own when ``isolate`` (``vision.decode.isolate``, the
    default: fetch, hash, header check, decode, resize and normalise there, the input laid out
    as the engine takes it), else doing the same steps in this process. Threads decoding here
    contend for the GIL with the model's thread, child processes do not, so each pipeline is
    held to the ceiling of its own path.
    """
    fetch = FetchSettings(allowed_prefixes=[f"file://{images[0].parent}/"])
    decode = DecodeSettings()
    fetcher = FrameFetcher(fetch)
    decoders = [IsolatedDecoder(30.0, fetch, decode) for _ in range(workers)] if isolate else []
    for decoder in decoders:
        decoder.start()  # before the clock, as the stage starts them with itself
    spare: queue.SimpleQueue[IsolatedDecoder] = queue.SimpleQueue()
    for decoder in decoders:
        spare.put(decoder)
    state = threading.local()

    def start_worker() -> None:
        single_torch_thread()
        state.decoder = spare.get() if isolate else None

    def load(n: int) -> tuple[torch.Tensor, Callable[[], None] | None]:
        """A frame's model input, and what gives its slot back (worker processes only)."""
        uri = f"file://{images[n % len(images)]}"
        if state.decoder:
            done = state.decoder.frame(uri, None, spec, None, engine.channels_last)
            return done.pixels, done.release
        data, _ = fetcher.fetch_hashed(uri)
        header = check_header(data, decode.formats, decode.max_pixels, decode.max_pixels_per_byte)
        return preprocess(data, spec, None, header), None

    def infer(pending: list[tuple[torch.Tensor, Callable[[], None] | None]]) -> None:
        inputs = stack_inputs([pixels for pixels, _ in pending], engine.channels_last)
        for _, release in pending:  # stacked: the slots are free again, as a lane's outcomes free them
            if release is not None:
                release()
        engine.run(engine.prepare(inputs))

    try:
        started = time.monotonic()
        with ThreadPoolExecutor(workers, initializer=start_worker) as pool:
            pending: list[tuple[torch.Tensor, Callable[[], None] | None]] = []
            # batched in the order frames finish, as the lane batches them: a batch never waits
            # on one frame while the worker that owes it has every slot held by the batch
            for done in as_completed([pool.submit(load, n) for n in range(count)]):
                pending.append(done.result())
                if len(pending) == batch:
                    infer(pending)
                    pending = []
            if pending:
                infer(pending)
        return count / (time.monotonic() - started)
    finally:
        for decoder in decoders:
            decoder.close()


def per_message_loop(
    settings: VigilSettings, engine: InferenceEngine, spec: ImageInputSpec, count: int
) -> float:
    """One frame at a time, as most tutorials do: poll 1, read, decode, infer, produce and wait, commit."""
    consumer = plain_consumer(settings, settings.topics.frames.name, "loop", max_poll_records=1)
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    done = 0
    started = None
    while done < count:
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                started = started or time.monotonic()
                frame = FrameRef.from_json_bytes(record.value)
                image = preprocess(Path(frame.uri.removeprefix("file://")).read_bytes(), spec)
                scores = engine.run(engine.prepare(image.unsqueeze(0)))[0].tolist()
                result = InferenceResult(
                    result_id=f"{record.partition}-{record.offset}",
                    pipeline="vision",
                    source_id=frame.camera_id,
                    scores=dict(zip(LABELS, scores, strict=True)),
                    evidence=Evidence(topic=record.topic, partition=record.partition, offset=record.offset),
                    captured_at=frame.captured_at,
                    inferred_at=datetime.now(UTC),
                )
                producer.send(settings.topics.inferences.name, value=result.to_json_bytes()).get(timeout=30)
                consumer.commit()
                done += 1
    elapsed = time.monotonic() - (started or time.monotonic())
    consumer.close()
    producer.close()
    return count / elapsed


def run_pipeline(settings: VigilSettings, count: int) -> tuple[float, dict[int, int]]:
    """Frames/s of the whole pipeline over ``count`` frames already in the topic; batch sizes reached."""
    stage = VisionStage(settings)
    runtime, thread, observer = start_runtime(
        settings, {settings.topics.frames.name: FrameRef}, stage, "pipe"
    )
    while not observer.consumed:
        time.sleep(0.001)  # the clock starts at the first fetch
    started = time.monotonic()
    inferences = settings.topics.inferences.name
    while observer.produced[inferences] < count:
        time.sleep(0.01)  # polling the observer; the runtime works in its own thread
    elapsed = time.monotonic() - started
    runtime.stop()
    thread.join()
    return count / elapsed, dict(stage.default_lane.batcher.batch_sizes)


def latency_at(settings: VigilSettings, images: list[Path], rate: float, seconds: float) -> list[float]:
    """Capture → publish latencies (s) of results while frames arrive at ``rate`` per second."""
    count = int(rate * seconds)
    observer = CountingObserver()
    runtime = StreamRuntime(
        settings,
        {settings.topics.frames.name: FrameRef},
        VisionStage(settings),
        observer=observer,
        group_id=f"lat-{uuid.uuid4().hex[:6]}",
    )
    thread = threading.Thread(target=runtime.run, kwargs={"install_signal_handlers": False})
    thread.start()
    while not runtime.assignment:
        time.sleep(0.01)  # wait for the group join before offering load
    publish_frames(settings, images, count, rate)
    while observer.produced[settings.topics.inferences.name] < count:
        time.sleep(0.01)
    runtime.stop()
    thread.join()
    consumer = KafkaConsumer(
        settings.topics.inferences.name,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    latencies: list[float] = []
    while len(latencies) < count:
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                result = InferenceResult.from_json_bytes(record.value)
                latencies.append(record.timestamp / 1000 - result.captured_at.timestamp())
    consumer.close()
    return latencies


def backlog_phase(args: argparse.Namespace) -> None:
    """Run in a child process: load the model, then work off ``--frames`` queued frames; print RSS."""
    settings = VigilSettings.model_validate_json(args.settings)
    VisionStage(settings).close()  # model load and warm-up, as at service start
    after_start = current_rss_mib()
    run_pipeline(settings, args.frames)
    print(
        json.dumps({"after_start_mib": after_start, "end_mib": current_rss_mib(), "peak_mib": peak_rss_mib()})
    )


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000


RATES = ("model", "ceiling", "ceiling_in_process", "pipeline", "in_process", "loop")
"""The throughputs one round measures (img/s or frames/s)."""


@dataclass(frozen=True)
class BenchModel:
    """The bench model as a lane serves it, with its frames: the same for every round."""

    engine: InferenceEngine
    spec: ImageInputSpec
    tensors: list[torch.Tensor]


def measure_round(
    args: argparse.Namespace, bootstrap: str, registry: Path, frames: Path, model: BenchModel
) -> tuple[dict[str, float], dict[int, int]]:
    """One round of every throughput, each pipeline on topics of its own; the batch sizes the
    pipeline reached. A pipeline faster than its own compute ceiling fails the run."""
    images = sorted(frames.glob("*.jpg"))
    rates = {
        "model": model_only(model.engine, model.tensors, args.batch, 30),
        "ceiling": compute_ceiling(model.engine, model.spec, images, 2000, args.batch, args.workers),
        "ceiling_in_process": compute_ceiling(
            model.engine, model.spec, images, 2000, args.batch, args.workers, isolate=False
        ),
    }

    def topics(isolate: bool = True) -> VigilSettings:
        return configure(bench_settings(bootstrap), registry, frames, args.batch, args.workers, isolate)

    isolated = topics()
    publish_frames(isolated, images, args.frames)
    rates["pipeline"], batch_sizes = run_pipeline(isolated, args.frames)
    check_below("the pipeline", rates["pipeline"], "its compute ceiling", rates["ceiling"])
    check_below("the compute ceiling", rates["ceiling"], "the model-only ceiling", rates["model"])
    in_process = topics(isolate=False)
    publish_frames(in_process, images, args.frames)
    rates["in_process"], _ = run_pipeline(in_process, args.frames)
    check_below(
        "the in-process pipeline", rates["in_process"], "its compute ceiling", rates["ceiling_in_process"]
    )
    loop = topics()
    publish_frames(loop, images, args.per_message)
    rates["loop"] = per_message_loop(loop, model.engine, model.spec, args.per_message)
    return rates, batch_sizes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mobilenet_v3_small")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--per-message", type=int, default=300)
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every throughput and latency run")
    parser.add_argument("--phase", default="all")
    parser.add_argument("--settings", default="")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the model (pinned)")
    args = parser.parse_args()
    pin_torch_threads(args.threads)
    if args.phase == "backlog":
        return backlog_phase(args)

    work = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    registry, frames = work / "registry", work / "frames"
    frames.mkdir()
    make_model(registry, args.model, args.size)
    images = make_images(frames, 64, max(128, args.size + 32))
    blobs = [p.read_bytes() for p in images]
    loaded = load_model(registry, "bench")
    spec = loaded.card.input
    assert isinstance(spec, ImageInputSpec)
    engine = serving_engine(loaded, args.batch)
    model = BenchModel(engine, spec, [preprocess(b, spec) for b in blobs])

    rounds: list[dict[str, float]] = []
    batch_sizes: Counter[int] = Counter()
    latency_runs: list[tuple[float, float, float]] = []
    with bench_broker() as broker:
        for _ in range(args.repeats):
            rates, sizes = measure_round(args, broker.bootstrap, registry, frames, model)
            rounds.append(rates)
            batch_sizes.update(sizes)
        capacity = statistics.median(r["pipeline"] for r in rounds)
        for _ in range(args.repeats):
            latency_settings = configure(
                bench_settings(broker.bootstrap), registry, frames, args.batch, args.workers
            )
            latencies = latency_at(latency_settings, images, capacity / 2, args.latency_seconds)
            latency_runs.append(
                (percentile(latencies, 50), percentile(latencies, 95), percentile(latencies, 99))
            )
        backlog_settings = configure(
            bench_settings(broker.bootstrap), registry, frames, args.batch, args.workers
        )
        publish_frames(backlog_settings, images, args.backlog)
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--phase",
                "backlog",
                "--frames",
                str(args.backlog),
                "--settings",
                backlog_settings.model_dump_json(),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        memory = json.loads(child.stdout.strip().splitlines()[-1])

    runs = {name: [r[name] for r in rounds] for name in RATES}
    of_ceiling = [100 * r["pipeline"] / r["ceiling"] for r in rounds]
    in_process_of_ceiling = [100 * r["in_process"] / r["ceiling_in_process"] for r in rounds]
    of_loop = [r["pipeline"] / r["loop"] for r in rounds]
    isolation = [1 - r["pipeline"] / r["in_process"] for r in rounds]
    mean_batch = sum(size * n for size, n in batch_sizes.items()) / max(1, sum(batch_sizes.values()))
    figures = [
        median_figure(
            "(c) model-only ceiling, pre-decoded tensors", runs["model"], "img/s", f"batch {args.batch}"
        ),
        median_figure(
            "(b) compute ceiling: decode + infer in memory",
            runs["ceiling"],
            "img/s",
            f"{args.workers} decode workers, each with its decoder process",
        ),
        median_figure(
            "(b') the same, decoding in this process",
            runs["ceiling_in_process"],
            "img/s",
            f"{args.workers} decode threads",
        ),
        median_figure("(a) per-message loop on the broker", runs["loop"], "frames/s"),
        median_figure("pipeline on the broker", runs["pipeline"], "frames/s"),
        median_figure("pipeline / compute ceiling, by round", of_ceiling, "%"),
        median_figure("pipeline / per-message loop, by round", of_loop, "x"),
        median_figure(
            "pipeline, decoding in-process (decode.isolate: false)",
            runs["in_process"],
            "frames/s",
            f"isolation costs {statistics.median(isolation):.0%} of throughput (median of rounds)",
        ),
        median_figure("in-process pipeline / its compute ceiling (b'), by round", in_process_of_ceiling, "%"),
        median_figure(
            "latency p50 at 50% capacity",
            [run[0] for run in latency_runs],
            "ms",
            f"offered {capacity / 2:.0f} frames/s",
        ),
        median_figure("latency p95 at 50% capacity", [run[1] for run in latency_runs], "ms"),
        median_figure("latency p99 at 50% capacity", [run[2] for run in latency_runs], "ms"),
        Figure("mean batch size reached", mean_batch, "items", f"max {args.batch}, all rounds"),
        Figure(
            f"peak RSS, {args.backlog:,}-frame backlog",
            memory["peak_mib"],
            "MiB",
            f"one run; {memory['after_start_mib']:.0f} MiB after start-up, {memory['end_mib']:.0f} MiB at the end",
        ),
    ]
    print(
        report(
            "vision",
            figures,
            {
                "model": args.model,
                "size": args.size,
                "rounds": rounds,
                "latency_runs_ms": latency_runs,
                "batch_sizes": dict(batch_sizes),
                "device": str(engine.device),
            },
        )
    )


if __name__ == "__main__":
    main()
