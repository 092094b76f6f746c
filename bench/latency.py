"""Pass-through latency, capture → result, through ``vigil run`` as an operator starts it.

A sender process offers readings at a fixed rate (its producer lingers 0 ms: the upstream's
batching is not Vigil's); a reader in this process follows the results topic and notes
when each result arrives. Latency is arrival minus the reading's Kafka create time (same
machine, same clock). Each configuration (a client and a ``kafka.linger_ms``) runs in turn
on the same broker, in ``--repeats`` rounds; the report gives the median p50 / p99 / max of
each over its rounds, with the runs.

Usage: python bench/latency.py [--rate 100] [--seconds 15] [--lingers 20,5,0]
       [--clients kafka-python,confluent] [--repeats 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    Figure,
    bench_broker,
    bench_settings,
    median_figure,
    read_topic,
    report,
    scrape,
    vigil_run,
)
from consumers.ops.simulate import synthetic_readings
from consumers.runtime.kafka_clients import make_producer
from schemas.messages import InferenceResult
from schemas.settings import VigilSettings

ROOT = Path(__file__).resolve().parents[1]


def send(settings: VigilSettings, count: int, rate: float) -> None:
    """Offer ``count`` readings at ``rate``/s (in its own process: it must not share a GIL)."""
    producer = make_producer(settings.kafka.model_copy(update={"linger_ms": 0, "client": "confluent"}))
    started = time.monotonic()
    for n, reading in enumerate(synthetic_readings(count, assets=64)):
        due = started + n / rate
        while (left := due - time.monotonic()) > 0:
            time.sleep(min(left, 0.002))  # pacing the offered load
        producer.send(
            settings.topics.sensors.name, key=reading.asset_id.encode(), value=reading.to_json_bytes()
        )
    producer.flush()
    producer.close(5)


def latencies(settings: VigilSettings, rate: float, seconds: float) -> list[float]:
    """Capture → result arrival (s) of every reading offered, through ``vigil run``."""
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    topics = settings.topics
    reader = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "unused"})
    arrived: dict[tuple[int, int], float] = {}
    with vigil_run(settings, "latency") as port, closing(reader):
        inputs = topics.frames.partitions + topics.sensors.partitions
        deadline = time.monotonic() + 120
        while scrape(port, "vigil_assigned_partitions")["vigil_assigned_partitions"] < inputs:
            if time.monotonic() > deadline:
                raise TimeoutError("vigil run was not assigned its partitions in 120 s")
            time.sleep(0.2)  # waiting for the group to settle before offering load
        reader.assign(
            [
                TopicPartition(topics.inferences.name, p, OFFSET_END)
                for p in range(topics.inferences.partitions)
            ]
        )
        count = int(rate * seconds)
        sender = multiprocessing.get_context("spawn").Process(target=send, args=(settings, count, rate))
        sender.start()
        deadline = time.monotonic() + seconds + 60
        while len(arrived) < count and time.monotonic() < deadline:
            message = reader.poll(0.05)
            if message is None or message.error() is not None:
                continue
            now = time.time()
            evidence = InferenceResult.from_json_bytes(message.value()).evidence  # type: ignore[arg-type]
            arrived.setdefault((evidence.partition, evidence.offset), now)
        sender.join()
    sent = {(r.partition, r.offset): r.timestamp / 1000 for r in read_topic(settings, topics.sensors.name)}
    return [at - sent[key] for key, at in arrived.items() if key in sent]


def percentile_ms(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=100.0, help="readings per second offered")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--lingers", default="20,5,0", help="kafka.linger_ms values to compare")
    parser.add_argument("--clients", default="kafka-python,confluent")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over every configuration")
    args = parser.parse_args()
    runs: dict[str, list[list[float]]] = {}
    with bench_broker() as broker:
        for _ in range(args.repeats):
            for client in args.clients.split(","):
                for linger in map(int, args.lingers.split(",")):
                    base = bench_settings(broker.bootstrap)
                    settings = base.model_copy(
                        update={
                            "kafka": base.kafka.model_copy(update={"client": client, "linger_ms": linger})
                        }
                    )
                    runs.setdefault(f"{client}, linger {linger} ms", []).append(
                        latencies(settings, args.rate, args.seconds)
                    )
    figures: list[Figure] = []
    for name, values in runs.items():
        results = sum(len(run) for run in values)
        figures += [
            median_figure(
                f"{name}: p50",
                [percentile_ms(run, 50) for run in values],
                "ms",
                f"{results} results at {args.rate:g}/s",
            ),
            median_figure(f"{name}: p99", [percentile_ms(run, 99) for run in values], "ms"),
            median_figure(f"{name}: max", [max(run) * 1000 for run in values], "ms"),
        ]
    report("latency", figures, {"rate": args.rate, "latencies_s": runs})


if __name__ == "__main__":
    main()
