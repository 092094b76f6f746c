"""docker-compose.yml cannot run here (no Docker engine), so check what it refers to."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_runs_kafka_and_vigil_with_existing_files() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name in ("vigil", "vigil-topics"):
        assert (ROOT / "Dockerfile").is_file() and services[name]["build"] == "."
        for volume in services[name]["volumes"]:
            source = volume.split(":", 1)[0]
            assert (ROOT / source).exists(), source
    assert "9108:9108" in services["vigil"]["ports"]
