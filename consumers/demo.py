"""``vigil demo``: a live pipeline on a local broker, with its inputs simulated and its outputs shown."""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kafka import KafkaConsumer
from rich.console import Console
from rich.table import Table

from consumers.kafka_clients import consumer_config, make_producer
from consumers.pipelines import build_pipeline
from consumers.runtime.loop import StreamRuntime
from consumers.runtime.observer import CountingObserver
from consumers.simulate import publish, synthetic_frames, synthetic_readings
from consumers.tail import describe
from consumers.topics import create_topics
from schemas.messages import DeadLetter, InferenceResult
from schemas.settings import VigilSettings


@dataclass
class DemoSummary:
    """What the demo saw come out of the pipeline."""

    sent: int = 0
    results: int = 0
    dead_letters: int = 0
    latencies_s: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        """A latency percentile in seconds (0 when nothing was measured)."""
        if len(self.latencies_s) < 2:
            return self.latencies_s[0] if self.latencies_s else 0.0
        return statistics.quantiles(self.latencies_s, n=100)[int(q) - 1]


def run_demo(
    settings: VigilSettings,
    duration_s: float,
    frames_per_s: int,
    readings_per_s: int,
    console: Console,
    pipeline: str = "passthrough",
) -> DemoSummary:
    """Run the pipeline for ``duration_s`` while simulating inputs; print outputs as they come."""
    create_topics(settings)
    built = build_pipeline(pipeline, settings)
    observer = CountingObserver()
    runtime = StreamRuntime(settings, built.inputs, built.stage, observer=observer, group_id="vigil-demo")
    runner = threading.Thread(target=runtime.run, kwargs={"install_signal_handlers": False}, daemon=True)
    runner.start()
    outputs = _output_consumer(settings)
    producer = make_producer(settings.kafka)
    summary = DemoSummary()
    shown = 0
    started = time.monotonic()
    next_tick = started
    tick = 0
    try:
        while time.monotonic() - started < duration_s:
            if time.monotonic() >= next_tick:
                now = datetime.now(UTC)
                frames = list(synthetic_frames(frames_per_s, start=now, spacing_s=0))
                readings = list(synthetic_readings(readings_per_s, start=now, seed=tick, spacing_s=0))
                summary.sent += publish(
                    producer,
                    settings,
                    frames,
                    readings,
                    poison=1 if tick % 5 == 4 else 0,
                    poison_start=tick // 5,
                )
                producer.flush()
                tick += 1
                next_tick += 1.0
            for batch in outputs.poll(timeout_ms=200).values():
                for record in batch:
                    if record.topic == settings.topics.dlq.name:
                        summary.dead_letters += 1
                        console.print(f"[red]{describe(DeadLetter.from_json_bytes(record.value))}[/red]")
                        continue
                    result = InferenceResult.from_json_bytes(record.value)
                    summary.results += 1
                    summary.latencies_s.append((datetime.now(UTC) - result.captured_at).total_seconds())
                    if shown < 8 or summary.results % 50 == 0:
                        shown += 1
                        console.print(f"[green]{describe(result)}[/green]")
    finally:
        runtime.stop()
        runner.join(timeout=60)
        producer.close()
        outputs.close()
    console.print(_summary_table(summary, observer, time.monotonic() - started))
    return summary


def _output_consumer(settings: VigilSettings) -> KafkaConsumer:
    config = consumer_config(settings.kafka)
    config.update(group_id=None, auto_offset_reset="latest")
    consumer = KafkaConsumer(settings.topics.inferences.name, settings.topics.dlq.name, **config)
    consumer.poll(timeout_ms=100)  # join the topics before inputs start flowing
    return consumer


def _summary_table(summary: DemoSummary, observer: CountingObserver, elapsed_s: float) -> Table:
    table = Table(title="Vigil demo summary")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("inputs sent", str(summary.sent))
    table.add_row("inputs consumed by the runtime", str(sum(observer.consumed.values())))
    table.add_row("results seen", str(summary.results))
    table.add_row("dead letters seen", str(summary.dead_letters))
    table.add_row(
        "dead letters by reason", ", ".join(f"{k}={v}" for k, v in observer.dead_letters.items()) or "-"
    )
    table.add_row("offset commits", str(observer.commits))
    table.add_row(
        "capture → result p50 / p95",
        f"{summary.percentile(50) * 1000:.0f} / {summary.percentile(95) * 1000:.0f} ms",
    )
    table.add_row("elapsed", f"{elapsed_s:.1f} s")
    return table
