"""Metrics, health and the deploy/ files against the real parts: a live Vigil running both
pipelines on the broker, Debian's promtool, and a real Prometheus server scraping it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from consumers.ops.service import Service
from consumers.ops.topics import create_topics
from consumers.pipelines.sensors.scenarios import machine_readings
from models.vision.synthetic import encode, product_image
from tests.http_helpers import free_port, get
from tests.kafka_helpers import committed_offsets, end_offsets, produce, wait_for
from tests.sensor_fixtures import SensorModels, publish_readings, scenario, sensor_settings
from tests.vision_fixtures import VisionModels, frame, vision_settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "vigil-overview.json"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: `make prometheus` installs Debian's prometheus package"
    return path


@pytest.fixture(scope="module")
def vigil_endpoint(
    kafka_bootstrap: str,
    sensor_models: SensorModels,
    vision_models: VisionModels,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """Both pipelines in this process behind one metrics endpoint, after working off their inputs."""
    frames_dir = tmp_path_factory.mktemp("frames")
    settings = sensor_settings(kafka_bootstrap, sensor_models)
    settings = settings.model_copy(
        update={"vision": vision_settings(kafka_bootstrap, vision_models, frames_dir).vision}
    )
    create_topics(settings)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    publish_readings(kafka_bootstrap, settings, scenario(start))
    late = machine_readings("machine-2", start, 3, seed=12)[1]  # long after its window moved on
    produce(
        kafka_bootstrap,
        settings.topics.sensors.name,
        [(b"machine-2", late.to_json_bytes()), (b"x", b"not json")],
    )
    frames = []
    for n, label in enumerate(["ok", "crack", "crack", "spot", "ok", "scratch"]):
        path = frames_dir / f"{n}.png"
        path.write_bytes(encode(product_image(label, 64, seed=9000 + n)))
        frames.append(frame(n, path))
    frames.append(frame(99, frames_dir / "missing.png"))
    produce(
        kafka_bootstrap,
        settings.topics.frames.name,
        [(f.camera_id.encode(), f.to_json_bytes()) for f in frames],
    )

    group = settings.kafka.group_id
    service = Service(settings, ["vision", "sensors"])
    server = service.serve_metrics("127.0.0.1", 0)
    try:
        service.start()
        for suffix, topic in (
            ("vision", settings.topics.frames.name),
            ("sensors", settings.topics.sensors.name),
        ):
            ends = {tp: end for tp, end in end_offsets(kafka_bootstrap, topic).items() if end}
            wait_for(
                lambda suffix=suffix, ends=ends: (
                    committed_offsets(kafka_bootstrap, f"{group}.{suffix}") == ends
                ),
                120,
                what=f"{suffix} inputs committed",
            )
        yield f"http://127.0.0.1:{server.port}"
    finally:
        service.stop()
        server.stop()


def test_health_and_readiness_answer_while_vigil_runs(vigil_endpoint: str) -> None:
    assert get(f"{vigil_endpoint}/healthz")[0] == 200
    answers: list[tuple[int, str]] = []

    def ready() -> bool:  # a busy machine may hold a loop past readiness's 5 s for a moment
        status, _, body = get(f"{vigil_endpoint}/readyz")
        answers.append((status, body))
        return status == 200

    try:
        wait_for(ready, 30, interval_s=0.5, what="/readyz 200")
    except TimeoutError as error:
        raise AssertionError(f"/readyz answered {answers[-3:]}") from error
    assert get(f"{vigil_endpoint}/nothing")[0] == 404


def test_promtool_accepts_a_live_scrape(vigil_endpoint: str) -> None:
    status, content_type, body = get(f"{vigil_endpoint}/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert 'vigil_messages_consumed_total{topic="' in body and "vigil_batch_size_items_bucket" in body
    check = subprocess.run([tool("promtool"), "check", "metrics"], input=body, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_openmetrics_exposition_parses(vigil_endpoint: str) -> None:
    status, content_type, body = get(f"{vigil_endpoint}/metrics", accept="application/openmetrics-text")
    assert status == 200 and content_type.startswith("application/openmetrics-text")
    families = {family.name: family for family in text_string_to_metric_families(body)}
    assert {
        "vigil_messages_consumed",
        "vigil_dead_letters",
        "vigil_end_to_end_seconds",
        "vigil_alerts",
    } <= set(families)
    assert families["vigil_end_to_end_seconds"].type == "histogram"
    reasons = {s.labels["reason"] for s in families["vigil_dead_letters"].samples if "reason" in s.labels}
    assert {"invalid_json", "missing_object"} <= reasons


def expressions() -> dict[str, str]:
    """Every dashboard query and rule expression, by where it comes from (alerts without their threshold)."""
    out = {}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        if panel["title"].startswith("GPU") and not torch.cuda.is_available():
            continue  # GPU series exist only where a GPU does
        for target in panel["targets"]:
            # the dashboard's variables at "All", as Grafana sends them
            expr = re.sub(r"\$(instance|pipeline|topic)\b", ".*", target["expr"])
            out[f"panel {panel['title']!r} {target['refId']}"] = expr
    for group in yaml.safe_load((RULES / "vigil-rules.yml").read_text())["groups"]:
        for rule in group["rules"]:
            name = rule.get("record") or rule["alert"]
            out[f"rule {name}"] = re.sub(r"\s*(>|<|==|!=|>=|<=)\s*[-0-9.e]+$", "", rule["expr"])
    return out


def test_a_real_prometheus_scrapes_vigil_and_every_dashboard_and_rule_query_has_data(
    vigil_endpoint: str, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES / "vigil-rules.yml")],
                "scrape_configs": [
                    {
                        "job_name": "vigil",
                        "static_configs": [{"targets": [urllib.parse.urlparse(vigil_endpoint).netloc]}],
                    }
                ],
            }
        )
    )
    server = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{port}"

    def query(expr: str) -> list[dict]:
        _, _, body = get(f"{api}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        answer = json.loads(body)
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    try:
        wait_for(lambda: _ready(api), 60, what="Prometheus ready")
        wait_for(lambda: query('up{job="vigil"} == 1'), 60, what="Vigil scraped")
        pending = expressions()

        def all_have_data() -> bool:
            for where, expr in list(pending.items()):
                if query(expr):
                    del pending[where]
            return not pending

        try:
            wait_for(all_have_data, 90, interval_s=1.0, what="data for every query")
        except TimeoutError:
            raise AssertionError(f"no data for: {json.dumps(pending, indent=1)}") from None
    finally:
        server.terminate()
        server.wait(timeout=30)


def _ready(api: str) -> bool:
    try:
        return get(f"{api}/-/ready")[0] == 200
    except OSError:
        return False


def test_the_rules_and_their_unit_tests_pass() -> None:
    for command in (
        ["check", "rules", "vigil-rules.yml"],
        ["test", "rules", "vigil-rules.test.yml"],
        ["check", "config", "--syntax-only", str(ROOT / "deploy" / "prometheus" / "prometheus.yml")],
    ):
        result = subprocess.run([tool("promtool"), *command], cwd=RULES, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
