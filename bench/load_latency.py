"""Pass-through latency at a share of its capacity, per fetch configuration, in one run.

Capacity is measured live: a sender process offers readings as fast as it can while the
runtime works them off, so the broker and the load generator take the share of the cores
they take under load (on a 2-core machine, with the broker on it, most of one). Then each
fetch configuration (``kafka.fetch_min_bytes`` / ``kafka.fetch_max_wait_ms``) runs at each
share of that capacity through ``low_load.run``: a fresh runtime in this process, the load
from another process (librdkafka, lingering 0 ms), capture → result on Kafka's clock. The
configurations alternate and the rounds repeat; each figure is the median with the runs.

Usage: python bench/load_latency.py [--client confluent] [--shares 0.5,0.25,0.001]
       [--fetches 1/500,65536/10] [--seconds 15] [--repeats 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Figure, bench_broker, bench_settings, offer, report, spread, start_runtime
from bench.low_load import percentile, run
from bench.sensors import encode, readings
from consumers.pipelines.passthrough import passthrough_stage
from schemas.messages import SensorReading


def live_capacity(bootstrap: str, kafka: dict[str, object], count: int) -> float:
    """Readings/s the pass-through works off while a sender offers ``count`` as fast as it can."""
    base = bench_settings(bootstrap)
    settings = base.model_copy(update={"kafka": base.kafka.model_copy(update=kafka)})
    topic = settings.topics.sensors.name
    items = encode(readings(count, 16, datetime.now(UTC)))
    stage = passthrough_stage(settings.topics.inferences.name)
    runtime, thread, observer = start_runtime(settings, {topic: SensorReading}, stage, "capacity")
    sender = multiprocessing.get_context("spawn").Process(target=offer, args=(settings, topic, items, None))
    try:
        while not runtime.assignment:
            time.sleep(0.01)  # wait for the group join before offering load
        sender.start()
        while not observer.consumed:
            time.sleep(0.001)  # the first record read starts the clock
        started = time.monotonic()
        deadline = started + 300
        while sum(observer.consumed.values()) < count and time.monotonic() < deadline:
            time.sleep(0.005)  # polling the runtime's counter from outside its thread
        elapsed = time.monotonic() - started
    finally:
        runtime.stop()
        thread.join()
        sender.join()
    if sum(observer.consumed.values()) < count:
        raise RuntimeError(f"the pass-through read {sum(observer.consumed.values())} of {count} in 300 s")
    return count / elapsed


def fetch_options(text: str) -> dict[str, object]:
    """``65536/10`` → ``fetch_min_bytes`` 65536, ``fetch_max_wait_ms`` 10."""
    min_bytes, max_wait_ms = (int(part) for part in text.split("/"))
    return {"fetch_min_bytes": min_bytes, "fetch_max_wait_ms": max_wait_ms}


def main() -> None:
    parser = argparse.ArgumentParser()
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
    with tempfile.TemporaryDirectory() as tmp, bench_broker() as broker:
        for _ in range(args.repeats):
            capacity = live_capacity(broker.bootstrap, {"client": args.client}, args.capacity_readings)
            capacities.append(capacity)
            print(f"live capacity {capacity:,.0f} readings/s")
            for share in shares:
                for fetch in args.fetches.split(","):
                    kafka = {"client": args.client, **fetch_options(fetch)}
                    latencies = run(
                        "passthrough", broker.bootstrap, Path(tmp), {}, args.seconds, kafka, capacity * share
                    )
                    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
                    runs.setdefault((fetch, share), []).append((p50, p99))
                    print(
                        f"fetch {fetch} at {share:.0%} ({capacity * share:,.0f}/s): p50 {p50:.0f} p99 {p99:.0f} ms"
                    )
    capacity = statistics.median(capacities)
    figures = [
        Figure(
            f"live capacity, {args.client}",
            capacity,
            "readings/s",
            f"{spread(capacities)}; the sender running beside it",
        )
    ]
    for (fetch, share), found in runs.items():
        for index, name in ((0, "p50"), (1, "p99")):
            values = [f[index] for f in found]
            figures.append(
                Figure(
                    f"{name} at {share:.0%} load, fetch {fetch}",
                    statistics.median(values),
                    "ms",
                    f"{spread(values)}; {capacity * share:,.0f}/s offered",
                )
            )
    report("load-latency", figures, {"args": vars(args), "capacities": capacities})


if __name__ == "__main__":
    main()
