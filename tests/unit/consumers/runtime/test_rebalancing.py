"""The rebalance handler alone: which thread applies an event, what is committed before
partitions go, what eager rebalancing keeps until the next assignment."""

from __future__ import annotations

import threading

import pytest
from kafka.structs import TopicPartition

from consumers.runtime.rebalancing import RebalanceHandler

P0, P1, P2 = (TopicPartition("in", n) for n in range(3))


class Member:
    """Records what the handler asks, and on which thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, set[TopicPartition]]] = []
        self.threads: set[int] = set()
        self.held: set[TopicPartition] = set()

    def settle_before_revoke(self, revoked: set[TopicPartition]) -> None:
        self.calls.append(("settle", set(revoked)))
        self.threads.add(threading.get_ident())

    def forget(self, partitions: set[TopicPartition]) -> None:
        if partitions:
            self.calls.append(("forget", set(partitions)))
        self.threads.add(threading.get_ident())

    def assignment_changed(self, held: set[TopicPartition], added: set[TopicPartition]) -> None:
        self.held = held
        self.threads.add(threading.get_ident())


def from_another_thread(handler: RebalanceHandler, kind: str, partitions: set[TopicPartition]) -> None:
    thread = threading.Thread(target=handler.event, args=(kind, partitions))
    thread.start()
    thread.join()


def test_events_from_another_thread_wait_for_the_runtimes_thread() -> None:
    member = Member()
    handler = RebalanceHandler(member, cooperative=True)
    handler.bind()
    from_another_thread(handler, "assigned", {P0, P1})
    assert handler.assignment == set() and member.calls == [], "applied off the runtime's thread"
    handler.apply_queued()
    assert handler.assignment == {P0, P1} == member.held
    assert member.threads == {threading.get_ident()}


def test_an_incremental_revoke_settles_then_drops_the_partitions_also_from_the_queue() -> None:
    member = Member()
    handler = RebalanceHandler(member, cooperative=True)
    handler.bind()
    handler.event("assigned", {P0, P1, P2})
    handler.event("revoked", {P0})
    assert member.calls == [("settle", {P0}), ("forget", {P0})]
    from_another_thread(handler, "revoked", {P1})
    handler.apply_queued()
    assert member.calls[2:] == [("settle", {P1}), ("forget", {P1})]
    assert handler.assignment == {P2} == member.held


def test_an_eager_revoke_keeps_partitions_until_the_assignment_says_which_come_back() -> None:
    member = Member()
    handler = RebalanceHandler(member, cooperative=False)
    handler.bind()
    handler.event("assigned", {P0, P1})
    handler.event("revoked", {P0, P1})  # on the runtime's thread: committed before they go
    assert member.calls == [("settle", {P0, P1})] and handler.assignment == {P0, P1}
    handler.event("assigned", {P1, P2})
    assert member.calls[1:] == [("forget", {P0})]
    assert handler.assignment == {P1, P2} == member.held


def test_an_eager_revoke_from_another_thread_cannot_commit_and_is_kept_until_the_assignment() -> None:
    member = Member()
    handler = RebalanceHandler(member, cooperative=False)
    handler.bind()
    handler.event("assigned", {P0, P1})
    from_another_thread(handler, "revoked", {P0, P1})
    from_another_thread(handler, "assigned", {P0})
    handler.apply_queued()
    assert member.calls == [("forget", {P1})], "settled off the runtime's thread, or kept P1"
    assert handler.assignment == {P0}


def test_lost_partitions_are_dropped_without_a_commit() -> None:
    member = Member()
    handler = RebalanceHandler(member, cooperative=True)
    handler.bind()
    handler.event("assigned", {P0, P1})
    handler.event("lost", {P1})
    assert member.calls == [("forget", {P1})] and handler.assignment == {P0}


def test_a_failed_settle_still_drops_an_incremental_revoke() -> None:
    class Failing(Member):
        def settle_before_revoke(self, revoked: set[TopicPartition]) -> None:
            raise RuntimeError("commit failed")

    member = Failing()
    handler = RebalanceHandler(member, cooperative=True)
    handler.bind()
    handler.event("assigned", {P0})
    with pytest.raises(RuntimeError, match="commit failed"):
        handler.event("revoked", {P0})
    assert handler.assignment == set() and member.calls == [("forget", {P0})]
