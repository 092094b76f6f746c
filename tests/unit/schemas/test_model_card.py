from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas.model_card import ImageInputSpec, ModelCard


def card(**changes: object) -> dict:
    base = {
        "name": "tiles",
        "version": "1",
        "task": "defect_classification",
        "architecture": "resnet18",
        "input": {
            "kind": "image",
            "height": 224,
            "width": 224,
            "channels": 3,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
        "labels": ["ok", "crack"],
        "thresholds": {"crack": 0.8},
        "created_at": datetime(2026, 11, 1, tzinfo=UTC).isoformat(),
    }
    base.update(changes)
    return base


def test_card_round_trip() -> None:
    parsed = ModelCard.model_validate(card())
    assert isinstance(parsed.input, ImageInputSpec)
    assert ModelCard.model_validate_json(parsed.model_dump_json()) == parsed


def test_card_rejects_bad_specs() -> None:
    with pytest.raises(ValidationError):
        ModelCard.model_validate(card(task="Magic Task"))  # tasks are open to new kinds, but names
    with pytest.raises(ValidationError):
        ModelCard.model_validate(card(input={**card()["input"], "std": [0.0, 1.0, 1.0]}))


def test_a_tensor_input_needs_one_name_mean_and_deviation_per_first_axis_entry() -> None:
    spec = {
        "kind": "tensor",
        "shape": [3, 128],
        "names": ["x", "y", "z"],
        "mean": [0.0] * 3,
        "std": [1.0] * 3,
    }
    assert ModelCard.model_validate(card(task="spectrum_autoencoder", input=spec)).input.kind == "tensor"
    with pytest.raises(ValidationError, match="one entry per first-axis entry"):
        ModelCard.model_validate(card(input={**spec, "names": ["x", "y"]}))
