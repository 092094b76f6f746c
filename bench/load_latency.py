"""Latency at a share of a pipeline's capacity, per fetch configuration, in one run.

Capacity is measured live: a sender process offers readings as fast as it can while the
runtime works them off, so the broker and the load generator take the share of the cores
they take under load (on a 2-core machine, with the broker on it, most of one). Then each
fetch configuration (``kafka.fetch_min_bytes`` / ``kafka.fetch_max_wait_ms``) runs at each
share of that capacity through ``low_load.run``: a fresh runtime in this process, the load
from another process (librdkafka, lingering 0 ms), capture → result on Kafka's clock. The
configurations alternate and the rounds repeat; each figure is the median with the runs.
``--pipeline sensors`` runs the sensor pipeline (the GRU of ``bench/sensors.py``, torch on
``default_torch_threads``) over one asset per 160 readings, as ``bench/sensors.py`` does.

Usage: python bench/load_latency.py [--pipeline passthrough|sensors] [--client confluent]
       [--shares 0.5,0.25,0.001] [--fetches 1/500,65536/10] [--seconds 15] [--repeats 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    bench_broker,
    median_figure,
    offer,
    pin_torch_threads,
    report,
    start_runtime,
    work_off,
)
from bench.low_load import percentile, run, with_policy, workload
from bench.sensors import make_model as make_sensor_model
from models.engine import default_torch_threads


def assets_for(pipeline: str, count: int) -> int:
    """Sensor assets for ``count`` readings: 160 each (7 windows), as ``bench/sensors.py``."""
    return max(1, count // 160) if pipeline == "sensors" else 16


def live_capacity(pipeline: str, bootstrap: str, work: Path, kafka: dict[str, object], count: int) -> float:
    """Readings/s ``pipeline`` works off while a sender offers ``count`` as fast as it can."""
    settings, make_stage, inputs, items = workload(
        pipeline, with_policy(bootstrap, {}, kafka), work, count, assets_for(pipeline, count)
    )
    [topic] = inputs
    stage = make_stage()
    runtime, thread, observer = start_runtime(settings, inputs, stage, "capacity")
    sender = multiprocessing.get_context("spawn").Process(target=offer, args=(settings, topic, items, None))
    try:
        while not runtime.assignment:
            time.sleep(0.01)  # wait for the group join before offering load
        sender.start()
        while not observer.consumed:
            time.sleep(0.001)  # the first record read starts the clock
        started = time.monotonic()
        work_off(observer, stage, count, timeout_s=300)
        elapsed = time.monotonic() - started
    finally:
        runtime.stop()
        thread.join()
        sender.join()
    if sum(observer.consumed.values()) < count:
        raise RuntimeError(f"the {pipeline} read {sum(observer.consumed.values())} of {count} in 300 s")
    return count / elapsed


def fetch_options(text: str) -> dict[str, object]:
    """``65536/10`` → ``fetch_min_bytes`` 65536, ``fetch_max_wait_ms`` 10."""
    min_bytes, max_wait_ms = (int(part) for part in text.split("/"))
    return {"fetch_min_bytes": min_bytes, "fetch_max_wait_ms": max_wait_ms}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pipeline", default="passthrough", choices=("passthrough", "sensors"))
    parser.add_argument("--client", default="confluent", choices=("kafka-python", "confluent"))
    parser.add_argument("--shares", default="0.5,0.25", help="shares of the live capacity offered")
    parser.add_argument(
        "--fetches", default="1/500,65536/10", help="min bytes/max wait ms; 1/500: the clients' own"
    )
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--capacity-readings", type=int, default=150_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    shares = [float(share) for share in args.shares.split(",")]
    runs: dict[tuple[str, float], list[tuple[float, float]]] = {}
    capacities: list[float] = []
    threads = pin_torch_threads(default_torch_threads())
    with tempfile.TemporaryDirectory() as tmp, bench_broker() as broker:
        work = Path(tmp)
        if args.pipeline == "sensors":
            make_sensor_model(work / "registry")
        for _ in range(args.repeats):
            capacity = live_capacity(
                args.pipeline, broker.bootstrap, work, {"client": args.client}, args.capacity_readings
            )
            capacities.append(capacity)
            print(f"live capacity {capacity:,.0f} readings/s")
            for share in shares:
                for fetch in args.fetches.split(","):
                    kafka = {"client": args.client, **fetch_options(fetch)}
                    rate = capacity * share
                    assets = assets_for(args.pipeline, int(rate * args.seconds))
                    latencies = run(
                        args.pipeline, broker.bootstrap, work, {}, args.seconds, kafka, rate, assets
                    )
                    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
                    runs.setdefault((fetch, share), []).append((p50, p99))
                    print(
                        f"fetch {fetch} at {share:.0%} ({capacity * share:,.0f}/s): p50 {p50:.0f} p99 {p99:.0f} ms"
                    )
    capacity = statistics.median(capacities)
    figures = [
        median_figure(
            f"live capacity, {args.pipeline}, {args.client}",
            capacities,
            "readings/s",
            "the sender running beside it",
        )
    ]
    for (fetch, share), found in runs.items():
        for index, name in ((0, "p50"), (1, "p99")):
            figures.append(
                median_figure(
                    f"{name} at {share:.0%} load, fetch {fetch}",
                    [f[index] for f in found],
                    "ms",
                    f"{capacity * share:,.0f}/s offered",
                )
            )
    report("load-latency", figures, {"args": vars(args), "capacities": capacities, "torch_threads": threads})


if __name__ == "__main__":
    main()
