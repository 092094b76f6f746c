"""The consume → validate → process → produce → commit loop.

Lifecycle of one input record:
1. ``poll`` reads it; the offset tracker marks it in flight.
2. It is decoded and validated against its topic's message type. A poison record
   (undecodable, invalid JSON, schema violation, oversize) becomes a dead letter at once.
3. Valid records go to the processing stage in batches; the stage returns exactly one
   outcome per record (outputs, or a failure that becomes a dead letter).
4. Each outcome's records are handed to the producer; the delivery ledger counts them and
   hears each acknowledgement from the producer's I/O thread.
5. The commit procedure, every ``commit_interval_ms`` (sooner when half the in-flight
   budget awaits it), on rebalance and at shutdown:
   a. (at shutdown, on rebalance, and always in exactly-once mode) flush the producer;
   b. settle the ledger: an input whose outputs are all acknowledged is complete; a failed
      delivery stops the runtime, nothing is committed past it and a restart re-processes it;
   c. commit, per partition, the lowest offset still in flight (or one past the highest
      seen): the highest contiguous completed offset + 1.
   In exactly-once mode the outputs and the offsets (``send_offsets_to_transaction``)
   commit together in one Kafka transaction.

Broker outages: a commit or transaction step that fails for broker reasons is retried at the
next commit interval while the loop keeps going round; ``/readyz`` reports the outage, and
only one longer than ``outage_budget_s`` ends the run (non-zero). A lost transaction
(exactly-once) is aborted and everything since the last commit is processed again.

Backpressure: when more than ``max_in_flight`` records are outstanding, the assigned
partitions are paused; they resume below ``resume_below_fraction`` of that. SIGTERM stops
fetching, drains the stage (up to ``shutdown_timeout_s``), commits and returns 0; a second
signal exits at once without committing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime

from kafka import KafkaConsumer, KafkaProducer
from kafka import errors as Errors
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata, TopicPartition

from consumers.runtime.dead_letters import dead_letter_output
from consumers.runtime.decoding import decode_record
from consumers.runtime.deliveries import DeliveryLedger
from consumers.runtime.kafka_clients import make_consumer, make_producer
from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.offsets import OffsetTracker
from consumers.runtime.outage import BrokerOutage, is_broker_trouble
from consumers.runtime.records import Failure, InboundRecord, Outcome, Output, Work
from consumers.runtime.signals import drain_on_signals
from consumers.runtime.stage import ProcessingStage
from consumers.runtime.topic_check import check_topics
from consumers.runtime.transactions import TransactionalProducer, TransactionLostError
from schemas.common import Message
from schemas.settings import VigilSettings

log = logging.getLogger(__name__)

REBALANCING = (
    Errors.CommitFailedError,
    Errors.RebalanceInProgressError,
    Errors.UnknownMemberIdError,
    Errors.IllegalGenerationError,
)
"""Commit errors that mean 'the group is rebalancing', not 'the runtime is broken'."""
HEALTH_INTERVAL_S = 0.5
"""How often the loop reports what ``/readyz`` judges."""


class _Rebalance(ConsumerRebalanceListener):
    """Hands rebalance events to the runtime.

    kafka-python calls the listener on the runtime's thread, where the runtime settles and
    commits before giving partitions up, or on its own IO thread, where nothing may block: there
    the runtime forgets revoked partitions without committing (their uncommitted work is
    re-processed by the next owner). IO-thread events that arrive while the runtime's thread
    is not parked in ``poll`` wait in a queue applied before the next ``poll``.
    """

    def __init__(self, runtime: StreamRuntime) -> None:
        self._runtime = runtime

    def _deliver(self, kind: str, partitions: set[TopicPartition]) -> None:
        runtime = self._runtime
        if threading.get_ident() == runtime._thread_id:
            runtime._apply_rebalance(kind, set(partitions))
        elif runtime._in_poll:
            # The runtime's thread is parked inside poll(): its state is safe to update now,
            # before poll returns records fetched under the new assignment; only blocking
            # calls (a commit) are not allowed here.
            runtime._apply_rebalance(kind, set(partitions), may_commit=False)
        else:
            runtime._rebalance_events.append((kind, set(partitions)))

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._deliver("revoked", revoked)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._deliver("assigned", assigned)

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self._deliver("lost", lost)


class StreamRuntime:
    """Runs one processing stage over the input topics with at-least-once (or exactly-once) delivery."""

    def __init__(
        self,
        settings: VigilSettings,
        inputs: Mapping[str, type[Message]],
        stage: ProcessingStage,
        observer: RuntimeObserver | None = None,
        group_id: str | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.inputs = dict(inputs)
        self.stage = stage
        self.observer = observer or RuntimeObserver()
        self._config = settings.runtime
        self._dlq_topic = settings.topics.dlq.name
        self._exactly_once = self._config.delivery == "exactly_once"
        self._group_id = group_id or settings.kafka.group_id
        self._instance_id = (
            instance_id
            or self._config.instance_id
            or settings.kafka.group_instance_id
            or f"{socket.gethostname()}-{os.getpid()}"
        )
        self._outage = BrokerOutage(self._config.outage_budget_s)
        self._dlq_limit = settings.kafka.max_request_size
        self._broker_reachable = True
        self._next_health = 0.0
        self._tracker = OffsetTracker()
        self._ledger = DeliveryLedger()
        self._stopping = False
        self._paused = False
        self._failed = False
        self._thread_id: int | None = None
        self._in_poll = False
        self._commit_skipped = False
        self._revoked: set[TopicPartition] = set()
        self._rebalance_events: deque[tuple[str, set[TopicPartition]]] = deque()
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._transactions: TransactionalProducer | None = None
        self._held: dict[tuple[str, int, int], Outcome] = {}
        self.assignment: set[TopicPartition] = set()

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to drain, commit and return (what SIGTERM does)."""
        self._stopping = True

    def run(self, install_signal_handlers: bool = True, max_runtime_s: float | None = None) -> int:
        """Consume until stopped; returns the process exit status (0 after a clean drain)."""
        self._thread_id = threading.get_ident()
        if install_signal_handlers:
            drain_on_signals(self.stop)
        limits = check_topics(self.settings.kafka, self.inputs, self._output_topics())
        self._dlq_limit = min(self.settings.kafka.max_request_size, limits[self._dlq_topic])
        if self._exactly_once:
            transactional_id = f"{self._config.transactional_id_prefix}-{self._group_id}-{self._instance_id}"
            self._transactions = TransactionalProducer(
                lambda: make_producer(self.settings.kafka, transactional_id),
                self.settings.kafka.request_timeout_ms / 1000,
            )
            self._producer = self._transactions.producer
        else:
            self._producer = make_producer(self.settings.kafka)
        self._consumer = make_consumer(self.settings.kafka, self._group_id)
        self._consumer.subscribe(topics=list(self.inputs), listener=_Rebalance(self))
        self._await_input_metadata(self._consumer)
        deadline = time.monotonic() + max_runtime_s if max_runtime_s else None
        next_commit = time.monotonic() + self._config.commit_interval_ms / 1000
        try:
            early = self._config.max_in_flight // 2
            while not self._stopping and (deadline is None or time.monotonic() < deadline):
                self._poll_once()
                if time.monotonic() >= next_commit or len(self._ledger) >= early:
                    self.commit(flush=self._exactly_once)
                    next_commit = time.monotonic() + self._config.commit_interval_ms / 1000
            self._drain()
            committed = self._final_commit()
        except BaseException:
            self._failed = True  # from here on nothing is committed, not even on revoke
            if self._transactions is not None:
                self._transactions.abort()
            self._close(clean=False)
            raise
        self._close(clean=True)
        return 0 if committed else 1

    def _output_topics(self) -> list[str]:
        """Every topic this runtime writes to: alerts, results (when published) and dead letters."""
        topics = self.settings.topics
        published = [topics.inferences.name] if self._config.publish_inferences else []
        return [topics.alerts.name, *published, self._dlq_topic]

    def _await_input_metadata(self, consumer: KafkaConsumer, timeout_s: float = 30.0) -> None:
        """Wait until the consumer's metadata lists every input topic's partitions.

        kafka-python joins the group without waiting for the subscription's first metadata;
        a leader that assigns before it arrives hands out no partitions of the topic.
        """
        deadline = time.monotonic() + timeout_s
        while missing := [topic for topic in self.inputs if not consumer.partitions_for_topic(topic)]:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"no partition metadata for {', '.join(missing)} after {timeout_s:.0f}s")
            time.sleep(0.1)  # back-off between metadata requests, bounded by the deadline

    def _close(self, clean: bool) -> None:
        """Close the clients and the stage; a broker that does not answer never holds the exit."""
        for name, close in (
            ("consumer", lambda: self._consumer and self._consumer.close(autocommit=False)),
            ("producer", lambda: self._producer and self._producer.close(timeout=5 if clean else 0)),
        ):
            try:
                close()
            except Exception as error:  # the process is leaving; what is uncommitted is re-processed
                log.warning("closing the %s failed: %r", name, error)
        self.stage.close()

    # -- the loop --------------------------------------------------------------------------

    def _poll_once(self) -> None:
        assert self._consumer is not None
        self.observer.on_poll()
        self._report_health()
        self._apply_queued_rebalances()
        busy = self.stage.in_flight() > 0
        self._in_poll = True
        try:
            batches = self._consumer.poll(timeout_ms=0 if busy else self._config.poll_timeout_ms)
        finally:
            self._in_poll = False
        work: list[Work] = []
        now = datetime.now(UTC)
        for tp, messages in batches.items():
            self.observer.on_consumed(tp.topic, len(messages))
            message_type = self.inputs[tp.topic]
            for message in messages:
                record = InboundRecord.from_kafka(message)
                if self._ledger.holds((record.topic, record.partition, record.offset)):
                    continue  # re-delivered after a rebalance while still in flight: it will finish
                self._tracker.track(tp, record.offset)
                self._ledger.receive(record)
                decoded = decode_record(record, message_type, self._config.max_message_bytes)
                if isinstance(decoded, Failure):
                    self._emit(Outcome(record, failure=decoded))
                else:
                    work.append(Work(record, decoded, now))
        if work:
            self.stage.submit(work)
        for outcome in self.stage.collect(timeout_s=0.005 if busy else 0.0):
            self._emit(outcome)
        self._settle()
        self._apply_backpressure()

    def _emit(self, outcome: Outcome) -> None:
        record = outcome.record
        key = (record.topic, record.partition, record.offset)
        if not self._ledger.holds(key) or self._ledger.is_processed(key) or key in self._held:
            return  # its partition was revoked (the new owner re-processes it), or a stale duplicate
        if self._transactions is not None:
            self._held[key] = outcome  # sent in offset order at the next commit (see _release_in_order)
            return
        self._send(key, outcome)

    def _send(self, key: tuple[str, int, int], outcome: Outcome) -> None:
        record = outcome.record
        outputs: tuple[Output, ...] = outcome.outputs
        if outcome.failure is not None:
            outputs = (dead_letter_output(record, outcome.failure, self._dlq_topic, self._dlq_limit),)
            self.observer.on_dead_letter(outcome.failure.reason, outcome.failure.stage)
        assert self._producer is not None
        for output in outputs:
            future = self._producer.send(
                output.topic, value=output.value, key=output.key, headers=list(output.headers)
            )
            self._ledger.expect(key, output.topic, future)
        self._ledger.processed(key)

    def _release_in_order(self) -> None:
        """Exactly-once: send held outcomes below each partition's first input still in the stage.

        A transaction then holds exactly the outputs of the offsets it commits: an output whose
        input lies above the commit point (completions out of order) would otherwise be
        committed, and produced again when a lost transaction or a restart re-processes it.
        """
        assert self._transactions is not None
        if not self._held:
            return
        boundary: dict[tuple[str, int], int] = {}
        for topic, partition, offset in self._ledger.waiting():
            if (topic, partition, offset) not in self._held:
                boundary.setdefault((topic, partition), offset)
        ready = sorted(k for k in self._held if k[2] < boundary.get((k[0], k[1]), k[2] + 1))
        if ready:
            self._transactions.begin()
        for key in ready:
            self._send(key, self._held.pop(key))

    def _apply_backpressure(self) -> None:
        assert self._consumer is not None
        outstanding = len(self._ledger)
        limit = self._config.max_in_flight
        if not self._paused and outstanding >= limit:
            self._consumer.pause(*self._consumer.assignment())
            self._paused = True
            self.observer.on_backpressure(True, outstanding)
        elif self._paused and outstanding < limit * self._config.resume_below_fraction:
            self._consumer.resume(*self._consumer.assignment())
            self._paused = False
            self.observer.on_backpressure(False, outstanding)

    def _final_commit(self) -> bool:
        """Commit at shutdown; a rebalance under way is driven to its end with poll, and a broker
        that does not answer is retried, both up to ``shutdown_timeout_s``.

        False when no commit went through: nothing past the last commit is lost, it is
        re-processed by the partitions' next owner, but the exit status says so.
        """
        assert self._consumer is not None
        deadline = time.monotonic() + self._config.shutdown_timeout_s
        while True:
            self._commit_skipped = False
            self.commit(flush=True)
            if not self._commit_skipped:
                return True
            if time.monotonic() >= deadline:
                log.error(
                    "could not commit at shutdown: the group kept rebalancing or the broker did not answer"
                )
                return False
            self._consumer.poll(timeout_ms=500)  # partitions are paused: this only completes the rebalance

    def _drain(self) -> None:
        """Stop fetching and wait (bounded) for the stage to finish what it holds."""
        assert self._consumer is not None
        self._consumer.pause(*self._consumer.assignment())
        self._paused = True  # partitions assigned from now on stay paused too
        deadline = time.monotonic() + self._config.shutdown_timeout_s
        while self.stage.in_flight() > 0 and time.monotonic() < deadline:
            for outcome in self.stage.collect(timeout_s=0.05):
                self._emit(outcome)
        if self.stage.in_flight():
            log.warning("abandoning %d in-flight items; they stay uncommitted", self.stage.in_flight())

    # -- the commit procedure --------------------------------------------------------------

    def commit(self, flush: bool = True) -> dict[TopicPartition, int]:
        """Settle deliveries, then commit contiguous completed offsets (see the module doc).

        A step that fails for broker reasons skips this commit (``_commit_skipped``); the next
        one retries, until the outage budget runs out.
        """
        assert self._producer is not None and self._consumer is not None
        self._apply_queued_rebalances()  # never compute offsets for partitions already given up
        if self._transactions is not None:
            return self._commit_transaction()
        try:
            # a. Flush outputs and dead letters when every one must be acknowledged now.
            if flush:
                self._producer.flush(timeout=self.settings.kafka.request_timeout_ms / 1000)
            # b. Inputs whose outputs are all acknowledged are complete; a failure raises.
            self._settle()
            # c. Commit the highest contiguous completed offset + 1 per partition.
            offsets = self._tracker.to_commit()
            if offsets:
                self._consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except REBALANCING as error:
            # Nothing is marked committed: the next commit retries what we still own,
            # and the rebalance listener settles what we lose.
            log.warning("commit skipped while the group rebalances: %r", error)
            self._commit_skipped = True
            return {}
        except Errors.KafkaError as error:
            if not is_broker_trouble(error):
                raise
            self._outage.failed("committing offsets", error)
            self._commit_skipped = True
            return {}
        self._committed(offsets)
        return offsets

    def _committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._outage.succeeded()
        if offsets:
            self._tracker.mark_committed(offsets)
            self.observer.on_committed(offsets)
        self._report_lag()

    def _report_lag(self) -> None:
        """Records behind the log end per partition, counted from the committed offset (no request)."""
        assert self._consumer is not None
        lag = {}
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            if end is not None:
                committed = self._tracker.committed(tp)
                lag[tp] = max(0, end - (committed if committed is not None else self._consumer.position(tp)))
        if lag:
            self.observer.on_lag(lag)

    def _report_health(self) -> None:
        """What ``/readyz`` judges: broker reachable, commits going through, nothing stuck."""
        assert self._consumer is not None
        now = time.monotonic()
        if now < self._next_health:
            return
        self._next_health = now + HEALTH_INTERVAL_S
        # kafka-python has no public "is the group coordinator reachable"; its coordinator does.
        coordinator = getattr(self._consumer, "_coordinator", None)
        if coordinator is not None:
            self._broker_reachable = not coordinator.coordinator_unknown()
        oldest = self._ledger.oldest_received()
        waiting = oldest is not None
        self.observer.on_health(
            broker_reachable=self._broker_reachable and not self._outage.ongoing,
            oldest_in_flight_s=0.0 if oldest is None else now - oldest,
            commit_age_s=now - self._outage.last_success if waiting else 0.0,
        )

    def _settle(self) -> None:
        for (topic, partition, offset), output_topics in self._ledger.settle():
            self._tracker.complete(TopicPartition(topic, partition), offset)
            for output_topic in output_topics:
                self.observer.on_produced(output_topic, 1)

    def _commit_transaction(self) -> dict[TopicPartition, int]:
        """Exactly-once: outputs and offsets commit together; a lost transaction is re-processed."""
        assert self._transactions is not None and self._consumer is not None
        self._release_in_order()
        try:
            try:
                self._producer.flush(timeout=self._transactions.step_timeout_s)  # type: ignore[union-attr]
            except Errors.KafkaTimeoutError as error:
                raise TransactionLostError(
                    "the transaction's outputs were not acknowledged in time"
                ) from error
            self._settle()  # every output sent is acknowledged now: offsets cover exactly what was sent
            offsets = self._tracker.to_commit()
            if not offsets and not self._transactions.in_transaction:
                self._committed({})
                return {}
            self._transactions.commit(offsets, self._consumer.group_metadata())
        except TransactionLostError as error:
            self._outage.failed("committing the transaction", error)
            self._commit_skipped = True
            if self._stopping:  # leaving anyway: the next owner re-processes from the last commit
                self._transactions.abort()
            else:
                self._recover_lost_transaction()
            return {}
        self._committed(offsets)
        return offsets

    def _recover_lost_transaction(self) -> None:
        """Fence the lost transaction with a new producer, then process again since the last commit."""
        assert self._transactions is not None and self._consumer is not None
        log.warning("the transaction was lost; re-processing from the last committed offsets")
        deadline = time.monotonic() + self._config.shutdown_timeout_s
        while self.stage.in_flight() and time.monotonic() < deadline:
            self.stage.collect(timeout_s=0.05)  # outcomes of the aborted transaction: dropped
        held = set(self.assignment)
        self._forget(held)
        while True:
            try:
                self._transactions.reset()
                committed = {tp: self._consumer.committed(tp) for tp in held}
                break
            except (TransactionLostError, Errors.KafkaError) as error:
                if isinstance(error, Errors.KafkaError) and not is_broker_trouble(error):
                    raise
                self._outage.failed("restarting the transaction", error)
                self.observer.on_poll()  # waiting for the broker within the budget is not being wedged
                self._report_health()
                time.sleep(1.0)  # back-off between attempts, bounded by the outage budget
        self._producer = self._transactions.producer
        log.warning(
            "re-processing from the committed offsets %s",
            {f"{tp.topic}[{tp.partition}]": o for tp, o in committed.items()},
        )
        for tp, offset in committed.items():
            if offset is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, offset)
        self.assignment |= held
        self._assignment_changed()

    # -- rebalancing -----------------------------------------------------------------------

    def _apply_queued_rebalances(self) -> None:
        while self._rebalance_events:
            kind, partitions = self._rebalance_events.popleft()
            self._apply_rebalance(kind, partitions, may_commit=False)

    def _apply_rebalance(self, kind: str, partitions: set[TopicPartition], may_commit: bool = True) -> None:
        self._apply_queued_rebalances()
        if kind == "revoked":
            if may_commit:
                self._on_revoked(partitions)
            else:
                self._revoked |= partitions
        elif kind == "assigned":
            self._on_assigned(partitions)
        else:
            self._forget(partitions)

    def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Settle and commit what is done before giving partitions up.

        Their state is kept until the new assignment: a partition handed straight back keeps
        its fetch position, so its in-flight records are not delivered again and must finish.
        """
        if self._failed:
            self._forget(revoked)
            return
        for outcome in self.stage.collect(timeout_s=0.0):
            self._emit(outcome)
        try:
            self.commit()
        finally:
            self._revoked |= revoked

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._forget(self._revoked - assigned)  # gone to another member: its owner re-processes
        self._revoked.clear()
        self.assignment |= assigned
        self._assignment_changed()
        if self._paused and self._consumer is not None and assigned:
            self._consumer.pause(*assigned)

    def _forget(self, partitions: set[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        for key in [k for k in self._held if (k[0], k[1]) in gone]:
            del self._held[key]
        self._tracker.forget(partitions)
        self._ledger.forget(partitions)
        self.assignment -= partitions
        self._assignment_changed()

    def _assignment_changed(self) -> None:
        self.observer.on_assignment(self.assignment)
        self.stage.on_assignment({(tp.topic, tp.partition) for tp in self.assignment})
