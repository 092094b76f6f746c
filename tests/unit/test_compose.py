"""docker-compose.yml cannot run here (no Docker engine), so check what it refers to."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def mounts(service: str) -> dict[str, str]:
    """Container path → host path of a service's bind mounts from this repository."""
    out = {}
    for volume in SERVICES[service].get("volumes", []):
        if volume.startswith("${"):  # ${VAR:-default}: the default is the source
            variable, rest = volume[2:].split("}", 1)
            source, target = variable.split(":-", 1)[1], rest.split(":")[1]
        else:
            source, target = volume.split(":")[:2]
        out[target] = source
    return out


def test_the_stack_has_kafka_vigil_prometheus_alertmanager_and_grafana() -> None:
    assert set(SERVICES) == {
        "kafka",
        "vigil-topics",
        "vigil-vision",
        "vigil-sensors",
        "alertmanager",
        "prometheus",
        "grafana",
    }
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert SERVICES["prometheus"]["image"].startswith("prom/prometheus:")
    assert SERVICES["grafana"]["image"].startswith("grafana/grafana:")
    ports = {service: spec.get("ports", []) for service, spec in SERVICES.items()}
    assert ports["vigil-vision"] == ["127.0.0.1:9108:9108"] and ports["vigil-sensors"] == [
        "127.0.0.1:9109:9108"
    ]
    assert ports["prometheus"] == ["9090:9090"] and ports["grafana"] == ["3000:3000"]


def test_every_mounted_file_of_this_repository_exists() -> None:
    for service in SERVICES:
        for source in mounts(service).values():
            if source.startswith("./deploy"):
                assert (ROOT / source).exists(), f"{service}: {source}"
        if SERVICES[service].get("build"):
            assert (ROOT / "Dockerfile").is_file()


def test_vigil_runs_both_pipelines_with_the_example_configuration() -> None:
    for service, pipeline in (("vigil-vision", "vision"), ("vigil-sensors", "sensors")):
        command = SERVICES[service]["command"]
        assert command[:1] == ["run"] and command[command.index("--pipeline") + 1] == pipeline
        assert mounts(service)["/etc/vigil/vigil.yaml"] == "./deploy/vigil.yaml"
    metrics = yaml.safe_load((ROOT / "deploy" / "vigil.yaml").read_text())["metrics"]
    assert metrics["host"] == "0.0.0.0" and metrics["port"] == 9108  # reachable from Prometheus


def test_prometheus_scrapes_both_pipelines_and_loads_the_rules() -> None:
    config_path = mounts("prometheus")["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load((ROOT / config_path).read_text())
    [job] = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["vigil-vision:9108", "vigil-sensors:9108"]
    rules_dir = ROOT / mounts("prometheus")["/etc/prometheus/rules"]
    for rule_file in config["rule_files"]:
        assert (rules_dir / Path(rule_file).name).is_file(), rule_file


def test_grafana_provisions_the_datasource_and_the_dashboard() -> None:
    provisioning = ROOT / mounts("grafana")["/etc/grafana/provisioning"]
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["uid"] == "prometheus"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "vigil.yml").read_text())["providers"]
    dashboards = ROOT / mounts("grafana")[provider["options"]["path"]]
    dashboard = json.loads((dashboards / "vigil-overview.json").read_text())
    assert all(t["datasource"]["uid"] == source["uid"] for p in dashboard["panels"] for t in p["targets"])


def test_the_model_registry_mount_is_not_the_models_package() -> None:
    for service in ("vigil-vision", "vigil-sensors"):
        source = mounts(service)["/var/lib/vigil/models"]
        assert source == "./registry" and not (ROOT / source / "__init__.py").exists(), source


def test_compose_runs_the_kafka_version_the_local_broker_runs() -> None:
    from consumers.ops.local_kafka.provision import KAFKA_VERSION

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    images = [service.get("image", "") for service in compose["services"].values()]
    kafka = [image for image in images if image.startswith("apache/kafka:")]
    assert kafka == [f"apache/kafka:{KAFKA_VERSION}"]


def test_a_dashboard_query_that_counts_is_not_shown_in_bytes() -> None:
    dashboard = json.loads(next((ROOT / "deploy/grafana/dashboards").glob("*.json")).read_text())
    for panel in dashboard["panels"]:
        config = panel.get("fieldConfig", {})
        if config.get("defaults", {}).get("unit") != "bytes":
            continue
        overridden = {o["matcher"]["options"] for o in config.get("overrides", ())}
        for target in panel.get("targets", ()):
            if "bytes" not in target["expr"]:
                assert target["refId"] in overridden, f"{panel['title']}: {target['expr']} is shown in bytes"


def test_vigil_services_restart_report_health_and_run_as_a_user() -> None:
    services = {
        name: s for name, s in COMPOSE["services"].items() if s.get("build") and "run" in s["command"]
    }
    assert services, "no vigil run service"
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
        assert any("/readyz" in part for part in service["healthcheck"]["test"]), name
    dockerfile = (ROOT / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image runs as root"


def test_the_dashboard_filters_by_instance_pipeline_and_topic_and_draws_the_slo() -> None:
    dashboard = json.loads(next((ROOT / "deploy/grafana/dashboards").glob("*.json")).read_text())
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["instance", "pipeline", "topic"]
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for selector in re.findall(r"\bvigil_[a-z_]+(\{[^}]*\})?", target["expr"]):
                assert 'instance=~"$instance"' in selector, f"{panel['title']}: {target['expr']}"
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/vigil-rules.yml").read_text())
    slo = next(
        float(rule["expr"].rsplit(">", 1)[1])
        for group in rules["groups"]
        for rule in group["rules"]
        if rule.get("alert") == "VigilEndToEndP99OverSLO"
    )
    latency = next(p for p in dashboard["panels"] if p["title"].startswith("Capture"))
    steps = latency["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert (
        steps[-1]["value"] == slo
        and latency["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line"
    )


def test_vigil_and_prometheus_send_alerts_to_the_same_alertmanager() -> None:
    assert SERVICES["alertmanager"]["image"].startswith("prom/alertmanager:")
    vigil = SERVICES["vigil-vision"]["environment"]["VIGIL_SINKS__ALERTMANAGER__URL"]
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    [target] = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert vigil == f"http://{target}"
