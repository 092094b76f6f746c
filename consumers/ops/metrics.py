"""Prometheus metrics: the one ``RuntimeObserver`` that turns runtime and stage events into metrics.

Names follow Prometheus conventions (``vigil_`` prefix, ``_total`` counters, ``_seconds`` and
``_bytes`` units) and labels stay bounded: topics, partitions, models, reasons, kinds,
never a frame, camera or asset. Several runtimes in one process (the demo) share one
``VigilMetrics``, each through its own ``PrometheusObserver``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime

from kafka.structs import TopicPartition
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from consumers.runtime.observer import RuntimeObserver

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class _QueueDepths(Collector):
    """Reads each model's micro-batch queue depth at scrape time."""

    def __init__(self) -> None:
        self.sources: dict[str, Callable[[], int]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "vigil_queue_depth_items",
            "Items waiting in a model's micro-batch queue",
            labels=["model"],
            unit="items",
        )
        for model, depth in sorted(self.sources.items()):
            family.add_metric([model], depth())
        yield family


class _KeyedState(Collector):
    """Reads the size of each pipeline's keyed state at scrape time."""

    def __init__(self) -> None:
        self.sources: dict[str, tuple[Callable[[], int], Callable[[], int]]] = {}
        self._last: dict[str, tuple[int, int]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        memory = GaugeMetricFamily(
            "vigil_state_bytes", "Bytes of keyed state (sensor windows)", labels=["pipeline"]
        )
        keys = GaugeMetricFamily("vigil_state_keys", "Keys with state (assets)", labels=["pipeline"])
        for pipeline, (memory_bytes, count) in sorted(self.sources.items()):
            with contextlib.suppress(RuntimeError):  # state changed under the scrape: keep the last reading
                self._last[pipeline] = (memory_bytes(), count())
            last = self._last.get(pipeline, (0, 0))
            memory.add_metric([pipeline], last[0])
            keys.add_metric([pipeline], last[1])
        yield memory
        yield keys


class _Gpu(Collector):
    """GPU memory and utilisation, read at scrape time (only where CUDA is present)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        import torch

        memory = GaugeMetricFamily(
            "vigil_gpu_memory_bytes", "GPU memory allocated by torch", labels=["device"]
        )
        utilisation = GaugeMetricFamily(
            "vigil_gpu_utilization_ratio", "GPU busy share over the last sample period", labels=["device"]
        )
        for index in range(torch.cuda.device_count()):
            memory.add_metric([str(index)], torch.cuda.memory_allocated(index))
            with contextlib.suppress(Exception):  # utilisation needs NVML; memory does not
                utilisation.add_metric([str(index)], torch.cuda.utilization(index) / 100)
        yield memory
        yield utilisation


class VigilMetrics:
    """Every metric Vigil exports, in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None, gpu: bool | None = None) -> None:
        if registry is None:
            registry = CollectorRegistry()
            # the default registry's process and runtime series, which a registry of our own
            # does not get: CPU seconds, resident memory, open files, GC
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = registry
        r = self.registry
        self.consumed = Counter(
            "vigil_messages_consumed", "Records read from an input topic", ["topic"], registry=r
        )
        self.produced = Counter(
            "vigil_messages_produced",
            "Records acknowledged by the broker on an output topic",
            ["topic"],
            registry=r,
        )
        self.dead_letters = Counter(
            "vigil_dead_letters", "Inputs sent to the dead-letter topic", ["reason", "stage"], registry=r
        )
        self.commits = Counter("vigil_offset_commits", "Offset commits to the consumer group", registry=r)
        self.backpressure = Counter(
            "vigil_backpressure_pauses", "Times fetching paused because too much was in flight", registry=r
        )
        self.assigned = Gauge(
            "vigil_assigned_partitions", "Partitions assigned to this consumer", ["topic"], registry=r
        )
        self.lag = Gauge(
            "vigil_consumer_lag_messages", "Records behind the log end", ["topic", "partition"], registry=r
        )
        self.last_input = Gauge(
            "vigil_last_input_timestamp_seconds", "Unix time of the last record read", ["topic"], registry=r
        )
        self.model_info = Gauge(
            "vigil_model_info",
            "The models being served, and what runs them (engine: torch, torchscript, openvino-int8, ...)",
            ["pipeline", "name", "version", "device", "engine"],
            registry=r,
        )
        self.model_switches = Counter(
            "vigil_model_switches",
            "Hot-reload attempts of models bound to a registry alias, by outcome (switched, failed)",
            ["pipeline", "name", "outcome"],
            registry=r,
        )
        self.batch_size = Histogram(
            "vigil_batch_size_items",
            "Items per micro-batch",
            ["model"],
            buckets=BATCH_BUCKETS,
            unit="items",
            registry=r,
        )
        self.inference = Histogram(
            "vigil_inference_seconds",
            "Model time per micro-batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "vigil_queue_wait_seconds",
            "How long each micro-batch's oldest item waited in its model's queue: a lane starved "
            "of its device (or of its share of the CPU) shows here before its results slow",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.step = Histogram(
            "vigil_step_seconds",
            "Time per item in a step (fetch, decode)",
            ["step"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "vigil_end_to_end_seconds",
            "Capture (event) time to result built for publishing",
            ["pipeline"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.alerts = Counter(
            "vigil_alerts", "Alert transitions published", ["kind", "severity", "state"], registry=r
        )
        self.broker_reachable = Gauge(
            "vigil_broker_reachable",
            "1 while the pipeline's group coordinator answers and commits go through",
            ["pipeline"],
            registry=r,
        )
        self.oldest_in_flight = Gauge(
            "vigil_oldest_in_flight_seconds",
            "Age of the oldest input not yet complete (stuck items show here)",
            ["pipeline"],
            registry=r,
        )
        self.rebalancing = Gauge(
            "vigil_rebalancing",
            "1 while the pipeline's consumer group is rebalancing",
            ["pipeline"],
            registry=r,
        )
        self.restoring = Gauge(
            "vigil_restoring_partitions",
            "Assigned partitions whose state is being restored (paused meanwhile)",
            ["pipeline"],
            registry=r,
        )
        self.restore_remaining = Gauge(
            "vigil_restore_records_remaining",
            "Records still to read back for the partitions being restored",
            ["pipeline"],
            registry=r,
        )
        self.commit_age = Gauge(
            "vigil_commit_age_seconds",
            "Seconds since the last successful commit while inputs wait for one (0 when none waits)",
            ["pipeline"],
            registry=r,
        )
        self.events = Counter(
            "vigil_input_events",
            "Inputs counted rather than scored (late, duplicate, out of order, dropped channel)",
            ["pipeline", "outcome"],
            registry=r,
        )
        self.restores = Counter(
            "vigil_partition_restores",
            "Partitions whose state was restored on assignment: from the changelog (handed over) "
            "or the input (read back)",
            ["pipeline", "source"],
            registry=r,
        )
        self.queues = _QueueDepths()
        r.register(self.queues)
        self.state = _KeyedState()
        r.register(self.state)
        if gpu is None:
            import torch

            gpu = torch.cuda.is_available()
        if gpu:
            r.register(_Gpu())

    def observer(self, pipeline: str = "main") -> PrometheusObserver:
        """A new observer for one runtime (``pipeline`` labels its health gauges) and its stage."""
        return PrometheusObserver(self, pipeline)


READY_LOOP_S = 5.0
"""``/readyz`` fails while the consume loop has not gone round for this long (``/healthz``: 60 s)."""


class PrometheusObserver(RuntimeObserver):
    """Feeds one runtime's events into ``VigilMetrics``; knows when that runtime is alive and ready."""

    def __init__(self, metrics: VigilMetrics, pipeline: str = "main") -> None:
        self.metrics = metrics
        self.pipeline = pipeline
        self._devices: dict[tuple[str, str, str], tuple[str, str]] = {}
        """The device and engine each served (pipeline, model, version) runs on: its
        ``vigil_model_info`` labels."""
        self.last_poll = 0.0
        self.partitions = 0
        self.broker_reachable = True
        self.oldest_in_flight_s = 0.0
        self.commit_age_s = 0.0
        self.rebalancing = False
        self.restoring: dict[TopicPartition, tuple[int, int]] = {}
        self._topics: set[str] = set()
        self._lagging: set[tuple[str, int]] = set()

    def alive(self, within_s: float = 60.0) -> bool:
        """The loop went round within ``within_s`` (not wedged)."""
        return time.monotonic() - self.last_poll < within_s

    def not_ready(self, stuck_item_s: float = 120.0, commit_stale_s: float = 60.0) -> str | None:
        """Why this runtime is not ready, or None when it is: the loop goes round, the broker
        answers, it holds partitions (models are warm before the first poll), commits go through
        and no input has been in flight longer than ``stuck_item_s``; not while the group
        rebalances or partitions' state is being restored."""
        if not self.alive():
            return "the consume loop has not gone round for 60s"
        if not self.alive(within_s=READY_LOOP_S):
            # a loop held in a broker call (an exactly-once transaction step during an outage)
            # reports nothing new: its silence is the news, long before the step's deadline
            return f"the consume loop has not gone round for {READY_LOOP_S:.0f}s (waiting on the broker)"
        if not self.broker_reachable:
            return "the broker (group coordinator) is unreachable"
        if self.rebalancing:
            return "the consumer group is rebalancing"
        if self.restoring:
            done = sum(d for d, _ in self.restoring.values())
            total = sum(t for _, t in self.restoring.values())
            return f"restoring {len(self.restoring)} partitions ({done} of {total} records)"
        if self.partitions == 0:
            return "no partitions assigned"
        if self.commit_age_s > commit_stale_s:
            return f"no commit has succeeded for {self.commit_age_s:.0f}s"
        if self.oldest_in_flight_s > stuck_item_s:
            return f"an input has been in flight for {self.oldest_in_flight_s:.0f}s"
        return None

    def ready(self) -> bool:
        """``not_ready()`` found nothing wrong (default bounds)."""
        return self.not_ready() is None

    def on_consumed(self, topic: str, count: int) -> None:
        self.metrics.consumed.labels(topic).inc(count)
        self.metrics.last_input.labels(topic).set(time.time())

    def on_produced(self, topic: str, count: int) -> None:
        self.metrics.produced.labels(topic).inc(count)

    def on_dead_letter(self, reason: str, stage: str) -> None:
        self.metrics.dead_letters.labels(reason, stage).inc()

    def on_committed(self, offsets: dict[TopicPartition, int]) -> None:
        self.metrics.commits.inc()

    def on_backpressure(self, paused: bool, in_flight: int) -> None:
        if paused:
            self.metrics.backpressure.inc()

    def on_assignment(self, partitions: set[TopicPartition]) -> None:
        self.partitions = len(partitions)
        held = {(tp.topic, tp.partition) for tp in partitions}
        for topic, partition in self._lagging - held:
            # a partition that moved is reported by its new owner: a series left behind here
            # would be counted twice by every sum over the group
            self.metrics.lag.remove(topic, str(partition))
        self._lagging &= held
        self._topics |= {tp.topic for tp in partitions}
        for topic in self._topics:  # topics no longer held go to zero rather than vanish
            self.metrics.assigned.labels(topic).set(sum(1 for tp in partitions if tp.topic == topic))

    def on_poll(self) -> None:
        self.last_poll = time.monotonic()

    def on_lag(self, lag: dict[TopicPartition, int]) -> None:
        for tp, behind in lag.items():
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(behind)
            self._lagging.add((tp.topic, tp.partition))

    def on_health(
        self,
        broker_reachable: bool,
        oldest_in_flight_s: float,
        commit_age_s: float,
        rebalancing: bool = False,
        restoring: Mapping[TopicPartition, tuple[int, int]] | None = None,
    ) -> None:
        self.broker_reachable = broker_reachable
        self.oldest_in_flight_s = oldest_in_flight_s
        self.commit_age_s = commit_age_s
        self.rebalancing = rebalancing
        self.restoring = dict(restoring or {})
        self.metrics.rebalancing.labels(self.pipeline).set(int(rebalancing))
        self.metrics.restoring.labels(self.pipeline).set(len(self.restoring))
        self.metrics.restore_remaining.labels(self.pipeline).set(
            sum(max(0, total - done) for done, total in self.restoring.values())
        )
        self.metrics.broker_reachable.labels(self.pipeline).set(int(broker_reachable))
        self.metrics.oldest_in_flight.labels(self.pipeline).set(oldest_in_flight_s)
        self.metrics.commit_age.labels(self.pipeline).set(commit_age_s)

    def on_model(self, pipeline: str, name: str, version: str, device: str, engine: str = "torch") -> None:
        self._devices[(pipeline, name, version)] = (device, engine)
        self.metrics.model_info.labels(pipeline, name, version, device, engine).set(1)

    def on_model_switch(self, pipeline: str, name: str, before: str, after: str, outcome: str) -> None:
        self.metrics.model_switches.labels(pipeline, name, outcome).inc()
        served = self._devices.pop((pipeline, name, before), None) if outcome == "switched" else None
        if served is not None:
            self.metrics.model_info.remove(pipeline, name, before, *served)

    def on_queue(self, model: str, depth: Callable[[], int]) -> None:
        self.metrics.queues.sources[model] = depth

    def on_state(self, pipeline: str, memory_bytes: Callable[[], int], keys: Callable[[], int]) -> None:
        self.metrics.state.sources[pipeline] = (memory_bytes, keys)

    def on_batch(self, model: str, size: int, seconds: float, waited_s: float = 0.0) -> None:
        self.metrics.batch_size.labels(model).observe(size)
        self.metrics.inference.labels(model).observe(seconds)
        self.metrics.queue_wait.labels(model).observe(waited_s)

    def on_step(self, step: str, seconds: float) -> None:
        self.metrics.step.labels(step).observe(seconds)

    def on_scored(self, pipeline: str, captured_at: datetime) -> None:
        self.metrics.end_to_end.labels(pipeline).observe(
            max(0.0, (datetime.now(UTC) - captured_at).total_seconds())
        )

    def on_alert(self, kind: str, severity: str, state: str) -> None:
        self.metrics.alerts.labels(kind, severity, state).inc()

    def on_event(self, pipeline: str, outcome: str, count: int = 1) -> None:
        self.metrics.events.labels(pipeline, outcome).inc(count)

    def on_restored(self, pipeline: str, source: str) -> None:
        self.metrics.restores.labels(pipeline, source).inc()
