"""The one broker for the whole test run: KAFKA_BOOTSTRAP_SERVERS, else testcontainers when a
Docker engine answers a ping, else a local Apache Kafka started for this run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from consumers.ops.local_kafka.provision import KAFKA_VERSION
from tests.sensor_fixtures import sensor_models  # noqa: F401  (session fixture)
from tests.vision_fixtures import vision_models  # noqa: F401  (session fixture)


def _docker_engine_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        return bool(client.ping())
    except Exception:  # no engine, no socket, no permission: all mean "not available"
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Kafka broker shared by the whole session."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        yield env
        return
    if _docker_engine_answers():
        try:
            from testcontainers.kafka import KafkaContainer
        except ImportError:
            from testcontainers.community.kafka import KafkaContainer  # type: ignore[no-redef]
        with KafkaContainer(f"apache/kafka:{KAFKA_VERSION}").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from consumers.ops.local_kafka.broker import LocalKafka

    broker = LocalKafka(f"pytest-{os.getpid()}")
    info = broker.start()
    try:
        yield info.bootstrap_servers
    finally:
        broker.stop(purge=True)
