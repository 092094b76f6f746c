"""Helpers for tests against a real broker: unique topics, producing, reading with deadlines."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as Errors

from schemas.settings import KafkaSettings, TopicSpec, TopicsSettings, VigilSettings

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T], timeout_s: float = 60.0, interval_s: float = 0.1, what: str = "condition"
) -> T:
    """Poll ``condition`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)  # polling interval, bounded by the deadline above


CLIENT_ENV = "VIGIL_TEST_KAFKA_CLIENT"


def client_under_test() -> Literal["kafka-python", "confluent"]:
    """The runtime's client under test: ``VIGIL_TEST_KAFKA_CLIENT`` (``make test`` runs the
    runtime and sink tests once more with ``kafka-python``), else the default."""
    client = os.environ.get(CLIENT_ENV, KafkaSettings.model_fields["client"].default)
    if client not in ("kafka-python", "confluent"):
        raise ValueError(f"{CLIENT_ENV}={client!r}: expected kafka-python or confluent")
    return client  # type: ignore[return-value]


def unique_settings(bootstrap: str, partitions: int = 2, **runtime: Any) -> VigilSettings:
    """Settings whose topics and group are unique to one test."""
    tag = uuid.uuid4().hex[:10]
    topics = TopicsSettings(
        frames=TopicSpec(name=f"t-{tag}.frames", partitions=partitions),
        sensors=TopicSpec(name=f"t-{tag}.sensors", partitions=partitions),
        alerts=TopicSpec(name=f"t-{tag}.alerts", partitions=1),
        inferences=TopicSpec(name=f"t-{tag}.inferences", partitions=1),
        dlq=TopicSpec(name=f"t-{tag}.dlq", partitions=1, config={"max.message.bytes": "8388608"}),
        redrive_log=TopicSpec(
            name=f"t-{tag}.dlq.redriven", partitions=1, config={"cleanup.policy": "compact"}
        ),
        sensor_state=TopicSpec(
            name=f"t-{tag}.sensors.state", partitions=partitions, config={"cleanup.policy": "compact"}
        ),
    )
    base = VigilSettings()
    return VigilSettings(
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap, group_id=f"g-{tag}", linger_ms=2, client=client_under_test()
        ),
        topics=topics,
        runtime=base.runtime.model_copy(update={"commit_interval_ms": 200, **runtime}),
        metrics=base.metrics.model_copy(update={"enabled": False}),
    )


def produce(
    bootstrap: str, topic: str, values: list[tuple[bytes | None, bytes | None]], **extra: Any
) -> None:
    """Produce ``(key, value)`` pairs and wait until all are acknowledged."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **extra)
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in values]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()


def read_all(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0, isolation: str = "read_committed"
) -> list[Any]:
    """Read ``topic`` from the start until at least ``expected`` records arrived (or fail)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation,
        group_id=None,
    )
    records: list[Any] = []
    try:

        def enough() -> bool:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            return len(records) >= expected

        wait_for(enough, timeout_s, interval_s=0, what=f"{expected} records on {topic} (got {len(records)})")
        return records
    finally:
        consumer.close()


def read_until_quiet(
    bootstrap: str, topic: str, quiet_s: float = 2.0, isolation: str = "read_committed"
) -> list[Any]:
    """Read ``topic`` to its end offsets (the whole topic, as it stands now)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation, group_id=None
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        records: list[Any] = []

        def at_end() -> bool:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            return all(consumer.position(tp) >= end[tp] for tp in partitions)

        wait_for(at_end, 60, interval_s=0, what=f"end of {topic}")
        return records
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group_id: str) -> dict[TopicPartition, int]:
    """The group's committed offsets per partition (none while its coordinator is not up yet)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        result = admin.list_group_offsets({group_id: None})
        return {tp: meta.offset for tp, meta in result.get(group_id, {}).items()}
    except (Errors.CoordinatorNotAvailableError, Errors.CoordinatorLoadInProgressError):
        return {}
    finally:
        admin.close()


def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    """The log-end offset of each partition of ``topic``."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return dict(consumer.end_offsets(partitions))
    finally:
        consumer.close()
