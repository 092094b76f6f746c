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

Backpressure: when more than ``max_in_flight`` records are outstanding, the assigned
partitions are paused; they resume below ``resume_below_fraction`` of that. A partition whose
state the stage restores (``ProcessingStage.restoring``) stays paused until it is restored,
while the loop goes on polling, committing and answering the group coordinator.

Rebalancing is incremental (``cooperative-sticky``, the default ``kafka.assignment_strategy``):
a member joining takes only the partitions it is given, and the others keep working. A revoked
partition's completed work is committed before it goes. SIGTERM stops
fetching, drains the stage (up to ``shutdown_timeout_s``), commits and returns 0; a second
signal exits at once without committing.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime

from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import TopicPartition

from consumers.runtime.checkpoint import Checkpoint, CommitResult
from consumers.runtime.decoding import decode_records
from consumers.runtime.kafka_clients import make_consumer
from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.ports import ConsumerPort
from consumers.runtime.records import InboundRecord, Outcome, Work
from consumers.runtime.signals import drain_on_signals
from consumers.runtime.sink import Sink
from consumers.runtime.stage import ProcessingStage
from consumers.runtime.topic_check import check_topics
from schemas.common import Message
from schemas.settings import VigilSettings

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 0.5
"""How often the loop reports what ``/readyz`` judges."""
REVOKE_DRAIN_S = 2.0
"""How long in-flight inputs get to finish before a partition revoked for good is committed."""


