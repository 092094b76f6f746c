"""The pipeline contract: kinds are discovered from their declarations, and everything that
lists pipelines, topics, messages or model tasks reads them from there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumers.ops.cli import build_parser
from consumers.pipelines import all_topics, message_types, pipeline_kinds
from models.registry import known_tasks
from schemas.export import export_json_schemas
from schemas.settings import ConfigurationError, VigilSettings
from schemas.vibration import VibrationSpectrum


def test_every_kind_in_the_tree_is_discovered() -> None:
    assert list(pipeline_kinds()) == ["passthrough", "sensors", "vibration", "vision"]


def test_every_model_task_a_kind_serves_has_a_registry_builder() -> None:
    tasks = {task for kind in pipeline_kinds().values() for task in kind.model_tasks}
    assert tasks == {
        "defect_classification",
        "visual_anomaly",
        "sensor_autoencoder",
        "sensor_forecast",
        "sensor_rul",
        "spectrum_autoencoder",
    }
    assert tasks <= set(known_tasks())


def test_an_entry_of_a_task_nobody_builds_is_refused_with_the_known_ones_named(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from torch import nn

    from models.registry import load_model, save_model
    from schemas.model_card import ModelCard, TensorInputSpec

    spec = TensorInputSpec(shape=[1, 4], names=["x"], mean=[0.0], std=[1.0])
    card = ModelCard(
        name="odd", version="1", task="magic", architecture="linear", input=spec, created_at=datetime.now(UTC)
    )
    save_model(tmp_path, card, nn.Linear(4, 1))
    with pytest.raises(ValueError, match=r"no builder for task 'magic'; known: .*spectrum_autoencoder"):
        load_model(tmp_path, "odd")


def test_the_run_command_names_every_kind() -> None:
    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    [pipeline] = [a for a in run._actions if a.dest == "pipeline"]
    assert all(f"{name}:" in (pipeline.help or "") for name in pipeline_kinds())


def test_a_kinds_own_topic_and_message_are_created_and_exported(tmp_path: Path) -> None:
    settings = VigilSettings(pipelines={"vibration": {"input": {"name": "plant.vibration", "partitions": 2}}})
    assert [t.name for t in all_topics(settings)][-1] == "plant.vibration"
    assert VibrationSpectrum in message_types()
    written = {p.name for p in export_json_schemas(tmp_path, message_types())}
    assert "VibrationSpectrum.schema.json" in written
    schema = json.loads((tmp_path / "VibrationSpectrum.schema.json").read_text())
    assert "axes" in schema["required"]


def test_a_bad_kind_section_is_a_configuration_error_naming_it() -> None:
    settings = VigilSettings(pipelines={"vibration": {"batching": {"max_batch_size": 0}, "colour": "red"}})
    with pytest.raises(ConfigurationError, match=r"pipelines\.vibration: .*batching\.max_batch_size.*colour"):
        pipeline_kinds()["vibration"].settings(settings)


def test_old_names_of_the_alert_rules_still_load() -> None:
    rule = {"name": "r", "hi": 0.5}
    settings = VigilSettings(vision={"rules": [rule]}, sensors={"model_rules": [rule]})  # type: ignore[arg-type]
    assert settings.vision.alert_rules[0].hi == settings.sensors.alert_rules[0].hi == 0.5
    with pytest.raises(ValueError, match="not both"):
        VigilSettings(vision={"rules": [rule], "alert_rules": [rule]})  # type: ignore[arg-type]
