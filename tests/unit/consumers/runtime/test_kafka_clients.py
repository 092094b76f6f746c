from __future__ import annotations

import pytest
from confluent_kafka import KafkaError as NativeError
from confluent_kafka import KafkaException
from kafka import errors as Errors
from pydantic import SecretStr

from consumers.runtime.confluent_clients import kafka_error
from consumers.runtime.kafka_clients import (
    consumer_config,
    librdkafka_config,
    make_consumer,
    make_producer,
    make_reader,
    producer_config,
)
from consumers.runtime.outage import is_broker_trouble
from consumers.runtime.transactions import TransactionalProducer, TransactionLostError
from schemas.settings import KafkaSettings


def test_delivery_safety_options_are_fixed() -> None:
    consumer = consumer_config(KafkaSettings())
    assert consumer["enable_auto_commit"] is False
    assert consumer["isolation_level"] == "read_committed"
    producer = producer_config(KafkaSettings())
    assert producer["acks"] == "all" and producer["enable_idempotence"] is True


def test_unsafe_options_are_not_settings() -> None:
    with pytest.raises(ValueError):
        KafkaSettings(enable_auto_commit=True)  # type: ignore[call-arg]


def test_sasl_ssl_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    settings = KafkaSettings(
        bootstrap_servers="b1:9093,b2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="vigil",
        sasl_password=SecretStr("hunter2"),
        ssl_cafile="/etc/ca.pem",
    )
    config = producer_config(settings, transactional_id="tx")
    assert config["bootstrap_servers"] == ["b1:9093", "b2:9093"]
    assert config["sasl_plain_password"] == "hunter2"
    assert config["ssl_cafile"] == "/etc/ca.pem"
    assert config["transactional_id"] == "tx"
    assert "hunter2" not in repr(settings)


def test_bootstrap_env_overrides_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.plant:9092")
    assert consumer_config(KafkaSettings(bootstrap_servers="ignored:1"))["bootstrap_servers"] == [
        "kafka.plant:9092"
    ]


def test_librdkafka_gets_the_same_options_in_its_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    settings = KafkaSettings(
        bootstrap_servers="b1:9093,b2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="vigil",
        sasl_password=SecretStr("hunter2"),
        ssl_cafile="/etc/ca.pem",
        ssl_check_hostname=False,
        linger_ms=3,
        fetch_min_bytes=1000,
        fetch_max_wait_ms=7,
    )
    producer = librdkafka_config(producer_config(settings, transactional_id="tx"))
    assert producer["bootstrap.servers"] == "b1:9093,b2:9093"
    assert producer["acks"] == "all" and producer["enable.idempotence"] is True
    assert producer["transactional.id"] == "tx" and producer["linger.ms"] == 3
    assert producer["sasl.username"] == "vigil" and producer["sasl.password"] == "hunter2"
    assert producer["ssl.ca.location"] == "/etc/ca.pem"
    assert producer["ssl.endpoint.identification.algorithm"] == "none"
    assert "compression.type" not in producer  # unset options are left to librdkafka
    assert consumer_config(settings)["fetch_max_wait_ms"] == 7
    consumer = librdkafka_config(consumer_config(settings, "plant-a"))
    assert consumer["group.id"] == "plant-a" and consumer["enable.auto.commit"] is False
    assert consumer["isolation.level"] == "read_committed"
    assert consumer["fetch.min.bytes"] == 1000 and consumer["fetch.wait.max.ms"] == 7
    assert "max.poll.records" not in consumer  # kafka-python's; the confluent consumer takes it itself


def test_the_client_setting_picks_the_runtime_clients() -> None:
    from consumers.runtime.confluent_clients import ConfluentConsumer, ConfluentProducer

    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1", client="confluent")
    producer = make_producer(settings)
    consumer = make_consumer(settings, "g")
    try:
        assert isinstance(producer, ConfluentProducer) and isinstance(consumer, ConfluentConsumer)
    finally:
        producer.close(0)
        consumer.close()
    assert KafkaSettings().client == "confluent"  # the default: the faster client
    with pytest.raises(ValueError):
        KafkaSettings(client="pykafka")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("native", "expected", "retriable"),
    [
        (NativeError(NativeError.REBALANCE_IN_PROGRESS), Errors.RebalanceInProgressError, False),
        (NativeError(NativeError.ILLEGAL_GENERATION), Errors.IllegalGenerationError, False),
        (NativeError(NativeError._FENCED), Errors.ProducerFencedError, False),
        (NativeError(NativeError._ALL_BROKERS_DOWN), Errors.KafkaConnectionError, True),
        (NativeError(NativeError._TRANSPORT), Errors.KafkaConnectionError, True),
        (NativeError(NativeError._MSG_TIMED_OUT), Errors.KafkaTimeoutError, True),
    ],
)
def test_librdkafka_errors_mean_what_kafka_python_errors_mean(native, expected, retriable) -> None:
    error = kafka_error(KafkaException(native))
    assert isinstance(error, expected)
    assert is_broker_trouble(error) is retriable


