"""The runtime against a real broker: round trips, poison messages, commits."""

from __future__ import annotations

import json

import pytest
from kafka import KafkaProducer
from kafka.partitioner.default import murmur2

from consumers.ops.topics import create_topics
from consumers.runtime.dead_letters import original_value
from consumers.runtime.deliveries import DeliveryFailedError
from consumers.runtime.kafka_clients import make_producer
from schemas.messages import DeadLetter, InferenceResult
from tests import sample_messages as samples
from tests.integration.runtime_harness import passthrough_runtime, running
from tests.kafka_helpers import (
    committed_offsets,
    end_offsets,
    produce,
    read_all,
    unique_settings,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "message",
    [samples.frame(1), samples.reading(2), samples.alert(), samples.inference(), samples.dead_letter()],
    ids=lambda m: type(m).__name__,
)
def test_each_message_type_round_trips_through_the_broker(kafka_bootstrap: str, message) -> None:
    settings = unique_settings(kafka_bootstrap)
    create_topics(settings, [settings.topics.alerts])
    topic = settings.topics.alerts.name
    produce(kafka_bootstrap, topic, [(b"k", message.to_json_bytes())])
    [record] = read_all(kafka_bootstrap, topic, 1)
    assert type(message).from_json_bytes(record.value) == message


POISON = {
    "undecodable": b"\xff\xfe\x00garbage",
    "invalid_json": b'{"asset_id": "pump-1", ',
    "schema_violation": json.dumps(
        {
            "asset_id": "pump-1",
            "sensor_id": "s",
            "kind": "temperature",
            "event_time": "2026-11-01T08:00:00",
            "values": {"temp_c": 1.0},
        }
    ).encode(),
}


def test_poison_messages_go_to_the_dlq_and_good_ones_still_flow(kafka_bootstrap: str) -> None:
    settings = unique_settings(kafka_bootstrap, max_message_bytes=2048)
    runtime = passthrough_runtime(settings)
    sensors = settings.topics.sensors.name
    good = [samples.reading(i) for i in range(20)]
    oversize = samples.reading(99).model_copy(update={"attributes": {f"k{i}": "x" * 200 for i in range(20)}})
    batch: list[tuple[bytes | None, bytes | None]] = []
    for i, reading in enumerate(good):
        batch.append((reading.asset_id.encode(), reading.to_json_bytes()))
        if i == 5:
            batch.extend((b"pump-1", value) for value in POISON.values())
        if i == 10:
            batch.append((b"pump-1", oversize.to_json_bytes()))
            batch.append((b"pump-1", None))
    produce(kafka_bootstrap, sensors, batch)

    with running(runtime):
        results = read_all(kafka_bootstrap, settings.topics.inferences.name, len(good))
        letters = read_all(kafka_bootstrap, settings.topics.dlq.name, len(POISON) + 2)
        ends = end_offsets(kafka_bootstrap, sensors)
        wait_for(
            lambda: committed_offsets(kafka_bootstrap, settings.kafka.group_id) == ends,
            what="offsets of every input committed",
        )

    assert sorted(InferenceResult.from_json_bytes(r.value).scores["temp_c"] for r in results) == sorted(
        g.values["temp_c"] for g in good
    )
    by_reason = {}
    for record in letters:
        headers = {k: v.decode() for k, v in record.headers}
        letter = DeadLetter.from_json_bytes(record.value)
        assert headers["vigil.reason"] == letter.reason
        assert headers["vigil.origin.topic"] == sensors == letter.origin_topic
        assert int(headers["vigil.origin.offset"]) == letter.origin_offset
        assert int(headers["vigil.origin.partition"]) == letter.origin_partition
        assert headers["vigil.stage"] == "decode"
        assert headers["vigil.error.class"] and headers["vigil.error.message"]
        by_reason.setdefault(letter.reason, []).append(letter)
    assert set(by_reason) == {"undecodable", "invalid_json", "schema_violation", "oversize"}
    for reason, value in POISON.items():
        assert original_value(by_reason[reason][0]) == value
    assert (
        original_value(next(d for d in by_reason["oversize"] if d.original_size > 0))
        == oversize.to_json_bytes()
    )
    assert "timezone" in by_reason["schema_violation"][0].error_message
    assert runtime.observer.dead_letters["undecodable"] == 2  # the garbage bytes and the tombstone


def test_frames_and_sensors_are_consumed_together(kafka_bootstrap: str) -> None:
    settings = unique_settings(kafka_bootstrap)
    runtime = passthrough_runtime(settings)
    frames = [samples.frame(i) for i in range(10)]
    readings = [samples.reading(i) for i in range(10)]
    produce(
        kafka_bootstrap,
        settings.topics.frames.name,
        [(f.camera_id.encode(), f.to_json_bytes()) for f in frames],
    )
    produce(
        kafka_bootstrap,
        settings.topics.sensors.name,
        [(r.asset_id.encode(), r.to_json_bytes()) for r in readings],
    )
    with running(runtime):
        results = [
            InferenceResult.from_json_bytes(r.value)
            for r in read_all(kafka_bootstrap, settings.topics.inferences.name, 20)
        ]
    sources = {r.evidence.topic for r in results}
    assert sources == {settings.topics.frames.name, settings.topics.sensors.name}
    assert {r.source_id for r in results} >= {f.camera_id for f in frames} | {r.asset_id for r in readings}


