"""Exactly-once outputs: one Kafka transaction per commit, each step bounded in time.

kafka-python waits for transaction steps without a deadline, and across a broker restart a
step can wait forever (seen: ``send_offsets_to_transaction`` never completing after the
broker came back). Here each broker-bound step runs on a helper thread and is awaited with a
deadline. A step that fails or overruns makes the transaction unusable: ``TransactionLostError``
tells the runtime to call ``reset`` (a new producer with the same transactional id, whose
``init_transactions`` fences the old one and aborts its open transaction) and to process
again everything since the last committed offsets. A read_committed reader never sees the
aborted outputs, so every input still has exactly one visible outcome.

Fencing model: the transactional id is ``<prefix>-<group>-<instance>``. Two live processes
must never share one (the second fences the first, which then exits); a process restarted
with the same instance id fences its predecessor's open transaction at once. Zombie
members are also fenced by the consumer group generation sent with the offsets (KIP-447).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kafka import errors as Errors
from kafka.structs import OffsetAndMetadata, TopicPartition

from consumers.runtime.ports import ProducerPort

log = logging.getLogger(__name__)

FATAL = (Errors.ProducerFencedError, Errors.TransactionalIdAuthorizationFailedError)
"""Errors that no reset cures: another live process owns the transactional id, or we may not use it."""


class TransactionLostError(RuntimeError):
    """The open transaction cannot be committed; reset and re-process since the last commit."""


class TransactionalProducer:
    """A transactional ``ProducerPort`` whose steps have deadlines; see the module docstring."""

    def __init__(self, make: Callable[[], ProducerPort], step_timeout_s: float) -> None:
        self._make = make
        self.step_timeout_s = step_timeout_s
        self.producer = make()
        self.in_transaction = False
        self._initialised = False
        self._init()

    def begin(self) -> None:
        """Open a transaction unless one is open (a local step: no broker call)."""
        if not self.in_transaction:
            self.producer.begin_transaction()
            self.in_transaction = True

    def commit(self, offsets: dict[TopicPartition, int], group_metadata: Any) -> None:
        """Add ``offsets`` to the transaction and commit it (the caller has flushed its outputs)."""
        self.begin()
        if offsets:
            committed = {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}
            self._step(
                "send_offsets_to_transaction",
                lambda: self.producer.send_offsets_to_transaction(committed, group_metadata),
            )
        self._step("commit_transaction", self.producer.commit_transaction)
        self.in_transaction = False

    def abort(self) -> None:
        """Abort the open transaction, if any (best effort: ``reset`` fences it anyway)."""
        if not self.in_transaction:
            return
        try:
            self._step("abort_transaction", self.producer.abort_transaction)
        except (TransactionLostError, *FATAL) as error:
            log.warning("aborting the transaction failed: %r", error)
        self.in_transaction = False

    def reset(self) -> None:
        """Replace the producer by a new one with the same transactional id (fencing the old).

        A client that resumes a timed-out ``init_transactions`` (librdkafka) is asked again
        instead: a second producer would race the first one's initialisation, still under
        way in the client, and the later one fences the earlier.
        """
        self.in_transaction = False
        if not self._initialised and self.producer.resumes_init:
            self._init()
            return
        threading.Thread(
            target=_close_quietly, args=(self.producer,), name="vigil-old-producer", daemon=True
        ).start()
        self.producer = self._make()
        self._initialised = False
        self._init()

    def _init(self) -> None:
        self._step("init_transactions", self.producer.init_transactions)
        self._initialised = True

    def close(self, timeout_s: float) -> None:
        """Close the producer."""
        self.producer.close(timeout=timeout_s)

    def _step(self, name: str, call: Callable[[], Any]) -> None:
        outcome: dict[str, BaseException | None] = {}

        def run() -> None:
            try:
                call()
                outcome["error"] = None
            except BaseException as error:  # handed to the waiting thread below
                outcome["error"] = error

        thread = threading.Thread(target=run, name=f"vigil-txn-{name}", daemon=True)
        thread.start()
        thread.join(self.step_timeout_s)
        if "error" not in outcome:
            raise TransactionLostError(f"{name} did not finish within {self.step_timeout_s:g}s")
        error = outcome["error"]
        if error is None:
            return
        if isinstance(error, FATAL):
            raise error
        raise TransactionLostError(f"{name} failed: {error!r}") from error


def _close_quietly(producer: ProducerPort) -> None:
    """Close a fenced producer without waiting; what it still held belongs to an aborted transaction."""
    try:
        producer.close(timeout=0)
    except Exception as error:
        log.debug("closing the replaced producer: %r", error)
