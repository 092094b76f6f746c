from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.future import Future
from kafka.structs import TopicPartition

from consumers.runtime.deliveries import DeliveryFailedError, DeliveryLedger, Shipment
from consumers.runtime.offsets import OffsetTracker, PartitionOffsets
from consumers.runtime.records import Output
from consumers.runtime.sink import OutputSink, SinkDelivery

P0, P1 = TopicPartition("in", 0), TopicPartition("in", 1)


def received(tracker: OffsetTracker, tp: TopicPartition, *offsets: int) -> PartitionOffsets:
    partition = tracker.partition(tp)
    partition.track_batch(list(offsets))
    return partition


class AckingSink(OutputSink):
    """Answers each output with the next acknowledgement of ``acks`` (settled by the test)."""

    def __init__(self, name: str, *acks: Future | SinkDelivery) -> None:
        self.name = name
        self._acks = list(acks)

    def wants(self, output: Output) -> bool:
        return True

    def send(self, output: Output) -> Future | SinkDelivery:  # type: ignore[override]
        return self._acks.pop(0)

    def flush(self, timeout_s: float) -> None: ...

    def close(self, timeout_s: float) -> None: ...


class ReportingSink(AckingSink):
    """Like a Kafka client: hands the shipment's one report callback to the test."""

    label = "Kafka"

    def __init__(self, translate: Callable[[Any], BaseException] | None = None) -> None:
        super().__init__("kafka")
        self.reports: list[Callable[..., None]] = []
        self._translate = translate

    def counted_as(self, outputs: Sequence[Output]) -> list[str]:
        return [output.topic for output in outputs]

    def send_all(self, outputs: Sequence[Output], report: Callable[..., None]) -> None:
        self.reports.append(report)

    def delivery_error(self, error: Any) -> BaseException:
        return self._translate(error) if self._translate else super().delivery_error(error)


def out(topic: str = "out") -> Output:
    return Output(topic, None, b"")


def shipped(
    ledger: DeliveryLedger, partition: PartitionOffsets, offset: int, ack: Future, topic: str = "out"
) -> Shipment:
    """A sealed shipment of one output of ``offset``."""
    shipment = Shipment()
    shipment.add_input(partition, offset)
    ledger.ship(shipment, AckingSink(topic, ack), [out(topic)])
    ledger.seal(shipment)
    return shipment


def test_inputs_complete_when_every_output_of_their_shipment_is_acknowledged() -> None:
    tracker = OffsetTracker()
    ledger = DeliveryLedger(tracker)
    p0 = received(tracker, P0, 1, 2)
    shipment = Shipment()
    alert, result, other = Future(), Future(), SinkDelivery()
    shipment.add_input(p0, 1)
    shipment.add_input(p0, 2)
    topics = AckingSink("topics", alert, result)
    topics.counted_as = lambda outputs: [o.topic for o in outputs]  # type: ignore[method-assign]
    ledger.ship(shipment, topics, [out("alerts"), out("inferences")])
    ledger.ship(shipment, AckingSink("webhook", other), [out("alerts")])
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
    ledger.ship(shipment, AckingSink("out", ack), [out()])
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
    shipped(ledger, p0, 3, future, "webhook")
    future.failure(KafkaTimeoutError("broker gone"))
    with pytest.raises(
        DeliveryFailedError, match=r"in\[0\]@3 to sink:webhook was not delivered: KafkaTimeout"
    ):
        ledger.settle()
    assert tracker.in_flight() == 1 and tracker.to_commit() == {P0: 3}


def test_a_late_failure_for_a_revoked_partition_neither_raises_nor_holds_the_rest() -> None:
    tracker = OffsetTracker()
    ledger = DeliveryLedger(tracker)
    kept, revoked = received(tracker, P0, 1), received(tracker, P1, 1)
    ok, late = Future(), Future()
    done = shipped(ledger, kept, 1, ok)
    gone = shipped(ledger, revoked, 1, late)
    tracker.forget({P1})
    late.failure(KafkaTimeoutError("too late to matter"))
    ok.success(None)
    assert sorted(map(id, ledger.settle())) == sorted(map(id, [done, gone]))
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
    ledger: DeliveryLedger, sink: ReportingSink, *inputs: tuple[PartitionOffsets, int], outputs: int = 1
) -> Shipment:
    """A sealed shipment of ``outputs`` Kafka outputs to ``out`` covering ``inputs``."""
    shipment = Shipment()
    for partition, offset in inputs:
        shipment.add_input(partition, offset)
    ledger.ship(shipment, sink, [out() for _ in range(outputs)])
    ledger.seal(shipment)
    return shipment


def test_a_shipments_kafka_outputs_report_to_one_callback_and_complete_it() -> None:
    tracker = OffsetTracker()
    ledger = DeliveryLedger(tracker)
    p0 = received(tracker, P0, 1, 2)
    sink = ReportingSink()
    shipment = kafka_shipment(ledger, sink, (p0, 1), (p0, 2), outputs=3)
    ledger.ship(Shipment(), sink, [out()])
    (report, other) = sink.reports
    assert report is not other  # one per shipment, none per output
    report(None, "librdkafka's message")  # confluent: (error, message)
    report(None, "record metadata")  # kafka-python's callback: (None, metadata)
    assert ledger.settle() == [] and tracker.to_commit() == {P0: 1}
    report(None)
    assert ledger.settle() == [shipment]
    assert shipment.labels == {"out": 3}
    assert tracker.to_commit() == {P0: 3} and tracker.in_flight() == 0


def test_a_failed_kafka_output_raises_the_clients_error_naming_the_shipments_inputs() -> None:
    tracker = OffsetTracker()
    ledger = DeliveryLedger(tracker)
    p0, p1 = received(tracker, P0, 4, 5, 6), received(tracker, P1, 9)
    sink = ReportingSink(lambda error: KafkaTimeoutError(f"translated {error}"))
    kafka_shipment(ledger, sink, (p0, 4), (p0, 6), (p1, 9), outputs=3)
    (report,) = sink.reports
    report(None)
    report("MSG_SIZE_TOO_LARGE", "librdkafka's message")
    with pytest.raises(DeliveryFailedError, match=r"in\[0\]@4-6, in\[1\]@9 to Kafka.*translated MSG_SIZE"):
        ledger.settle()
    assert tracker.in_flight() == 4 and tracker.to_commit() == {P0: 4, P1: 9}


def test_a_late_kafka_failure_for_a_partition_given_up_settles_quietly() -> None:
    tracker = OffsetTracker()
    ledger = DeliveryLedger(tracker)
    gone = received(tracker, P1, 3)
    sink = ReportingSink()
    shipment = kafka_shipment(ledger, sink, (gone, 3))
    tracker.forget({P1})
    sink.reports[0](KafkaTimeoutError("too late to matter"))
    assert ledger.settle() == [shipment]
    assert tracker.get(*P1) is None
