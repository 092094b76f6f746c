from __future__ import annotations

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.future import Future
from kafka.structs import TopicPartition

from consumers.runtime.deliveries import DeliveryFailedError, DeliveryLedger
from consumers.runtime.records import InboundRecord


def record(offset: int, partition: int = 0) -> InboundRecord:
    return InboundRecord("in", partition, offset, None, b"{}")


def test_an_input_completes_when_all_its_outputs_are_acknowledged() -> None:
    ledger = DeliveryLedger()
    key = ledger.receive(record(1))
    alert, result = Future(), Future()
    ledger.expect(key, "alerts", alert)
    ledger.expect(key, "inferences", result)
    ledger.processed(key)
    result.success("metadata")
    assert ledger.settle() == []
    alert.success("metadata")
    assert ledger.settle() == [(key, ["inferences", "alerts"])]
    assert len(ledger) == 0


def test_acknowledgements_may_arrive_out_of_order_and_before_processing_ends() -> None:
    ledger = DeliveryLedger()
    first, second = ledger.receive(record(1)), ledger.receive(record(2))
    f1, f2 = Future(), Future()
    ledger.expect(first, "out", f1)
    ledger.expect(second, "out", f2)
    f2.success(None)
    f1.success(None)
    assert ledger.settle() == []  # neither is processed yet: more outputs may come
    ledger.processed(second)
    assert [k for k, _ in ledger.settle()] == [second]
    ledger.processed(first)
    assert [k for k, _ in ledger.settle()] == [first]


def test_an_input_without_outputs_completes_at_once() -> None:
    ledger = DeliveryLedger()
    key = ledger.receive(record(5))
    ledger.processed(key)
    assert ledger.settle() == [(key, [])]


def test_a_failed_delivery_raises_and_nothing_completes() -> None:
    ledger = DeliveryLedger()
    key = ledger.receive(record(3))
    future = Future()
    ledger.expect(key, "vigil.dlq", future)
    ledger.processed(key)
    future.failure(KafkaTimeoutError("broker gone"))
    with pytest.raises(DeliveryFailedError, match=r"in\[0\]@3 to vigil.dlq"):
        ledger.settle()
    assert len(ledger) == 1


def test_revoked_partitions_are_forgotten_and_late_acks_ignored() -> None:
    ledger = DeliveryLedger()
    kept, revoked = ledger.receive(record(1, partition=0)), ledger.receive(record(1, partition=1))
    late = Future()
    ledger.expect(revoked, "out", late)
    ledger.forget([TopicPartition("in", 1)])
    assert not ledger.holds(revoked) and ledger.holds(kept)
    late.failure(KafkaTimeoutError("too late to matter"))
    assert ledger.settle() == []
