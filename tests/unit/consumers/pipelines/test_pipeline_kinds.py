"""What a pipeline kind declares is all the commands need: its registry, its input topic and
how to pin its models for ``vigil replay`` (vibration included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.ops.replay import ReplayError, input_topic, replay_settings, replayable
from consumers.pipelines import pipeline_kinds
from schemas.settings import SensorModelBinding, SensorSettings, VigilSettings


def entry(registry: Path, name: str, *versions: str) -> None:
    for version in versions:  # a version is a folder holding a card
        (registry / name / version).mkdir(parents=True)
        (registry / name / version / "card.json").write_text("{}")


def test_every_kind_with_models_is_replayable_and_names_its_input_and_registry(tmp_path: Path) -> None:
    kinds = pipeline_kinds()
    assert set(replayable()) == {name for name, kind in kinds.items() if kind.serves_models}
    assert "vibration" in replayable()
    settings = VigilSettings(pipelines={"vibration": {"registry": str(tmp_path / "fans")}})
    assert input_topic(settings, "sensors") == settings.topics.sensors.name
    assert kinds["vibration"].registry(settings) == str(tmp_path / "fans")
    with pytest.raises(ReplayError, match="replay runs"):
        input_topic(settings, "passthrough")


def test_a_replay_pins_the_vibration_model_and_turns_its_reload_off(tmp_path: Path) -> None:
    fans = tmp_path / "fans"
    entry(fans, "fan-ae", "1", "2")
    settings = VigilSettings(pipelines={"vibration": {"registry": str(fans), "model": "fan-ae"}})
    pinned, served = replay_settings(settings, "vibration", "run", None, "1")
    section = pipeline_kinds()["vibration"].settings(pinned)
    assert served == {"fan-ae": "1"} and section.model_version == "1" and section.reload_interval_s == 0
    assert pinned.topics.alerts.name == "run.alerts" and pinned.sinks.webhook is None
    with pytest.raises(ReplayError, match="serves 'fan-ae', not 'other'"):
        replay_settings(settings, "vibration", "run", "other", "1")


def test_a_replay_of_several_sensor_models_must_name_the_one_to_pin(tmp_path: Path) -> None:
    entry(tmp_path, "press", "1", "2")
    entry(tmp_path, "fan", "7")
    bindings = [
        SensorModelBinding(assets="press-*", model="press"),
        SensorModelBinding(assets="*", model="fan"),
    ]
    settings = VigilSettings(sensors=SensorSettings(registry=str(tmp_path), models=bindings))
    with pytest.raises(ReplayError, match="name the model to pin"):
        replay_settings(settings, "sensors", "run", None, "1")
    pinned, served = replay_settings(settings, "sensors", "run", "press", "1")
    assert served == {"press": "1", "fan": "7"}
    assert [b.model_version for b in pinned.sensors.models] == [
        "1",
        "7",
    ] and pinned.sensors.reload_interval_s == 0
