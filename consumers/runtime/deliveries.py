"""The delivery ledger: which inputs have every output acknowledged by the sinks.

Outputs are tracked a shipment at a time: the outcomes the runtime emits together (one
collect from the stage, one release of held outcomes) go out as one ``Shipment``, and its
inputs complete together once the last of its outputs is acknowledged. Each
acknowledgement (or failure) is reported by the sink's thread through a callback that only
appends to a queue; the runtime's thread settles the queue, so shipments and offsets are
touched by one thread alone.

Every sink is handed a shipment's outputs at once (``Sink.send_all``) and reports each
answer to one callback per shipment and sink, called straight by the client (Kafka's) or by
the sink's acknowledgements (others'), with nothing made per output on the hot path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from consumers.runtime.offsets import OffsetTracker, PartitionOffsets
from consumers.runtime.records import Output
from consumers.runtime.sink import Sink

RecordKey = tuple[str, int, int]
"""(topic, partition, offset) of an input record."""


class DeliveryFailedError(RuntimeError):
    """An output could not be delivered; offsets it covers must not be committed."""


class Shipment:
    """The outputs of outcomes emitted together, and the inputs they complete."""

    __slots__ = ("awaiting", "inputs", "labels", "reporters", "sealed")

    def __init__(self) -> None:
        self.inputs: dict[PartitionOffsets, list[int]] = {}
        """Input offsets per partition tracker (the tracker of the moment: one forgotten since
        is no longer the partition's, so a late acknowledgement changes nothing that counts)."""
        self.awaiting = 0
        self.labels: dict[str, int] = {}
        """Outputs per topic or sink label, counted once acknowledged."""
        self.sealed = False
        self.reporters: dict[str, Callable[..., None]] = {}
        """What reports each of its outputs, by sink name (one callback per sink, not per output)."""

    def add_input(self, partition: PartitionOffsets, offset: int) -> None:
        """``offset``'s outputs (possibly none) are in this shipment."""
        offsets = self.inputs.get(partition)
        if offsets is None:
            self.inputs[partition] = [offset]
        else:
            offsets.append(offset)


class DeliveryLedger:
    """Shipments between hand-over and the acknowledgement of all their outputs."""

    def __init__(self, tracker: OffsetTracker) -> None:
        self._tracker = tracker
        self._shipped: deque[tuple[Shipment, Sink, Any]] = deque()
        """(shipment, sink, None or the sink's error) of each output reported."""
        self._ready: list[Shipment] = []

    def ship(self, shipment: Shipment, sink: Sink, outputs: Sequence[Output]) -> None:
        """Hand ``outputs`` of ``shipment`` to ``sink``, each in flight until the sink reports it."""
        labels = shipment.labels
        for label in sink.counted_as(outputs):
            labels[label] = labels.get(label, 0) + 1
        shipment.awaiting += len(outputs)
        sink.send_all(outputs, self._reporter(shipment, sink))

    def _reporter(self, shipment: Shipment, sink: Sink) -> Callable[..., None]:
        """The callback of every output of ``shipment`` to ``sink``: ``report(None)`` (or
        ``report(None, anything)``) once delivered, ``report(error)`` once failed for good."""
        reporter = shipment.reporters.get(sink.name)
        if reporter is None:
            shipped = self._shipped

            def report(error: Any, _detail: Any = None) -> None:
                shipped.append((shipment, sink, error))  # atomic across threads

            reporter = shipment.reporters[sink.name] = report
        return reporter

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

        Raises ``DeliveryFailedError`` on the first failed delivery of a shipment with an input
        still tracked.
        """
        shipped, ready = self._shipped, self._ready
        while shipped:
            shipment, sink, error = shipped.popleft()
            if error is not None:
                self._fail_shipment(shipment, sink, error)
            shipment.awaiting -= 1
            if shipment.awaiting == 0 and shipment.sealed:
                ready.append(shipment)
        done, self._ready = ready, []
        for shipment in done:
            for partition, offsets in shipment.inputs.items():
                partition.complete(offsets)
        return done

    def _fail_shipment(self, shipment: Shipment, sink: Sink, error: Any) -> None:
        """Raise for a failed output of ``shipment`` unless none of its inputs is still tracked:
        their partitions were given up, and the next owner re-processes them."""
        held = []
        for partition, offsets in shipment.inputs.items():
            if self._tracker.owns(partition) and (still := [o for o in offsets if partition.is_open(o)]):
                held.append((partition, still))
        if not held:
            return
        cause = sink.delivery_error(error)
        where = ", ".join(_offsets_at(partition, offsets) for partition, offsets in held)
        raise DeliveryFailedError(
            f"an output of {where} to {sink.label} was not delivered: {cause!r}"
        ) from cause


def _offsets_at(partition: PartitionOffsets, offsets: list[int]) -> str:
    tp = partition.tp
    span = str(offsets[0]) if len(offsets) == 1 else f"{min(offsets)}-{max(offsets)}"
    return f"{tp.topic}[{tp.partition}]@{span}" if tp is not None else span
