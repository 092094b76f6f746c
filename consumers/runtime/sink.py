"""The sink seam: what the checkpoint needs from anything that takes outputs.

At-least-once holds across sinks: the checkpoint counts, per input record, every sink's
acknowledgement of every output it was given, and commits the record's offset only when all
of them have arrived. A sink may park an output it cannot deliver as a dead letter (the
checkpoint hands it the way, ``park_in``) and acknowledge it once Kafka has the letter; a
sink that reports a failure stops the runtime before any later commit, so the record is
processed again by the partition's next owner. Sinks other than the
Kafka topic sink are never part of a Kafka transaction: in exactly-once mode they still
deliver at least once (the transaction commits only after they acknowledged).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from consumers.runtime.records import Output

SINK_STAGE = "sink:"


def sink_stage(sink_name: str) -> str:
    """How a sink is named where it is counted and where its dead letters say who parked them."""
    return f"{SINK_STAGE}{sink_name}"


class Acknowledgement(Protocol):
    """A pending delivery. kafka-python's send future is one; ``SinkDelivery`` is one for other sinks."""

    def add_callback(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call ``fn(*args, result)`` once delivered (at once when already delivered)."""

    def add_errback(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call ``fn(*args, error)`` once the delivery failed for good."""


DeliveryReport = Callable[..., None]
"""Called ``report(None, ...)`` when an output is delivered, ``report(error, ...)`` when it failed for good."""


class Sink(Protocol):
    """Takes the outputs it ``wants`` and acknowledges each, possibly later, from any thread."""

    name: str

    @property
    def label(self) -> str:
        """What a failed delivery names as its destination."""

    def wants(self, output: Output) -> bool:
        """Whether this sink must have ``output`` before its input's offset may be committed."""

    def counted_as(self, outputs: Sequence[Output]) -> Iterable[str]:
        """What each delivered output is counted under (``vigil_produced_total``'s label)."""

    def send(self, output: Output) -> Acknowledgement:
        """Start delivering ``output``; must not wait for the acknowledgement."""

    def send_all(self, outputs: Sequence[Output], report: DeliveryReport) -> None:
        """Start delivering ``outputs`` in order, ``report`` called for each on any thread; the
        path every shipment takes, so nothing need be made per output."""

    def serve_reports(self) -> None:
        """Settle, on the caller's thread, answers the sink received (a sink whose client lets
        the runtime's thread do it); the runtime calls it every time round its loop."""

    def delivery_error(self, error: Any) -> BaseException:
        """The runtime's error for what this sink reported of a failed delivery."""

    def flush(self, timeout_s: float) -> None:
        """Wait (bounded) until everything sent so far is acknowledged or failed."""

    def close(self, timeout_s: float) -> None:
        """Deliver what is pending within ``timeout_s`` and release resources."""

    def park_in(self, park: Callable[[Output], Acknowledgement], dlq_topic: str, record_limit: int) -> None:
        """Where to park outputs this sink cannot deliver for good: ``park`` sends a dead letter
        (for ``dlq_topic``, at most ``record_limit`` bytes) to Kafka. A sink that ignores it
        fails such deliveries instead, and the runtime stops before their offsets."""


class OutputSink:
    """The defaults of a ``Sink`` that acknowledges each output on its own (``send``): a
    subclass gives ``name``, ``wants``, ``send``, ``flush``, ``close`` and, if it parks,
    ``park_in``."""

    name = "sink"

    @property
    def label(self) -> str:
        """``sink:<name>``, as its dead letters name it."""
        return sink_stage(self.name)

    def counted_as(self, outputs: Sequence[Output]) -> Iterable[str]:
        """Every output under the sink's label."""
        return [self.label] * len(outputs)

    def send(self, output: Output) -> Acknowledgement:
        """Start delivering ``output``."""
        raise NotImplementedError

    def send_all(self, outputs: Sequence[Output], report: DeliveryReport) -> None:
        """``send`` each, ``report`` on its acknowledgement."""
        for output in outputs:
            self.send(output).add_callback(report, None).add_errback(report)

    def serve_reports(self) -> None:
        """Nothing: acknowledgements settle on the sink's own threads."""

    def delivery_error(self, error: Any) -> BaseException:
        """The error the sink reported (anything else, described)."""
        return error if isinstance(error, BaseException) else RuntimeError(repr(error))

    def park_in(self, park: Callable[[Output], Acknowledgement], dlq_topic: str, record_limit: int) -> None:
        """Never parks: a delivery that fails for good stops the runtime before its offset."""


class SinkDelivery:
    """An ``Acknowledgement`` a sink settles with ``succeed`` or ``fail``, from any thread.

    Light enough for one per output (the confluent client makes one for each record it sends
    outside a shipment, such as a parked dead letter): a lock and slots; the event ``wait``
    needs is made only when somebody waits.
    """

    __slots__ = ("_callbacks", "_done", "_error", "_lock", "_waiters")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False
        self._error: BaseException | None = None
        self._callbacks: list[tuple[bool, Callable[..., Any], tuple[Any, ...]]] = []
        self._waiters: list[threading.Event] = []

    def add_callback(self, fn: Callable[..., Any], *args: Any) -> SinkDelivery:
        """Call ``fn(*args, None)`` on success."""
        return self._add(True, fn, args)

    def add_errback(self, fn: Callable[..., Any], *args: Any) -> SinkDelivery:
        """Call ``fn(*args, error)`` on failure."""
        return self._add(False, fn, args)

    def _add(self, on_success: bool, fn: Callable[..., Any], args: tuple[Any, ...]) -> SinkDelivery:
        with self._lock:
            if not self._done:
                self._callbacks.append((on_success, fn, args))
                return self
        if on_success == (self._error is None):
            fn(*args, self._error)
        return self

    def succeed(self) -> None:
        """The output was delivered."""
        self._settle(None)

    def fail(self, error: BaseException) -> None:
        """The output could not be delivered (and will not be retried)."""
        self._settle(error)

    def _settle(self, error: BaseException | None) -> None:
        with self._lock:
            if self._done:
                return
            self._error = error
            self._done = True
            callbacks, waiters = self._callbacks, self._waiters
        for waiter in waiters:
            waiter.set()
        for on_success, fn, args in callbacks:
            if on_success == (error is None):
                fn(*args, error)

    @property
    def error(self) -> BaseException | None:
        """Why the delivery failed; None while pending or once delivered."""
        return self._error

    def wait(self, timeout_s: float) -> bool:
        """Whether the delivery settled within ``timeout_s``."""
        with self._lock:
            if self._done:
                return True
            waiter = threading.Event()
            self._waiters.append(waiter)
        return waiter.wait(timeout_s)
