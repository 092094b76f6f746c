"""The runtime's Kafka clients built from the settings, with the delivery-safety options fixed.

Auto-commit is off, consumers read committed data only, producers are idempotent with
``acks=all``: none of these can be changed from the configuration. ``kafka.client`` picks
kafka-python (the default) or confluent-kafka (``consumers.runtime.confluent_clients``) for
the runtime's consumer and producer; admin, reader and tooling clients are kafka-python's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.partitioner import DefaultPartitioner
from kafka.partitioner.default import murmur2
from kafka.structs import MemberState, TopicPartition

from consumers.runtime.ports import ConsumerPort, DeliveryReport, ProducerPort
from consumers.runtime.records import Output
from schemas.settings import KafkaSettings

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
READ_POLL_MS = 500
IDLE_SLEEP_MS = 10
"""The longest sleep in the runtime's kafka-python consumer's ``poll`` (``RuntimeConsumer``)."""
ASSIGNORS = {"cooperative-sticky": CooperativeStickyAssignor, "range": RangePartitionAssignor}
"""kafka-python's assignor of each ``kafka.assignment_strategy`` (librdkafka takes its name)."""
TRANSACTION_TIMEOUT_MS = 60_000
"""How long the broker keeps a transaction open without a commit (both clients' default)."""


