"""Pausing and resuming a partition with the runtime's kafka-python consumer, on a real broker:
records it had buffered when paused come back once it resumes (sensor restores and
backpressure both pause partitions)."""

from __future__ import annotations

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.structs import TopicPartition

from consumers.runtime.kafka_clients import make_reader
from schemas.settings import KafkaSettings
from tests.kafka_helpers import unique_settings, wait_for


def produce_to(bootstrap: str, tp: TopicPartition, count: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        for future in [producer.send(tp.topic, b"x" * 100, partition=tp.partition) for _ in range(count)]:
            future.get(timeout=30)
    finally:
        producer.close()


pytestmark = pytest.mark.integration


def test_records_buffered_when_a_partition_was_paused_flow_again_after_resume(kafka_bootstrap: str) -> None:
    topic = unique_settings(kafka_bootstrap).topics.sensors.name
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        admin.close()
    paused, other = TopicPartition(topic, 1), TopicPartition(topic, 0)
    produce_to(kafka_bootstrap, paused, 300)
    reader = make_reader(KafkaSettings(bootstrap_servers=kafka_bootstrap, max_poll_records=100))
    received: dict[TopicPartition, int] = {paused: 0, other: 0}

    def poll_into() -> None:
        for tp, records in reader.poll(timeout_ms=200).items():
            received[tp] += len(records)

    try:
        reader.assign([other, paused])
        reader.seek_to_beginning(other, paused)
        wait_for(lambda: poll_into() or received[paused] > 0, 30, what="the first records")
        assert received[paused] < 300  # the rest is buffered in the consumer
        reader.pause(paused)
        # Another partition's batch is drained while the first is paused: its buffered records
        # are parked, and the consumer's in-line slot ends up holding an exhausted batch.
        produce_to(kafka_bootstrap, other, 10)
        wait_for(lambda: poll_into() or received[other] == 10, 30, what="the other partition's records")
        reader.resume(paused)
        wait_for(lambda: poll_into() or received[paused] == 300, 30, what="every record after resume")
    finally:
        reader.close()
