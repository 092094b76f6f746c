"""``vigil replay``: a range of an input topic through a pinned model, and what its alerts change.

The range is a time range or an offset range of one input topic (``vigil.frames`` or
``vigil.sensors``), cut at the topic's end as it stood when the command started. It is
scanned once for its size, then run through the pipeline as ``vigil run`` would, with three
differences: every model binding is pinned (the version asked for, the others at the version
their alias names now; no hot reload), the outputs go to the run's own topics
(``<into>.alerts``, ``<into>.inferences``, ``<into>.dlq``), and the consumer group is the
run's own (``<group_id>.replay.<run>``, its offsets set to the range's start), so the
production group's offsets are never touched and no alert reaches a person (no sinks but
Kafka). Records past the range that the consumer reads anyway get no output. Sensor state
before the range is rebuilt from the partition's history, as on any assignment.

Then the replay's alerts are compared with the alerts production raised for the same
inputs (those on the alerts topic whose evidence lies in the range, read from an hour before
the range's first record), matched by source,
rule, label, state and evidence position: ``added`` (only the replay raised it),
``removed`` (only production did), ``changed`` (both, with another kind, severity or a
score further apart than ``SCORE_TOLERANCE``), ``same``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition
from pydantic import ValidationError

from consumers.ops.topics import create_topics
from consumers.pipelines import build_pipeline, pipeline_kinds
from consumers.pipelines.contract import PinError, PipelineKind
from consumers.runtime.kafka_clients import consumer_config, make_reader, records_between
from consumers.runtime.loop import StreamRuntime
from consumers.runtime.observer import CountingObserver
from consumers.runtime.records import Outcome, Output, Settled, Work
from consumers.runtime.stage import ProcessingStage
from schemas.messages import Alert
from schemas.settings import VigilSettings

SCORE_TOLERANCE = 1e-4
ALERT_CLOCK_SLACK_MS = 3_600_000
"""Production's alerts are read from this long before the range's first record: room for a
producer clock ahead of Vigil's (record timestamps are the producers' create times)."""


def replayable() -> list[str]:
    """The pipeline kinds a range can be replayed through."""
    return [name for name, kind in pipeline_kinds().items() if kind.replayable]


def _replayable(pipeline: str) -> PipelineKind[Any]:
    kind = pipeline_kinds().get(pipeline)
    if kind is None or not kind.replayable:
        raise ReplayError(f"replay runs {', '.join(replayable())}, not {pipeline!r}")
    return kind


def input_topic(settings: VigilSettings, pipeline: str) -> str:
    """The topic ``pipeline`` reads, whose range a replay runs."""
    topic = _replayable(pipeline).input_topic
    assert topic is not None
    return topic(settings)


"""The pipelines a replay can run, and the input topic (of ``settings.topics``) each reads."""


class ReplayError(ValueError):
    """The replay cannot run as asked (nothing in the range, no such model binding)."""


@dataclass(frozen=True)
class ReplayRange:
    """Offsets ``[start, end)`` of each partition of ``topic``, and the records found in them."""

    topic: str
    starts: dict[int, int]
    ends: dict[int, int]
    records: int = 0
    last: dict[int, int] = field(default_factory=dict)
    """Per partition, the offset of the last record in the range (end offsets can lie past
    transaction markers)."""
    first_ms: int | None = None
    """The earliest Kafka timestamp of a record in the range."""

    def holds(self, partition: int, offset: int) -> bool:
        """Whether ``partition``'s ``offset`` lies in the range."""
        return self.starts.get(partition, 0) <= offset < self.ends.get(partition, 0)


@dataclass(frozen=True)
class AlertChange:
    """One alert the replay raised differently: production's and the replay's (None: absent)."""

    key: tuple[str, str, str, str, int, int]
    production: Alert | None
    replayed: Alert | None


@dataclass
class AlertDiff:
    """Production's alerts against the replay's, for the same inputs."""

    added: list[AlertChange] = field(default_factory=list)
    removed: list[AlertChange] = field(default_factory=list)
    changed: list[AlertChange] = field(default_factory=list)
    same: int = 0


@dataclass(frozen=True)
class ReplayReport:
    """What a replay read, wrote and changed."""

    range: ReplayRange
    topics: dict[str, str]
    """The run's output topics: ``alerts``, ``inferences``, ``dlq``."""
    models: dict[str, str]
    """Each model served, at the version served."""
    results: int
    dead_letters: int
    diff: AlertDiff


