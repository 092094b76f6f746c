"""Rebalancing: the consumer's group events, applied on the runtime's thread, in one place.

The consumer reports partitions ``revoked``, ``assigned`` and ``lost`` from the runtime's
thread (inside ``poll``: confluent-kafka always, kafka-python mostly) or from its own I/O
thread. An event on the runtime's thread is applied at once; one from another thread waits in
a queue that the runtime's thread applies before it polls, right after ``poll`` returns
(before the records fetched under a new assignment are decoded) and before every commit. So
the group member's state (what it holds, its stage's partition state, its commits) is only
ever touched by one thread.

Applying an event:
- ``revoked`` on the runtime's thread, or incremental (``cooperative-sticky``) from the queue:
  the member settles and commits what is done before the partitions go
  (``GroupMember.settle_before_revoke``). Incremental rebalancing revokes a partition for
  good, so it is dropped at once; its next owner is assigned it only in the follow-up
  rebalance, which this member joins in its next poll, so the commit lands first. Eager
  rebalancing revokes every partition and hands most straight back, keeping their fetch
  positions: they are kept until the new assignment, and only those not given back are dropped.
- an eager ``revoked`` from another thread cannot commit there: it is kept until the assignment
  the same way, and what completes meanwhile is committed by the member's next commit.
- ``assigned``: the partitions are held from now on.
- ``lost``: dropped at once; the next owner processes what was not committed.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Protocol

from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import TopicPartition

Partitions = set[TopicPartition]


class GroupMember(Protocol):
    """What the rebalance handler asks of the runtime."""

    def settle_before_revoke(self, revoked: Partitions) -> None:
        """Finish, commit (and hand over) what is done of partitions about to go."""

    def forget(self, partitions: Partitions) -> None:
        """Drop everything about partitions given up: their next owner re-processes it."""

    def assignment_changed(self, held: Partitions, added: Partitions) -> None:
        """The partitions held now, and those just added."""


class RebalanceHandler(ConsumerRebalanceListener):  # type: ignore[misc]
    """The consumer's rebalance listener and the member's assignment; see the module docstring."""

    def __init__(self, member: GroupMember, cooperative: bool) -> None:
        self._member = member
        self._cooperative = cooperative
        self._thread_id: int | None = None
        self._events: deque[tuple[str, Partitions]] = deque()
        self._revoked: Partitions = set()
        """Eager rebalancing: revoked, kept until the next assignment says which come back."""
        self.assignment: Partitions = set()
        """The partitions this member holds."""

    def bind(self) -> None:
        """The calling thread is the runtime's: events on it are applied at once."""
        self._thread_id = threading.get_ident()

    # -- the consumer's listener -----------------------------------------------------------

    def on_partitions_revoked(self, revoked: Partitions) -> None:
        self.event("revoked", set(revoked))

    def on_partitions_assigned(self, assigned: Partitions) -> None:
        self.event("assigned", set(assigned))

    def on_partitions_lost(self, lost: Partitions) -> None:
        self.event("lost", set(lost))

    # -- events ----------------------------------------------------------------------------

    def event(self, kind: str, partitions: Partitions) -> None:
        """A group event from the consumer, on any thread."""
        if threading.get_ident() == self._thread_id:
            self.apply_queued()
            self._apply(kind, partitions, may_commit=True)
        else:
            self._events.append((kind, partitions))  # atomic across threads

    def apply_queued(self) -> None:
        """Apply the events other threads queued (the runtime's thread)."""
        while self._events:
            kind, partitions = self._events.popleft()
            self._apply(kind, partitions, may_commit=self._cooperative)

    def _apply(self, kind: str, partitions: Partitions, may_commit: bool) -> None:
        if kind == "assigned":
            self.drop(self._revoked - partitions)  # gone to another member: its owner re-processes
            self._revoked.clear()
            self.add(partitions)
        elif kind == "revoked" and may_commit:
            try:
                self._member.settle_before_revoke(partitions)
            finally:
                if self._cooperative:
                    self.drop(partitions)
                else:
                    self._revoked |= partitions
        elif kind == "revoked":
            self._revoked |= partitions
        else:
            self.drop(partitions)

    # -- the assignment --------------------------------------------------------------------

    def add(self, partitions: Partitions) -> None:
        """Hold ``partitions`` (assigned, or taken back after a lost transaction)."""
        self.assignment |= partitions
        self._member.assignment_changed(set(self.assignment), partitions)

    def drop(self, partitions: Partitions) -> None:
        """Stop holding ``partitions``; the member forgets them."""
        self._member.forget(partitions)
        self.assignment -= partitions
        self._member.assignment_changed(set(self.assignment), set())
