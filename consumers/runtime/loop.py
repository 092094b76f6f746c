"""The runtime loop: poll → decode → submit → collect → emit → checkpoint.

Lifecycle of one input record:
1. ``poll`` reads it; the checkpoint tracks it as in flight.
2. It is decoded and validated against its topic's message type. A poison record
   (undecodable, invalid JSON, schema violation, oversize) becomes a dead letter at once.
3. Valid records go to the processing stage in batches; the stage returns exactly one
   outcome per record (outputs, or a failure that becomes a dead letter).
4. Each outcome is emitted: its records go to the sinks, and the checkpoint counts their
   acknowledgements.
5. Every ``commit_interval_ms`` (sooner when half the in-flight budget awaits it), on
   rebalance and at shutdown, the checkpoint commits what every sink has acknowledged
   (``consumers.runtime.checkpoint`` has the procedure, at-least-once and exactly-once).

Broker outages: a commit that fails for broker reasons is retried at the next commit
interval while the loop keeps going round; ``/readyz`` reports the outage, and only one
longer than ``outage_budget_s`` ends the run (non-zero). A lost transaction (exactly-once)
is aborted and everything since the last commit is processed again.

Backpressure (``flow``): when more than ``max_in_flight`` records are outstanding, the
assigned partitions are paused; they resume below ``resume_below_fraction`` of that. A
partition whose state the stage restores (``ProcessingStage.restoring``) stays paused until it
is restored, while the loop goes on polling, committing and answering the group coordinator.

Rebalancing (``rebalancing``) is incremental (``cooperative-sticky``, the default
``kafka.assignment_strategy``): a member joining takes only the partitions it is given, and
the others keep working. A revoked partition's completed work is committed, and its stage
state handed over, before it goes. Health and lag go to the observer (``reporting``). SIGTERM stops
fetching, drains the stage (up to ``shutdown_timeout_s``), commits and returns 0; a second
signal exits at once without committing.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime

from kafka.structs import TopicPartition

from consumers.runtime.checkpoint import Checkpoint, CommitResult
from consumers.runtime.decoding import decode_records
from consumers.runtime.flow import FlowControl
from consumers.runtime.kafka_clients import make_consumer
from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.ports import ConsumerPort
from consumers.runtime.rebalancing import RebalanceHandler
from consumers.runtime.records import InboundRecord, Outcome, Work
from consumers.runtime.reporting import HealthReporter
from consumers.runtime.signals import drain_on_signals
from consumers.runtime.sink import Sink
from consumers.runtime.stage import ProcessingStage
from consumers.runtime.topic_check import check_topics
from schemas.common import Message
from schemas.settings import VigilSettings

log = logging.getLogger(__name__)

REVOKE_DRAIN_S = 2.0
"""How long in-flight inputs get to finish before a partition revoked for good is committed."""


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
        sinks: Sequence[Sink] = (),
    ) -> None:
        self.settings = settings
        self.inputs = dict(inputs)
        self.stage = stage
        self.observer = observer or RuntimeObserver()
        self.sinks = list(sinks)
        """Sinks besides the Kafka topic sink; their acknowledgements gate commits too."""
        self._config = settings.runtime
        self._exactly_once = self._config.delivery == "exactly_once"
        self._cooperative = settings.kafka.assignment_strategy == "cooperative-sticky"
        self._group_id = group_id or settings.kafka.group_id
        self._instance_id = (
            instance_id
            or self._config.instance_id
            or settings.kafka.group_instance_id
            or f"{socket.gethostname()}-{os.getpid()}"
        )
        self.rebalances = RebalanceHandler(self, self._cooperative)
        self.checkpoint: Checkpoint | None = None
        self._consumer: ConsumerPort | None = None
        self._flow: FlowControl | None = None
        self._reporter: HealthReporter | None = None
        self._stopping = False
        self._failed = False

    @property
    def assignment(self) -> set[TopicPartition]:
        """The partitions this member holds."""
        return self.rebalances.assignment

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to drain, commit and return (what SIGTERM does)."""
        self._stopping = True

    def run(self, install_signal_handlers: bool = True, max_runtime_s: float | None = None) -> int:
        """Consume until stopped; returns the process exit status (0 after a clean drain)."""
        self.rebalances.bind()
        if install_signal_handlers:
            drain_on_signals(self.stop)
        checkpoint = self._connect()
        deadline = time.monotonic() + max_runtime_s if max_runtime_s else None
        next_commit = time.monotonic() + self._config.commit_interval_ms / 1000
        # What exists now (torch, models, clients) lives as long as the process: out of the
        # collector's sight, a full collection no longer walks its ~400k objects (measured
        # 255 ms a pause with a sensor model loaded, and the low-load latency tail with it).
        gc.collect()
        gc.freeze()
        try:
            early = self._config.max_in_flight // 2
            while not self._stopping and (deadline is None or time.monotonic() < deadline):
                self._poll_once()
                if time.monotonic() >= next_commit or checkpoint.outstanding() >= early:
                    self.commit(flush=self._exactly_once)
                    next_commit = time.monotonic() + self._config.commit_interval_ms / 1000
            self._drain()
            committed = self._final_commit()
            self._hand_off(self.assignment)
        except BaseException:
            self._failed = True  # from here on nothing is committed, not even on revoke
            checkpoint.abort()
            self._close(clean=False)
            raise
        finally:
            gc.unfreeze()  # what the process frees at exit is freed as before
        self._close(clean=True)
        return 0 if committed else 1

    def _connect(self) -> Checkpoint:
        """Check the topics, make the consumer, the checkpoint (with its producer), flow control
        and the health reporter, and join the group."""
        dlq = self.settings.topics.dlq.name
        limits = check_topics(self.settings.kafka, self.inputs, self._output_topics())
        transactional_id = (
            f"{self._config.transactional_id_prefix}-{self._group_id}-{self._instance_id}"
            if self._exactly_once
            else None
        )
        consumer = self._consumer = make_consumer(self.settings.kafka, self._group_id)
        checkpoint = self.checkpoint = Checkpoint(
            self.settings,
            consumer,
            self.observer,
            transactional_id,
            self.sinks,
            dead_letter_limit=min(self.settings.kafka.max_request_size, limits[dlq]),
        )
        self._flow = FlowControl(consumer, self._config, self.observer)
        self._reporter = HealthReporter(consumer, checkpoint, self.stage, self.observer)
        consumer.subscribe(topics=list(self.inputs), listener=self.rebalances)
        self._await_input_metadata(consumer)
        return checkpoint

    def _output_topics(self) -> list[str]:
        """Every topic this runtime writes to: alerts, results (when published) and dead letters."""
        topics = self.settings.topics
        published = [topics.inferences.name] if self._config.publish_inferences else []
        return [topics.alerts.name, *published, topics.dlq.name]

    def _await_input_metadata(self, consumer: ConsumerPort, timeout_s: float = 30.0) -> None:
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
        """Close the consumer, the sinks and the stage; a broker that does not answer never holds the exit."""
        try:
            if self._consumer is not None:
                self._consumer.close(autocommit=False)
        except Exception as error:  # the process is leaving; what is uncommitted is re-processed
            log.warning("closing the consumer failed: %r", error)
        if self.checkpoint is not None:
            self.checkpoint.close(clean)
        self.stage.close()

    # -- the loop --------------------------------------------------------------------------

    def _poll_once(self) -> None:
        assert self._consumer is not None and self.checkpoint is not None
        assert self._flow is not None and self._reporter is not None
        self.observer.on_poll()
        self._reporter.health()
        self.rebalances.apply_queued()
        busy = self.stage.in_flight() > 0
        batches = self._consumer.poll(timeout_ms=0 if busy else self._config.poll_timeout_ms)
        self.rebalances.apply_queued()  # an assignment made in that poll, before its records
        work = self._decode(batches)
        if work:
            self.stage.submit(work)
        self._emit(self.stage.collect(timeout_s=0.005 if busy else 0.0))
        self.checkpoint.settle()
        self._flow.apply(self.checkpoint.outstanding(), self.stage.restoring())

    def _decode(self, batches: Mapping[TopicPartition, Sequence[object]]) -> list[Work]:
        """Validated work from polled records; a poison record is emitted as its dead letter at once."""
        assert self.checkpoint is not None
        work: list[Work] = []
        poison: list[Outcome] = []
        now = datetime.now(UTC)
        limit = self._config.max_message_bytes
        for tp, messages in batches.items():
            self.observer.on_consumed(tp.topic, len(messages))
            message_type = self.inputs[tp.topic]
            records = InboundRecord.all_from_kafka(messages)
            # a record re-delivered after a rebalance while still in flight is left out: it will finish
            valid, invalid = decode_records(self.checkpoint.receive(tp, records), message_type, limit, now)
            work += valid
            poison += invalid
        if poison:
            self._emit(poison)
        return work

    def _emit(self, outcomes: Sequence[Outcome]) -> None:
        """Hand outcomes to the checkpoint, to go out together."""
        assert self.checkpoint is not None
        if outcomes:
            self.checkpoint.emit(outcomes)

    def _final_commit(self) -> bool:
        """Commit at shutdown; a rebalance under way is driven to its end with poll, and a broker
        that does not answer is retried, both up to ``shutdown_timeout_s``.

        False when no commit went through: nothing past the last commit is lost, it is
        re-processed by the partitions' next owner, but the exit status says so.
        """
        assert self._consumer is not None
        deadline = time.monotonic() + self._config.shutdown_timeout_s
        while not self.commit(flush=True).done:
            if time.monotonic() >= deadline:
                log.error(
                    "could not commit at shutdown: the group kept rebalancing or the broker did not answer"
                )
                return False
            self._consumer.poll(timeout_ms=500)  # partitions are paused: this only completes the rebalance
        return True

    def _drain(self) -> None:
        """Stop fetching and wait (bounded) for the stage to finish what it holds."""
        assert self._flow is not None and self.checkpoint is not None
        self._flow.drain(self.checkpoint.outstanding())
        deadline = time.monotonic() + self._config.shutdown_timeout_s
        while self.stage.in_flight() > 0 and time.monotonic() < deadline:
            self._emit(self.stage.collect(timeout_s=0.05))
        if self.stage.in_flight():
            log.warning("abandoning %d in-flight items; they stay uncommitted", self.stage.in_flight())

    # -- checkpointing ---------------------------------------------------------------------

    def commit(self, flush: bool = True) -> CommitResult:
        """Commit what the sinks have acknowledged (``Checkpoint.commit``); a lost transaction
        is recovered by processing again from the last commit."""
        assert self.checkpoint is not None and self._reporter is not None
        self.rebalances.apply_queued()  # never compute offsets for partitions already given up
        result = self.checkpoint.commit(flush, stopping=self._stopping)
        if result.lost:
            self._recover_lost_transaction()
        elif result.done:
            self._reporter.lag()
        return result

    def _recover_lost_transaction(self) -> None:
        """Fence the lost transaction with a new producer, then process again since the last commit."""
        assert self.checkpoint is not None and self._consumer is not None and self._reporter is not None
        log.warning("the transaction was lost; re-processing from the last committed offsets")
        deadline = time.monotonic() + self._config.shutdown_timeout_s
        while self.stage.in_flight() and time.monotonic() < deadline:
            self.stage.collect(timeout_s=0.05)  # outcomes of the aborted transaction: dropped
        held = set(self.assignment)
        self.rebalances.drop(held)
        reporter = self._reporter

        def waiting() -> None:
            self.observer.on_poll()  # waiting for the broker within the budget is not being wedged
            reporter.health()

        committed = self.checkpoint.restart_transaction(held, waiting)
        log.warning(
            "re-processing from the committed offsets %s",
            {f"{tp.topic}[{tp.partition}]": o for tp, o in committed.items()},
        )
        for tp, offset in committed.items():
            if offset is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, offset)
        self.rebalances.add(held)

    # -- GroupMember (rebalancing) ---------------------------------------------------------

    def settle_before_revoke(self, revoked: set[TopicPartition]) -> None:
        """Settle and commit what is done before giving partitions up.

        Incremental rebalancing revokes a partition for good: what is in flight gets up to
        ``REVOKE_DRAIN_S`` to finish first, so the next owner repeats as little as possible,
        and the stage's state of it is handed over. Eager rebalancing revokes every partition
        and hands most back (``RebalanceHandler`` keeps them until the new assignment): their
        in-flight records are not delivered again and must finish.
        """
        if self._failed:
            return
        self._emit(self.stage.collect(timeout_s=0.0))
        if self._cooperative:
            deadline = time.monotonic() + REVOKE_DRAIN_S
            while self.stage.in_flight() and time.monotonic() < deadline:
                self._emit(self.stage.collect(timeout_s=0.05))
                if self.checkpoint is not None:
                    self.checkpoint.settle()
        self.commit(flush=True)
        if self._cooperative:  # eager rebalancing hands most partitions straight back
            self._hand_off(revoked)  # also when the commit lost the race with the rebalance

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop the checkpoint's record of partitions given up: their next owner re-processes it."""
        if self.checkpoint is not None:
            self.checkpoint.forget(partitions)

    def assignment_changed(self, held: set[TopicPartition], added: set[TopicPartition]) -> None:
        """Tell flow control, the observer and the stage (which drops or restores partition state)."""
        if self._flow is not None:
            self._flow.assignment_changed(held, added)
        self.observer.on_assignment(held)
        self.stage.on_assignment({(tp.topic, tp.partition) for tp in held})

    def _hand_off(self, partitions: Collection[TopicPartition]) -> None:
        """Hand the stage's state of ``partitions`` (leaving, with nothing in flight) to their
        next owner; a partition not settled is read back by its next owner instead."""
        assert self.checkpoint is not None
        settled = {}
        for tp in partitions:
            where = self.checkpoint.settled(tp)
            if where is not None:
                settled[(tp.topic, tp.partition)] = where
        outputs = self.stage.handoff(settled) if settled else []
        if outputs and self.checkpoint.hand_off(outputs):
            log.info("handed the state of %d partitions over (%d records)", len(settled), len(outputs))