def find_range(
    settings: VigilSettings,
    topic: str,
    since: datetime | None = None,
    until: datetime | None = None,
    from_offset: int | None = None,
    to_offset: int | None = None,
    partitions: Iterable[int] = (),
) -> ReplayRange:
    """The range of ``topic`` by time (record timestamps) and/or offsets (``to_offset``
    inclusive), on ``partitions`` (default: all), scanned for its records."""
    reader = make_reader(settings.kafka)
    try:
        known = sorted(reader.partitions_for_topic(topic) or ())
        if not known:
            raise ReplayError(f"topic {topic!r} does not exist")
        chosen = [p for p in known if p in set(partitions)] if partitions else known
        tps = [TopicPartition(topic, p) for p in chosen]
        first, end = reader.beginning_offsets(tps), reader.end_offsets(tps)
        starts = {tp.partition: max(first[tp], from_offset or 0) for tp in tps}
        ends = {tp.partition: end[tp] if to_offset is None else min(end[tp], to_offset + 1) for tp in tps}
        if since is not None:
            at = _first_at(reader, tps, since)
            starts = {p: max(o, at.get(p, ends[p])) for p, o in starts.items()}
        if until is not None:  # the first record after ``until`` ends the range
            at = _first_at(reader, tps, until + timedelta(milliseconds=1))
            ends = {p: min(o, at.get(p, o)) for p, o in ends.items()}
        return _scanned(reader, ReplayRange(topic, starts, ends))
    finally:
        reader.close()


def _first_at(reader: KafkaConsumer, tps: Sequence[TopicPartition], moment: datetime) -> dict[int, int]:
    """Per partition, the offset of its first record stamped at or after ``moment`` (absent: none)."""
    found = reader.offsets_for_times({tp: int(moment.timestamp() * 1000) for tp in tps})
    return {tp.partition: at.offset for tp, at in found.items() if at is not None}


def _scanned(reader: KafkaConsumer, span: ReplayRange) -> ReplayRange:
    tps = {TopicPartition(span.topic, p): start for p, start in span.starts.items()}
    ends = {tp: span.ends[tp.partition] for tp in tps}
    count, last, first_ms = 0, {}, None
    for tp, record in records_between(reader, tps, ends):
        count += 1
        last[tp.partition] = record.offset
        first_ms = record.timestamp if first_ms is None else min(first_ms, record.timestamp)
    return ReplayRange(span.topic, span.starts, span.ends, count, last, first_ms)


class RangeStage:
    """``ProcessingStage`` that hands records in the range to ``inner`` and ends the rest at once, without output."""

    def __init__(self, inner: ProcessingStage, span: ReplayRange) -> None:
        self.name = inner.name
        self._inner = inner
        self._span = span
        self._outside: list[Outcome] = []

    def submit(self, work: Sequence[Work]) -> None:
        """In-range work to the pipeline's stage; the rest ends here."""
        inside = []
        for item in work:
            if self._span.holds(item.record.partition, item.record.offset):
                inside.append(item)
            else:
                self._outside.append(Outcome(item.record))
        if inside:
            self._inner.submit(inside)

    def collect(self, timeout_s: float) -> list[Outcome]:
        """The stage's outcomes and the out-of-range ones."""
        outside, self._outside = self._outside, []
        return outside + self._inner.collect(0 if outside else timeout_s)

    def in_flight(self) -> int:
        """Both kinds not collected yet."""
        return len(self._outside) + self._inner.in_flight()

    def on_assignment(self, held: set[tuple[str, int]]) -> None:
        """Passed on (sensor state is rebuilt from history before the range)."""
        self._inner.on_assignment(held)

    def restoring(self) -> dict[tuple[str, int], tuple[int, int]]:
        """The pipeline's stage's."""
        return self._inner.restoring()

    def handoff(self, settled: Mapping[tuple[str, int], Settled]) -> list[Output]:
        """Nothing: a replay's state is never handed to the live pipeline's next owner."""
        return []

    def close(self) -> None:
        """Closes the pipeline's stage."""
        self._inner.close()


def replay_settings(
    settings: VigilSettings, pipeline: str, into: str, model: str | None, version: str
) -> tuple[VigilSettings, dict[str, str]]:
    """``settings`` for a replay into ``<into>.*`` topics with every model pinned, and the
    version each model will serve."""
    topics = settings.topics
    outputs = {
        name: getattr(topics, name).model_copy(update={"name": f"{into}.{name}"})
        for name in ("alerts", "inferences", "dlq")
    }
    update: dict[str, object] = {
        "topics": topics.model_copy(update=outputs),
        "sinks": settings.sinks.model_copy(update={"alertmanager": None, "webhook": None}),
    }
    kind = _replayable(pipeline)
    assert kind.pin is not None
    try:
        pinned, served = kind.pin(settings, model, version)
    except PinError as error:
        raise ReplayError(str(error)) from None
    return pinned.model_copy(update=update), served


