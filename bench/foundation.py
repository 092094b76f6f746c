"""Foundation benchmark: broker cold start, pass-through throughput against raw consume, broker RSS.

Raw consume and the pass-through alternate ``--repeats`` times on the same records (each in a
group of its own); each is reported as the median with its runs, their ratio round by round.
The cold start runs once: it downloads the broker from Maven Central.

Usage: python bench/foundation.py [--messages N] [--repeats 3] [--skip-cold]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    Figure,
    bench_broker,
    bench_settings,
    check_below,
    median_figure,
    plain_consumer,
    report,
)
from consumers.ops.local_kafka.broker import LocalKafka, resident_memory_bytes
from consumers.ops.simulate import synthetic_readings
from consumers.pipelines import build_pipeline
from consumers.runtime.kafka_clients import make_producer
from consumers.runtime.loop import StreamRuntime
from consumers.runtime.observer import CountingObserver
from schemas.settings import VigilSettings


def cold_start() -> tuple[float, float]:
    """Seconds to provision into empty caches (Maven repository too) and start, then to restart cached."""
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as m2:
        os.environ["VIGIL_CACHE_DIR"] = cache
        os.environ["MAVEN_OPTS"] = f"-Dmaven.repo.local={m2}"
        broker = LocalKafka(f"bench-cold-{uuid.uuid4().hex[:6]}")
        started = time.monotonic()
        broker.start()
        first = time.monotonic() - started
        broker.stop()
        started = time.monotonic()
        broker.start()
        cached = time.monotonic() - started
        broker.stop(purge=True)
    del os.environ["VIGIL_CACHE_DIR"], os.environ["MAVEN_OPTS"]
    return first, cached


def fill_topic(settings: VigilSettings, count: int) -> None:
    producer = make_producer(settings.kafka.model_copy(update={"linger_ms": 20}))
    for reading in synthetic_readings(count, assets=64):
        producer.send(
            settings.topics.sensors.name, key=reading.asset_id.encode(), value=reading.to_json_bytes()
        )
    producer.flush()
    producer.close()


def raw_consume_rate(settings: VigilSettings, count: int) -> float:
    """The configured client (``kafka.client``) reading the same records with no processing
    and no commits."""
    if settings.kafka.client == "confluent":
        return _raw_confluent_rate(settings, count)
    consumer = plain_consumer(settings, settings.topics.sensors.name, "raw", isolation_level="read_committed")
    seen = 0
    started = None
    while seen < count:
        for batch in consumer.poll(timeout_ms=500).values():
            started = started or time.monotonic()
            seen += len(batch)
    elapsed = time.monotonic() - (started or time.monotonic())
    consumer.close()
    return count / elapsed


def _raw_confluent_rate(settings: VigilSettings, count: int) -> float:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"raw-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([settings.topics.sensors.name])
    seen = 0
    started = None
    while seen < count:
        messages = consumer.consume(500, 0.5)
        if messages:
            started = started or time.monotonic()
            seen += sum(1 for m in messages if m.error() is None)
    elapsed = time.monotonic() - (started or time.monotonic())
    consumer.close()
    return count / elapsed


def pipeline_rate(settings: VigilSettings, count: int) -> float:
    """The runtime with the pass-through stage: consume, validate, produce a result, commit."""
    pipeline = build_pipeline("passthrough", settings)
    observer = CountingObserver()
    runtime = StreamRuntime(
        settings,
        {settings.topics.sensors.name: pipeline.inputs[settings.topics.sensors.name]},
        pipeline.stage,
        observer=observer,
        group_id=f"bench-{uuid.uuid4().hex[:6]}",
    )
    thread = threading.Thread(target=runtime.run, kwargs={"install_signal_handlers": False})
    thread.start()
    while not observer.consumed:
        time.sleep(0.001)  # wait for the first fetch to start the clock
    started = time.monotonic()
    while sum(observer.produced.values()) < count:
        time.sleep(0.01)  # polling the observer; the runtime works in its own thread
    elapsed = time.monotonic() - started
    runtime.stop()
    thread.join()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of raw consume and the pass-through")
    parser.add_argument("--skip-cold", action="store_true")
    args = parser.parse_args()
    figures = []
    if not args.skip_cold:
        first, cached = cold_start()
        figures.append(Figure("broker start, empty caches (Maven Central download)", first, "s", "one run"))
        figures.append(
            Figure("broker start, cached jars", cached, "s", f"one run; first provisioning {first:.1f} s")
        )
    raw: list[float] = []
    piped: list[float] = []
    with bench_broker() as broker:
        settings = bench_settings(broker.bootstrap)
        fill_topic(settings, args.messages)
        for _ in range(args.repeats):  # each reads the same records in a group of its own
            raw.append(raw_consume_rate(settings, args.messages))
            piped.append(pipeline_rate(settings, args.messages))
            check_below("the pass-through", piped[-1], "raw consume of the same records", raw[-1])
        rss = (resident_memory_bytes(broker.pid) or 0) / 2**20 if broker.pid else float("nan")
    figures.append(median_figure("kafka-python raw consume", raw, "msg/s"))
    figures.append(median_figure("runtime pass-through (validate, produce, commit)", piped, "msg/s"))
    figures.append(
        median_figure(
            "pass-through / raw consume, by round",
            [100 * p / r for p, r in zip(piped, raw, strict=True)],
            "%",
        )
    )
    figures.append(Figure("broker resident memory after the run", rss, "MiB", "heap capped at 512 MiB"))
    print(report("foundation", figures, {"messages": args.messages, "raw": raw, "passthrough": piped}))


if __name__ == "__main__":
    main()
