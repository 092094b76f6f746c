"""Hot reload at the stage: a lane bound to an alias follows a promotion; a version that fails
to load keeps the old one; a pinned lane never moves."""

from __future__ import annotations

import json
from pathlib import Path

from consumers.pipelines.sensors.stage import SensorStage
from consumers.pipelines.vision.stage import VisionStage
from consumers.runtime.observer import CountingObserver
from models.registry import CARD_FILE, promote
from schemas.settings import SensorModelBinding, SensorSettings, VigilSettings
from tests.registry_helpers import copy_entry, corrupt_weights
from tests.sensor_fixtures import SensorModels
from tests.vision_fixtures import VisionModels


def vision_stage(registry: Path, name: str, version: str | None, observer: CountingObserver) -> VisionStage:
    settings = VigilSettings()
    vision = settings.vision.model_copy(
        update={"registry": str(registry), "model": name, "model_version": version, "reload_interval_s": 0}
    )
    return VisionStage(settings.model_copy(update={"vision": vision}), observer=observer)


def test_a_vision_lane_bound_to_an_alias_follows_it_between_batches_and_keeps_working_when_a_version_fails(
    tmp_path: Path, vision_models: VisionModels
) -> None:
    name = vision_models.classifier
    for version in ("1", "2", "3"):
        copy_entry(vision_models.registry, tmp_path, name, version)
    corrupt_weights(tmp_path / name / "3")
    promote(tmp_path, name, "1")
    observer = CountingObserver()
    stage = vision_stage(tmp_path, name, None, observer)
    pinned = vision_stage(tmp_path, name, "1", CountingObserver())
    try:
        assert stage.default_lane.ref.version == "1"
        stage.reloader.check()
        assert observer.switches == [], "nothing moved, nothing switched"

        old = stage.default_lane
        promote(tmp_path, name, "2")
        stage.reloader.check()
        assert stage.default_lane is old, "switched outside the runtime's thread"
        stage.submit([])
        assert stage.default_lane.ref.version == "2" and stage.default_lane is not old
        assert observer.switches == [(name, "1", "2", "switched")]

        promote(tmp_path, name, "3")  # weights that do not match their card
        stage.reloader.check()
        stage.reloader.check()
        stage.collect(0)
        assert stage.default_lane.ref.version == "2"
        assert observer.switches[1:] == [(name, "2", "3", "failed")], "a failed version is tried once"

        promote(tmp_path, name, "1")  # moving the alias again is tried
        stage.reloader.check()
        stage.collect(0)
        assert stage.default_lane.ref.version == "1"

        pinned.reloader.check()
        assert pinned.default_lane.ref.version == "1"
        promote(tmp_path, name, "2")
        pinned.reloader.check()
        pinned.submit([])
        assert pinned.default_lane.ref.version == "1", "a pinned version moved"
    finally:
        stage.close()
        pinned.close()


def test_a_sensor_lane_follows_its_alias_between_batches_and_refuses_other_windows(
    tmp_path: Path, sensor_models: SensorModels
) -> None:
    name = sensor_models.autoencoder
    for version in ("1", "2", "3"):
        copy_entry(sensor_models.registry, tmp_path, name, version)
    card_file = tmp_path / name / "3" / CARD_FILE
    card = json.loads(card_file.read_text())
    card["input"]["window"] = card["input"]["window"] // 2
    card_file.write_text(json.dumps(card))
    promote(tmp_path, name, "1")
    base = VigilSettings()
    sensors = SensorSettings(
        registry=str(tmp_path),
        models=[SensorModelBinding(model=name, model_version="production")],
        reload_interval_s=0,
    )
    observer = CountingObserver()
    stage = SensorStage(base.model_copy(update={"sensors": sensors}), observer=observer)
    try:
        promote(tmp_path, name, "2")
        stage.reloader.check()
        assert stage.lanes[0].ref.version == "1", "switched outside the runtime's thread"
        stage.submit([])
        assert stage.lanes[0].ref.version == "2"

        promote(tmp_path, name, "3")
        stage.reloader.check()
        stage.submit([])
        assert stage.lanes[0].ref.version == "2"
        assert observer.switches == [(name, "1", "2", "switched"), (name, "2", "3", "failed")]
    finally:
        stage.close()


def test_the_vibration_lane_follows_its_alias_between_batches(tmp_path: Path) -> None:
    from consumers.pipelines.vibration.stage import VibrationStage
    from models.vibration.serving import SpectrumTraining, synthetic_spectra, train_spectrum_autoencoder
    from schemas.vibration import VibrationSettings

    train_spectrum_autoencoder(
        synthetic_spectra(64, seed=1), ["x", "y", "z"], tmp_path, "fans", "1", SpectrumTraining(epochs=1)
    )
    copy_entry(tmp_path, tmp_path, "fans", "2")
    promote(tmp_path, "fans", "1")
    observer = CountingObserver()
    section = VibrationSettings(registry=str(tmp_path), model="fans", reload_interval_s=0)
    stage = VibrationStage(VigilSettings(), section, observer=observer)
    try:
        promote(tmp_path, "fans", "2")
        stage.reloader.check()
        assert stage.lane.ref.version == "1", "switched outside the runtime's thread"
        stage.submit([])
        assert stage.lane.ref.version == "2"
        assert observer.switches == [("fans", "1", "2", "switched")]
    finally:
        stage.close()
