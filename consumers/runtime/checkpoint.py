"""The checkpoint: what has been read, what has left through the sinks, and what may be committed.

It owns the offset tracker, the delivery ledger, the sinks and (exactly-once) the
transaction, and runs the commit procedure:
a. (at shutdown, on rebalance, and always in exactly-once mode) flush every sink;
b. settle the ledger: outcomes emitted together go out as one shipment, and its inputs are
   complete once every sink has acknowledged every output in it; a failed delivery raises,
   nothing is committed past it and a restart re-processes it;
c. commit, per partition, the highest contiguous completed offset + 1.
In exactly-once mode outcomes are held and sent in offset order, and the outputs and the
offsets commit together in one Kafka transaction; other sinks deliver at least once, and a
transaction whose outputs another sink has not acknowledged by the commit is lost (aborted
and processed again), so its Kafka outputs are never published twice.

A commit that fails for broker reasons, or while the group rebalances, is skipped
(``CommitResult.done`` is False) and retried by the next one; only a broker outage longer
than ``outage_budget_s`` raises. The runtime drives it; the checkpoint never polls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

from kafka import errors as Errors
from kafka.structs import OffsetAndMetadata, TopicPartition

from consumers.runtime.dead_letters import dead_letter_output
from consumers.runtime.deliveries import DeliveryLedger, RecordKey, Shipment
from consumers.runtime.kafka_clients import make_producer
from consumers.runtime.kafka_sink import KafkaTopicSink
from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.offsets import OffsetTracker, PartitionOffsets
from consumers.runtime.outage import BrokerOutage, is_broker_trouble
from consumers.runtime.ports import ConsumerPort
from consumers.runtime.records import InboundRecord, Outcome, Output, Settled
from consumers.runtime.sink import Acknowledgement, Sink
from consumers.runtime.transactions import TransactionalProducer, TransactionLostError
from schemas.settings import VigilSettings

log = logging.getLogger(__name__)

REBALANCING = (
    Errors.CommitFailedError,
    Errors.RebalanceInProgressError,
    Errors.UnknownMemberIdError,
    Errors.IllegalGenerationError,
)
"""Commit errors that mean 'the group is rebalancing', not 'the runtime is broken'."""


@dataclass(frozen=True)
class CommitResult:
    """What one commit did: the offsets committed, whether it went through, and (exactly-once)
    whether the transaction was lost, so everything since the last commit must be processed again."""

    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    done: bool = True
    lost: bool = False


class Checkpoint:
    """Offsets, deliveries and commits of one runtime; see the module docstring."""

    def __init__(
        self,
        settings: VigilSettings,
        consumer: ConsumerPort,
        observer: RuntimeObserver,
        transactional_id: str | None = None,
        sinks: Sequence[Sink] = (),
        dead_letter_limit: int | None = None,
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._observer = observer
        self._timeout_s = settings.kafka.request_timeout_ms / 1000
        self._dlq_topic = settings.topics.dlq.name
        self._dlq_limit = dead_letter_limit or settings.kafka.max_request_size
        self.outage = BrokerOutage(settings.runtime.outage_budget_s)
        self.transactions: TransactionalProducer | None = None
        if transactional_id is not None:
            self.transactions = TransactionalProducer(
                lambda: make_producer(settings.kafka, transactional_id), self._timeout_s
            )
            transactions = self.transactions
            self.topics = KafkaTopicSink(lambda: transactions.producer)
        else:
            producer = make_producer(settings.kafka)
            self.topics = KafkaTopicSink(lambda: producer)
        self.sinks: list[Sink] = [self.topics, *sinks]
        """Where outputs go: each takes those it ``wants``. The runtime's own topics (above)
        also take dead letters that sinks park and state hand-offs, in its transaction."""
        for sink in sinks:
            sink.park_in(self._parker(sink.label), self._dlq_topic, self._dlq_limit)
        self._tracker = OffsetTracker()
        self._ledger = DeliveryLedger(self._tracker)
        self._held: dict[RecordKey, Outcome] = {}

    # -- bookkeeping -----------------------------------------------------------------------

    def receive(self, tp: TopicPartition, records: Sequence[InboundRecord]) -> Sequence[InboundRecord]:
        """Track a poll batch just read from ``tp`` (ascending offsets); returns the records to
        process, without those still in flight from before a rebalance (re-delivered to the same
        member: they will finish, and must not be processed twice)."""
        offsets = [record.offset for record in records]
        fresh = self._tracker.partition(tp).track_batch(offsets)
        if fresh is offsets:
            return records
        keep = set(fresh)
        return [record for record in records if record.offset in keep]

    def emit(self, outcomes: Iterable[Outcome]) -> None:
        """Send outcomes' outputs (a failure as its dead letter) through the sinks that want them,
        as one shipment; in exactly-once mode hold them for the next commit's transaction."""
        if self.transactions is not None:
            for outcome in outcomes:
                record = outcome.record
                key = (record.topic, record.partition, record.offset)
                if self._pending(record) is not None and key not in self._held:
                    self._held[key] = outcome  # sent in offset order at the next commit (_release_in_order)
            return
        shipment = Shipment()
        self._ship(shipment, outcomes)
        self._ledger.seal(shipment)

    def _pending(self, record: InboundRecord) -> PartitionOffsets | None:
        """The tracker of ``record``'s partition while its outputs are still to be handed over;
        None when its partition was revoked (the new owner re-processes it) or for a stale
        duplicate."""
        partition = self._tracker.get(record.topic, record.partition)
        return partition if partition is not None and partition.awaits_outputs(record.offset) else None

    def _ship(self, shipment: Shipment, outcomes: Iterable[Outcome]) -> None:
        """Hand the outputs of ``outcomes`` (a failure as its dead letter) to the sinks that want
        them, all of a sink's in one call, and note them in ``shipment``."""
        shipping: list[Output] = []
        for outcome in outcomes:
            record = outcome.record
            partition = self._pending(record)
            if partition is None:
                continue
            shipment.add_input(partition, record.offset)
            outputs: tuple[Output, ...] = outcome.outputs
            if outcome.failure is not None:
                outputs = (dead_letter_output(record, outcome.failure, self._dlq_topic, self._dlq_limit),)
                self._observer.on_dead_letter(outcome.failure.reason, outcome.failure.stage)
            shipping += outputs
        if not shipping:
            return
        for sink in self.sinks:
            wanted = [output for output in shipping if sink.wants(output)]
            if wanted:
                self._ledger.ship(shipment, sink, wanted)

    def _parker(self, stage: str) -> Callable[[Output], Acknowledgement]:
        """How a sink parks what it cannot deliver: counted as a dead letter, sent through Kafka
        (in exactly-once mode into the open transaction, which commits only once the sink
        acknowledged)."""

        def park(letter: Output) -> Acknowledgement:
            self._observer.on_dead_letter("undelivered_alert", stage)
            return self.topics.send(letter)

        return park

    def _release_in_order(self) -> None:
        """Exactly-once: send held outcomes below each partition's first input still in the stage.

        A transaction then holds exactly the outputs of the offsets it commits: an output whose
        input lies above the commit point (completions out of order) would otherwise be
        committed, and produced again when a lost transaction or a restart re-processes it.
        """
        assert self.transactions is not None
        if not self._held:
            return
        boundary: dict[tuple[str, int], int] = {}
        for partition in self._tracker.partitions():
            assert partition.tp is not None
            topic, number = partition.tp
            for offset in partition.waiting():
                if (topic, number, offset) not in self._held:
                    boundary[(topic, number)] = offset
                    break
        ready = sorted(k for k in self._held if k[2] < boundary.get((k[0], k[1]), k[2] + 1))
        if not ready:
            return
        self.transactions.begin()
        shipment = Shipment()
        self._ship(shipment, [self._held.pop(key) for key in ready])
        self._ledger.seal(shipment)

    def settle(self) -> None:
        """Complete the inputs whose outputs are all acknowledged (``DeliveryFailedError`` on a failure)."""
        for sink in self.sinks:
            sink.serve_reports()
        for shipment in self._ledger.settle():
            for label, count in shipment.labels.items():
                self._observer.on_produced(label, count)

    def outstanding(self) -> int:
        """Inputs read whose outputs are not all acknowledged yet."""
        return self._tracker.in_flight()

    def oldest_received(self) -> float | None:
        """``time.monotonic()`` of the oldest input still outstanding."""
        return self._tracker.oldest_received()

    def committed(self, tp: TopicPartition) -> int | None:
        """The offset last committed for ``tp`` by this member."""
        return self._tracker.committed(tp)

    def settled(self, tp: TopicPartition) -> Settled | None:
        """Where ``tp`` stands when everything received from it is complete (a stage's state of
        it is exact there): that offset, and the offset this member last committed for it. In
        exactly-once mode only a committed partition is settled (outputs of an uncommitted
        transaction may still be aborted). None otherwise."""
        partition = self._tracker.get(tp.topic, tp.partition)
        if partition is None or partition.in_flight() or (exact := partition.committable()) is None:
            return None
        committed = partition.last_committed
        if self.transactions is not None and committed != exact:
            return None
        return Settled(exact, committed)

    def hand_off(self, outputs: Sequence[Output]) -> bool:
        """Produce a stage's state hand-off (after the commit it is exact at) and wait for it, in
        a transaction of its own in exactly-once mode; False (logged) when it did not go out:
        the next owner then reads the input back instead."""
        try:
            if self.transactions is not None:
                self.transactions.begin()
            for output in outputs:
                self.topics.send(output)
            self.topics.flush(self._timeout_s)
            if self.transactions is not None:
                self.transactions.commit({}, None)
        except Exception as error:  # the hand-off is an optimisation: its absence is safe
            log.warning("handing %d state records over failed: %r", len(outputs), error)
            self.abort()
            return False
        return True

    def forget(self, partitions: Collection[TopicPartition]) -> None:
        """Drop everything about partitions given up: their next owner re-processes it."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        for key in [k for k in self._held if (k[0], k[1]) in gone]:
            del self._held[key]
        self._tracker.forget(partitions)

    # -- the commit procedure --------------------------------------------------------------

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every sink acknowledged what it was given."""
        for sink in self.sinks:
            sink.flush(self._timeout_s if timeout_s is None else timeout_s)

    def commit(self, flush: bool = True, stopping: bool = False) -> CommitResult:
        """Settle deliveries, then commit contiguous completed offsets (see the module doc)."""
        if self.transactions is not None:
            return self._commit_transaction(stopping)
        try:
            if flush:  # a. every output must be acknowledged now
                self.flush()
            self.settle()  # b. complete inputs; a failed delivery raises
            offsets = self._tracker.to_commit()  # c.
            if offsets:
                self._consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except REBALANCING as error:
            # Nothing is marked committed: the next commit retries what we still own,
            # and the rebalance listener settles what we lose.
            log.warning("commit skipped while the group rebalances: %r", error)
            return CommitResult(done=False)
        except Errors.KafkaError as error:
            if not is_broker_trouble(error):
                raise
            self.outage.failed("committing offsets", error)
            return CommitResult(done=False)
        return self._committed(offsets)

    def _committed(self, offsets: dict[TopicPartition, int]) -> CommitResult:
        self.outage.succeeded()
        if offsets:
            self._tracker.mark_committed(offsets)
            self._observer.on_committed(offsets)
        return CommitResult(offsets)

    def _commit_transaction(self, stopping: bool) -> CommitResult:
        """Exactly-once: outputs and offsets commit together; a lost transaction is re-processed."""
        assert self.transactions is not None
        self._release_in_order()
        try:
            try:
                self.flush(self.transactions.step_timeout_s)
            except Errors.KafkaTimeoutError as error:
                raise TransactionLostError(
                    "the transaction's outputs were not acknowledged in time"
                ) from error
            self.settle()
            if self._tracker.unacknowledged():
                # Another sink has not acknowledged outputs whose Kafka outputs are in this
                # transaction: committing it without their offsets would publish those again
                # when they are re-processed.
                raise TransactionLostError("a sink did not acknowledge the transaction's outputs in time")
            # every output sent is acknowledged now: offsets cover exactly what was sent
            offsets = self._tracker.to_commit()
            if not offsets and not self.transactions.in_transaction:
                return self._committed({})
            self.transactions.commit(offsets, self._consumer.group_metadata())
        except TransactionLostError as error:
            self.outage.failed("committing the transaction", error)
            if stopping:  # leaving anyway: the next owner re-processes from the last commit
                self.transactions.abort()
                return CommitResult(done=False)
            return CommitResult(done=False, lost=True)
        return self._committed(offsets)

    def restart_transaction(
        self, held: set[TopicPartition], waiting: Callable[[], None]
    ) -> dict[TopicPartition, int | None]:
        """After a lost transaction: fence it with a new producer and return the committed
        offsets of ``held`` to process again from; retried while the broker is away, within the
        outage budget (``waiting`` is called between tries). The caller has forgotten ``held``."""
        assert self.transactions is not None
        while True:
            try:
                self.transactions.reset()
                return {tp: self._consumer.committed(tp) for tp in held}
            except (TransactionLostError, Errors.KafkaError) as error:
                if isinstance(error, Errors.KafkaError) and not is_broker_trouble(error):
                    raise
                self.outage.failed("restarting the transaction", error)
                waiting()
                time.sleep(1.0)  # back-off between attempts, bounded by the outage budget

    def abort(self) -> None:
        """Exactly-once: abort the open transaction (the runtime is failing)."""
        if self.transactions is not None:
            self.transactions.abort()

    def close(self, clean: bool) -> None:
        """Close every sink; what they still hold is sent within 5 s when ``clean``, else dropped
        (it is uncommitted and will be processed again)."""
        for sink in self.sinks:
            try:
                sink.close(5 if clean else 0)
            except Exception as error:  # the process is leaving; what is uncommitted is re-processed
                log.warning("closing the %s sink failed: %r", sink.name, error)
