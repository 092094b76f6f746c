"""The demo's live terminal view and its closing summary."""

from __future__ import annotations

import statistics
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from consumers.pipelines.contract import DemoLane
from schemas.messages import Alert


@dataclass
class DemoSummary:
    """What the demo sent and what came out of the pipelines, per kind with a demo lane."""

    lanes: dict[str, DemoLane]
    topics: dict[str, str]
    """The input topic of each kind's demo lane, by kind."""
    sent: Counter[str] = field(default_factory=Counter)
    """Inputs sent by each kind's demo lane."""
    results: Counter[str] = field(default_factory=Counter)
    alerts: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(where, state): the place of the demo world an alert comes from (``where``)."""
    dead_letters: Counter[str] = field(default_factory=Counter)
    latencies_s: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    last_output_at: float = 0.0
    """``time.monotonic()`` of the last output record seen."""

    def percentile(self, pipeline: str, q: int, last: int | None = None) -> float:
        """A capture → result latency percentile in seconds (0 when nothing was measured)."""
        values = self.latencies_s.get(pipeline, [])[-last:] if last else self.latencies_s.get(pipeline, [])
        if len(values) < 2:
            return values[0] if values else 0.0
        return statistics.quantiles(values, n=100)[q - 1]

    @property
    def places(self) -> list[str]:
        """Every place of the demo world, kind by kind."""
        return [place for name, lane in self.lanes.items() for place in (lane.places or (name,))]

    def where(self, alert: Alert) -> str:
        """The place an alert comes from: its kind's lane says (a kind is found by its input topic)."""
        for name, topic in self.topics.items():
            if alert.evidence.topic == topic:
                place = self.lanes[name].place
                return place(alert) if place is not None else name
        return "elsewhere"


class LiveView:
    """Throughput, latency percentiles, batch sizes, lag and the alert feed, redrawn by ``rich.live``."""

    def __init__(self, summary: DemoSummary, registry: CollectorRegistry, header: str) -> None:
        self.summary = summary
        self.registry = registry
        self.topics = summary.topics
        self.header = header
        self.feed: deque[Text] = deque(maxlen=10)
        self._started = time.monotonic()
        self._rates: dict[str, deque[tuple[float, int]]] = {p: deque(maxlen=20) for p in self.topics}

    def alert(self, alert: Alert) -> None:
        """Add an alert to the feed."""
        colour = "bold red" if alert.state == "firing" else "bold green"
        line = (
            f"{time.strftime('%H:%M:%S')} {alert.state:8} {alert.kind:14} {alert.source_id:9} "
            f"{alert.label[:14]:14} score={alert.score:.2f} ({self.summary.where(alert)})"
        )
        self.feed.appendleft(Text(line, style=colour))

    def __rich__(self) -> Group:
        now = time.monotonic()
        batches, lag = self._from_metrics()
        table = Table(expand=True)
        for column in ("pipeline", "results/s", "p50 ms", "p95 ms", "p99 ms", "mean batch", "lag"):
            table.add_column(column, justify="right" if column != "pipeline" else "left")
        for pipeline in self.topics:
            history = self._rates[pipeline]
            history.append((now, self.summary.results[pipeline]))
            span = history[-1][0] - history[0][0]
            rate = (history[-1][1] - history[0][1]) / span if span > 0 else 0.0
            total, count = batches.get(pipeline, (0.0, 0.0))
            table.add_row(
                pipeline,
                f"{rate:.0f}",
                *(f"{self.summary.percentile(pipeline, q, last=500) * 1000:.0f}" for q in (50, 95, 99)),
                f"{total / count:.1f}" if count else "-",
                f"{lag.get(self.topics[pipeline], 0.0):.0f}",
            )
        letters = ", ".join(f"{k}={v}" for k, v in self.summary.dead_letters.items()) or "none"
        feed = Group(*self.feed) if self.feed else Text("no alerts yet", style="dim")
        return Group(
            Text(f"{self.header}   elapsed {now - self._started:.0f}s", style="bold"),
            table,
            Text(f"dead letters: {letters}"),
            Panel(feed, title="alerts", border_style="red"),
        )

    def _from_metrics(self) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
        """From one collection of the registry: (sum, count) of batch sizes per pipeline, lag per topic."""
        samples = [sample for metric in self.registry.collect() for sample in metric.samples]
        pipeline_of = {
            s.labels["name"]: s.labels["pipeline"] for s in samples if s.name == "vigil_model_info"
        }
        batches: dict[str, list[float]] = {}
        lag: dict[str, float] = {}
        for sample in samples:
            if sample.name in ("vigil_batch_size_items_sum", "vigil_batch_size_items_count"):
                totals = batches.setdefault(pipeline_of.get(sample.labels["model"], ""), [0.0, 0.0])
                totals[1 if sample.name.endswith("_count") else 0] += sample.value
            elif sample.name == "vigil_consumer_lag_messages":
                lag[sample.labels["topic"]] = lag.get(sample.labels["topic"], 0.0) + sample.value
        return {p: (t[0], t[1]) for p, t in batches.items()}, lag


def summary_table(summary: DemoSummary, consumed: int, elapsed_s: float) -> Table:
    """The closing summary."""
    table = Table(title="Vigil demo summary")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for kind, sent in summary.sent.items():
        table.add_row(f"inputs sent: {kind}", str(sent))
    table.add_row("inputs consumed by the runtimes", str(consumed))
    for kind in summary.lanes:
        table.add_row(f"results: {kind}", str(summary.results[kind]))
    for place in summary.places:
        table.add_row(
            f"alerts firing / resolved: {place}",
            f"{summary.alerts[(place, 'firing')]} / {summary.alerts[(place, 'resolved')]}",
        )
    table.add_row(
        "dead letters by reason", ", ".join(f"{k}={v}" for k, v in summary.dead_letters.items()) or "-"
    )
    for pipeline in summary.lanes:
        table.add_row(
            f"capture → result p50 / p95 / p99, {pipeline}",
            " / ".join(f"{summary.percentile(pipeline, q) * 1000:.0f}" for q in (50, 95, 99)) + " ms",
        )
    table.add_row("elapsed", f"{elapsed_s:.1f} s")
    return table
