"""Shared bench helpers: timing, tables and the JSON report."""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from rich.console import Console
from rich.table import Table

from consumers.ops.broker_session import with_bootstrap
from consumers.ops.local_kafka.broker import LocalKafka
from consumers.ops.topics import create_topics
from consumers.runtime.kafka_clients import librdkafka_producer_config
from consumers.runtime.loop import StreamRuntime
from consumers.runtime.observer import CountingObserver
from consumers.runtime.stage import ProcessingStage
from schemas.common import Message
from schemas.settings import TopicSpec, TopicsSettings, VigilSettings

RESULTS = Path(__file__).with_name("results")
PEER_PYTHON = Path(__file__).resolve().parents[1] / ".venv-quix" / "bin" / "python"
"""The Quix Streams peers' own environment (``make bench-peers-env``)."""


def spread(values: list[float], digits: int = 0) -> str:
    """Median, and the runs."""
    return f"median of {', '.join(f'{v:,.{digits}f}' for v in values)}"


def require_peers() -> None:
    """Stop the run, saying how to fix it, when the peers' environment is missing."""
    if not PEER_PYTHON.exists():
        sys.exit(f"no peer environment at {PEER_PYTHON.parent.parent}: run `make bench-peers-env`")


def run_peer(script: str, *arguments: str) -> dict[str, Any]:
    """Run a peer (``bench/<script>``) in its own environment; its last stdout line, as JSON."""
    done = subprocess.run(
        [str(PEER_PYTHON), str(Path(__file__).with_name(script)), *arguments],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@dataclass
class Figure:
    """One measured figure and what it is compared with."""

    name: str
    value: float
    unit: str
    baseline: str = ""


def median_figure(name: str, runs: list[float], unit: str, baseline: str = "") -> Figure:
    """A figure as the median of its runs, the runs named in the baseline column."""
    return Figure(name, statistics.median(runs), unit, "; ".join(filter(None, [spread(runs, 1), baseline])))


def pin_torch_threads(threads: int) -> int:
    """Set torch's intra-op threads for the whole run (a benchmark states it, never inherits it)."""
    import torch

    torch.set_num_threads(threads)
    return threads


class MeasurementError(SystemExit):
    """A figure that contradicts its own baseline: the run was disturbed, its figures are void."""


def check_below(name: str, value: float, ceiling_name: str, ceiling: float, slack: float = 1.1) -> None:
    """Fail the run when ``value`` exceeds ``ceiling`` (by more than ``slack``): a pipeline
    cannot be faster than its own compute ceiling, so one of the two was measured wrong
    (usually the ceiling, under a machine busy with something else)."""
    if value > ceiling * slack:
        raise MeasurementError(
            f"measurement error: {name} ({value:,.1f}) is {value / ceiling:.2f}x {ceiling_name} "
            f"({ceiling:,.1f}); the machine was busy while one of them ran. Rerun on a quiet machine."
        )


def machine() -> dict[str, Any]:
    """Facts about where the run happened, with the load average (1, 5, 15 min) as it ended."""
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load average": " / ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


def report(title: str, figures: list[Figure], extra: dict[str, Any] | None = None) -> Path:
    """Print a table and write ``results/<title>-<time>.json``."""
    table = Table(title=title)
    for column in ("figure", "value", "unit", "baseline (same run)"):
        table.add_column(column)
    for f in figures:
        table.add_row(f.name, f"{f.value:,.1f}", f.unit, f.baseline)
    Console().print(table)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{title}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {"title": title, "machine": machine(), "figures": [f.__dict__ for f in figures], **(extra or {})},
            indent=2,
        )
    )
    return path


@dataclass(frozen=True)
class BenchBroker:
    """The broker of a benchmark run: its address, and its pid when it is a local broker."""

    bootstrap: str
    pid: int | None