class ClosedSocketRace(logging.Filter):
    """Drops kafka-python 3.0's traceback for a read on a transport it has just closed.

    Closing a client sets the transport's socket to None while its IO thread may still hold
    a read event for it; the read then fails with ``AttributeError`` and is logged at ERROR
    with a traceback, although nothing is lost (the connection was being closed anyway).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, AttributeError) and "(closed)" in record.getMessage())


logging.getLogger("kafka.net.transport").addFilter(ClosedSocketRace())


def bootstrap_servers(settings: KafkaSettings) -> str:
    """``KAFKA_BOOTSTRAP_SERVERS`` when set, else the configured servers."""
    return os.environ.get(BOOTSTRAP_ENV) or settings.bootstrap_servers


def _common(settings: KafkaSettings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(settings).split(","),
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
    }
    if settings.sasl_mechanism:
        config["sasl_mechanism"] = settings.sasl_mechanism
        config["sasl_plain_username"] = settings.sasl_username
        if settings.sasl_password is not None:
            config["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        config["ssl_check_hostname"] = settings.ssl_check_hostname
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(settings, name):
                config[name] = getattr(settings, name)
        if settings.ssl_password is not None:
            config["ssl_password"] = settings.ssl_password.get_secret_value()
    return config


def consumer_config(settings: KafkaSettings, group_id: str | None = None) -> dict[str, Any]:
    """Options for a runtime consumer: manual commits, ``read_committed``."""
    return {
        **_common(settings),
        "group_id": group_id or settings.group_id,
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        "auto_offset_reset": "earliest",
        "max_poll_records": settings.max_poll_records,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "session_timeout_ms": settings.session_timeout_ms,
        "max_partition_fetch_bytes": settings.max_partition_fetch_bytes,
        "fetch_min_bytes": settings.fetch_min_bytes,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "group_instance_id": settings.group_instance_id,
        "partition_assignment_strategy": (ASSIGNORS[settings.assignment_strategy],),
        # A group leader whose metadata lacked a just-created topic assigns none of it until
        # the next refresh: 30 s bounds that instead of the default 5 minutes.
        "metadata_max_age_ms": 30_000,
    }


def producer_config(settings: KafkaSettings, transactional_id: str | None = None) -> dict[str, Any]:
    """Options for a runtime producer: idempotent, ``acks=all``, optionally transactional."""
    config = {
        **_common(settings),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.linger_ms,
        "batch_size": settings.batch_size,
        "compression_type": settings.compression_type,
        "max_request_size": settings.max_request_size,
        "delivery_timeout_ms": settings.delivery_timeout_ms,
    }
    if transactional_id:
        config["transactional_id"] = transactional_id
    return config


class RememberingPartitioner(DefaultPartitioner):
    """kafka-python's default partitioning (murmur2 of the key, as the Java client and
    librdkafka's ``murmur2_random``), with each key's hash remembered.

    kafka-python hashes in pure Python on every send (7 % of the pass-through's thread in a
    profile); outputs are keyed by asset or camera, a few thousand keys, so each is hashed once.
    """

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: Any,
        cluster: Any,
    ) -> int:
        partitions = cluster.partitions_for_topic(topic)
        if serialized_key is None or not partitions:
            return int(super().partition(topic, key, serialized_key, value, serialized_value, cluster))
        hashed = self._hashes.get(serialized_key)
        if hashed is None:
            if len(self._hashes) >= self.MAX_KEYS:
                self._hashes.clear()
            hashed = self._hashes[serialized_key] = murmur2(serialized_key) & 0x7FFFFFFF
        # A topic's partitions are numbered 0..n-1, so this is the default's sorted(all)[hash % n].
        return hashed % len(partitions)


class RuntimeConsumer(KafkaConsumer):  # type: ignore[misc]
    """kafka-python's consumer, whose ``poll`` never sleeps longer than ``IDLE_SLEEP_MS``.

    kafka-python 3.0's ``poll`` sleeps ``min(timeout, retry_backoff_ms)`` when it finds no
    fetch in flight. A fetch response that lands between its drain of the buffer and its next
    fetch is missed that way, and its records wait in the buffer through the whole sleep:
    100 ms stalls a few times a minute under load, which made the sensor pipeline's p99 at a
    quarter of its capacity. After construction the consumer reads ``retry_backoff_ms`` only
    for that sleep (its coordinator, fetcher and network client keep copies of the options
    they were built with), so lowering it here bounds the stall and leaves every retry's
    back-off as configured. The history reader (``make_reader``) is one too: a sensor state
    rebuild reads on the runtime's thread.
    """

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.config["retry_backoff_ms"] = min(IDLE_SLEEP_MS, self.config["retry_backoff_ms"])

    def resume(self, *partitions: TopicPartition) -> None:
        """Resume fetching ``partitions``, and let records parked while they were paused flow again.

        kafka-python 3.0 parks the records a paused partition had buffered and hands them back
        on resume only once its in-line slot holds nothing, tested with ``is None``; an exhausted
        batch left in that slot is falsy but not None, so the records stay parked and the
        partition, which is not fetched while it has parked records, never moves again.
        """
        super().resume(*partitions)
        fetcher = self._fetcher
        if fetcher._next_partition_records is not None and not fetcher._next_partition_records:
            fetcher._next_partition_records = None

    def rebalancing(self) -> bool:
        """Whether the group is rebalancing: joining, or told to rejoin."""
        coordinator = self._coordinator
        return coordinator is not None and (
            coordinator.rejoin_needed or coordinator.state != MemberState.STABLE
        )

    def broker_reachable(self) -> bool:
        """Whether the member reaches its group coordinator (kafka-python says so only there)."""
        coordinator = self._coordinator
        return coordinator is None or not coordinator.coordinator_unknown()


class RuntimeProducer(KafkaProducer):  # type: ignore[misc]
    """kafka-python's producer with the calls of ``ProducerPort`` it lacks; it partitions as the
    other clients do (``RememberingPartitioner``)."""

    resumes_init = False
    """kafka-python starts ``init_transactions`` afresh: a timed-out one is not resumed."""

    def __init__(self, **config: Any) -> None:
        super().__init__(**config, partitioner=RememberingPartitioner())

    def send_all(self, outputs: Iterable[Output], report: DeliveryReport) -> None:
        """Queue ``outputs`` in order; ``report(None, metadata)`` or ``report(error)`` on the
        producer's I/O thread as each is answered."""
        send = self.send
        for output in outputs:
            send(
                output.topic,
                value=output.value,
                key=output.key,
                headers=list(output.headers),
                partition=output.partition,
            ).add_callback(report, None).add_errback(report)

    def serve_reports(self) -> None:
        """Nothing: kafka-python settles its futures on its own I/O thread."""

    def delivery_error(self, error: Any) -> BaseException:
        """kafka-python reports its own errors."""
        return error  # type: ignore[no-any-return]


