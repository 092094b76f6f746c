"""The Alertmanager sink against a real Alertmanager (Debian's prometheus-alertmanager)."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from consumers.runtime.records import Output
from consumers.sinks.alertmanager import AlertmanagerSink
from consumers.sinks.http import AlertDeliveryError
from schemas.messages import Alert, AlertTimestamps
from schemas.settings import AlertmanagerSinkSettings
from tests import sample_messages as samples
from tests.http_helpers import free_port, get
from tests.kafka_helpers import wait_for

pytestmark = pytest.mark.integration  # a real Alertmanager (the broker is not needed)

ALERTS = "vigil.alerts"


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """A real Alertmanager on a free loopback port, routing everything to a receiver that drops it."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary, "Alertmanager is missing: `make prometheus` installs Debian's prometheus-alertmanager"
    config = tmp_path / "alertmanager.yml"
    config.write_text(yaml.safe_dump({"route": {"receiver": "nowhere"}, "receivers": [{"name": "nowhere"}]}))
    port = free_port()
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), 30, what="Alertmanager ready")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _ready(url: str) -> bool:
    try:
        return get(f"{url}/-/ready")[0] == 200
    except OSError:
        return False


def _alerts(url: str, asset: str) -> list[dict]:
    query = urllib.parse.urlencode({"filter": f'asset="{asset}"'})
    return json.loads(get(f"{url}/api/v2/alerts?{query}")[2])


def _output(state: str, alert_id: str, at: datetime) -> Output:
    base = samples.alert()
    alert = base.model_copy(
        update={
            "state": state,
            "alert_id": alert_id,
            "timestamps": AlertTimestamps(captured_at=at, received_at=at, inferred_at=at, published_at=at),
        }
    )
    return Output(ALERTS, alert.source_id.encode(), Alert.model_validate(alert.model_dump()).to_json_bytes())


def _delivered(sink: AlertmanagerSink, output: Output) -> BaseException | None:
    outcome: list[BaseException | None] = []
    delivery = sink.send(output)
    delivery.add_callback(outcome.append)
    delivery.add_errback(outcome.append)
    assert delivery.wait(60), "the delivery never settled"
    return outcome[0]


def test_a_vigil_alert_fires_in_alertmanager_and_resolves(alertmanager: str) -> None:
    settings = AlertmanagerSinkSettings(url=alertmanager, link="http://grafana.plant/alerts?id={alert_id}")
    sink = AlertmanagerSink(settings, ALERTS)
    now = datetime.now(UTC)
    try:
        assert _delivered(sink, _output("firing", "a-fire", now)) is None
        [shown] = _alerts(alertmanager, "cam-1")
        assert shown["status"]["state"] == "active"
        assert shown["labels"] == {
            "alertname": "vigil_visual_defect",
            "kind": "visual_defect",
            "severity": "critical",
            "asset": "cam-1",
            "site": "plant-a",
            "rule": "crack",
            "label": "crack",
        }
        annotations = shown["annotations"]
        assert annotations["alert_id"] == "a-fire" and annotations["evidence"] == "vigil.frames[0]@42"
        assert annotations["frame_uri"] == "file:///f.png" and json.loads(annotations["explanation"]) == {
            "crack": 0.97
        }
        assert shown["generatorURL"] == "http://grafana.plant/alerts?id=a-fire"
        # a source clock slightly ahead: the resolution still ends the alert now, not later
        assert _delivered(sink, _output("resolved", "a-clear", now + timedelta(seconds=30))) is None
        wait_for(lambda: not _alerts(alertmanager, "cam-1"), 30, what="the alert resolved in Alertmanager")
    finally:
        sink.close(5)


def test_only_alerts_go_to_alertmanager() -> None:
    sink = AlertmanagerSink(AlertmanagerSinkSettings(url="http://127.0.0.1:1"), ALERTS)
    try:
        assert sink.wants(_output("firing", "a-1", datetime.now(UTC)))
        assert not sink.wants(Output("vigil.inferences", None, b"{}"))
    finally:
        sink.close(0)


def test_an_alertmanager_that_does_not_answer_fails_the_delivery_after_bounded_retries() -> None:
    settings = AlertmanagerSinkSettings(url=f"http://127.0.0.1:{free_port()}", retries=2, timeout_s=1)
    sink = AlertmanagerSink(settings, ALERTS)
    try:
        error = _delivered(sink, _output("firing", "a-lost", datetime.now(UTC)))
        assert isinstance(error, AlertDeliveryError) and "after 3 tries" in str(error)
    finally:
        sink.close(0)
