from __future__ import annotations

import pytest
from pydantic import SecretStr

from consumers.runtime.kafka_clients import consumer_config, producer_config
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
