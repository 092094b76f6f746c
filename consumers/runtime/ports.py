"""The client seam: what the runtime needs from a Kafka consumer and producer, typed by Vigil.

Two clients stand behind it (``kafka.client``): kafka-python (``kafka_clients``: its classes
with the few calls they lack) and confluent-kafka (``confluent_clients``: librdkafka behind
these calls, its errors translated into kafka-python's, which the runtime handles). The
runtime asks each for what it needs here, never whether it has it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from kafka.structs import OffsetAndMetadata, TopicPartition

from consumers.runtime.records import Output
from consumers.runtime.sink import Acknowledgement, DeliveryReport


class ConsumerPort(Protocol):
    """A group member's consumer: subscription, polling, flow control, positions and commits."""

    def subscribe(self, topics: list[str], listener: Any) -> None:
        """Join the group for ``topics``; ``listener`` hears of partitions revoked, assigned, lost."""

    def poll(self, timeout_ms: int = 0) -> Mapping[TopicPartition, Sequence[Any]]:
        """Records fetched, by partition, waiting up to ``timeout_ms`` for the first."""

    def assignment(self) -> set[TopicPartition]:
        """The partitions this member holds."""

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """The partition numbers of ``topic`` (None when it is unknown)."""

    def pause(self, *partitions: TopicPartition) -> None:
        """Stop fetching ``partitions``."""

    def resume(self, *partitions: TopicPartition) -> None:
        """Fetch ``partitions`` again."""

    def position(self, tp: TopicPartition) -> int | None:
        """The offset of the next record ``poll`` returns from ``tp``."""

    def highwater(self, tp: TopicPartition) -> int | None:
        """``tp``'s end offset as last fetched (None before a fetch)."""

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` from ``offset`` next."""

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Read ``partitions`` from their oldest record next."""

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit ``offsets`` for the group, synchronously."""

    def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset of ``tp``."""

    def group_metadata(self) -> Any:
        """What a transaction needs to commit offsets for this member (KIP-447 fencing)."""

    def close(self, autocommit: bool = False) -> None:
        """Leave the group."""

    def rebalancing(self) -> bool:
        """Whether the group is rebalancing: joining, or told to rejoin."""

    def broker_reachable(self) -> bool:
        """Whether the member reaches its group coordinator."""


class ProducerPort(Protocol):
    """A producer of outputs, transactional when built with a transactional id."""

    resumes_init: bool
    """Whether ``init_transactions`` may be called again after it timed out (to resume it)."""

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, Any]] | None = None,
        partition: int | None = None,
    ) -> Acknowledgement:
        """Queue one record; the acknowledgement settles on the broker's answer."""

    def send_all(self, outputs: Iterable[Output], report: DeliveryReport) -> None:
        """Queue ``outputs`` in order, ``report`` called with each answer; nothing is made per output."""

    def serve_reports(self) -> None:
        """Settle the answers received so far on the caller's thread, where the client allows it."""

    def delivery_error(self, error: Any) -> BaseException:
        """The runtime's error for what the client reported of a failed delivery."""

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued is acknowledged (``KafkaTimeoutError`` past ``timeout``)."""

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued within ``timeout`` and release the producer."""

    def init_transactions(self) -> None: ...

    def begin_transaction(self) -> None: ...

    def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, OffsetAndMetadata], group_metadata: Any
    ) -> None: ...

    def commit_transaction(self) -> None: ...

    def abort_transaction(self) -> None: ...