def test_a_local_librdkafka_error_keeps_its_retriability() -> None:
    error = kafka_error(NativeError(NativeError._STATE, "bad state", retriable=True))
    assert type(error) is Errors.KafkaError and is_broker_trouble(error)
    assert not is_broker_trouble(kafka_error(NativeError(NativeError._INVALID_ARG, "bad")))


class _Producer:
    """A transactional producer; the second one made times out on its first ``init_transactions``."""

    def __init__(self, resumes_init: bool, made: list[_Producer]) -> None:
        self.resumes_init = resumes_init
        self.inits = -1 if len(made) == 1 else 0
        made.append(self)

    def init_transactions(self) -> None:
        self.inits += 1
        if self.inits == 0:
            raise Errors.KafkaTimeoutError("the coordinator is away")

    def close(self, timeout: float = 0) -> None:
        pass


@pytest.mark.parametrize("resumes_init", [True, False])
def test_a_timed_out_init_is_resumed_on_the_same_producer_when_the_client_can(resumes_init: bool) -> None:
    made: list[_Producer] = []
    transactions = TransactionalProducer(lambda: _Producer(resumes_init, made), step_timeout_s=5)
    with pytest.raises(TransactionLostError):
        transactions.reset()  # a lost transaction: a new producer, whose init times out
    assert len(made) == 2
    transactions.reset()  # tried again
    if resumes_init:  # librdkafka: a third producer would race the second one's initialisation
        assert len(made) == 2 and made[1].inits == 1
    else:  # kafka-python: a new producer fences whatever the old one left
        assert len(made) == 3 and transactions.producer is made[2]


def test_the_runtime_consumer_sleeps_briefly_and_retries_as_configured() -> None:
    """kafka-python's poll may sleep through buffered records; the runtime's consumer bounds
    that sleep and leaves the back-off of its coordinator's and fetcher's retries alone."""
    from consumers.runtime.kafka_clients import IDLE_SLEEP_MS, RuntimeConsumer

    # a known api_version: no broker is asked for one (there is none at this address)
    consumer = make_consumer(
        KafkaSettings(bootstrap_servers="127.0.0.1:1", client="kafka-python"),
        "g",
        api_version=(4, 0),
        retry_backoff_ms=250,
    )
    try:
        assert isinstance(consumer, RuntimeConsumer)
        assert consumer.config["retry_backoff_ms"] == IDLE_SLEEP_MS < 250
        assert consumer._coordinator.config["retry_backoff_ms"] == 250
        assert consumer._fetcher.config["retry_backoff_ms"] == 250
    finally:
        consumer.close()


def test_the_history_reader_is_a_runtime_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sensor state rebuild reads history on the runtime's thread: its sleeps are bounded too."""
    from kafka import KafkaConsumer

    from consumers.runtime.kafka_clients import IDLE_SLEEP_MS, RuntimeConsumer

    def built(self: KafkaConsumer, **config: object) -> None:  # no broker to bootstrap from
        self.config = {"retry_backoff_ms": 100, **config}

    monkeypatch.setattr(KafkaConsumer, "__init__", built)
    reader = make_reader(KafkaSettings(bootstrap_servers="127.0.0.1:1"))
    assert isinstance(reader, RuntimeConsumer) and reader.config["group_id"] is None
    assert reader.config["retry_backoff_ms"] == IDLE_SLEEP_MS


def test_the_confluent_consumer_says_when_its_group_rebalances() -> None:
    import json

    from consumers.runtime.confluent_clients import ConfluentConsumer

    consumer = ConfluentConsumer({"bootstrap.servers": "127.0.0.1:1", "group.id": "g"}, 500)
    try:
        assert not consumer.rebalancing()
        for state, join_state, rebalancing in [
            ("up", "wait-join", True),
            ("up", "wait-assign-call", True),
            ("query-coord", "init", True),
            ("up", "steady", False),
        ]:
            consumer._on_stats(json.dumps({"cgrp": {"state": state, "join_state": join_state}}))
            assert consumer.rebalancing() == rebalancing, (state, join_state)
    finally:
        consumer.close()
