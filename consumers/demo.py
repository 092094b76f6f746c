"""``vigil demo``: a simulated press line and city district through Vigil on a local broker.

Cameras on the line write product images to a frame store and publish ``FrameRef``s; one
camera turns out cracked parts for a while, so its alert fires and then resolves. Machines
and air-quality sensors publish readings (pass-through until the sensor models land), and
now and then a malformed record shows the dead-letter path. Outputs are printed as they come.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import cycle
from pathlib import Path

from kafka import KafkaConsumer
from rich.console import Console
from rich.table import Table

from consumers.kafka_clients import consumer_config, make_producer
from consumers.runtime.loop import StreamRuntime
from consumers.runtime.observer import CountingObserver
from consumers.simulate import publish, synthetic_readings
from consumers.stages.passthrough import passthrough_stage
from consumers.tail import describe
from consumers.topics import create_topics
from schemas.messages import Alert, DeadLetter, FrameRef, InferenceResult, SensorReading
from schemas.settings import AlertRule, VigilSettings

DEMO_MODEL = "demo-defects"
CAMERAS = ("cam-1", "cam-2", "cam-3", "cam-4")
FAULTY_CAMERA = "cam-3"


@dataclass
class DemoSummary:
    """What the demo saw come out of the pipelines."""

    frames: int = 0
    readings: int = 0
    results: int = 0
    alerts: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)

    def percentile(self, q: int) -> float:
        """A capture → result latency percentile in seconds (0 when nothing was measured)."""
        if len(self.latencies_s) < 2:
            return self.latencies_s[0] if self.latencies_s else 0.0
        return statistics.quantiles(self.latencies_s, n=100)[q - 1]


def ensure_demo_model(registry: str, console: Console) -> None:
    """Train the small demo defect classifier on synthetic images unless the registry has it."""
    from models.registry import versions
    from models.vision.synthetic import write_dataset
    from models.vision.training import train_classifier

    if versions(registry, DEMO_MODEL):
        return
    console.print("[bold]training the demo defect classifier on synthetic images (once)[/bold]")
    with tempfile.TemporaryDirectory() as images:
        write_dataset(images, per_class=60, size=64, seed=11)
        entry = train_classifier(
            images, registry, DEMO_MODEL, "1", architecture="small_cnn", size=64, epochs=10, lr=5e-3
        )
    accuracy = (
        entry.card.training.metrics.get("accuracy", float("nan")) if entry.card.training else float("nan")
    )
    console.print(f"demo model written to {entry.folder} (held-out accuracy {accuracy:.2f})")


class PressLine:
    """Cameras that write product images to a frame store and describe them as ``FrameRef``s."""

    def __init__(self, store: Path, real_images: Path | None = None) -> None:
        self.store = store
        self._real = (
            cycle(sorted(p for p in real_images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")))
            if real_images
            else None
        )
        self._count = 0

    def tick(self, tick: int, per_camera: int, faulty: bool) -> list[FrameRef]:
        """One round of frames; the faulty camera makes cracked parts while ``faulty``."""
        from models.vision.synthetic import encode, product_image

        frames = []
        for camera in CAMERAS:
            for _ in range(per_camera):
                self._count += 1
                if self._real is not None:
                    path = next(self._real)
                else:
                    label = (
                        "crack"
                        if faulty and camera == FAULTY_CAMERA
                        else ("spot" if self._count % 41 == 0 else "ok")
                    )
                    path = self.store / camera / f"{self._count:07d}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(encode(product_image(label, 64, seed=self._count)))
                frames.append(
                    FrameRef(
                        frame_id=f"{camera}-{self._count:07d}",
                        camera_id=camera,
                        site="plant-a",
                        line="press-line-1",
                        uri=f"file://{path}",
                        captured_at=datetime.now(UTC),
                    )
                )
        return frames


def demo_settings(settings: VigilSettings, store: Path) -> VigilSettings:
    """The demo's model, frame store and alert rules (2 of 3 frames, with hysteresis)."""
    rules = settings.vision.rules or [
        AlertRule(
            name=f"demo-{label}", label=label, hi=0.7, lo=0.4, n=2, m=3, cooldown_s=5, severity="critical"
        )
        for label in ("crack", "scratch", "spot")
    ]
    vision = settings.vision.model_copy(
        update={
            "model": DEMO_MODEL,
            "rules": rules,
            "fetch": settings.vision.fetch.model_copy(update={"allowed_prefixes": [f"file://{store}/"]}),
        }
    )
    return settings.model_copy(update={"vision": vision})


