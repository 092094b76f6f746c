"""Sinks besides Kafka: a record's offset is committed only after every sink acknowledged it."""

from __future__ import annotations

import threading

import pytest
from kafka.structs import TopicPartition

from consumers.runtime.deliveries import DeliveryFailedError
from consumers.runtime.observer import CountingObserver
from consumers.runtime.records import Output
from consumers.runtime.sink import OutputSink, SinkDelivery
from schemas.messages import InferenceResult
from tests import sample_messages as samples
from tests.integration.runtime_harness import passthrough_runtime, running
from tests.kafka_helpers import (
    committed_offsets,
    produce,
    read_all,
    read_until_quiet,
    unique_settings,
    wait_for,
)

pytestmark = pytest.mark.integration


class HoldingSink(OutputSink):
    """Acknowledges its first ``ack_first`` outputs at once and holds the rest until ``release``."""

    name = "holding"

    def __init__(self, ack_first: int, fail_held: bool = False) -> None:
        self.ack_first = ack_first
        self.fail_held = fail_held
        self.received: list[Output] = []
        self.held: list[SinkDelivery] = []
        self.released = False
        self._lock = threading.Lock()

    def wants(self, output: Output) -> bool:
        return output.topic.endswith(".inferences")

    def send(self, output: Output) -> SinkDelivery:
        delivery = SinkDelivery()
        with self._lock:
            self.received.append(output)
            if len(self.received) <= self.ack_first or self.released:
                delivery.succeed()
            elif self.fail_held:
                delivery.fail(ConnectionError("the receiver refused it"))
            else:
                self.held.append(delivery)
        return delivery

    def release(self) -> None:
        with self._lock:
            self.released = True
            for delivery in self.held:
                delivery.succeed()

    def flush(self, timeout_s: float) -> None:
        """Nothing to wait for: held deliveries are settled by the test."""

    def close(self, timeout_s: float) -> None:
        """Nothing to release."""


class CommitCounter(CountingObserver):
    """Counts commit procedures that went through (lag is reported after each)."""

    def __init__(self) -> None:
        super().__init__()
        self.rounds = 0

    def on_lag(self, lag: dict[TopicPartition, int]) -> None:
        self.rounds += 1


def test_offsets_wait_for_every_sink_that_must_have_the_output(kafka_bootstrap: str) -> None:
    settings = unique_settings(kafka_bootstrap)
    runtime = passthrough_runtime(settings)
    sink = HoldingSink(ack_first=3)
    runtime.sinks.append(sink)
    counter = runtime.observer = CommitCounter()
    sensors = settings.topics.sensors.name
    readings = [(b"a", samples.reading(i).to_json_bytes()) for i in range(5)]

    def committed() -> int:
        offsets = committed_offsets(kafka_bootstrap, settings.kafka.group_id)
        return sum(offsets.values())

    with running(runtime):
        # Outcomes go out a shipment at a time and complete together: the held two come in a
        # poll of their own, after the first three are committed.
        produce(kafka_bootstrap, sensors, readings[:3])
        wait_for(lambda: committed() == 3, what="the offsets the held sink acknowledged")
        produce(kafka_bootstrap, sensors, readings[3:])
        read_all(kafka_bootstrap, settings.topics.inferences.name, 5)  # Kafka has every output
        rounds = counter.rounds
        wait_for(lambda: counter.rounds >= rounds + 3, what="three more commits")
        assert committed() == 3, "an offset was committed before the held sink acknowledged it"
        assert len(sink.received) == 5
        sink.release()
        wait_for(lambda: committed() == 5, what="the rest once the sink acknowledged")
    assert counter.produced["sink:holding"] == 5


def test_a_sink_that_fails_a_delivery_stops_the_runtime_before_its_offset(kafka_bootstrap: str) -> None:
    settings = unique_settings(kafka_bootstrap)
    runtime = passthrough_runtime(settings)
    runtime.sinks.append(HoldingSink(ack_first=2, fail_held=True))
    sensors = settings.topics.sensors.name
    produce(kafka_bootstrap, sensors, [(b"a", samples.reading(i).to_json_bytes()) for i in range(4)])
    with pytest.raises(DeliveryFailedError, match="sink:holding was not delivered: ConnectionError"):
        runtime.run(install_signal_handlers=False, max_runtime_s=60)
    committed = committed_offsets(kafka_bootstrap, settings.kafka.group_id)
    assert sum(committed.values()) <= 2, committed


def test_exactly_once_outputs_wait_for_every_sink_and_are_never_published_twice(kafka_bootstrap: str) -> None:
    settings = unique_settings(kafka_bootstrap, delivery="exactly_once", instance_id="sinks-eos")
    runtime = passthrough_runtime(settings)
    sink = HoldingSink(ack_first=0)
    runtime.sinks.append(sink)
    sensors, results = settings.topics.sensors.name, settings.topics.inferences.name
    produce(kafka_bootstrap, sensors, [(b"a", samples.reading(i).to_json_bytes()) for i in range(5)])

    def committed() -> int:
        return sum(committed_offsets(kafka_bootstrap, settings.kafka.group_id).values())

    with running(runtime):
        # unacknowledged by the sink: each transaction is aborted and the inputs processed again
        wait_for(lambda: len(sink.received) >= 15, 120, what="three attempts at the transaction")
        assert committed() == 0
        assert read_until_quiet(kafka_bootstrap, results, quiet_s=0) == []
        sink.release()
        wait_for(lambda: committed() == 5, 120, what="the commit once the sink acknowledged")
    published = [InferenceResult.from_json_bytes(r.value) for r in read_until_quiet(kafka_bootstrap, results)]
    assert sorted(r.result_id for r in published) == sorted({r.result_id for r in published})
    assert len(published) == 5