@contextmanager
def bench_broker() -> Iterator[BenchBroker]:
    """A local broker for one benchmark run (or the cluster of ``KAFKA_BOOTSTRAP_SERVERS``)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield BenchBroker(os.environ["KAFKA_BOOTSTRAP_SERVERS"], None)
        return
    broker = LocalKafka(f"bench-{uuid.uuid4().hex[:6]}")
    info = broker.start()
    try:
        yield BenchBroker(info.bootstrap_servers, info.pid)
    finally:
        broker.stop(purge=True)


OUTPUTS = ("alerts", "inferences", "dlq")
APPEND_TIME_CONFIG = {"message.timestamp.type": "LogAppendTime"}
"""Bench output topics stamp each record with the broker's clock when it is appended: a
latency ends there, never at the stamp of Vigil's own producer (before its linger and send)."""
LOG_APPEND_TIME = 1
"""kafka-python's ``timestamp_type`` of a LogAppendTime record."""


def plain_consumer(settings: VigilSettings, topic: str, group_prefix: str, **config: Any) -> KafkaConsumer:
    """kafka-python's own consumer, as a tutorial writes it: ``topic`` from the earliest offset
    in a fresh group, no auto-commit (not the runtime's seam)."""
    return KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=f"{group_prefix}-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **config,
    )


def read_topic(settings: VigilSettings, topic: str) -> list[Any]:
    """Every record of ``topic`` as it stands now."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False, group_id=None
    )
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    ends = consumer.end_offsets(partitions)
    records: list[Any] = []
    while any(consumer.position(tp) < ends[tp] for tp in partitions):
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    consumer.close()
    return records


def broker_latencies_ms(settings: VigilSettings, input_topic: str) -> list[float]:
    """Per scored result: its input's CreateTime (the load generator's stamp) → the result's
    LogAppendTime on the broker; the input is found by the result's evidence."""
    from schemas.messages import InferenceResult

    sent = {(r.partition, r.offset): r.timestamp for r in read_topic(settings, input_topic)}
    latencies = []
    for record in read_topic(settings, settings.topics.inferences.name):
        if record.timestamp_type != LOG_APPEND_TIME:
            raise SystemExit(f"{record.topic} is not stamped by the broker (LogAppendTime): no latency read")
        result = InferenceResult.from_json_bytes(record.value)
        if result.outcome == "scored":
            latencies.append(
                float(record.timestamp - sent[(result.evidence.partition, result.evidence.offset)])
            )
    return latencies


def bench_settings(bootstrap: str, **topic_partitions: int) -> VigilSettings:
    """Default settings on ``bootstrap`` with topics unique to this run, created."""
    tag = uuid.uuid4().hex[:6]
    base = VigilSettings()
    # the sensor state changelog has as many partitions as the sensor topic
    topic_partitions.setdefault("sensor_state", topic_partitions.get("sensors", 6))
    specs = {
        name: TopicSpec(
            name=f"bench-{tag}.{name}",
            partitions=topic_partitions.get(name, 6),
            config={**getattr(base.topics, name).config, **(APPEND_TIME_CONFIG if name in OUTPUTS else {})},
        )
        for name in ("frames", "sensors", "alerts", "inferences", "dlq", "redrive_log", "sensor_state")
    }
    settings = with_bootstrap(base.model_copy(update={"topics": TopicsSettings(**specs)}), bootstrap)
    create_topics(settings)
    return settings


PACING_TICK_S = 0.001
"""The load generator's pacing step: records are stamped when sent, so it adds nothing to a
measured latency."""


