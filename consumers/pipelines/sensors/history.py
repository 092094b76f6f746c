"""Reading a partition's recent history back, to restore the sensor state on assignment.

No deadline bounds the whole read: a large history on a busy machine takes as long as it
takes, and progress is what is watched. Only a read that makes no progress for ``stall_s``
fails (the restorer tries again).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from consumers.runtime.kafka_clients import make_reader
from consumers.runtime.records import InboundRecord
from schemas.settings import KafkaSettings

STALL_S = 60.0
"""A read back that gets no record for this long, short of its end, fails."""

Progress = Callable[[int, int], None]
"""Told (records read, records to read) as a read back goes."""


class HistoryStalled(TimeoutError):
    """A read back got no record for ``stall_s`` before reaching its end."""


def read_back(
    kafka: KafkaSettings,
    topic: str,
    partition: int,
    until_offset: int,
    history_s: float,
    now_ms: int | None = None,
    stall_s: float = STALL_S,
    progress: Progress | None = None,
) -> Iterator[InboundRecord]:
    """The records of ``topic``/``partition`` from ``history_s`` ago (by Kafka timestamp) up to
    ``until_offset`` (exclusive), in offset order."""
    if history_s <= 0 or until_offset <= 0:
        return
    reader = make_reader(kafka)
    tp = TopicPartition(topic, partition)
    try:
        reader.assign([tp])
        since_ms = (now_ms if now_ms is not None else int(time.time() * 1000)) - int(history_s * 1000)
        found = reader.offsets_for_times({tp: since_ms}).get(tp)
        first = reader.beginning_offsets([tp])[tp]
        start = max(first, found.offset if found is not None else until_offset)
        yield from _read(reader, tp, start, until_offset, stall_s, progress)
    finally:
        reader.close()


def read_whole(
    kafka: KafkaSettings,
    topic: str,
    partition: int,
    stall_s: float = STALL_S,
    progress: Progress | None = None,
) -> Iterator[InboundRecord]:
    """Every record of ``topic``/``partition`` as it stands now (a compacted topic's), in offset order."""
    reader = make_reader(kafka)
    tp = TopicPartition(topic, partition)
    try:
        reader.assign([tp])
        start, end = reader.beginning_offsets([tp])[tp], reader.end_offsets([tp])[tp]
        yield from _read(reader, tp, start, end, stall_s, progress)
    finally:
        reader.close()


def _read(
    reader: KafkaConsumer,
    tp: TopicPartition,
    start: int,
    until_offset: int,
    stall_s: float,
    progress: Progress | None,
) -> Iterator[InboundRecord]:
    if start >= until_offset:
        return
    reader.seek(tp, start)
    total = until_offset - start
    last_progress = time.monotonic()
    while (position := reader.position(tp)) < until_offset:
        if progress is not None:
            progress(position - start, total)
        messages = reader.poll(timeout_ms=500).get(tp, [])
        if messages:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > stall_s:
            raise HistoryStalled(
                f"reading back {tp.topic}/{tp.partition} made no progress for {stall_s:.0f}s "
                f"at offset {position} of {until_offset}"
            )
        for message in messages:
            if message.offset >= until_offset:
                return
            yield InboundRecord.from_kafka(message)
