"""The delivery ledger: which inputs have every output acknowledged by the sinks.

Outputs are tracked a shipment at a time: the outcomes the runtime emits together (one
collect from the stage, one release of held outcomes) go out as one ``Shipment``, and its
inputs complete together once the last of its outputs is acknowledged. Each
acknowledgement (or failure) is reported by the sink's thread through a callback that only
appends to a queue; the runtime's thread settles the queue, so shipments and offsets are
touched by one thread alone.

Kafka outputs, one or more per input, are the hot path: all of a shipment's Kafka outputs
report to one callback (``Shipment.reporter``), called straight by the client, with nothing
made per output. Other sinks hand back an ``Acknowledgement`` per output (``expect``).
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from consumers.runtime.offsets import OffsetTracker, PartitionOffsets
from consumers.runtime.sink import Acknowledgement

RecordKey = tuple[str, int, int]
"""(topic, partition, offset) of an input record."""


class DeliveryFailedError(RuntimeError):
    """An output could not be delivered; offsets it covers must not be committed."""


class Shipment:
    """The outputs of outcomes emitted together, and the inputs they complete."""

    __slots__ = ("awaiting", "inputs", "labels", "reporter", "sealed")

    def __init__(self) -> None:
        self.inputs: dict[PartitionOffsets, list[int]] = {}
        """Input offsets per partition tracker (the tracker of the moment: one forgotten since
        is no longer the partition's, so a late acknowledgement changes nothing that counts)."""
        self.awaiting = 0
        self.labels: dict[str, int] = {}
        """Outputs per topic or sink label, counted once acknowledged."""
        self.sealed = False
        self.reporter: Callable[..., None] | None = None
        """What reports each of its Kafka outputs (``DeliveryLedger.reporter``), once asked for."""

    def add_input(self, partition: PartitionOffsets, offset: int) -> None:
        """``offset``'s outputs (possibly none) are in this shipment."""
        offsets = self.inputs.get(partition)
        if offsets is None:
            self.inputs[partition] = [offset]
        else:
            offsets.append(offset)


class DeliveryLedger:
    """Shipments between hand-over and the acknowledgement of all their outputs."""

    def __init__(self, tracker: OffsetTracker, kafka_error: Callable[[Any], Any] | None = None) -> None:
        self._tracker = tracker
        self._kafka_error = kafka_error
        """Turns a Kafka client's report of a failed delivery into the runtime's error."""
        self._reports: deque[tuple[Shipment, PartitionOffsets, int, str, Any]] = deque()
        self._shipped: deque[tuple[Shipment, Any]] = deque()
        """(shipment, None or the client's error) of each Kafka output reported."""
        self._ready: list[Shipment] = []

    def expect(
        self, shipment: Shipment, partition: PartitionOffsets, offset: int, label: str, ack: Acknowledgement
    ) -> None:
        """Count an output of input ``offset`` in flight until ``ack`` reports it."""
        shipment.awaiting += 1
        shipment.labels[label] = shipment.labels.get(label, 0) + 1
        report = functools.partial(self._report, shipment, partition, offset, label)
        ack.add_callback(report)
        ack.add_errback(report)

    def reporter(self, shipment: Shipment) -> Callable[..., None]:
        """The callback of every Kafka output of ``shipment``: ``report(None)`` (or
        ``report(None, anything)``) once delivered, ``report(error)`` once failed for good.
        Count the outputs with ``expect_kafka``."""
        if shipment.reporter is None:
            shipped = self._shipped

            def report(error: Any, _detail: Any = None) -> None:
                shipped.append((shipment, error))  # atomic across threads

            shipment.reporter = report
        return shipment.reporter

    @staticmethod
    def expect_kafka(shipment: Shipment, topics: Iterable[str]) -> None:
        """Count Kafka outputs of ``shipment`` (one per topic named) in flight until its
        reporter is called for each."""
        labels = shipment.labels
        for topic in topics:
            shipment.awaiting += 1
            labels[topic] = labels.get(topic, 0) + 1

    def _report(
        self, shipment: Shipment, partition: PartitionOffsets, offset: int, label: str, result: Any
    ) -> None:
        self._reports.append((shipment, partition, offset, label, result))  # atomic across threads

    def seal(self, shipment: Shipment) -> None:
        """No more outputs will be added to ``shipment``: its inputs are handed over."""
        shipment.sealed = True
        for partition, offsets in shipment.inputs.items():
            partition.hand_over(offsets)
        if shipment.awaiting == 0:
            self._ready.append(shipment)

    def settle(self) -> list[Shipment]:
        """Apply the acknowledgements received so far; complete and return the shipments now
        fully delivered.

        Raises ``DeliveryFailedError`` on the first failed delivery of an input still tracked.
        """
        reports, shipped, ready = self._reports, self._shipped, self._ready
        while shipped:
            shipment, error = shipped.popleft()
            if error is not None:
                self._fail_shipment(shipment, error)
            shipment.awaiting -= 1
            if shipment.awaiting == 0 and shipment.sealed:
                ready.append(shipment)
        while reports:
            shipment, partition, offset, label, result = reports.popleft()
            if (
                isinstance(result, BaseException)
                and self._tracker.owns(partition)
                and partition.is_open(offset)
            ):
                tp = partition.tp
                where = f"{tp.topic}[{tp.partition}]@{offset}" if tp is not None else str(offset)
                raise DeliveryFailedError(
                    f"output of {where} to {label} was not delivered: {result!r}"
                ) from result
            # A failure for a partition given up since counts as settled: its next owner
            # re-processes that input, and the shipment's other inputs must not wait for it.
            shipment.awaiting -= 1
            if shipment.awaiting == 0 and shipment.sealed:
                ready.append(shipment)
        done, self._ready = ready, []
        for shipment in done:
            for partition, offsets in shipment.inputs.items():
                partition.complete(offsets)
        return done

    def _fail_shipment(self, shipment: Shipment, error: Any) -> None:
        """Raise for a failed Kafka output of ``shipment`` unless none of its inputs is still
        tracked (their partitions were given up: the next owner re-processes them)."""
        held = []
        for partition, offsets in shipment.inputs.items():
            if self._tracker.owns(partition) and (still := [o for o in offsets if partition.is_open(o)]):
                held.append((partition, still))
        if not held:
            return
        cause = self._kafka_error(error) if self._kafka_error is not None else error
        if not isinstance(cause, BaseException):
            cause = RuntimeError(repr(cause))
        where = ", ".join(_offsets_at(partition, offsets) for partition, offsets in held)
        raise DeliveryFailedError(f"an output of {where} to Kafka was not delivered: {cause!r}") from cause


def _offsets_at(partition: PartitionOffsets, offsets: list[int]) -> str:
    tp = partition.tp
    span = str(offsets[0]) if len(offsets) == 1 else f"{min(offsets)}-{max(offsets)}"
    return f"{tp.topic}[{tp.partition}]@{span}" if tp is not None else span
