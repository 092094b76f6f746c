"""Ids of what a record yields are valid ``Identifier`` s, whatever its topic is called."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consumers.pipelines.passthrough import result_for
from consumers.runtime.records import InboundRecord, Work
from schemas.messages import InferenceResult
from tests import sample_messages as samples


@pytest.mark.parametrize("topic", ["vigil.sensors", "plant_a.sensors", "x" * 249, "Plant-A.line_3.readings"])
def test_a_pass_through_result_is_valid_for_any_kafka_topic_name(topic: str) -> None:
    record = InboundRecord(topic, 2, 17, b"k", b"{}")
    output = result_for(Work(record, samples.reading(1), datetime.now(UTC)), "vigil.inferences")
    result = InferenceResult.from_json_bytes(output.value)  # validates the id
    assert result.result_id.endswith("-2-17") and result.evidence.topic == topic
    assert (result.result_id == f"{topic}-2-17") == (topic == "vigil.sensors")


def test_ids_stay_distinct_per_topic_partition_offset_and_part() -> None:
    ids = {
        InboundRecord(topic, p, o, None, None).item_id(*parts)
        for topic in ("a_b", "a.b", "a-b")
        for p in (0, 1)
        for o in (0, 10)
        for parts in ((), ("w0",), ("w1",))
    }
    assert len(ids) == 3 * 2 * 2 * 3


def test_an_item_id_names_its_parts_after_topic_partition_and_offset() -> None:
    record = InboundRecord("vigil.sensors", 4, 99, None, None)
    assert record.item_id() == "vigil.sensors-4-99"
    assert record.item_id("w3", "a") == "vigil.sensors-4-99-w3-a"


def test_a_poll_batch_becomes_records_once() -> None:
    from kafka.consumer.fetcher import ConsumerRecord

    read = ConsumerRecord(
        topic="t",
        partition=1,
        leader_epoch=0,
        offset=5,
        timestamp=1700,
        timestamp_type=0,
        key=b"k",
        value=b"v",
        headers=[("h", None)],
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=1,
        serialized_header_size=1,
    )
    assert InboundRecord.all_from_kafka([read]) == [InboundRecord("t", 1, 5, b"k", b"v", (("h", b""),), 1700)]
    records = [InboundRecord("t", 1, 6, None, b"v")]
    assert InboundRecord.all_from_kafka(records) is records  # the confluent client's: kept as they are
