from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from consumers.cli import main
from models.registry import load_model
from models.sensors.evaluation import compare, labelled_windows, report
from models.sensors.networks import build_sensor_model
from models.sensors.series import load_history, window_end_indices, windows
from models.sensors.training import normalise, train_sensor_model
from schemas.model_card import SeriesInputSpec

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def write_machine(path: Path, samples: int = 1500, fault_at: int = 1100) -> tuple[datetime, datetime]:
    """A machine whose vibration and temperature oscillate, then drift away from normal at ``fault_at``."""
    rng = np.random.default_rng(0)
    rows = ["timestamp,asset,vibration,temperature"]
    for i in range(samples):
        drift = max(0, i - fault_at) * 0.08
        vibration = 2 + 0.5 * np.sin(i / 8) + rng.normal(0, 0.05) + drift
        temperature = 60 + 2 * np.cos(i / 20) + rng.normal(0, 0.1) + drift * 3
        rows.append(f"{(T0 + timedelta(minutes=5 * i)).isoformat()},pump-1,{vibration:.4f},{temperature:.4f}")
    path.write_text("\n".join(rows) + "\n")
    return T0 + timedelta(minutes=5 * fault_at), T0 + timedelta(minutes=5 * samples)


def test_windows_and_their_end_indices() -> None:
    values = np.arange(20, dtype=np.float32).reshape(10, 2)
    batch = windows(values, 4, 3)
    assert batch.shape == (3, 4, 2)
    assert batch[1, :, 0].tolist() == [6, 8, 10, 12]
    assert window_end_indices(10, 4, 3).tolist() == [3, 6, 9]


@pytest.mark.parametrize("task", ["sensor_autoencoder", "sensor_forecast", "sensor_rul"])
def test_each_sensor_model_gives_per_channel_or_rul_outputs(task: str) -> None:
    model = build_sensor_model(task, channels=3, hidden=16)
    out = model(torch.randn(5, 64, 3))
    assert out.shape == ((5, 1) if task == "sensor_rul" else (5, 3))
    assert (out >= 0).all()


def test_autoencoder_flags_the_drifting_machine_and_the_baseline_is_measured_alike(tmp_path: Path) -> None:
    history = tmp_path / "pump.csv"
    fault, end = write_machine(history)
    [series] = load_history(history)
    assert series.channels == ["vibration", "temperature"] and series.period_s == 300
    entry = train_sensor_model(
        history,
        tmp_path / "registry",
        "pump",
        "1",
        window=32,
        stride=8,
        train_fraction=0.5,
        epochs=8,
        hidden=32,
    )
    loaded = load_model(tmp_path / "registry", "pump")
    assert loaded.card.input.mean == entry.card.input.mean  # type: ignore[union-attr]
    spans = [(fault.timestamp(), end.timestamp())]
    model_report, baseline = compare(loaded.module, loaded.card, series, spans, train_fraction=0.5)
    assert model_report.windows_detected == 1
    assert model_report.false_alerts_per_day < 1.0
    assert baseline.detector.startswith("rolling z-score") and baseline.windows_total == 1


def test_report_counts_detections_false_alerts_and_delay() -> None:
    day = 86_400.0
    r = report("x", [0.5 * day, 2.25 * day, 5 * day], [(2 * day, 3 * day), (6 * day, 7 * day)], 0, 10 * day)
    assert (r.windows_detected, r.false_alerts) == (1, 2)
    assert r.false_alerts_per_day == pytest.approx(0.2)
    assert r.mean_delay_h == pytest.approx(6.0)


def test_nab_labels_and_the_cli(tmp_path: Path, capsys) -> None:
    history = tmp_path / "pump.csv"
    fault, end = write_machine(history)
    labels = tmp_path / "windows.json"
    labels.write_text(
        json.dumps(
            {
                "realKnownCause/pump.csv": [
                    [fault.strftime("%Y-%m-%d %H:%M:%S.%f"), end.strftime("%Y-%m-%d %H:%M:%S.%f")]
                ]
            }
        )
    )
    assert labelled_windows(labels, history) == [(fault.timestamp(), end.timestamp())]
    registry = str(tmp_path / "registry")
    assert (
        main(
            [
                "train",
                "sensor",
                "--data",
                str(history),
                "--name",
                "pump",
                "--registry",
                registry,
                "--window",
                "32",
                "--stride",
                "8",
                "--epochs",
                "3",
                "--hidden",
                "16",
                "--train-fraction",
                "0.5",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "eval",
                "sensor",
                "--data",
                str(history),
                "--labels",
                str(labels),
                "--name",
                "pump",
                "--registry",
                registry,
                "--train-fraction",
                "0.5",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "rolling z-score" in out and "gru_autoencoder" in out


def test_the_rul_regressor_learns_that_life_runs_out(tmp_path: Path) -> None:
    from models.sensors.synthetic import runs_to_failure

    entry = train_sensor_model(
        runs_to_failure(4, 400),
        tmp_path,
        "rul",
        "1",
        task="sensor_rul",
        window=32,
        stride=8,
        epochs=8,
        hidden=16,
        rul_alert_h=1.0,
    )
    assert entry.card.thresholds == {"low_rul": 1.0} and entry.card.training is not None
    loaded = load_model(tmp_path, "rul", "1")
    [fresh] = runs_to_failure(1, 400, seed=40)
    spec = entry.card.input
    assert isinstance(spec, SeriesInputSpec)
    batch = windows(normalise(fresh.values, spec.mean, spec.std), 32, 32)
    life = loaded.module(batch).squeeze(1).tolist()
    assert life[0] > 3.0 and life[-1] < 1.5, life  # ~6.1 h at the start, ~0.3 h at the end


def test_a_fresh_process_loads_any_entry_with_the_registry_alone(tmp_path: Path) -> None:
    import subprocess
    import sys

    from models.sensors.synthetic import normal_machines

    train_sensor_model(normal_machines(1, 100), tmp_path, "ae", "1", window=16, stride=4, epochs=1, hidden=8)
    code = f"from models.registry import load_model; print(load_model({str(tmp_path)!r}, 'ae').card.task)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "sensor_autoencoder", loaded.stderr[-2000:]
