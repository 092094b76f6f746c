"""Scale-out drill, scaled down: a sensor topic holding history that a previous member already
processed, live readings arriving, member A started, member B joining once A is ready.

What an operator needs from it: neither member exits; each restores its partitions' state
while its loop keeps going round (``/healthz`` 200, ``/readyz`` 503 "restoring ..."); the
group settles with the partitions shared; every live window is scored once, none lost."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata

from consumers.ops.scenarios import machine_readings
from consumers.ops.topics import create_topics
from schemas.messages import InferenceResult, SensorReading
from schemas.settings import SensorModelBinding, SensorRule, SensorSettings, VigilSettings
from tests.faults.processes import ROOT, finish
from tests.kafka_helpers import committed_offsets, end_offsets, read_until_quiet, unique_settings, wait_for
from tests.sensor_fixtures import SensorModels

pytestmark = [pytest.mark.integration, pytest.mark.faults]

ASSETS = 48
HISTORY_S = 900
"""Event time of history before the members start; a rule that looks back this far makes the
whole of it part of the state to restore."""


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Member:
    """One ``vigil run --pipeline sensors`` process, and what its endpoint said while it ran."""

    def __init__(self, settings: VigilSettings, tmp_path: Path, name: str) -> None:
        self.port = _free_port()
        document = json.loads(settings.model_dump_json())
        document["metrics"] = {"enabled": True, "host": "127.0.0.1", "port": self.port}
        config = tmp_path / f"{name}.yaml"
        config.write_text(json.dumps(document))
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "consumers.ops.cli",
                "run",
                "--config",
                str(config),
                "--pipeline",
                "sensors",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.readiness: list[tuple[int, str, int]] = []
        """(``/readyz`` status, its body, ``/healthz`` status) sampled while it ran."""
        self._watching = True
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while self._watching and self.process.poll() is None:
            status, body = _get(self.port, "/readyz")
            if status:
                self.readiness.append((status, body.strip(), _get(self.port, "/healthz")[0]))
            time.sleep(0.1)  # sampling interval of the probe, as an orchestrator's

    def ready(self) -> bool:
        return bool(self.readiness) and self.readiness[-1][0] == 200

    def stop(self) -> str:
        self._watching = False
        self.process.send_signal(signal.SIGTERM)
        return finish(self.process, 90)


def live_readings(topic: str, bootstrap: str, stop: threading.Event, sent: list[SensorReading]) -> None:
    """Each asset reports once a second until ``stop``, event time = now."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        while not stop.is_set():
            tick = datetime.now(UTC).replace(microsecond=0)
            for asset in range(ASSETS):
                [reading] = machine_readings(f"machine-{asset}", tick, 1, seed=asset)
                producer.send(topic, key=reading.asset_id.encode(), value=reading.to_json_bytes())
                sent.append(reading)
            producer.flush(30)
            stop.wait(max(0.0, (tick + timedelta(seconds=1) - datetime.now(UTC)).total_seconds()))
    finally:
        producer.close()


def test_a_member_joining_a_group_with_history_restores_without_stopping_the_world(
    kafka_bootstrap: str, sensor_models: SensorModels, tmp_path: Path
) -> None:
    base = unique_settings(kafka_bootstrap, partitions=6)
    sensors = SensorSettings(
        registry=str(sensor_models.registry),
        models=[
            SensorModelBinding(assets="machine-*", sensor_kind="machine", model=sensor_models.autoencoder)
        ],
        rules=[SensorRule(name="overheat", kind="threshold", channel="temp_c", limit=1e6, for_s=HISTORY_S)],
    )
    settings = base.model_copy(update={"sensors": sensors})
    create_topics(settings)
    topic = settings.topics.sensors.name

    # History, stamped with its event times, that a previous member processed and committed.
    now = datetime.now(UTC).replace(microsecond=0)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=20, batch_size=1 << 18)
    for asset in range(ASSETS):
        for reading in machine_readings(
            f"machine-{asset}", now - timedelta(seconds=HISTORY_S), HISTORY_S, seed=asset
        ):
            stamp = int(reading.event_time.timestamp() * 1000)
            producer.send(
                topic, key=reading.asset_id.encode(), value=reading.to_json_bytes(), timestamp_ms=stamp
            )
    producer.flush(60)
    producer.close()
    history_ends = end_offsets(kafka_bootstrap, topic)
    previous = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=settings.kafka.group_id)
    previous.commit({tp: OffsetAndMetadata(end, "", -1) for tp, end in history_ends.items()})
    previous.close()

    stop, sent = threading.Event(), []
    load = threading.Thread(target=live_readings, args=(topic, kafka_bootstrap, stop, sent), daemon=True)
    load.start()
    members: list[Member] = []
    try:
        a = Member(settings, tmp_path, "a")
        members.append(a)
        wait_for(a.ready, 120, interval_s=0.2, what="member A ready")
        b = Member(settings, tmp_path, "b")
        members.append(b)
        wait_for(lambda: b.ready() and a.ready(), 120, interval_s=0.2, what="both members ready")
        settled = len(sent)
        wait_for(lambda: len(sent) >= settled + 3 * ASSETS, 30, what="live load on the settled group")
        stop.set()
        load.join(30)
        ends = end_offsets(kafka_bootstrap, topic)
        wait_for(
            lambda: committed_offsets(kafka_bootstrap, settings.kafka.group_id) == ends,
            120,
            what="every live reading committed",
        )
        assert all(m.process.poll() is None for m in members), "no member exits"
        outputs = [m.stop() for m in members]
    finally:
        stop.set()
        for member in members:
            if member.process.poll() is None:
                member.process.kill()
    assert [m.process.returncode for m in members] == [0, 0], outputs

    for member in members:
        restoring = [alive for status, body, alive in member.readiness if "restoring" in body]
        assert restoring, member.readiness[:20]
        assert set(restoring) == {200}, "the loop kept going round while it restored"

    results = [
        InferenceResult.from_json_bytes(r.value)
        for r in read_until_quiet(kafka_bootstrap, settings.topics.inferences.name)
    ]
    scored = [r for r in results if r.outcome == "scored"]
    repeated = [k for k, n in Counter((r.source_id, r.evidence.window_end) for r in scored).items() if n > 1]
    assert repeated == [], "a window scored twice"
    ends_by_asset: dict[str, list[datetime]] = defaultdict(list)
    for result in scored:
        assert result.evidence.window_end is not None
        ends_by_asset[result.source_id].append(result.evidence.window_end)
    live_by_asset: dict[str, int] = Counter(r.asset_id for r in sent)
    assert set(ends_by_asset) == set(live_by_asset)
    stride = timedelta(seconds=sensor_models.stride)
    for asset, window_ends in ends_by_asset.items():
        window_ends.sort()
        assert all(b - a == stride for a, b in pairwise(window_ends)), f"{asset}: a window lost"
        # every stride of live readings completed a window (the history made them full from the start)
        assert len(window_ends) >= live_by_asset[asset] // sensor_models.stride, asset
