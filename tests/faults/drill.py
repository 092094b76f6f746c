"""The scale-out drill's parts, shared by its fault test and ``bench/scale_out.py``: ``vigil run``
members watched through their endpoints, history that a previous member processed, live load."""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata

from consumers.pipelines.sensors.scenarios import machine_readings
from schemas.messages import SensorReading
from schemas.settings import VigilSettings
from tests.faults.processes import ROOT, finish, start_vigil_run
from tests.kafka_helpers import end_offsets


def get(port: int, path: str) -> tuple[int, str]:
    """The status and body of ``path`` on a local endpoint (0 and "" when nothing answers)."""
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

    def __init__(self, settings: VigilSettings, tmp_path: Path, name: str, root: Path = ROOT) -> None:
        self.port = _free_port()
        # defaults left out: an older checkout (a bench baseline) reads the same file
        document = json.loads(settings.model_dump_json(exclude_defaults=True))
        document["metrics"] = {"enabled": True, "host": "127.0.0.1", "port": self.port}
        config = tmp_path / f"{name}.yaml"
        config.write_text(json.dumps(document))
        self.process = start_vigil_run(config, "sensors", root)
        self.readiness: list[tuple[int, str, int]] = []
        """(``/readyz`` status, its body, ``/healthz`` status) sampled while it ran."""
        self._watching = True
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while self._watching and self.process.poll() is None:
            status, body = get(self.port, "/readyz")
            if status:
                self.readiness.append((status, body.strip(), get(self.port, "/healthz")[0]))
            time.sleep(0.1)  # sampling interval of the probe, as an orchestrator's

    def ready(self) -> bool:
        return bool(self.readiness) and self.readiness[-1][0] == 200

    def restores(self) -> dict[str, float]:
        """``vigil_partition_restores_total`` by source, from the member's metrics endpoint."""
        _, body = get(self.port, "/metrics")
        found = re.findall(r'^vigil_partition_restores_total\{[^}]*source="(\w+)"[^}]*\} (\S+)$', body, re.M)
        return {source: float(value) for source, value in found}

    def stop(self) -> str:
        self._watching = False
        self.process.send_signal(signal.SIGTERM)
        return finish(self.process, 90)


def live_readings(
    topic: str, bootstrap: str, assets: int, stop: threading.Event, sent: list[SensorReading]
) -> None:
    """Each of ``assets`` reports once a second until ``stop``, event time = now."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        while not stop.is_set():
            tick = datetime.now(UTC).replace(microsecond=0)
            for asset in range(assets):
                [reading] = machine_readings(f"machine-{asset}", tick, 1, seed=asset)
                producer.send(topic, key=reading.asset_id.encode(), value=reading.to_json_bytes())
                sent.append(reading)
            producer.flush(30)
            stop.wait(max(0.0, (tick + timedelta(seconds=1) - datetime.now(UTC)).total_seconds()))
    finally:
        producer.close()


def committed_history(settings: VigilSettings, assets: int, history_s: int) -> dict[object, int]:
    """``history_s`` seconds of 1 Hz readings of ``assets`` machines, stamped with their event
    times, committed for the group as a previous member would have; returns the end offsets."""
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.topics.sensors.name
    now = datetime.now(UTC).replace(microsecond=0)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 18)
    for asset in range(assets):
        for reading in machine_readings(
            f"machine-{asset}", now - timedelta(seconds=history_s), history_s, seed=asset
        ):
            stamp = int(reading.event_time.timestamp() * 1000)
            producer.send(
                topic, key=reading.asset_id.encode(), value=reading.to_json_bytes(), timestamp_ms=stamp
            )
    producer.flush(600)
    producer.close()
    ends = end_offsets(bootstrap, topic)
    previous = KafkaConsumer(bootstrap_servers=bootstrap, group_id=settings.kafka.group_id)
    previous.commit({tp: OffsetAndMetadata(end, "", -1) for tp, end in ends.items()})
    previous.close()
    return dict(ends)
