"""``vigil demo``: the plant and the city district through Vigil's pipelines, live.

The world (``world.py``) publishes in real time: frames from the press line's cameras,
10 Hz readings from the machines, and air quality once a second from the city's sensors;
now and then a malformed record shows the dead-letter path. Every pipeline kind that
declares a demo lane adds its own simulated inputs (the fans' vibration spectra). The
pipelines run here, each its own runtime and consumer group, sharing one metrics registry
(served on the configured metrics address). The live view shows throughput, latency
percentiles, batch sizes, lag and the alert feed; the summary closes the run.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer
from rich.console import Console
from rich.live import Live

from consumers.ops.demo.models import (
    DEMO_SENSOR_MODEL,
    DEMO_SENSOR_VERSION,
    DEMO_VISION_MODEL,
    DEMO_VISION_VERSION,
    ensure_demo_models,
)
from consumers.ops.demo.view import DemoSummary, LiveView, summary_table, where
from consumers.ops.demo.world import CAMERAS, PressLine, SensorWorld, demo_start
from consumers.ops.health import MetricsServer
from consumers.ops.metrics import VigilMetrics
from consumers.ops.service import Service
from consumers.ops.simulate import publish
from consumers.ops.tail import describe
from consumers.ops.topics import create_topics
from consumers.pipelines import pipeline_kinds
from consumers.runtime.kafka_clients import consumer_config, make_producer
from models.registry import read_card
from schemas.messages import Alert, DeadLetter, FrameRef, InferenceResult
from schemas.settings import AlertRule, SensorModelBinding, SensorRule, VigilSettings

__all__ = ["DemoSummary", "demo_settings", "run_demo"]


def demo_settings(settings: VigilSettings, store: Path) -> VigilSettings:
    """The demo's models, frame store and alert rules, where the configuration names none."""
    vision_rules = settings.vision.alert_rules or [
        AlertRule(
            name=f"demo-{label}", label=label, hi=0.7, lo=0.4, n=2, m=3, cooldown_s=5, severity="critical"
        )
        for label in ("crack", "scratch", "spot")
    ]
    vision = settings.vision.model_copy(
        update={
            "model": DEMO_VISION_MODEL,
            "model_version": DEMO_VISION_VERSION,
            "alert_rules": vision_rules,
            "fetch": settings.vision.fetch.model_copy(update={"allowed_prefixes": [f"file://{store}/"]}),
        }
    )
    sensors = settings.sensors
    if not sensors.models and not sensors.rules:
        threshold = read_card(settings.vision.registry, DEMO_SENSOR_MODEL, DEMO_SENSOR_VERSION).thresholds[
            "anomaly"
        ]
        sensors = sensors.model_copy(
            update={
                "registry": settings.vision.registry,
                "models": [
                    SensorModelBinding(
                        assets="press-*",
                        sensor_kind="machine",
                        model=DEMO_SENSOR_MODEL,
                        version=DEMO_SENSOR_VERSION,
                    )
                ],
                "alert_rules": [
                    AlertRule(
                        name="press-anomaly",
                        label="anomaly",
                        hi=1.5 * threshold,
                        lo=0.75 * threshold,
                        n=2,
                        m=3,
                        cooldown_s=5,
                        severity="warning",
                    )
                ],
                "rules": [
                    SensorRule(
                        name="pm25-high",
                        kind="threshold",
                        sensor_kind="air_quality",
                        channel="pm25_ug_m3",
                        limit=35.0,
                        for_s=4.0,
                        severity="warning",
                    ),
                    SensorRule(
                        name="aq-silent", kind="stale", sensor_kind="air_quality", for_s=4.0, severity="info"
                    ),
                ],
            }
        )
    return settings.model_copy(update={"vision": vision, "sensors": sensors})


