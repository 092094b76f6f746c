"""The ``vigil`` command against real brokers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from consumers.ops.cli import main
from consumers.ops.local_kafka.broker import LocalKafka, process_alive
from consumers.ops.tail import follow
from consumers.ops.topics import create_topics
from schemas.messages import Alert
from tests.faults.processes import start_vigil_run
from tests.kafka_helpers import produce, read_all, unique_settings
from tests.sample_messages import alert

pytestmark = pytest.mark.integration


def test_kafka_up_status_down_leaves_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("VIGIL_STATE_DIR", str(tmp_path))
    name = "cli-test"
    assert main(["kafka", "status", "--name", name]) == 1
    assert main(["kafka", "up", "--name", name]) == 0
    info = LocalKafka(name).status()
    assert info is not None and process_alive(info.pid)
    assert main(["kafka", "up", "--name", name]) == 0  # idempotent: the same broker
    assert LocalKafka(name).status() == info
    assert main(["kafka", "status", "--name", name]) == 0
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=info.bootstrap_servers)
    admin.create_topics([NewTopic("kept", 1, 1)])
    admin.close()
    produce(info.bootstrap_servers, "kept", [(b"k", b"survives a restart")])

    assert main(["kafka", "restart", "--name", name]) == 0  # down then up: same ports, same data
    again = LocalKafka(name).status()
    assert again is not None and again.pid != info.pid and not process_alive(info.pid)
    assert again.bootstrap_servers == info.bootstrap_servers
    assert [r.value for r in read_all(info.bootstrap_servers, "kept", 1)] == [b"survives a restart"]
    info = again

    assert main(["kafka", "down", "--name", name, "--purge"]) == 0
    assert not process_alive(info.pid)
    assert LocalKafka(name).status() is None
    assert not (tmp_path / "kafka" / name).exists()
    assert "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:" in capsys.readouterr().out


def test_topics_simulate_and_schemas(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = unique_settings(kafka_bootstrap)
    config = tmp_path / "vigil.yaml"
    config.write_text(json.dumps(json.loads(settings.model_dump_json())))  # JSON is YAML
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    assert main(["topics", "create", "--config", str(config)]) == 0
    assert (
        main(["simulate", "--config", str(config), "--frames", "5", "--readings", "7", "--poison", "2"]) == 0
    )
    assert len(read_all(kafka_bootstrap, settings.topics.frames.name, 5)) == 5
    assert len(read_all(kafka_bootstrap, settings.topics.sensors.name, 9)) == 9
    assert main(["schemas", "export", str(tmp_path / "schemas")]) == 0
    assert (tmp_path / "schemas" / "FrameRef.schema.json").is_file()


def test_a_bad_configuration_is_a_clear_error(tmp_path: Path, capsys) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("runtime:\n  delivery: sometimes\n")
    assert main(["topics", "create", "--config", str(config)]) == 3  # the configuration's status
    assert "delivery" in capsys.readouterr().err


@pytest.mark.slow
def test_the_demo_shows_alerts_from_the_plant_and_the_city(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = unique_settings(kafka_bootstrap)
    config = tmp_path / "vigil.yaml"
    document = json.loads(settings.model_dump_json())
    registry = str(tmp_path / "registry")  # every kind trains its demo model here
    document["vision"]["registry"] = document["sensors"]["registry"] = registry
    document["pipelines"] = {
        "vibration": {"registry": registry, "input": {"name": f"{settings.topics.sensors.name}.vibration"}}
    }
    config.write_text(json.dumps(document))
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "COLUMNS": "200"}
    demo = subprocess.run(
        [
            sys.executable,
            "-m",
            "consumers.ops.cli",
            "demo",
            "--config",
            str(config),
            "--duration",
            "15",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    firing = [line for line in demo.stdout.splitlines() if line.startswith("ALERT firing")]
    assert any("visual_defect" in line and "cam-3" in line for line in firing), demo.stdout[-3000:]
    assert any("sensor_anomaly" in line and "press-2" in line for line in firing), demo.stdout[-3000:]
    assert any("threshold" in line and "aq-2" in line for line in firing), demo.stdout[-3000:]
    assert any("stale_source" in line for line in firing), demo.stdout[-3000:]
    assert any("sensor_anomaly" in line and "fan-3" in line for line in firing), demo.stdout[-3000:]
    assert "Vigil demo summary" in demo.stdout


def test_vigil_run_serves_two_pipelines_with_health_and_stops_on_sigterm(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    import signal
    import socket
    import urllib.request

    from schemas.settings import SensorRule
    from tests import sample_messages as samples
    from tests.kafka_helpers import committed_offsets, produce, wait_for

    settings = unique_settings(kafka_bootstrap)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    document = json.loads(settings.model_dump_json())
    document["metrics"] = {"enabled": True, "host": "127.0.0.1", "port": port}
    rule = SensorRule(name="hot", kind="range", sensor_kind="*", channel="*", high=1e9)
    document["sensors"]["rules"] = [json.loads(rule.model_dump_json())]
    config = tmp_path / "vigil.yaml"
    config.write_text(json.dumps(document))
    assert main(["topics", "create", "--config", str(config)]) == 0
    produce(
        kafka_bootstrap,
        settings.topics.sensors.name,
        [(b"pump-1", samples.reading(i).to_json_bytes()) for i in range(5)],
    )
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    service = start_vigil_run(config, "passthrough,sensors", env=env)

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(ready, 120, interval_s=0.5, what="both pipelines ready")
        group = settings.kafka.group_id
        for name in ("passthrough", "sensors"):
            wait_for(
                lambda name=name: sum(committed_offsets(kafka_bootstrap, f"{group}.{name}").values()) >= 5,
                60,
                what=f"{name} committed the readings",
            )
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=60) == 0
    finally:
        if service.poll() is None:
            service.kill()
        output = service.communicate()[0]
    assert f"metrics on http://127.0.0.1:{port}/metrics" in output


def test_tail_shows_each_record_of_an_output_topic_and_names_an_unreadable_one(kafka_bootstrap: str) -> None:
    settings = unique_settings(kafka_bootstrap)
    create_topics(settings)
    topic = settings.topics.alerts.name
    produce(kafka_bootstrap, topic, [(b"cam-1", alert().to_json_bytes()), (b"cam-1", b"{not an alert")])
    lines = list(follow(settings, "alerts", from_beginning=True, idle_timeout_s=5))
    assert len(lines) == 2
    assert lines[0].startswith("ALERT firing") and "cam-1" in lines[0] and "id=a-1" in lines[0]
    assert lines[1].startswith(f"UNREADABLE {topic}[0]@1:")
    documents = list(follow(settings, "alerts", True, 5, as_json=True))
    assert Alert.from_json_bytes(documents[0].encode()) == alert()
    assert json.loads(documents[1])["unreadable"] == {"topic": topic, "partition": 0, "offset": 1}
