"""``vigil dlq redrive``: dead letters back to their original topic once the cause is fixed.

The dead-letter topic is read from the beginning (or from ``since``) up to its end as it
stood when the command started; letters arriving meanwhile wait for the next redrive. Each
letter chosen by reason and by the time it failed is published again to its original topic
with its original key, value and headers, and three headers saying where it comes from:
``vigil.origin`` (``topic[partition]@offset`` of the original), ``vigil.redrive.from`` (the
dead letter's own coordinates) and ``vigil.redrive.reason``. A letter whose copy was
truncated (the original was too big for the dead-letter topic) is redriven from the
original record, read back from its topic at its offset; one no longer retained there is
reported as skipped, never published half. The dead letters themselves stay where they are.

Alerts a sink could not deliver (reason ``undelivered_alert``, stage ``sink:<name>``) go back
to that sink, not to a topic: they are delivered again to the receiver the configuration
names now, one by one, waiting for each (a receiver still down is reported, and the letter
stays for the next redrive).

Each letter redriven is recorded in the compacted redrive log (``topics.redrive_log``), keyed
by its coordinates, once the broker or the receiver took it again; a later redrive skips the
letters recorded there (``already``) unless ``again`` is set. A dry run says which letters
would go and which would be skipped, and records nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from pydantic import ValidationError

from consumers.ops.topics import create_topics
from consumers.runtime.dead_letters import HEADER_PREFIX, original_value
from consumers.runtime.kafka_clients import make_producer, make_reader, records_between
from consumers.runtime.ports import ProducerPort
from consumers.runtime.records import Output
from consumers.runtime.sink import SINK_STAGE
from consumers.sinks import Sink, SinkDelivery, configured_sinks
from schemas.messages import DeadLetter
from schemas.settings import VigilSettings


@dataclass
class RedriveReport:
    """What a redrive published, by original topic and reason, and what it could not."""

    published: Counter[tuple[str, str]] = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    """Letters skipped because an earlier redrive published them (``again`` redrives them)."""


def redrive(
    settings: VigilSettings,
    reasons: Iterable[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    dry_run: bool = False,
    again: bool = False,
) -> RedriveReport:
    """Publish the chosen dead letters to their original topics (none with ``dry_run``); letters
    an earlier redrive published are skipped unless ``again``."""
    wanted = set(reasons)
    dlq = settings.topics.dlq.name
    log_topic = settings.topics.redrive_log.name
    if not dry_run:
        create_topics(settings, [settings.topics.redrive_log])  # a deployment from before the log
    reader = make_reader(settings.kafka)
    producer = None if dry_run else make_producer(settings.kafka)
    report = RedriveReport()
    sinks: dict[str, Sink] | None = None
    try:
        done = set() if again else redriven(reader, log_topic)
        partitions = [TopicPartition(dlq, p) for p in sorted(reader.partitions_for_topic(dlq) or ())]
        ends = reader.end_offsets(partitions)
        starts = reader.beginning_offsets(partitions)
        if since is not None:
            found = reader.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
            starts = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in partitions}
        for tp, record in records_between(reader, starts, ends):
            where = f"{dlq}[{tp.partition}]@{record.offset}"
            try:
                letter = DeadLetter.from_json_bytes(record.value)
            except ValidationError:
                report.skipped.append(f"{where}: not a dead letter")
                continue
            if wanted and letter.reason not in wanted:
                continue
            if (since and letter.failed_at < since) or (until and letter.failed_at > until):
                continue
            if where in done:
                report.already.append(where)
                continue
            if letter.stage.startswith(SINK_STAGE):
                if sinks is None:
                    sinks = {sink.label: sink for sink in configured_sinks(settings)}
                problem = None if dry_run else _redeliver(settings, sinks, letter, record.key)
                if problem is None:
                    report.published[(letter.stage, letter.reason)] += 1
                    if producer is not None:
                        _record(producer, log_topic, where, letter.stage)
                else:
                    report.skipped.append(f"{where}: {problem}")
                continue
            value = _original(settings, letter)
            origin = f"{letter.origin_topic}[{letter.origin_partition}]@{letter.origin_offset}"
            if value is None:
                report.skipped.append(f"{where}: the truncated original {origin} is no longer retained")
                continue
            headers = [(k, v) for k, v in record.headers or () if not k.startswith(HEADER_PREFIX)]
            headers += [
                ("vigil.origin", origin.encode()),
                ("vigil.redrive.from", where.encode()),
                ("vigil.redrive.reason", letter.reason.encode()),
            ]
            if producer is not None:
                producer.send(letter.origin_topic, key=record.key, value=value, headers=headers)
                _record(producer, log_topic, where, letter.origin_topic)
            report.published[(letter.origin_topic, letter.reason)] += 1
        if producer is not None:
            producer.flush()  # raises when the broker did not take them: the command fails
    finally:
        reader.close()
        if producer is not None:
            producer.close()
        for sink in (sinks or {}).values():
            sink.close(0)
    return report


def redriven(reader: KafkaConsumer, log_topic: str) -> set[str]:
    """The coordinates (``dlq[partition]@offset``) of every letter the redrive log records."""
    partitions = [TopicPartition(log_topic, p) for p in sorted(reader.partitions_for_topic(log_topic) or ())]
    if not partitions:
        return set()
    ends = reader.end_offsets(partitions)
    starts = reader.beginning_offsets(partitions)
    return {
        record.key.decode()
        for _, record in records_between(reader, starts, ends)
        if record.key is not None and record.value is not None  # a tombstone forgets it
    }


def _record(producer: ProducerPort, log_topic: str, where: str, to: str) -> None:
    """Note in the redrive log that the letter at ``where`` went to ``to`` (sent with the
    republished record; the producer's final flush covers both)."""
    entry = {"redriven_at": datetime.now(UTC).isoformat(), "to": to}
    producer.send(log_topic, key=where.encode(), value=json.dumps(entry).encode())


def _redeliver(
    settings: VigilSettings, sinks: dict[str, Sink], letter: DeadLetter, key: bytes | None
) -> str | None:
    """Deliver a parked alert to its sink again; what went wrong, or None once delivered."""
    sink = sinks.get(letter.stage)
    if sink is None:
        return f"no {letter.stage.removeprefix(SINK_STAGE)} sink is configured now"
    delivery = SinkDelivery()
    sent = sink.send(Output(settings.topics.alerts.name, key, original_value(letter) or b""))
    sent.add_callback(lambda _: delivery.succeed())
    sent.add_errback(delivery.fail)
    timeout_s = (settings.kafka.request_timeout_ms / 1000) * 4
    if not delivery.wait(timeout_s):
        return f"{letter.stage} did not answer within {timeout_s:.0f}s"
    return None if delivery.error is None else str(delivery.error)


def _original(settings: VigilSettings, letter: DeadLetter) -> bytes | None:
    """The whole original value: the letter's copy, or the original record when truncated."""
    if not letter.original_truncated:
        return original_value(letter) or b""
    reader = make_reader(settings.kafka)
    try:
        tp = TopicPartition(letter.origin_topic, letter.origin_partition)
        reader.assign([tp])
        if reader.beginning_offsets([tp])[tp] > letter.origin_offset:
            return None
        reader.seek(tp, letter.origin_offset)
        for records in reader.poll(timeout_ms=5_000, max_records=1).values():
            for record in records:
                if record.offset == letter.origin_offset:
                    return bytes(record.value or b"")
        return None
    finally:
        reader.close()