def offer(
    settings: VigilSettings,
    topic: str,
    items: list[tuple[bytes, bytes]],
    rate: float | None,
    linger_ms: int = 5,
) -> None:
    """Send encoded ``(key, value)`` records to ``topic`` at ``rate``/s (all at once for None).

    The load generator of the latency benches. It uses librdkafka whatever the pipeline's
    client: on a 2-core machine a kafka-python sender took a whole core at 8,600 records/s,
    leaving the pipeline under test one, where the sensors and cameras it stands for are other
    machines. It asks for the topic's metadata before the first record: librdkafka connects in
    the background, and records queued meanwhile waited up to a second. It is not idempotent:
    an idempotent librdkafka producer holds its first records until the broker has given it a
    producer id, and in half the runs that took ~490 ms after the clock had started, which
    showed as a start-of-run tail of the pipeline under test (devices upstream have long had
    theirs).
    """
    config = librdkafka_producer_config(settings.kafka.model_copy(update={"linger_ms": linger_ms}))
    producer = Producer({**config, "enable.idempotence": False})
    producer.list_topics(topic, timeout=30)
    started = time.monotonic()
    for n, (key, value) in enumerate(items):
        if rate is not None and (left := started + n / rate - time.monotonic()) > 0:
            # Pacing in ticks: the records due within one go out together. Sleeping before
            # each record cost the sender twice the CPU (0.32 against 0.16 cores at 11,500/s),
            # taken from the two cores the pipeline under test runs on.
            time.sleep(max(left, PACING_TICK_S))
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:  # librdkafka's queue is full: let it drain
                producer.poll(0.01)
        producer.poll(0)
    if producer.flush(60) > 0:
        raise RuntimeError(f"{topic}: records left undelivered after 60 s")


def offer_from_elsewhere(
    settings: VigilSettings, topic: str, items: list[tuple[bytes, bytes]], rate: float, linger_ms: int = 5
) -> None:
    """``offer`` from a process of its own, as sensors and cameras would: the load must not
    share the pipeline's GIL. Returns once everything is sent."""
    sender = multiprocessing.get_context("spawn").Process(
        target=offer, args=(settings, topic, items, rate, linger_ms)
    )
    sender.start()
    sender.join()
    if sender.exitcode != 0:
        raise RuntimeError(f"the load generator for {topic} exited with {sender.exitcode}")


def peak_rss_mib() -> float:
    """This process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    """This process's resident memory now."""
    from consumers.ops.local_kafka.broker import resident_memory_bytes

    return (resident_memory_bytes(os.getpid()) or 0) / 2**20


def start_runtime(
    settings: VigilSettings, inputs: dict[str, type[Message]], stage: ProcessingStage, group: str
) -> tuple[StreamRuntime, threading.Thread, CountingObserver]:
    """A runtime on its own thread and a fresh group; the observer counts what it does."""
    observer = CountingObserver()
    runtime = StreamRuntime(
        settings, inputs, stage, observer=observer, group_id=f"{group}-{uuid.uuid4().hex[:6]}"
    )
    thread = threading.Thread(target=runtime.run, kwargs={"install_signal_handlers": False})
    thread.start()
    return runtime, thread, observer


def work_off(
    observer: CountingObserver, stage: ProcessingStage, count: int, timeout_s: float | None = None
) -> bool:
    """Wait until the runtime has read ``count`` records and ``stage`` holds none of them;
    False if ``timeout_s`` passed first."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while sum(observer.consumed.values()) < count or stage.in_flight() > 0:
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.005)  # polling the runtime's counters from outside its thread
    return True


ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def vigil_run(settings: VigilSettings, group_prefix: str, *arguments: str) -> Iterator[int]:
    """``vigil run`` as an operator starts it (a configuration file, a fresh group), with its
    endpoint on a free loopback port, which is yielded; SIGTERM (drain, commit) at the end."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    document = json.loads(settings.model_dump_json())
    document["kafka"]["group_id"] = f"{group_prefix}-{uuid.uuid4().hex[:6]}"
    document["metrics"] = {"enabled": True, "host": "127.0.0.1", "port": port}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
        json.dump(document, config)
    service = subprocess.Popen(
        [sys.executable, "-m", "consumers.ops.cli", "run", "--config", config.name, *arguments],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(120)
        os.unlink(config.name)


def scrape(port: int, *series: str) -> dict[str, float]:
    """Each named series summed over its labels at the endpoint (0 while it does not answer)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals = dict.fromkeys(series, 0.0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            text = reply.read().decode()
    except OSError:
        return totals
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals
