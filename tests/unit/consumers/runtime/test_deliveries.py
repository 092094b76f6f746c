from __future__ import annotations

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.future import Future
from kafka.structs import TopicPartition

from consumers.runtime.deliveries import DeliveryFailedError, DeliveryLedger, Shipment
from consumers.runtime.offsets import OffsetTracker, PartitionOffsets
from consumers.sinks import SinkDelivery

P0, P1 = TopicPartition("in", 0), TopicPartition("in", 1)


def received(tracker: OffsetTracker, tp: TopicPartition, *offsets: int) -> PartitionOffsets:
    partition = tracker.partition(tp)
    partition.track_batch(list(offsets))
    return partition


def shipped(
    ledger: DeliveryLedger, partition: PartitionOffsets, offset: int, ack: Future, label: str = "out"
) -> Shipment:
    """A sealed shipment of one output of ``offset``."""
    shipment = Shipment()
    shipment.add_input(partition, offset)
    ledger.expect(shipment, partition, offset, label, ack)
    ledger.seal(shipment)
    return shipment


def test_inputs_complete_when_every_output_of_their_shipment_is_acknowledged() -> None:
    tracker = OffsetTracker()
    ledger = DeliveryLedger(tracker)
    p0 = received(tracker, P0, 1, 2)
    shipment = Shipment()
    alert, result, other = Future(), Future(), SinkDelivery()
    for offset, label, ack in ((1, "alerts", alert), (1, "inferences", result), (2, "sink:webhook", other)):
        shipment.add_input(p0, offset)
        ledger.expect(shipment, p0, offset, label, ack)
    ledger.seal(shipment)
    result.success("metadata")
    other.succeed()
    assert ledger.settle() == []
    assert tracker.to_commit() == {P0: 1}
    alert.success("metadata")
    assert ledger.settle() == [shipment]
    assert shipment.labels == {"alerts": 1, "inferences": 1, "sink:webhook": 1}
    assert tracker.to_commit() == {P0: 3} and tracker.in_flight() == 0


def test_acknowledgements_may_arrive_before_the_shipment_is_sealed() -> None:
    tracker = OffsetTracker()
    ledger = DeliveryLedger(tracker)
    p0 = received(tracker, P0, 1)
    shipment, ack = Shipment(), Future()
    shipment.add_input(p0, 1)
    ledger.expect(shipment, p0, 1, "out", ack)
    ack.success(None)
    assert ledger.settle() == []  # not sealed: more outputs may come
    ledger.seal(shipment)
    assert ledger.settle() == [shipment]
    assert tracker.in_flight() == 0


def test_shipments_complete_independently_and_out_of_order() -> None:
    tracker = OffsetTracker()
    ledger = DeliveryLedger(tracker)
    p0 = received(tracker, P0, 1, 2)
    f1, f2 = Future(), Future()
    first, second = shipped(ledger, p0, 1, f1), shipped(ledger, p0, 2, f2)
    f2.success(None)
    assert ledger.settle() == [second]
    assert tracker.to_commit() == {P0: 1}  # 1 is still unacknowledged
    f1.success(None)
    assert ledger.settle() == [first]
    assert tracker.to_commit() == {P0: 3}


def test_an_input_without_outputs_completes_at_once() -> None:
    tracker = OffsetTracker()
    ledger = DeliveryLedger(tracker)
    p0 = received(tracker, P0, 5)
    shipment = Shipment()
    shipment.add_input(p0, 5)
    ledger.seal(shipment)
    assert ledger.settle() == [shipment]
    assert tracker.to_commit() == {P0: 6}


def test_a_failed_delivery_raises_and_nothing_completes() -> None:
    tracker = OffsetTracker()
    ledger = DeliveryLedger(tracker)
    p0 = received(tracker, P0, 3)
    future = Future()
    shipped(ledger, p0, 3, future, "vigil.dlq")
    future.failure(KafkaTimeoutError("broker gone"))
    with pytest.raises(DeliveryFailedError, match=r"in\[0\]@3 to vigil.dlq"):
        ledger.settle()
    assert tracker.in_flight() == 1 and tracker.to_commit() == {P0: 3}


def test_a_late_failure_for_a_revoked_partition_neither_raises_nor_holds_the_rest() -> None:
    tracker = OffsetTracker()
    ledger = DeliveryLedger(tracker)
    kept, revoked = received(tracker, P0, 1), received(tracker, P1, 1)
    shipment, ok, late = Shipment(), Future(), Future()
    for partition, ack in ((kept, ok), (revoked, late)):
        shipment.add_input(partition, 1)
        ledger.expect(shipment, partition, 1, "out", ack)
    ledger.seal(shipment)
    tracker.forget({P1})
    late.failure(KafkaTimeoutError("too late to matter"))
    ok.success(None)
    assert ledger.settle() == [shipment]
    assert tracker.to_commit() == {P0: 2}
    assert tracker.get(*P1) is None


def test_an_acknowledgement_for_a_forgotten_partition_does_not_count_for_its_re_delivery() -> None:
    tracker = OffsetTracker()
    ledger = DeliveryLedger(tracker)
    before = received(tracker, P0, 7)
    ack = Future()
    shipment = shipped(ledger, before, 7, ack)
    tracker.forget({P0})
    again = received(tracker, P0, 7)  # re-delivered after the partition came back
    ack.success(None)
    assert ledger.settle() == [shipment]
    assert again.is_open(7) and tracker.to_commit() == {P0: 7}


def kafka_shipment(
    ledger: DeliveryLedger, *inputs: tuple[PartitionOffsets, int], outputs: int = 1
) -> Shipment:
    """A sealed shipment of ``outputs`` Kafka outputs to ``out`` covering ``inputs``."""
    shipment = Shipment()
    for partition, offset in inputs:
        shipment.add_input(partition, offset)
    ledger.expect_kafka(shipment, ["out"] * outputs)
    ledger.seal(shipment)
    return shipment


def test_a_shipments_kafka_outputs_report_to_one_callback_and_complete_it() -> None:
    tracker = OffsetTracker()
    ledger = DeliveryLedger(tracker)
    p0 = received(tracker, P0, 1, 2)
    shipment = kafka_shipment(ledger, (p0, 1), (p0, 2), outputs=3)
    report = ledger.reporter(shipment)
    assert ledger.reporter(shipment) is report  # one per shipment, none per output
    report(None, "librdkafka's message")  # confluent: (error, message)
    report(None, "record metadata")  # kafka-python's callback: (None, metadata)
    assert ledger.settle() == [] and tracker.to_commit() == {P0: 1}
    report(None)
    assert ledger.settle() == [shipment]
    assert shipment.labels == {"out": 3}
    assert tracker.to_commit() == {P0: 3} and tracker.in_flight() == 0


def test_a_failed_kafka_output_raises_the_clients_error_naming_the_shipments_inputs() -> None:
    tracker = OffsetTracker()
    ledger = DeliveryLedger(tracker, kafka_error=lambda error: KafkaTimeoutError(f"translated {error}"))
    p0, p1 = received(tracker, P0, 4, 5, 6), received(tracker, P1, 9)
    shipment = kafka_shipment(ledger, (p0, 4), (p0, 6), (p1, 9), outputs=3)
    report = ledger.reporter(shipment)
    report(None)
    report("MSG_SIZE_TOO_LARGE", "librdkafka's message")
    with pytest.raises(DeliveryFailedError, match=r"in\[0\]@4-6, in\[1\]@9 to Kafka.*translated MSG_SIZE"):
        ledger.settle()
    assert tracker.in_flight() == 4 and tracker.to_commit() == {P0: 4, P1: 9}


def test_a_late_kafka_failure_for_a_partition_given_up_settles_quietly() -> None:
    tracker = OffsetTracker()
    ledger = DeliveryLedger(tracker)
    gone = received(tracker, P1, 3)
    shipment = kafka_shipment(ledger, (gone, 3))
    tracker.forget({P1})
    ledger.reporter(shipment)(KafkaTimeoutError("too late to matter"))
    assert ledger.settle() == [shipment]
    assert tracker.get(*P1) is None
