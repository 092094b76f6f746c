"""The spectrum autoencoder: trained on generated healthy spectra, it flags bearing faults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.registry import load_model
from models.vibration.serving import (
    SpectrumTraining,
    normalised,
    synthetic_spectra,
    train_spectrum_autoencoder,
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("registry")
    train_spectrum_autoencoder(
        synthetic_spectra(240, seed=1), ["x", "y", "z"], root, "fans", "1", SpectrumTraining(epochs=15)
    )
    return root


def flagged(registry: Path, spectra: np.ndarray) -> float:
    model = load_model(registry, "fans")
    with torch.no_grad():
        scores = model.module(normalised(spectra, model.card.input)).mean(dim=1).numpy()
    return float((scores > model.card.thresholds["anomaly"]).mean())


def test_healthy_spectra_pass_and_bearing_faults_are_flagged(registry: Path) -> None:
    assert flagged(registry, synthetic_spectra(200, seed=7)) < 0.05
    assert flagged(registry, synthetic_spectra(200, fault=1.0, seed=8)) > 0.9


def test_the_card_records_the_input_and_how_the_threshold_was_chosen(registry: Path) -> None:
    card = load_model(registry, "fans").card
    assert card.task == "spectrum_autoencoder" and card.input.kind == "tensor"
    assert card.input.shape == [3, 128] and card.input.names == ["x", "y", "z"]
    assert card.threshold_rule is not None and card.threshold_rule.calibration_windows == 60


def test_the_registry_finds_the_builder_without_being_told(registry: Path) -> None:
    """A fresh process loads the entry: ``models/vibration/serving.py`` is discovered, not listed."""
    code = f"from models.registry import load_model; print(type(load_model({str(registry)!r}, 'fans').module).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "SpectrumAutoencoder"


def test_spectra_need_bins_divisible_by_four(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        train_spectrum_autoencoder(synthetic_spectra(8, bins=30), ["x", "y", "z"], tmp_path, "odd")
