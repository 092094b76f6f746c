"""``vigil demo``: the plant and the city district through Vigil's pipelines, live.

Every pipeline kind that declares a demo lane (``PipelineKind.demo``) trains its demo
models once, adds its simulated inputs, published in real time, and says where its alerts
come from: the press line's cameras, the plant's machines and the city's air-quality
sensors with now and then a malformed record, the fans' vibration spectra. The
pipelines run here, each its own runtime and consumer group, sharing one metrics registry
(served on the configured metrics address). The live view shows throughput, latency
percentiles, batch sizes, lag and the alert feed; the summary closes the run.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer
from rich.console import Console
from rich.live import Live

from consumers.ops.demo.view import DemoSummary, LiveView, summary_table
from consumers.ops.health import MetricsServer
from consumers.ops.metrics import VigilMetrics
from consumers.ops.service import Service
from consumers.ops.tail import describe
from consumers.ops.topics import create_topics
from consumers.pipelines import pipeline_kinds
from consumers.pipelines.contract import DemoLane, DemoOptions
from consumers.runtime.kafka_clients import consumer_config, make_producer
from schemas.messages import Alert, DeadLetter, InferenceResult
from schemas.settings import VigilSettings

__all__ = ["DemoSummary", "demo_settings", "run_demo"]
QUIET_S = 1.0
"""After the inputs stop: no output for this long (and every input consumed) ends the demo."""


def demo_settings(
    settings: VigilSettings, options: DemoOptions, say: Callable[[str], None]
) -> tuple[VigilSettings, dict[str, DemoLane]]:
    """Every kind's demo models, inputs and alert rules, where the configuration names none;
    and the kinds with a demo lane."""
    lanes = {name: kind.demo for name, kind in pipeline_kinds().items() if kind.demo is not None}
    for lane in lanes.values():
        settings = lane.prepare(settings, options, say)
    return settings, lanes


def run_demo(
    settings: VigilSettings,
    duration_s: float,
    frames_per_s: int,
    console: Console,
    real_images: Path | None = None,
    simulate: bool = True,
) -> DemoSummary:
    """Run the plant and the city through Vigil for ``duration_s`` seconds (or only consume, without ``simulate``)."""
    store = Path(real_images) if real_images else Path(tempfile.mkdtemp(prefix="vigil-demo-frames-"))
    options = DemoOptions(duration_s, frames_per_s, store, real_images, demo_start(datetime.now(UTC)))
    settings, lanes = demo_settings(settings, options, lambda text: console.print(f"[bold]{text}[/bold]"))
    create_topics(settings)
    service = Service(settings, list(lanes), group_of=lambda name: f"vigil-demo-{name}")
    metrics = service.metrics
    server = _serve_metrics(service, console)
    service.start()
    # The world starts now, not before the models were trained and loaded: its first inputs
    # are not already seconds old.
    options = dataclasses.replace(options, start=demo_start(datetime.now(UTC)))
    sources = {name: lane.source(settings, options) for name, lane in lanes.items()}
    topics = {name: source.topic for name, source in sources.items()}
    summary = DemoSummary(lanes, topics)
    where_metrics = (
        f"metrics http://{settings.metrics.host}:{server.port}/metrics" if server else "metrics off"
    )
    view = LiveView(
        summary, metrics.registry, f"Vigil demo on {settings.kafka.bootstrap_servers}, {where_metrics}"
    )
    outputs = _output_consumer(settings)
    producer = make_producer(settings.kafka)
    started = time.monotonic()
    try:
        with Live(view, console=console, refresh_per_second=4):
            while time.monotonic() - started < duration_s:
                if simulate:
                    for name, source in sources.items():
                        due = source.due(time.monotonic() - started, duration_s)
                        for topic, key, value in due:
                            producer.send(topic, key=key, value=value)
                        summary.sent[name] += len(due)
                _poll(outputs, settings, summary, view, console, timeout_ms=100)
            producer.flush()
            # Inputs stop here; let the pipelines catch up so the summary covers all that was sent.
            drain_until = time.monotonic() + 30
            while time.monotonic() < drain_until and not _drained(summary, metrics, simulate):
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


def demo_start(now: datetime) -> datetime:
    """Whole seconds, so a world ticking at 10 Hz lines up with event time."""
    return now.replace(microsecond=0) + timedelta(seconds=1)


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


def _drained(summary: DemoSummary, metrics: VigilMetrics, simulate: bool) -> bool:
    """Every kind has consumed what was sent to it, and no output came for a second."""
    if not simulate:
        return True
    consumed = all(_consumed(metrics, summary.topics[name]) >= sent for name, sent in summary.sent.items())
    return consumed and time.monotonic() - summary.last_output_at > QUIET_S


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
    summary.last_output_at = time.monotonic()
    topics = settings.topics
    if record.topic == topics.dlq.name:
        letter = DeadLetter.from_json_bytes(record.value)
        summary.dead_letters[letter.reason] += 1
    elif record.topic == topics.alerts.name:
        alert = Alert.from_json_bytes(record.value)
        summary.alerts[(summary.where(alert), alert.state)] += 1
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
