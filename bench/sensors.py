"""Sensor benchmark: the whole sensor pipeline on the real broker, windows of 64 scored every 16
by a 2-layer GRU autoencoder of hidden size 64.

Figures, each beside its baseline from the same run:
- events/s of the pipeline (consume, window, micro-batched GRU, publish, commit) against
  (a) the default client's raw consume of the same records, (b) the same pipeline scoring each
  window on its own (batch size 1) and (c) the per-message Quix Streams peer
  (``quix_sensors.py``: the same readings, windows, model and result records, one message
  and one window at a time), each repeated ``--repeats`` times in an order rotated each round,
  median and runs; the pipeline on the other client (kafka-python) runs in each round too;
- latency event → published window result (the alerts of a window ride in the same
  outcome) at half and a quarter of the measured capacity: p50/p95/p99; at half also with
  every asset's windows due on the same ticks (``stagger_windows: false``), the baseline.
  The readings come from another process (``bench.common.offer``), one per asset per second
  of event time, every asset on the same tick;
- memory of 10,000 assets with full windows: the stage's window bytes and the process RSS;
- the stage's admission time per sample of 32-sample blocks with a threshold and a range rule
  (no broker: ``submit`` alone), against the same stage with its numpy runs off (each sample
  through the rules and into its window on its own), alternating, repeated.

Usage: python bench/sensors.py [--readings N] [--assets A] [--per-window N] [--latency-seconds S]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import consumers.pipelines.sensors.admission as admission_steps
import models.sensors.windows as window_steps
from bench.common import (
    Figure,
    bench_broker,
    bench_settings,
    broker_latencies_ms,
    check_below,
    current_rss_mib,
    offer,
    offer_from_elsewhere,
    pin_torch_threads,
    report,
    require_peers,
    run_peer,
    spread,
    start_runtime,
    work_off,
)
from bench.foundation import raw_consume_rate
from consumers.pipelines.sensors.stage import SensorStage
from consumers.runtime.observer import CountingObserver
from consumers.runtime.records import InboundRecord, Work
from models.sensors.synthetic import MACHINE_CHANNELS, normal_machines
from models.sensors.training import SensorTraining, train_sensor_model
from schemas.messages import SampleBlock, SensorReading
from schemas.settings import BatchingSettings, SensorModelBinding, SensorRule, SensorSettings, VigilSettings

OTHER_CLIENT = "kafka-python"
"""The client beside the default (confluent) in each round."""

WINDOW, STRIDE, HIDDEN = 64, 16, 64


def make_model(registry: Path) -> None:
    train_sensor_model(
        normal_machines(2, 400),
        registry,
        "bench-gru",
        "1",
        SensorTraining(window=WINDOW, stride=STRIDE, epochs=1, hidden=HIDDEN, layers=2, normal_fraction=1.0),
    )


def configure(settings: VigilSettings, registry: Path, batch: int) -> VigilSettings:
    sensors = SensorSettings(
        registry=str(registry),
        models=[SensorModelBinding(assets="*", model="bench-gru")],
        batching=BatchingSettings(
            max_batch_size=batch, max_wait_ms=10.0 if batch > 1 else 0.0, max_queue=8192
        ),
        max_past_s=None,
    )
    return settings.model_copy(update={"sensors": sensors})


def readings(count: int, assets: int, start: datetime) -> list[SensorReading]:
    """``count`` readings, one per asset per second, in time order."""
    rng = np.random.default_rng(0)
    values = rng.normal([60.0, 2.0], [0.5, 0.1], size=(count, 2))
    return [
        SensorReading(
            asset_id=f"machine-{i % assets}",
            sensor_id=f"machine-{i % assets}-th",
            kind="machine",
            event_time=start + timedelta(seconds=i // assets),
            values=dict(zip(MACHINE_CHANNELS, map(float, values[i]), strict=True)),
        )
        for i in range(count)
    ]


def encode(items: list[SensorReading]) -> list[tuple[bytes, bytes]]:
    """The records of ``items``: key and value."""
    return [(reading.asset_id.encode(), reading.to_json_bytes()) for reading in items]


def publish(settings: VigilSettings, items: list[SensorReading]) -> None:
    """Send ``items`` to the sensor topic at once (``offer``)."""
    offer(settings, settings.topics.sensors.name, encode(items), None, linger_ms=20)


def pipeline_rate(settings: VigilSettings, count: int) -> tuple[float, CountingObserver]:
    """Events/s of the sensor pipeline working off ``count`` queued readings."""
    stage = SensorStage(settings)
    runtime, thread, observer = start_runtime(
        settings, {settings.topics.sensors.name: SensorReading}, stage, "bench"
    )
    while not observer.consumed:
        time.sleep(0.001)  # the first fetch starts the clock
    started = time.monotonic()
    work_off(observer, stage, count)
    elapsed = time.monotonic() - started
    runtime.stop()
    thread.join()
    return count / elapsed, observer


def latencies_at(settings: VigilSettings, rate: float, seconds: float, assets: int) -> list[float]:
    """Reading sent → window result published (s), while readings arrive at ``rate``/s.

    From the reading that completed the window (its CreateTime, stamped by the load generator)
    to the result's append on the broker (LogAppendTime): ``broker_latencies_ms``.
    """
    # The load is encoded before the runtime starts, and no reading object outlives it: the
    # pipeline's process must not carry the load generator's objects. Held there, 230,000
    # readings made each full collection of the pipeline's process walk them (130-290 ms).
    encoded = encode(readings(int(rate * seconds), assets, datetime.now(UTC) - timedelta(hours=1)))
    stage = SensorStage(settings)
    runtime, thread, observer = start_runtime(
        settings, {settings.topics.sensors.name: SensorReading}, stage, "lat"
    )
    while not runtime.assignment:
        time.sleep(0.01)  # wait for the group join before offering load
    offer_from_elsewhere(settings, settings.topics.sensors.name, encoded, rate)
    work_off(observer, stage, len(encoded))
    runtime.stop()
    thread.join()
    return [ms / 1000 for ms in broker_latencies_ms(settings, settings.topics.sensors.name)]


def memory_with(assets: int, registry: Path) -> tuple[float, float, float]:
    """(window MiB, RSS growth MiB, RSS MiB) after ``assets`` assets each filled one window."""
    settings = configure(VigilSettings(), registry, 256)
    no_history = settings.sensors.model_copy(update={"rebuild_history_s": 0.0})  # no broker here to read back
    stage = SensorStage(settings.model_copy(update={"sensors": no_history}))
    stage.on_assignment({("bench", 0)})
    before = current_rss_mib()
    start = datetime.now(UTC) - timedelta(hours=1)
    now_ms = int(time.time() * 1000)
    received = datetime.now(UTC)
    offset = 0
    for tick in range(WINDOW):
        batch = []
        for item in readings(assets, assets, start + timedelta(seconds=tick)):
            batch.append(Work(InboundRecord("bench", 0, offset, None, None, (), now_ms), item, received))
            offset += 1
        stage.submit(batch)
        stage.collect(0.0)
    while stage.in_flight():
        stage.collect(0.05)
    windows = stage.memory_bytes() / 2**20
    after = current_rss_mib()
    stage.close()
    return windows, after - before, after


def block_readings(count: int, assets: int, samples: int, start: datetime) -> list[SensorReading]:
    """``count`` readings of ``samples``-sample blocks at 1 Hz, one per asset per block span."""
    rng = np.random.default_rng(1)
    values = rng.normal([60.0, 2.0], [0.5, 0.1], size=(count, samples, 2))
    return [
        SensorReading(
            asset_id=f"machine-{i % assets}",
            sensor_id=f"machine-{i % assets}-th",
            kind="machine",
            event_time=start + timedelta(seconds=(i // assets) * samples),
            block=SampleBlock(
                sample_rate_hz=1.0,
                channels={c: values[i, :, k].tolist() for k, c in enumerate(MACHINE_CHANNELS)},
            ),
        )
        for i in range(count)
    ]


def admission_us_per_sample(registry: Path, items: list[SensorReading], on_arrays: bool) -> float:
    """µs of the stage's admission (``submit``) per sample, polls of 500 readings from 6
    partitions (an asset's readings on one), with a threshold and a range rule; numpy runs off
    (each sample on its own) unless ``on_arrays``."""
    rules = [
        SensorRule(name="hot", kind="threshold", channel="temp_c", limit=61.5, for_s=5.0, n=2, m=3),
        SensorRule(name="shaky", kind="range", channel="vibration_mm_s", high=2.3),
    ]
    settings = configure(VigilSettings(), registry, 256)
    sensors = settings.sensors.model_copy(update={"rebuild_history_s": 0.0, "rules": rules})
    stage = SensorStage(settings.model_copy(update={"sensors": sensors}))
    stage.on_assignment({("bench", p) for p in range(6)})
    now_ms, received = int(time.time() * 1000), datetime.now(UTC)
    works = [
        Work(
            InboundRecord("bench", zlib.crc32(r.asset_id.encode()) % 6, n, None, None, (), now_ms),
            r,
            received,
        )
        for n, r in enumerate(items)
    ]
    vector_min = admission_steps.VECTOR_MIN, window_steps.VECTOR_MIN
    if not on_arrays:
        admission_steps.VECTOR_MIN = window_steps.VECTOR_MIN = 10**9
    try:
        spent = 0.0
        for begin in range(0, len(works), 500):
            started = time.perf_counter()
            stage.submit(works[begin : begin + 500])
            spent += time.perf_counter() - started
            stage.collect(0.0)
        while stage.in_flight():
            stage.collect(0.05)
    finally:
        admission_steps.VECTOR_MIN, window_steps.VECTOR_MIN = vector_min
        stage.close()
    samples = sum(len(r.block.channels[MACHINE_CHANNELS[0]]) for r in items if r.block is not None)
    return spent / samples * 1e6


def quix_sensor_rate(settings: VigilSettings, registry: Path, count: int, threads: int) -> float:
    """Readings/s of the per-message Quix Streams peer over the same topic, in a fresh group."""
    result = run_peer(
        "quix_sensors.py",
        settings.kafka.bootstrap_servers,
        settings.topics.sensors.name,
        settings.topics.inferences.name + ".quix",
        str(count),
        str(registry),
        "bench-gru",
        str(threads),
    )
    return float(result["rate"])


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readings", type=int, default=160_000)
    parser.add_argument("--assets", type=int, default=1_000, help="160 readings each gives 7 windows each")
    parser.add_argument("--per-window", type=int, default=32_000)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--memory-assets", type=int, default=10_000)
    parser.add_argument(
        "--block-readings", type=int, default=2_000, help="32-sample blocks for the admission figure"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the model (pinned)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of Vigil and the Quix peer, alternating")
    args = parser.parse_args()
    pin_torch_threads(args.threads)
    require_peers()

    registry = Path(tempfile.mkdtemp(prefix="vigil-bench-sensors-")) / "registry"
    make_model(registry)
    start = datetime.now(UTC) - timedelta(hours=1)
    with bench_broker() as broker:
        settings = configure(bench_settings(broker.bootstrap), registry, 256)
        publish(settings, readings(args.readings, args.assets, start))
        on_other = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"client": OTHER_CLIENT})}
        )
        rates: list[float] = []
        raws: list[float] = []
        other_rates: list[float] = []
        peer: list[float] = []
        produced: list[int] = []

        def run_pipeline() -> None:
            run_rate, observer = pipeline_rate(settings, args.readings)
            rates.append(run_rate)
            produced.append(observer.produced[settings.topics.inferences.name])

        contenders: list[Callable[[], None]] = [
            run_pipeline,
            lambda: raws.append(raw_consume_rate(settings, args.readings)),
            lambda: other_rates.append(pipeline_rate(on_other, args.readings)[0]),
            lambda: peer.append(quix_sensor_rate(settings, registry, args.readings, args.threads)),
        ]
        for round_ in range(args.repeats):  # every run reads the same topic in a group of its own
            # each round in another order, each baseline measured in every round
            shift = round_ % len(contenders)
            for run in contenders[shift:] + contenders[:shift]:
                run()
            check_below("the sensor pipeline", rates[-1], "raw consume of the same records", raws[-1])
        rate, quix, raw = statistics.median(rates), statistics.median(peer), statistics.median(raws)
        other_rate = statistics.median(other_rates)
        windows = produced[-1]
        single = configure(bench_settings(broker.bootstrap), registry, 1)
        publish(single, readings(args.per_window, max(1, args.per_window // 160), start))
        single_rate, _ = pipeline_rate(single, args.per_window)
        latencies: dict[tuple[float, str], list[float]] = {}
        # Each load offered to fresh topics (no backlog carried over); at half load also with
        # every asset's windows on the same ticks, the baseline of staggered windows.
        for share, staggered in ((0.5, True), (0.5, False), (0.25, True)):
            offered = rate * share
            latency = configure(bench_settings(broker.bootstrap), registry, 256)
            latency = latency.model_copy(
                update={"sensors": latency.sensors.model_copy(update={"stagger_windows": staggered})}
            )
            assets = max(1, int(offered * args.latency_seconds / 160))
            windows_due = "staggered" if staggered else "aligned windows (before)"
            latencies[(share, windows_due)] = latencies_at(latency, offered, args.latency_seconds, assets)
    window_mib, growth_mib, rss_mib = memory_with(args.memory_assets, registry)
    blocks = block_readings(args.block_readings, 200, 32, start)
    per_sample: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.repeats):
        for on_arrays in (True, False):
            per_sample[on_arrays].append(admission_us_per_sample(registry, blocks, on_arrays))
    figures = [
        Figure(
            "sensor pipeline",
            rate,
            "events/s",
            f"{spread(rates)}; raw consume {raw:,.0f}/s, {spread(raws)} ({rate / raw:.2f}x)",
        ),
        Figure(
            "sensor pipeline",
            rate,
            "events/s",
            f"per-message Quix Streams peer {quix:,.0f}/s, {spread(peer)} ({rate / quix:.1f}x)",
        ),
        Figure(
            "sensor pipeline",
            rate,
            "events/s",
            f"one window at a time {single_rate:,.0f}/s ({rate / single_rate:.1f}x)",
        ),
        Figure(
            f"sensor pipeline, kafka.client: {OTHER_CLIENT}",
            other_rate,
            "events/s",
            f"{spread(other_rates)}; {other_rate / quix:.1f}x the Quix Streams peer, "
            f"{other_rate / rate:.2f}x the default client",
        ),
        Figure("windows scored", windows / (args.readings / rate), "windows/s", f"{windows} windows"),
        *(
            Figure(
                f"latency p{q} at {share:.0%} load, {windows_due}",
                percentile(lat, q),
                "ms",
                f"{rate * share:,.0f} events/s offered",
            )
            for (share, windows_due), lat in latencies.items()
            for q in (50, 95, 99)
        ),
        Figure(
            "admission of 32-sample blocks, rules on",
            statistics.median(per_sample[True]),
            "µs/sample",
            f"{', '.join(f'{v:.2f}' for v in per_sample[True])}; each sample on its own "
            f"{statistics.median(per_sample[False]):.2f} ({', '.join(f'{v:.2f}' for v in per_sample[False])})",
        ),
        Figure(
            f"window state, {args.memory_assets:,} assets",
            window_mib,
            "MiB",
            f"process RSS grew {growth_mib:,.0f} MiB to {rss_mib:,.0f} MiB",
        ),
    ]
    report("sensors", figures, {"args": vars(args)})


if __name__ == "__main__":
    main()
