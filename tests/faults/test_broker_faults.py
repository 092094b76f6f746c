"""Broker-side faults: an outage longer than a commit timeout, and two exactly-once processes of one
group on one host. The oracle is the same as for process kills: every input offset has exactly
one output visible to a read_committed reader, and the group commits to the end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from consumers.ops.local_kafka.broker import LocalKafka
from consumers.ops.topics import create_topics
from schemas.settings import VigilSettings
from tests import sample_messages as samples
from tests.faults.drill import get
from tests.faults.processes import (
    INPUTS,
    finish,
    input_coordinates,
    result_counts,
    start_vigil_run,
    start_worker,
    wait_committed_to_end,
)
from tests.kafka_helpers import committed_offsets, unique_settings, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture
def own_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalKafka]:
    """A broker of this test's own, which it may kill: the session's broker serves the other tests."""
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)  # it would win over this broker's address
    broker = LocalKafka(f"pytest-outage-{os.getpid()}")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop(purge=True)


def feed(settings: VigilSettings, count: int, stop: threading.Event) -> None:
    """Produce readings steadily, through an outage (the producer buffers and retries)."""
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=5, delivery_timeout_ms=180_000
    )
    try:
        for i in range(count):
            reading = samples.reading(i)
            producer.send(
                settings.topics.sensors.name, key=reading.asset_id.encode(), value=reading.to_json_bytes()
            )
            if stop.wait(0.05):  # a steady stream of about 20 readings a second
                return
        producer.flush(timeout=180)
    finally:
        producer.close(timeout=5)


def test_a_broker_outage_longer_than_a_commit_timeout_is_ridden_out_exactly_once(
    own_broker: LocalKafka, tmp_path: Path
) -> None:
    """``vigil run`` as an operator runs it: readiness fails during the outage, nothing is lost after."""
    info = own_broker.status()
    assert info is not None
    settings = unique_settings(info.bootstrap_servers, delivery="exactly_once", commit_interval_ms=200)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    document = json.loads(settings.model_dump_json())
    document["kafka"].update(
        request_timeout_ms=5_000, session_timeout_ms=30_000, group_instance_id="outage-0"
    )
    document["metrics"] = {"enabled": True, "host": "127.0.0.1", "port": port}
    config = tmp_path / "vigil.yaml"
    config.write_text(json.dumps(document))
    create_topics(settings)
    service = start_vigil_run(config, "passthrough")
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(settings, INPUTS, stop), daemon=True)
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, 120, interval_s=0.5, what="the service ready")
        feeder.start()
        wait_for(
            lambda: sum(committed_offsets(info.bootstrap_servers, settings.kafka.group_id).values()) >= 40,
            timeout_s=90,
            what="the service committing before the outage",
        )
        own_broker.kill()
        # The outage outlasts a commit timeout (5 s): readiness says so, the process stays.
        _status, body = wait_for(
            lambda: (r := get(port, "/readyz"))[0] == 503 and r, 60, interval_s=0.5, what="/readyz failing"
        )
        assert body.startswith("not ready: passthrough:"), body
        with pytest.raises(subprocess.TimeoutExpired):
            service.wait(timeout=8)
        own_broker.start()  # same ports, same data: the broker is back
        feeder.join(timeout=180)
        assert not feeder.is_alive(), "the feeder could not deliver its readings after the outage"
        wait_committed_to_end(settings)
        answers: list[tuple[int, str]] = []
        try:
            wait_for(
                lambda: answers.append(get(port, "/readyz")) or answers[-1][0] == 200,
                60,
                interval_s=0.5,
                what="/readyz ready again",
            )
        except TimeoutError as error:
            raise AssertionError(f"/readyz still answers {answers[-1]}") from error
        assert service.poll() is None, "the service resumed on its own, without a restart"
    finally:
        stop.set()
        if service.poll() is None:
            service.send_signal(signal.SIGTERM)
        output = finish(service, 60)
    assert service.returncode == 0, output
    counts = result_counts(settings)
    assert set(counts) == input_coordinates(settings) and len(counts) == INPUTS, "every input has its output"
    assert max(counts.values()) == 1, "a read_committed reader sees each output once"


def test_two_exactly_once_processes_of_one_group_on_one_host_both_run(kafka_bootstrap: str) -> None:
    settings = unique_settings(kafka_bootstrap, delivery="exactly_once", commit_interval_ms=300)
    create_topics(settings)
    workers = [start_worker(settings, "--default-identity") for _ in range(2)]
    stop = threading.Event()
    try:
        feed(settings, INPUTS, stop)  # a stream long enough for both to join and share the partitions
        wait_committed_to_end(settings)
        assert [w.poll() for w in workers] == [None, None], "neither process was fenced by the other"
    finally:
        stop.set()
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        outputs = [finish(worker, 60) for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    counts = result_counts(settings)
    assert set(counts) == input_coordinates(settings) and max(counts.values()) == 1
