from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.export import export_json_schemas
from schemas.settings import ConfigurationError, load_settings


def test_yaml_then_environment_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "vigil.yaml"
    config.write_text(
        "kafka:\n  group_id: from-yaml\n  client_id: yaml-client\n"
        "topics:\n  frames:\n    name: plant.frames\n    partitions: 12\n"
        "runtime:\n  delivery: exactly_once\n"
    )
    monkeypatch.setenv("VIGIL_KAFKA__GROUP_ID", "from-env")
    settings = load_settings(config)
    assert settings.kafka.group_id == "from-env"
    assert settings.kafka.client_id == "yaml-client"
    assert settings.topics.frames.name == "plant.frames" and settings.topics.frames.partitions == 12
    assert settings.runtime.delivery == "exactly_once"
    assert settings.topics.sensors.name == "vigil.sensors"


def test_invalid_configuration_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("runtime:\n  delivery: at_most_once\n")
    with pytest.raises(ConfigurationError, match=r"runtime\.delivery"):
        load_settings(config)
    config.write_text("kafka:\n  enable_auto_commit: true\n")
    with pytest.raises(ConfigurationError, match=r"kafka\.enable_auto_commit"):
        load_settings(config)
    with pytest.raises(ConfigurationError, match="not found"):
        load_settings(tmp_path / "missing.yaml")


def test_settings_are_frozen_and_secrets_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_KAFKA__SASL_PASSWORD", "s3cret")
    settings = load_settings()
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings) and "s3cret" not in settings.model_dump_json()
    with pytest.raises(ValidationError):
        settings.kafka.group_id = "x"  # type: ignore[misc]


def test_config_hash_follows_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_settings().config_hash()
    assert first == load_settings().config_hash()
    monkeypatch.setenv("VIGIL_RUNTIME__MAX_IN_FLIGHT", "17")
    assert load_settings().config_hash() != first


def test_json_schema_export(tmp_path: Path) -> None:
    import json

    paths = export_json_schemas(tmp_path)
    names = {p.name for p in paths}
    assert {
        "FrameRef.schema.json",
        "SensorReading.schema.json",
        "Alert.schema.json",
        "InferenceResult.schema.json",
        "DeadLetter.schema.json",
        "ModelCard.schema.json",
    } <= names
    frame = json.loads((tmp_path / "FrameRef.schema.json").read_text())
    assert {"frame_id", "camera_id", "uri", "captured_at"} <= set(frame["required"])


def test_the_shipped_example_configuration_loads() -> None:
    settings = load_settings(Path(__file__).resolve().parents[3] / "deploy" / "vigil.yaml")
    assert settings.topics.dlq.config["max.message.bytes"] == "8388608"
    assert settings.runtime.delivery == "at_least_once"


def test_the_example_configuration_loads() -> None:
    settings = load_settings(Path(__file__).parents[3] / "deploy" / "vigil.yaml")
    assert [rule.kind for rule in settings.sensors.rules] == ["threshold", "rate", "range", "stale"]
    assert settings.sensors.models[0].model == "press-ae"
    assert [rule.name for rule in settings.sensors.alert_rules] == ["press-anomaly", "pump-low-rul"]
    from schemas.vibration import VibrationSettings

    vibration = VibrationSettings.model_validate(settings.pipelines["vibration"])
    assert vibration.model == "fan-vibration" and vibration.input.name == "vigil.vibration"


def test_settings_with_sensor_rules_survive_a_json_round_trip() -> None:
    from schemas.settings import SensorRule, SensorSettings, VigilSettings

    settings = VigilSettings(sensors=SensorSettings(rules=[SensorRule(name="hot", kind="range", high=90.0)]))
    assert VigilSettings.model_validate_json(settings.model_dump_json()) == settings


def test_a_configuration_error_never_echoes_a_value(tmp_path: Path) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text("kafka:\n  sasl_pasword: hunter2-secret\n  sasl_password: 918273645\n")
    with pytest.raises(ConfigurationError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert "kafka.sasl_pasword" in message and "kafka.sasl_password" in message
    assert "hunter2" not in message and "918273645" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_every_kind_configures_under_pipelines_and_the_old_top_level_sections_still_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    new = tmp_path / "new.yaml"
    new.write_text(
        "pipelines:\n"
        "  vision: {model: line-3, registry: /models}\n"
        "  sensors: {models: [{model: press-ae, model_version: production}]}\n"
        "  vibration: {model: fans}\n"
    )
    monkeypatch.setenv("VIGIL_VISION__REGISTRY", "/elsewhere")  # the environment still wins
    with caplog.at_level("WARNING"):
        settings = load_settings(new)
    assert (settings.vision.model, settings.vision.registry) == ("line-3", "/elsewhere")
    assert settings.sensors.models[0].model_version == "production"
    assert settings.pipelines == {"vibration": {"model": "fans"}}
    assert "deprecated" not in caplog.text

    old = tmp_path / "old.yaml"
    old.write_text("vision: {model: line-3}\nsensors: {models: [{model: press-ae, version: '2'}]}\n")
    with caplog.at_level("WARNING"):
        settings = load_settings(old)
    assert settings.vision.model == "line-3" and settings.sensors.models[0].model_version == "2"
    assert "top-level 'vision' section is deprecated; move it under pipelines.vision" in caplog.text