def make_consumer(settings: KafkaSettings, group_id: str | None = None, **extra: Any) -> ConsumerPort:
    """A consumer with the runtime's safe options, of the configured client."""
    config = {**consumer_config(settings, group_id), **extra}
    if settings.client == "confluent":
        from consumers.runtime.confluent_clients import ConfluentConsumer

        return ConfluentConsumer(librdkafka_config(config), config["max_poll_records"])
    consumer: ConsumerPort = RuntimeConsumer(**config)
    return consumer


def librdkafka_producer_config(
    settings: KafkaSettings, transactional_id: str | None = None
) -> dict[str, Any]:
    """``producer_config`` in librdkafka's names, placing keys as the other clients do."""
    # Keys land where the Java client and kafka-python put them (librdkafka's default,
    # consistent_random, hashes with CRC32): switching clients keeps each asset's partition.
    native = {
        **librdkafka_config(producer_config(settings, transactional_id)),
        "partitioner": "murmur2_random",
    }
    if transactional_id:
        # librdkafka refuses an output timeout past the transaction's: an output not
        # delivered by then belongs to a transaction the broker aborts anyway.
        native["transaction.timeout.ms"] = TRANSACTION_TIMEOUT_MS
        native["delivery.timeout.ms"] = min(settings.delivery_timeout_ms, TRANSACTION_TIMEOUT_MS)
    return native


def make_producer(settings: KafkaSettings, transactional_id: str | None = None) -> ProducerPort:
    """A producer with the runtime's safe options, of the configured client."""
    if settings.client == "confluent":
        from consumers.runtime.confluent_clients import ConfluentProducer

        step_timeout_s = settings.request_timeout_ms / 1000
        native = librdkafka_producer_config(settings, transactional_id)
        return ConfluentProducer(native, step_timeout_s)
    producer: ProducerPort = RuntimeProducer(**producer_config(settings, transactional_id))
    return producer


_LIBRDKAFKA_NAMES = {
    "max_request_size": "message.max.bytes",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
    "ssl_password": "ssl.key.password",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "request_timeout_ms": "socket.timeout.ms",
    "fetch_max_wait_ms": "fetch.wait.max.ms",
}
_KAFKA_PYTHON_ONLY = {"max_poll_records"}


def librdkafka_config(config: dict[str, Any]) -> dict[str, Any]:
    """The same options in librdkafka's names (``linger_ms`` → ``linger.ms``)."""
    native: dict[str, Any] = {}
    for name, value in config.items():
        if value is None or name in _KAFKA_PYTHON_ONLY:
            continue
        if name == "bootstrap_servers":
            value = ",".join(value)
        elif name == "partition_assignment_strategy":  # kafka-python's assignor classes, by name
            value = ",".join(assignor.name for assignor in value)
        elif name == "ssl_check_hostname":
            name, value = "ssl_endpoint_identification_algorithm", "https" if value else "none"
        native[_LIBRDKAFKA_NAMES.get(name, name.replace("_", "."))] = value
    return native


def make_admin(settings: KafkaSettings) -> KafkaAdminClient:
    """An admin client for the configured cluster."""
    return KafkaAdminClient(**_common(settings))


def make_reader(settings: KafkaSettings) -> KafkaConsumer:
    """A consumer outside any group (``read_committed``) for reading a partition's history back."""
    return RuntimeConsumer(**{**consumer_config(settings), "group_id": None, "group_instance_id": None})


def records_between(
    reader: KafkaConsumer, starts: Mapping[TopicPartition, int], ends: Mapping[TopicPartition, int]
) -> Iterator[tuple[TopicPartition, Any]]:
    """Each partition's records from its start offset up to its end offset (exclusive), read
    with ``reader`` (assigned to them here), partitions interleaved as they are fetched."""
    partitions = [tp for tp, start in starts.items() if start < ends[tp]]
    reader.assign(partitions)
    for tp in partitions:
        reader.seek(tp, starts[tp])
    while any(reader.position(tp) < ends[tp] for tp in partitions):
        for tp, records in reader.poll(timeout_ms=READ_POLL_MS).items():
            for record in records:
                if record.offset < ends[tp]:
                    yield tp, record