def test_a_failed_dead_letter_write_blocks_the_commit(kafka_bootstrap: str) -> None:
    settings = unique_settings(kafka_bootstrap)
    # The broker refuses any dead letter on this DLQ: every write of one fails.
    tiny_dlq = settings.topics.dlq.model_copy(update={"config": {"max.message.bytes": "64"}})
    settings = settings.model_copy(update={"topics": settings.topics.model_copy(update={"dlq": tiny_dlq})})
    create_topics(settings)
    sensors = settings.topics.sensors.name
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for value in (samples.reading(0).to_json_bytes(), b"not json", samples.reading(1).to_json_bytes()):
        producer.send(sensors, key=b"a", value=value, partition=0)
    producer.flush()
    producer.close()

    runtime = passthrough_runtime(settings)
    with pytest.raises(DeliveryFailedError, match=r"was not delivered: MessageSizeTooLarge"):
        runtime.run(install_signal_handlers=False, max_runtime_s=60)
    committed = committed_offsets(kafka_bootstrap, settings.kafka.group_id)
    assert all(offset <= 1 for offset in committed.values()), committed


def test_a_second_member_joins_mid_stream_and_nothing_is_lost(kafka_bootstrap: str) -> None:
    settings = unique_settings(kafka_bootstrap, partitions=4)
    first, second = passthrough_runtime(settings), passthrough_runtime(settings)
    sensors = settings.topics.sensors.name
    readings = [samples.reading(i) for i in range(400)]
    with running(first):
        wait_for(lambda: first.assignment, 90, what="the first member's partitions")
        produce(kafka_bootstrap, sensors, [(r.asset_id.encode(), r.to_json_bytes()) for r in readings[:200]])
        try:
            read_all(kafka_bootstrap, settings.topics.inferences.name, 50)
        except TimeoutError as error:
            observer = first.observer
            raise AssertionError(
                f"the first member holds {first.assignment}, consumed {getattr(observer, 'consumed', '?')}"
            ) from error
        with running(second):
            wait_for(lambda: second.assignment, 60, what="the second member's share of the partitions")
            produce(
                kafka_bootstrap, sensors, [(r.asset_id.encode(), r.to_json_bytes()) for r in readings[200:]]
            )
            ends = {tp: end for tp, end in end_offsets(kafka_bootstrap, sensors).items() if end > 0}
            last: dict = {}

            def all_committed() -> bool:
                last.update(committed_offsets(kafka_bootstrap, settings.kafka.group_id))
                return last == ends

            try:
                wait_for(all_committed, timeout_s=60, what="every offset committed by the two members")
            except TimeoutError as error:
                raise AssertionError(
                    f"committed {last} ends {ends} first {first.assignment} second {second.assignment}"
                ) from error
            assert first.assignment and second.assignment, "both members hold partitions"
    results = read_all(kafka_bootstrap, settings.topics.inferences.name, len(readings))
    seen = {
        (
            InferenceResult.from_json_bytes(r.value).evidence.partition,
            InferenceResult.from_json_bytes(r.value).evidence.offset,
        )
        for r in results
    }
    assert seen == {(tp.partition, o) for tp, end in ends.items() for o in range(end)}


def test_a_missing_input_topic_is_a_clear_error(kafka_bootstrap: str) -> None:
    from consumers.pipelines.passthrough import passthrough_stage
    from consumers.runtime.loop import StreamRuntime
    from schemas.messages import SensorReading

    settings = unique_settings(kafka_bootstrap)
    runtime = StreamRuntime(settings, {"no-such-topic-here": SensorReading}, passthrough_stage("out"))
    with pytest.raises(RuntimeError, match=r"topics missing: no-such-topic-here.*vigil topics create"):
        runtime.run(install_signal_handlers=False)


def test_a_missing_dead_letter_topic_stops_the_start_with_the_fix_named(kafka_bootstrap: str) -> None:
    from consumers.ops.topics import create_topics
    from consumers.pipelines.passthrough import passthrough_stage
    from consumers.runtime.loop import StreamRuntime
    from schemas.messages import SensorReading

    settings = unique_settings(kafka_bootstrap)
    create_topics(settings, [settings.topics.sensors, settings.topics.inferences, settings.topics.alerts])
    runtime = StreamRuntime(
        settings,
        {settings.topics.sensors.name: SensorReading},
        passthrough_stage(settings.topics.inferences.name),
    )
    with pytest.raises(
        RuntimeError, match=rf"topics missing: {settings.topics.dlq.name}.*vigil topics create"
    ):
        runtime.run(install_signal_handlers=False)


def test_both_clients_put_each_key_in_the_partition_the_java_client_would(kafka_bootstrap: str) -> None:
    settings = unique_settings(kafka_bootstrap, partitions=6)
    create_topics(settings, [settings.topics.sensors])
    topic = settings.topics.sensors.name
    keys = [f"asset-{n}".encode() for n in range(40)]
    for client in ("kafka-python", "confluent"):
        producer = make_producer(settings.kafka.model_copy(update={"client": client}))
        try:
            for key in keys:
                producer.send(topic, value=client.encode(), key=key)
            producer.flush(30)
        finally:
            producer.close(5)
    records = read_all(kafka_bootstrap, topic, 2 * len(keys))
    placed = {(r.value.decode(), r.key): r.partition for r in records}
    # Kafka's Java client: murmur2 of the key, sign bit cleared, modulo the partition count
    java = {key: (murmur2(key) & 0x7FFFFFFF) % 6 for key in keys}
    assert {k: placed[("kafka-python", k)] for k in keys} == java
    assert {k: placed[("confluent", k)] for k in keys} == java
    assert len(set(java.values())) > 1