def replay(
    settings: VigilSettings,
    pipeline: str,
    span: ReplayRange,
    version: str,
    model: str | None = None,
    into: str | None = None,
    timeout_s: float = 3600.0,
) -> ReplayReport:
    """Run ``span`` through ``pipeline`` pinned at ``version`` and compare its alerts (module docstring)."""
    _replayable(pipeline)
    if span.records == 0:
        raise ReplayError(f"the range holds no records of {span.topic}")
    run = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    into = into or f"vigil.replay.{pipeline}.{run}"
    pinned, served = replay_settings(settings, pipeline, into, model, version)
    create_topics(pinned)
    group = f"{settings.kafka.group_id}.replay.{run}"
    _start_group_at(pinned, group, span)
    observer = CountingObserver()
    built = build_pipeline(pipeline, pinned, observer)
    if span.topic not in built.inputs:
        built.stage.close()
        raise ReplayError(f"the {pipeline} pipeline reads {', '.join(built.inputs)}, not {span.topic}")
    runtime = StreamRuntime(
        pinned,
        {span.topic: built.inputs[span.topic]},
        RangeStage(built.stage, span),
        observer=observer,
        group_id=group,
    )
    _run_through(runtime, pinned, group, span, timeout_s)
    production = [
        a for a in _alerts(settings, settings.topics.alerts.name, span.first_ms) if _in_range(a, span)
    ]
    replayed = _alerts(pinned, pinned.topics.alerts.name)
    return ReplayReport(
        span,
        {name: getattr(pinned.topics, name).name for name in ("alerts", "inferences", "dlq")},
        served,
        observer.produced[pinned.topics.inferences.name],
        sum(observer.dead_letters.values()),
        diff_alerts(production, replayed),
    )


def _start_group_at(settings: VigilSettings, group: str, span: ReplayRange) -> None:
    """Commit the range's start as the replay group's offsets, so it reads nothing before."""
    consumer = KafkaConsumer(**consumer_config(settings.kafka, group))
    try:
        tps = [TopicPartition(span.topic, p) for p in span.starts]
        consumer.assign(tps)
        consumer.commit({tp: OffsetAndMetadata(span.starts[tp.partition], "", -1) for tp in tps})
    finally:
        consumer.close()


def _run_through(
    runtime: StreamRuntime, settings: VigilSettings, group: str, span: ReplayRange, timeout_s: float
) -> None:
    """Run ``runtime`` until the group committed past every record of the range."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            runtime.run(install_signal_handlers=False)
        except BaseException as error:  # re-raised below, in the caller's thread
            errors.append(error)

    thread = threading.Thread(target=target, name="vigil-replay", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    watcher = KafkaConsumer(**consumer_config(settings.kafka, group))
    try:
        targets = {TopicPartition(span.topic, p): last + 1 for p, last in span.last.items()}
        while thread.is_alive() and time.monotonic() < deadline:
            committed = {tp: watcher.committed(tp) or 0 for tp in targets}
            if all(committed[tp] >= end for tp, end in targets.items()):
                break
            thread.join(timeout=0.5)  # bounded wait between checks of the group's progress
    finally:
        watcher.close()
        runtime.stop()
        thread.join()
    if errors:
        raise errors[0]
    if time.monotonic() >= deadline:
        raise ReplayError(f"the replay did not get through the range within {timeout_s:.0f}s")


def _alerts(settings: VigilSettings, topic: str, since_ms: int | None = None) -> list[Alert]:
    """Every alert on ``topic`` up to its end now (committed transactions only), from the first
    one stamped ``ALERT_CLOCK_SLACK_MS`` before ``since_ms`` when given: an alert is produced
    after its input, so older ones cannot be about the range, and weeks of a retained alerts
    topic are not read."""
    reader = make_reader(settings.kafka)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
        starts, ends = reader.beginning_offsets(tps), reader.end_offsets(tps)
        if since_ms is not None:
            found_at = reader.offsets_for_times({tp: max(0, since_ms - ALERT_CLOCK_SLACK_MS) for tp in tps})
            starts = {tp: at.offset if (at := found_at.get(tp)) is not None else ends[tp] for tp in tps}
        found: list[Alert] = []
        for _, record in records_between(reader, starts, ends):
            try:
                found.append(Alert.from_json_bytes(record.value))
            except ValidationError:
                continue  # not an alert: nothing to compare
        return found
    finally:
        reader.close()


def _in_range(alert: Alert, span: ReplayRange) -> bool:
    evidence = alert.evidence
    return evidence.topic == span.topic and span.holds(evidence.partition, evidence.offset)


def _key(alert: Alert) -> tuple[str, str, str, str, int, int]:
    evidence = alert.evidence
    return (alert.source_id, alert.rule, alert.label, alert.state, evidence.partition, evidence.offset)


def diff_alerts(production: Iterable[Alert], replayed: Iterable[Alert]) -> AlertDiff:
    """Production's alerts against the replay's, matched by ``_key`` (module docstring)."""
    before = {_key(a): a for a in production}
    after = {_key(a): a for a in replayed}
    diff = AlertDiff()
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key), after.get(key)
        if old is None:
            diff.added.append(AlertChange(key, None, new))
        elif new is None:
            diff.removed.append(AlertChange(key, old, None))
        elif (old.kind, old.severity) != (new.kind, new.severity) or abs(
            old.score - new.score
        ) > SCORE_TOLERANCE:
            diff.changed.append(AlertChange(key, old, new))
        else:
            diff.same += 1
    return diff