def run_demo(
    settings: VigilSettings,
    duration_s: float,
    frames_per_s: int,
    readings_per_s: int,
    console: Console,
    real_images: Path | None = None,
) -> DemoSummary:
    """Run the plant and city simulation through Vigil for ``duration_s`` seconds."""
    from consumers.vision.stage import VisionStage

    ensure_demo_model(settings.vision.registry, console)
    store = Path(real_images) if real_images else Path(tempfile.mkdtemp(prefix="vigil-demo-frames-"))
    settings = demo_settings(settings, store)
    create_topics(settings)
    observer = CountingObserver()
    runtimes = [
        StreamRuntime(
            settings,
            {settings.topics.frames.name: FrameRef},
            VisionStage(settings),
            observer=observer,
            group_id="vigil-demo-vision",
        ),
        StreamRuntime(
            settings,
            {settings.topics.sensors.name: SensorReading},
            passthrough_stage(settings.topics.inferences.name),
            observer=observer,
            group_id="vigil-demo-sensors",
        ),
    ]
    threads = [
        threading.Thread(target=r.run, kwargs={"install_signal_handlers": False}, daemon=True)
        for r in runtimes
    ]
    for thread in threads:
        thread.start()
    line = PressLine(store, real_images)
    outputs = _output_consumer(settings)
    producer = make_producer(settings.kafka)
    summary = DemoSummary()
    started = next_tick = time.monotonic()
    tick = 0
    try:
        while time.monotonic() - started < duration_s:
            if time.monotonic() >= next_tick:
                faulty = 0.25 * duration_s <= time.monotonic() - started < 0.55 * duration_s
                frames = line.tick(tick, max(1, frames_per_s // len(CAMERAS)), faulty)
                readings = list(
                    synthetic_readings(readings_per_s, start=datetime.now(UTC), seed=tick, spacing_s=0)
                )
                publish(
                    producer,
                    settings,
                    frames,
                    readings,
                    poison=1 if tick % 5 == 4 else 0,
                    poison_start=tick // 5,
                )
                producer.flush()
                summary.frames += len(frames)
                summary.readings += len(readings)
                tick += 1
                next_tick += 1.0
            for batch in outputs.poll(timeout_ms=200).values():
                for record in batch:
                    _show(record, settings, summary, console)
        # Inputs stop here; let the pipelines catch up so the summary covers all that was sent.
        drain_until = time.monotonic() + 30
        while summary.results < summary.frames + summary.readings and time.monotonic() < drain_until:
            for batch in outputs.poll(timeout_ms=200).values():
                for record in batch:
                    _show(record, settings, summary, console)
    finally:
        for runtime in runtimes:
            runtime.stop()
        for thread in threads:
            thread.join(timeout=60)
        producer.close()
        outputs.close()
    console.print(_summary_table(summary, observer, time.monotonic() - started))
    return summary


def _show(record, settings: VigilSettings, summary: DemoSummary, console: Console) -> None:  # type: ignore[no-untyped-def]
    topics = settings.topics
    if record.topic == topics.dlq.name:
        letter = DeadLetter.from_json_bytes(record.value)
        summary.dead_letters[letter.reason] += 1
        console.print(f"[red]{describe(letter)}[/red]", highlight=False)
    elif record.topic == topics.alerts.name:
        alert = Alert.from_json_bytes(record.value)
        summary.alerts[alert.state] += 1
        colour = "bold red" if alert.state == "firing" else "bold green"
        console.print(f"[{colour}]{describe(alert)}[/{colour}]", highlight=False)
    else:
        result = InferenceResult.from_json_bytes(record.value)
        summary.results += 1
        summary.latencies_s.append((datetime.now(UTC) - result.captured_at).total_seconds())
        if summary.results % 100 == 1:
            console.print(f"[dim]{describe(result)}[/dim]", highlight=False)


def _output_consumer(settings: VigilSettings) -> KafkaConsumer:
    config = consumer_config(settings.kafka)
    config.update(group_id=None, auto_offset_reset="latest")
    topics = (settings.topics.alerts.name, settings.topics.inferences.name, settings.topics.dlq.name)
    consumer = KafkaConsumer(*topics, **config)
    consumer.poll(timeout_ms=100)  # join the topics before inputs start flowing
    return consumer


def _summary_table(summary: DemoSummary, observer: CountingObserver, elapsed_s: float) -> Table:
    table = Table(title="Vigil demo summary")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("frames / readings sent", f"{summary.frames} / {summary.readings}")
    table.add_row("inputs consumed by the runtimes", str(sum(observer.consumed.values())))
    table.add_row("results seen", str(summary.results))
    table.add_row("alerts firing / resolved", f"{summary.alerts['firing']} / {summary.alerts['resolved']}")
    table.add_row(
        "dead letters by reason", ", ".join(f"{k}={v}" for k, v in summary.dead_letters.items()) or "-"
    )
    table.add_row("offset commits", str(observer.commits))
    table.add_row(
        "capture → result p50 / p95",
        f"{summary.percentile(50) * 1000:.0f} / {summary.percentile(95) * 1000:.0f} ms",
    )
    table.add_row("elapsed", f"{elapsed_s:.1f} s")
    return table
