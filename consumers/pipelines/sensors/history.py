"""Reading a partition's recent history back, to rebuild the sensor state on assignment."""

from __future__ import annotations

import time
from collections.abc import Iterator

from kafka.structs import TopicPartition

from consumers.runtime.kafka_clients import make_reader
from consumers.runtime.records import InboundRecord
from schemas.settings import KafkaSettings


def read_back(
    kafka: KafkaSettings,
    topic: str,
    partition: int,
    until_offset: int,
    history_s: float,
    now_ms: int | None = None,
    timeout_s: float = 120.0,
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
        if start >= until_offset:
            return
        reader.seek(tp, start)
        deadline = time.monotonic() + timeout_s
        while reader.position(tp) < until_offset:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"reading back {topic}/{partition} up to offset {until_offset} took over {timeout_s:.0f}s"
                )
            for message in reader.poll(timeout_ms=500).get(tp, []):
                if message.offset >= until_offset:
                    return
                yield InboundRecord.from_kafka(message)
    finally:
        reader.close()