class _Rebalance(ConsumerRebalanceListener):
    """Hands kafka-python's rebalance events to ``StreamRuntime.rebalance``."""

    def __init__(self, runtime: StreamRuntime) -> None:
        self._runtime = runtime

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._runtime.rebalance("revoked", set(revoked))

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._runtime.rebalance("assigned", set(assigned))

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self._runtime.rebalance("lost", set(lost))


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
        self.checkpoint: Checkpoint | None = None
        self._next_health = 0.0
        self._stopping = False
        self._paused = False
        """Backpressure (or a drain) holds every assigned partition."""
        self._draining = False
        self._held_back: set[TopicPartition] = set()
        """The partitions paused now, for backpressure or for a restore."""
        self._failed = False
        self._thread_id: int | None = None
        self._in_poll = False
        self._revoked: set[TopicPartition] = set()
        self._rebalance_events: deque[tuple[str, set[TopicPartition]]] = deque()
        self._consumer: ConsumerPort | None = None
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
        dlq = self.settings.topics.dlq.name
        limits = check_topics(self.settings.kafka, self.inputs, self._output_topics())
        transactional_id = (
            f"{self._config.transactional_id_prefix}-{self._group_id}-{self._instance_id}"
            if self._exactly_once
            else None
        )
        self._consumer = make_consumer(self.settings.kafka, self._group_id)
        self.checkpoint = Checkpoint(
            self.settings,
            self._consumer,
            self.observer,
            transactional_id,
            self.sinks,
            dead_letter_limit=min(self.settings.kafka.max_request_size, limits[dlq]),
        )
        self._consumer.subscribe(topics=list(self.inputs), listener=_Rebalance(self))
        self._await_input_metadata(self._consumer)
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
                if time.monotonic() >= next_commit or self.checkpoint.outstanding() >= early:
                    self.commit(flush=self._exactly_once)
                    next_commit = time.monotonic() + self._config.commit_interval_ms / 1000
            self._drain()
            committed = self._final_commit()
            self._hand_off(self.assignment)
        except BaseException:
            self._failed = True  # from here on nothing is committed, not even on revoke
            self.checkpoint.abort()
            self._close(clean=False)
            raise
        finally:
            gc.unfreeze()  # what the process frees at exit is freed as before
        self._close(clean=True)
        return 0 if committed else 1

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
        self.observer.on_poll()
        self._report_health()
        self._apply_queued_rebalances()
        busy = self.stage.in_flight() > 0
        self._in_poll = True
        try:
            batches = self._consumer.poll(timeout_ms=0 if busy else self._config.poll_timeout_ms)
        finally:
            self._in_poll = False
        work = self._decode(batches)
        if work:
            self.stage.submit(work)
        self._emit(self.stage.collect(timeout_s=0.005 if busy else 0.0))
        self.checkpoint.settle()
        self._apply_pauses()

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

    def _apply_pauses(self) -> None:
        """Pause every partition under backpressure, and the partitions being restored always;
        resume the others."""
        assert self._consumer is not None and self.checkpoint is not None
        outstanding = self.checkpoint.outstanding()
        limit = self._config.max_in_flight
        if not self._paused and outstanding >= limit:
            self._paused = True
            self.observer.on_backpressure(True, outstanding)
        elif self._paused and not self._draining and outstanding < limit * self._config.resume_below_fraction:
            self._paused = False
            self.observer.on_backpressure(False, outstanding)
        restoring = self.stage.restoring()
        if not self._paused and not restoring and not self._held_back:
            return
        assigned = set(self._consumer.assignment())
        if self._paused:
            wanted = assigned
        else:
            wanted = {tp for tp in assigned if (tp.topic, tp.partition) in restoring}
        if paused := wanted - self._held_back:
            self._consumer.pause(*paused)
        if resumed := (self._held_back - wanted) & assigned:
            self._consumer.resume(*resumed)
        self._held_back = wanted

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
        assert self._consumer is not None
        self._paused = self._draining = True  # partitions assigned from now on stay paused too
        self._apply_pauses()
        deadline = time.monotonic() + self._config.shutdown_timeout_s
        while self.stage.in_flight() > 0 and time.monotonic() < deadline:
            self._emit(self.stage.collect(timeout_s=0.05))
        if self.stage.in_flight():
            log.warning("abandoning %d in-flight items; they stay uncommitted", self.stage.in_flight())

    # -- checkpointing ---------------------------------------------------------------------

    def commit(self, flush: bool = True) -> CommitResult:
        """Commit what the sinks have acknowledged (``Checkpoint.commit``); a lost transaction
        is recovered by processing again from the last commit."""
        assert self.checkpoint is not None
        self._apply_queued_rebalances()  # never compute offsets for partitions already given up
        result = self.checkpoint.commit(flush, stopping=self._stopping)
        if result.lost:
            self._recover_lost_transaction()
        elif result.done:
            self._report_lag()
        return result

    def _report_lag(self) -> None:
        """Records behind the log end per partition, counted from the committed offset (no request)."""
        assert self._consumer is not None and self.checkpoint is not None
        lag = {}
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            if end is None:
                continue
            committed = self.checkpoint.committed(tp)
            read_from = committed if committed is not None else self._consumer.position(tp)
            if read_from is not None:
                lag[tp] = max(0, end - read_from)
        if lag:
            self.observer.on_lag(lag)

    def _report_health(self) -> None:
        """What ``/readyz`` judges: broker reachable, commits going through, nothing stuck."""
        assert self._consumer is not None and self.checkpoint is not None
        now = time.monotonic()
        if now < self._next_health:
            return
        self._next_health = now + HEALTH_INTERVAL_S
        reachable = self._consumer.broker_reachable()
        outage = self.checkpoint.outage
        oldest = self.checkpoint.oldest_received()
        restoring = self.stage.restoring()
        self.observer.on_health(
            broker_reachable=reachable and not outage.ongoing,
            oldest_in_flight_s=0.0 if oldest is None else now - oldest,
            commit_age_s=now - outage.last_success if oldest is not None else 0.0,
            rebalancing=self._consumer.rebalancing(),
            restoring={TopicPartition(*key): progress for key, progress in restoring.items()},
        )

    def _recover_lost_transaction(self) -> None:
        """Fence the lost transaction with a new producer, then process again since the last commit."""
        assert self.checkpoint is not None and self._consumer is not None
        log.warning("the transaction was lost; re-processing from the last committed offsets")
        deadline = time.monotonic() + self._config.shutdown_timeout_s
        while self.stage.in_flight() and time.monotonic() < deadline:
            self.stage.collect(timeout_s=0.05)  # outcomes of the aborted transaction: dropped
        held = set(self.assignment)
        self._forget(held)

        def waiting() -> None:
            self.observer.on_poll()  # waiting for the broker within the budget is not being wedged
            self._report_health()

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
        self.assignment |= held
        self._assignment_changed()

    # -- rebalancing -----------------------------------------------------------------------

    def rebalance(self, kind: str, partitions: set[TopicPartition]) -> None:
        """A rebalance event (``revoked``, ``assigned`` or ``lost``) from the consumer.

        kafka-python calls it on the runtime's thread, where the runtime settles and commits
        before giving partitions up, or on its own IO thread, where nothing may block. There,
        while the runtime's thread is parked in ``poll``, its state is safe to update: an
        assignment is applied at once (before poll returns records fetched under it), and so is
        an eager revocation (kept until the new assignment). Other IO-thread events wait in a
        queue that the runtime's thread applies before it polls again. A partition revoked for
        good (incremental rebalancing) is committed from that queue: its next owner is assigned
        it only in the follow-up rebalance, which this member joins in that next poll, so the
        commit lands first and nothing completed is processed twice.
        """
        if threading.get_ident() == self._thread_id:
            self._apply_rebalance(kind, partitions)
        elif self._in_poll and (kind == "assigned" or not self._cooperative):
            self._apply_rebalance(kind, partitions, may_commit=False)
        else:
            self._rebalance_events.append((kind, partitions))

    def _apply_queued_rebalances(self) -> None:
        """Apply the IO thread's queued events on the runtime's thread (see ``rebalance``)."""
        while self._rebalance_events:
            kind, partitions = self._rebalance_events.popleft()
            self._apply_rebalance(kind, partitions, may_commit=self._cooperative and kind == "revoked")

    def _apply_rebalance(self, kind: str, partitions: set[TopicPartition], may_commit: bool = True) -> None:
        if threading.get_ident() == self._thread_id:
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

        Incremental rebalancing revokes a partition for good: what is in flight gets up to
        ``REVOKE_DRAIN_S`` to finish first, so the next owner repeats as little as possible.
        Eager rebalancing revokes every partition and hands most back: their state is kept
        until the new assignment, since a partition handed straight back keeps its fetch
        position, so its in-flight records are not delivered again and must finish.
        """
        if self._failed:
            self._forget(revoked)
            return
        self._emit(self.stage.collect(timeout_s=0.0))
        if self._cooperative:
            deadline = time.monotonic() + REVOKE_DRAIN_S
            while self.stage.in_flight() and time.monotonic() < deadline:
                self._emit(self.stage.collect(timeout_s=0.05))
                if self.checkpoint is not None:
                    self.checkpoint.settle()
        try:
            self.commit(flush=True)
            if self._cooperative:  # eager rebalancing hands most partitions straight back
                self._hand_off(revoked)  # also when the commit lost the race with the rebalance
        finally:
            if self._cooperative:
                self._forget(revoked)
            else:
                self._revoked |= revoked

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

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._forget(self._revoked - assigned)  # gone to another member: its owner re-processes
        self._revoked.clear()
        self.assignment |= assigned
        self._assignment_changed()
        if self._paused and self._consumer is not None and assigned:
            self._consumer.pause(*assigned)
            self._held_back |= assigned

    def _forget(self, partitions: set[TopicPartition]) -> None:
        if self.checkpoint is not None:
            self.checkpoint.forget(partitions)
        self.assignment -= partitions
        self._assignment_changed()

    def _assignment_changed(self) -> None:
        self._held_back &= self.assignment
        self.observer.on_assignment(self.assignment)
        self.stage.on_assignment({(tp.topic, tp.partition) for tp in self.assignment})
