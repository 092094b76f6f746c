"""The pluggable processing step: the vision and sensor pipelines implement ``ProcessingStage``."""

from __future__ import annotations

import threading
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


class BufferedStage:
    """The bookkeeping every stage shares: outcomes buffered and inputs counted in flight under
    one lock, and the defaults of a stage that keeps no partition state.

    ``submit`` counts its inputs in flight before the stage admits them (``_admit``); each ends
    in exactly one outcome (``_finish``, ``_fail``), which ``collect`` hands to the runtime and
    then stops counting, or in ``abandon`` where it ends with none (the runtime leaves it
    uncommitted, or has forgotten it). Worker threads and the runtime's may finish items at once.
    """

    name: str

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._done: list[Outcome] = []
        self._in_flight = 0

    def _admit(self, work: Sequence[Work]) -> None:
        """Start on the inputs (already counted in flight)."""
        raise NotImplementedError

    def _complete(self, timeout_s: float) -> None:
        """Finish what is ready, waiting up to ``timeout_s`` for the first (``collect``'s thread)."""

    def _finish(self, outcome: Outcome) -> None:
        """An input's one outcome, for the next ``collect``."""
        with self._lock:
            self._done.append(outcome)

    def _fail(self, work: Work, reason: str, error: BaseException) -> None:
        """An input's outcome: a failure for the dead-letter topic."""
        self._finish(Outcome(work.record, failure=Failure.from_exception(reason, self.name, error)))

    def abandon(self, count: int = 1) -> None:
        """Inputs that end with no outcome: left uncommitted at shutdown, or forgotten by the runtime."""
        with self._lock:
            self._in_flight -= count

    def submit(self, work: Sequence[Work]) -> None:
        """Count the inputs in flight and admit them; their outcomes arrive through ``collect``."""
        with self._lock:
            self._in_flight += len(work)
        if work:
            self._admit(work)

    def collect(self, timeout_s: float) -> list[Outcome]:
        """Outcomes finished since the last call, waiting up to ``timeout_s`` for work under way."""
        self._complete(timeout_s)
        with self._lock:
            done, self._done = self._done, []
            self._in_flight -= len(done)
        return done

    def in_flight(self) -> int:
        """Inputs submitted whose outcome has not been collected."""
        with self._lock:
            return self._in_flight

    def on_assignment(self, held: set[tuple[str, int]]) -> None:
        """Items are processed alone: no partition state to drop or restore."""

    def restoring(self) -> dict[tuple[str, int], tuple[int, int]]:
        """Items are processed alone: nothing to restore."""
        return {}

    def handoff(self, settled: Mapping[tuple[str, int], Settled]) -> list[Output]:
        """Items are processed alone: no state to hand over."""
        return []

    def close(self) -> None:
        """Nothing to release."""


Processor = Callable[[Sequence[Work]], list[Outcome]]


class SyncStage(BufferedStage):
    """A stage that processes each submitted batch at once, in the caller's thread."""

    def __init__(self, name: str, process: Processor) -> None:
        super().__init__(name)
        self._process = process

    def _admit(self, work: Sequence[Work]) -> None:
        """Process ``work`` now; an exception fails each item of the batch on its own."""
        try:
            outcomes = self._process(work)
        except Exception:
            outcomes = [self._process_alone(item) for item in work]
        for outcome in outcomes:
            self._finish(outcome)

    def _process_alone(self, item: Work) -> Outcome:
        try:
            return self._process([item])[0]
        except Exception as error:
            return Outcome(item.record, failure=Failure.from_exception("processing_error", self.name, error))
