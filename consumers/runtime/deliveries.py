"""The delivery ledger: which inputs have every output acknowledged by the sinks.

Outputs are tracked a shipment at a time: the outcomes the runtime emits together (one
collect from the stage, one release of held outcomes) go out as one ``Shipment``, and its
inputs complete together once the last of its outputs is acknowledged. Each
acknowledgement (or failure) is reported by the sink's thread through a callback that only
appends to a queue; the runtime's thread settles the queue, so shipments and offsets are
touched by one thread alone.
"""

from __future__ import annotations

import functools
from collections import deque
from typing import Any

from consumers.runtime.offsets import OffsetTracker, PartitionOffsets
from consumers.sinks.base import Acknowledgement

RecordKey = tuple[str, int, int]
"""(topic, partition, offset) of an input record."""


class DeliveryFailedError(RuntimeError):
    """An output could not be delivered; offsets it covers must not be committed."""


class Shipment:
    """The outputs of outcomes emitted together, and the inputs they complete."""

    __slots__ = ("awaiting", "inputs", "labels", "sealed")

    def __init__(self) -> None:
        self.inputs: dict[PartitionOffsets, list[int]] = {}
        """Input offsets per partition tracker (the tracker of the moment: one forgotten since
        is no longer the partition's, so a late acknowledgement changes nothing that counts)."""
        self.awaiting = 0
        self.labels: dict[str, int] = {}
        """Outputs per topic or sink label, counted once acknowledged."""
        self.sealed = False

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
        self._reports: deque[tuple[Shipment, PartitionOffsets, int, str, Any]] = deque()
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
        reports, ready = self._reports, self._ready
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