def run_demo(
    settings: VigilSettings,
    duration_s: float,
    frames_per_s: int,
    console: Console,
    real_images: Path | None = None,
    simulate: bool = True,
) -> DemoSummary:
    """Run the plant and the city through Vigil for ``duration_s`` seconds (or only consume, without ``simulate``)."""
    ensure_demo_models(settings.vision.registry, console)
    store = Path(real_images) if real_images else Path(tempfile.mkdtemp(prefix="vigil-demo-frames-"))
    settings = demo_settings(settings, store)
    lanes = {name: kind.demo for name, kind in pipeline_kinds().items() if kind.demo is not None}
    for lane in lanes.values():
        settings = lane.prepare(settings, lambda text: console.print(f"[bold]{text}[/bold]"))
    sources = {name: lane.source(settings) for name, lane in lanes.items()}
    create_topics(settings)
    service = Service(settings, ["vision", "sensors", *lanes], group_of=lambda name: f"vigil-demo-{name}")
    metrics = service.metrics
    server = _serve_metrics(service, console)
    service.start()
    summary = DemoSummary(lanes={name: source.topic for name, source in sources.items()})
    topics = {"vision": settings.topics.frames.name, "sensors": settings.topics.sensors.name, **summary.lanes}
    where_metrics = (
        f"metrics http://{settings.metrics.host}:{server.port}/metrics" if server else "metrics off"
    )
    view = LiveView(
        summary,
        metrics.registry,
        topics,
        f"Vigil demo on {settings.kafka.bootstrap_servers}, {where_metrics}",
    )
    outputs = _output_consumer(settings)
    producer = make_producer(settings.kafka)
    line = PressLine(store, real_images)
    world = SensorWorld(demo_start(datetime.now(UTC)), duration_s, settings.topics.sensors.partitions)
    started = time.monotonic()
    next_frames = started
    tick = 0
    try:
        with Live(view, console=console, refresh_per_second=4):
            while time.monotonic() - started < duration_s:
                now = datetime.now(UTC)
                if simulate:
                    frames: list[FrameRef] = []
                    if time.monotonic() >= next_frames:
                        faulty = 0.25 * duration_s <= time.monotonic() - started < 0.55 * duration_s
                        frames = line.tick(max(1, frames_per_s // len(CAMERAS)), faulty, now)
                        next_frames += 1.0
                        tick += 1
                    readings = world.due(now)
                    publish(
                        producer,
                        settings,
                        frames,
                        readings,
                        poison=int(bool(frames) and tick % 5 == 4),
                        poison_start=tick // 5,
                    )
                    summary.frames += len(frames)
                    summary.readings += len(readings)
                    for name, source in sources.items():
                        due = source.due(time.monotonic() - started, duration_s)
                        for topic, key, value in due:
                            producer.send(topic, key=key, value=value)
                        summary.sent[name] += len(due)
                _poll(outputs, settings, summary, view, console, timeout_ms=100)
            producer.flush()
            # Inputs stop here; let the pipelines catch up so the summary covers all that was sent.
            drain_until = time.monotonic() + 30
            while time.monotonic() < drain_until and not _drained(summary, metrics, topics, simulate):
                _poll(outputs, settings, summary, view, console, timeout_ms=200)
            _poll(outputs, settings, summary, view, console, timeout_ms=500)
    finally:
        service.stop()
        producer.close()
        outputs.close()
        if server is not None:
            server.stop()
    consumed = sum(_consumed(metrics, topic) for topic in topics.values())
    console.print()
    console.print(summary_table(summary, int(consumed), time.monotonic() - started))
    return summary


def _serve_metrics(service: Service, console: Console) -> MetricsServer | None:
    if not service.settings.metrics.enabled:
        return None
    try:
        return service.serve_metrics()
    except OSError:
        console.print(
            f"[yellow]port {service.settings.metrics.port} is taken; metrics on a free port instead[/yellow]"
        )
        return service.serve_metrics(port=0)


def _consumed(metrics: VigilMetrics, topic: str) -> float:
    return metrics.registry.get_sample_value("vigil_messages_consumed_total", {"topic": topic}) or 0.0


def _drained(summary: DemoSummary, metrics: VigilMetrics, topics: dict[str, str], simulate: bool) -> bool:
    if not simulate:
        return True
    return (
        summary.results["vision"] >= summary.frames
        and _consumed(metrics, topics["sensors"]) >= summary.readings
        and all(_consumed(metrics, topics[name]) >= sent for name, sent in summary.sent.items())
    )


def _poll(
    outputs: KafkaConsumer,
    settings: VigilSettings,
    summary: DemoSummary,
    view: LiveView,
    console: Console,
    timeout_ms: int,
) -> None:
    for batch in outputs.poll(timeout_ms=timeout_ms).values():
        for record in batch:
            _show(record, settings, summary, view, console)


def _show(
    record: Any, settings: VigilSettings, summary: DemoSummary, view: LiveView, console: Console
) -> None:
    topics = settings.topics
    if record.topic == topics.dlq.name:
        letter = DeadLetter.from_json_bytes(record.value)
        summary.dead_letters[letter.reason] += 1
    elif record.topic == topics.alerts.name:
        alert = Alert.from_json_bytes(record.value)
        summary.alerts[(where(alert, summary.lanes), alert.state)] += 1
        view.alert(alert)
        colour = "bold red" if alert.state == "firing" else "bold green"
        console.print(f"[{colour}]{describe(alert)}[/{colour}]", highlight=False)
    else:
        result = InferenceResult.from_json_bytes(record.value)
        if result.outcome == "scored" and result.pipeline != "passthrough":
            summary.results[result.pipeline] += 1
            summary.latencies_s[result.pipeline].append(
                (datetime.now(UTC) - result.captured_at).total_seconds()
            )


def _output_consumer(settings: VigilSettings) -> KafkaConsumer:
    config = consumer_config(settings.kafka)
    config.update(group_id=None, auto_offset_reset="latest")
    topics = (settings.topics.alerts.name, settings.topics.inferences.name, settings.topics.dlq.name)
    consumer = KafkaConsumer(*topics, **config)
    consumer.poll(timeout_ms=100)  # join the topics before inputs start flowing
    return consumer
