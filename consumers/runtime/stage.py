"""The pluggable processing step: the vision and sensor pipelines implement ``ProcessingStage``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from consumers.runtime.records import Failure, Outcome, Output, Settled, Work


class ProcessingStage(Protocol):
    """Turns validated inputs into outcomes, possibly asynchronously and out of order.

    Contract: every submitted ``Work`` yields exactly one ``Outcome`` from ``collect``
    (outputs, or a failure for the dead-letter topic); a bad item never fails the others.
    """

    name: str

    def submit(self, work: Sequence[Work]) -> None:
        """Accept inputs; may block briefly but must not wait for results."""

    def collect(self, timeout_s: float) -> list[Outcome]:
        """Outcomes finished since the last call, waiting up to ``timeout_s`` for the first."""

    def in_flight(self) -> int:
        """Inputs submitted whose outcome has not been collected."""

    def on_assignment(self, held: set[tuple[str, int]]) -> None:
        """The (topic, partition) pairs the runtime now holds; stateful stages drop or restore state."""

    def restoring(self) -> dict[tuple[str, int], tuple[int, int]]:
        """Partitions whose state is being restored, with (records done, records to do): the
        runtime keeps them paused meanwhile and ``/readyz`` reports them."""

    def handoff(self, settled: Mapping[tuple[str, int], Settled]) -> list[Output]:
        """Records that hand the state of partitions leaving this member to their next owner;
        ``settled`` says where each stands (its state is exact at ``exact``)."""

    def close(self) -> None:
        """Release workers and devices."""


Processor = Callable[[Sequence[Work]], list[Outcome]]


class SyncStage:
    """A stage that processes each submitted batch at once, in the caller's thread."""

    def __init__(self, name: str, process: Processor) -> None:
        self.name = name
        self._process = process
        self._done: list[Outcome] = []

    def submit(self, work: Sequence[Work]) -> None:
        """Process ``work`` now; an exception fails each item of the batch on its own."""
        if not work:
            return
        try:
            outcomes = self._process(work)
        except Exception:
            outcomes = [self._process_alone(item) for item in work]
        self._done.extend(outcomes)

    def _process_alone(self, item: Work) -> Outcome:
        try:
            return self._process([item])[0]
        except Exception as error:
            return Outcome(item.record, failure=Failure.from_exception("processing_error", self.name, error))

    def collect(self, timeout_s: float) -> list[Outcome]:
        """Everything processed since the last call."""
        done, self._done = self._done, []
        return done

    def in_flight(self) -> int:
        """Processed outcomes not yet collected."""
        return len(self._done)

    def on_assignment(self, held: set[tuple[str, int]]) -> None:
        """Stateless: nothing to drop or restore."""

    def restoring(self) -> dict[tuple[str, int], tuple[int, int]]:
        """Stateless: nothing to restore."""
        return {}

    def handoff(self, settled: Mapping[tuple[str, int], Settled]) -> list[Output]:
        """Stateless: nothing to hand over."""
        return []

    def close(self) -> None:
        """Nothing to release."""
