"""What flows through the runtime: an input record, a validated work item, and its outcome.

The four made for every record (``InboundRecord``, ``Work``, ``Outcome``, ``Output``) are
named tuples: immutable like frozen dataclasses, at a third of the cost to make (a frozen
dataclass sets each field through ``object.__setattr__``: 0.8 µs for a record, against 0.26).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from schemas.common import Message

Headers = tuple[tuple[str, bytes], ...]

_PLAIN_TOPIC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$")
"""Topics that can stand in an ``Identifier`` as they are (Kafka also allows ``_`` and 249 chars)."""


@functools.lru_cache(maxsize=1024)
def _topic_in_id(topic: str) -> str:
    """Worked out once per topic, not per record."""
    return topic if _PLAIN_TOPIC.match(topic) else "t" + hashlib.sha256(topic.encode()).hexdigest()[:16]


class InboundRecord(NamedTuple):
    """A record as read from Kafka, before any decoding."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    timestamp_ms: int | None = None

    def item_id(self, *parts: str) -> str:
        """``topic-partition-offset[-parts]``: an ``Identifier`` for what this record yields, the
        topic replaced by ``t`` and 16 hex digits of its sha256 where it holds a ``_`` or is long."""
        base = f"{_topic_in_id(self.topic)}-{self.partition}-{self.offset}"
        return "-".join((base, *parts)) if parts else base

    @classmethod
    def from_kafka(cls, message: Any) -> InboundRecord:
        """The record of a kafka-python ``ConsumerRecord`` (the confluent client reads records as these)."""
        if isinstance(message, InboundRecord):
            return message
        return cls(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=_headers(message.headers) if message.headers else (),
            timestamp_ms=message.timestamp,
        )

    @classmethod
    def all_from_kafka(cls, messages: Sequence[Any]) -> Sequence[InboundRecord]:
        """``from_kafka`` of a poll batch; a batch of records (the confluent client reads them as
        these) is returned as it is, without a pass over it."""
        if messages and isinstance(messages[0], cls):
            return messages
        return [cls.from_kafka(message) for message in messages]


def _headers(headers: Any) -> Headers:
    return tuple((k, v if v is not None else b"") for k, v in headers)


class Work(NamedTuple):
    """A validated input handed to a processing stage."""

    record: InboundRecord
    message: Message
    received_at: datetime


class Output(NamedTuple):
    """A record to produce: an alert, a result, a dead letter or a state hand-off."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = ()
    partition: int | None = None
    """None: the producer's partitioner places it by key."""


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an input could not be processed; it becomes a dead letter."""

    reason: str
    stage: str
    error_class: str
    error_message: str

    @classmethod
    def from_exception(cls, reason: str, stage: str, error: BaseException) -> Failure:
        """A failure described by ``error``'s class and message."""
        return cls(reason, stage, type(error).__name__, str(error))


class Rejected(Exception):
    """An input a stage cannot use; ``reason`` is its dead-letter reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def failure(self, stage: str) -> Failure:
        """The failure that dead-letters the input, named after the rejecting class."""
        return Failure(self.reason, stage, type(self).__name__, str(self))


class Settled(NamedTuple):
    """A partition with nothing in flight: every record below ``exact`` is complete, its outputs
    acknowledged; ``committed`` is what this member last committed (below ``exact`` when the
    last commit lost a race with a rebalance)."""

    exact: int
    committed: int | None


class Outcome(NamedTuple):
    """The result of one input: outputs to produce, or a failure for the dead-letter topic."""

    record: InboundRecord
    outputs: tuple[Output, ...] = ()
    failure: Failure | None = None
