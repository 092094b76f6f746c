"""Registry aliases: ``production``/``staging`` name versions; promotion moves them."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.registry import aliases, load_model, promote, resolve_version, versions
from tests.registry_helpers import copy_entry
from tests.sensor_fixtures import SensorModels


@pytest.fixture
def registry(tmp_path: Path, sensor_models: SensorModels) -> Path:
    for version in ("1", "2", "10"):
        copy_entry(sensor_models.registry, tmp_path, sensor_models.autoencoder, version)
    return tmp_path


def test_no_version_means_production_when_set_else_the_newest(registry: Path) -> None:
    assert versions(registry, "machine-ae") == ["1", "2", "10"]
    assert resolve_version(registry, "machine-ae") == "10"
    assert promote(registry, "machine-ae", "2") is None
    assert resolve_version(registry, "machine-ae") == "2"
    assert load_model(registry, "machine-ae").card.version == "2"
    assert promote(registry, "machine-ae", "1", alias="staging") is None
    assert load_model(registry, "machine-ae", "staging").ref.version == "1"
    assert resolve_version(registry, "machine-ae", "10") == "10", "a pinned version is itself"
    assert promote(registry, "machine-ae", "10") == "2", "promotion says what the alias named before"
    assert aliases(registry, "machine-ae") == {"production": "10", "staging": "1"}


def test_promotion_is_refused_for_what_cannot_be_served(registry: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no version '7'"):
        promote(registry, "machine-ae", "7")
    with pytest.raises(ValueError, match="is a version"):
        promote(registry, "machine-ae", "1", alias="2")
    with pytest.raises(ValueError, match="not a model name or version"):
        promote(registry, "machine-ae", "1", alias="../escape")
    with pytest.raises(FileNotFoundError, match="aliases: production"):
        promote(registry, "machine-ae", "1")
        resolve_version(registry, "machine-ae", "canary")
    assert aliases(registry, "machine-ae") == {"production": "1"}
