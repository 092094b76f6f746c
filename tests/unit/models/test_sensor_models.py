from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from consumers.ops.cli import build_parser, main
from models.alert_policy import AlertShape
from models.engine import default_torch_threads
from models.registry import load_model
from models.sensors.nab import compare, labelled_windows, report
from models.sensors.networks import GruAutoencoder, GruForecaster, build_sensor_model
from models.sensors.scoring import score_series
from models.sensors.series import load_history
from models.sensors.synthetic import normal_machines, runs_to_failure
from models.sensors.training import SensorTraining, train_sensor_model

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


@pytest.mark.parametrize("task", ["sensor_autoencoder", "sensor_forecast", "sensor_rul"])
def test_each_sensor_model_gives_per_channel_or_rul_outputs(task: str) -> None:
    model = build_sensor_model(task, channels=3, hidden=16)
    out = model(torch.randn(5, 64, 3))
    assert out.shape == ((5, 1) if task == "sensor_rul" else (5, 3))
    assert (out >= 0).all()


def test_the_default_scorer_flags_the_drifting_machine_and_the_baseline_is_measured_alike(
    tmp_path: Path,
) -> None:
    history = tmp_path / "pump.csv"
    fault, end = write_machine(history)
    [series] = load_history(history)
    assert series.channels == ["vibration", "temperature"] and series.period_s == 300
    entry = train_sensor_model(
        history, tmp_path / "registry", "pump", "1", SensorTraining(stride=8, normal_fraction=0.5, epochs=8)
    )
    loaded = load_model(tmp_path / "registry", "pump")
    assert loaded.card.input.mean == entry.card.input.mean  # type: ignore[union-attr]
    spans = [(fault.timestamp(), end.timestamp())]
    model_report, baseline = compare(
        loaded.module, loaded.card, series, spans, AlertShape(), normal_fraction=0.5
    )
    assert model_report.windows_detected == 1
    assert model_report.false_alerts_per_day < 1.0
    assert baseline.detector.startswith("rolling z-score") and baseline.windows_total == 1


def test_report_counts_detections_false_alerts_and_delay() -> None:
    day = 86_400.0
    r = report("x", [0.5 * day, 2.25 * day, 5 * day], [(2 * day, 3 * day), (6 * day, 7 * day)], 0, 10 * day)
    assert (r.windows_detected, r.false_alerts) == (1, 2)
    assert r.false_alerts_per_day == pytest.approx(0.2)
    assert r.mean_delay_h == pytest.approx(6.0)


def test_nab_labels_and_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
    small = ["--window", "32", "--stride", "8", "--epochs", "3", "--hidden", "16", "--normal-fraction", "0.5"]
    assert (
        main(["train", "sensor", "--data", str(history), "--name", "pump", "--registry", registry, *small])
        == 0
    )
    evaluate = ["eval", "sensor", "--data", str(history), "--labels", str(labels), "--name", "pump"]
    assert (
        main([*evaluate, "--registry", registry, "--normal-fraction", "0.5", "--alert-cooldown-s", "3600"])
        == 0
    )
    out = capsys.readouterr().out
    assert "rolling z-score" in out and "gru_autoencoder" in out and "cooldown 3600 s" in out


def test_the_threshold_is_calibrated_on_the_held_out_tail_of_the_normal_period(tmp_path: Path) -> None:
    from models.sensors.scoring import score_series

    [series] = normal_machines(1, 600)
    config = SensorTraining(window=16, stride=1, epochs=3, hidden=8, normal_rows=400, threshold_margin=1.5)
    entry = train_sensor_model([series], tmp_path, "m", "1", config, progress=False)
    rule = entry.card.threshold_rule
    assert rule is not None and (rule.quantile, rule.margin) == (0.99, 1.5)
    scored = score_series(entry.module, entry.card, series)
    tail = (scored.end_s > series.times[299]) & (scored.end_s <= series.times[399])  # rows 300-399
    assert rule.calibration_windows == tail.sum() == 100
    expected = float(np.quantile(scored.alerting[tail], 0.99)) * 1.5
    assert entry.card.thresholds["anomaly"] == pytest.approx(expected, rel=1e-4)
    assert (
        entry.card.training is not None and entry.card.training.samples == 300 - 15
    )  # windows ending in rows 15-299


def test_a_normal_period_too_short_is_refused_before_training(tmp_path: Path) -> None:
    [series] = normal_machines(1, 100)
    with pytest.raises(ValueError, match="too short for windows of 32"):
        train_sensor_model([series], tmp_path, "m", "1", SensorTraining(normal_rows=20))


def test_training_pins_torch_threads_and_gives_them_back(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    train_sensor_model(
        normal_machines(1, 200),
        tmp_path,
        "m",
        "1",
        SensorTraining(window=16, epochs=1, hidden=8, normal_fraction=1.0, threads=1),
        progress=False,
    )
    assert torch.get_num_threads() == before
    assert 1 <= default_torch_threads() <= max(1, (os.cpu_count() or 1) - 1)
    assert default_torch_threads(lanes=64) == 1


def test_the_forecaster_scores_its_recent_one_step_errors() -> None:
    model = GruForecaster(channels=2, hidden=8, score_steps=5)
    windows = torch.randn(3, 20, 2)
    errors = model.step_errors(windows)
    assert errors.shape == (3, 19, 2)
    assert torch.allclose(model(windows), errors[:, -5:].mean(dim=1))
    state = model.state_dict()
    again = GruForecaster(channels=2, hidden=8, score_steps=1)
    again.load_state_dict(state)
    assert int(again.score_steps) == 5  # the served model scores as it was calibrated


def test_the_cli_and_the_api_train_with_the_same_defaults() -> None:
    from consumers.ops.sensor_commands import training_of

    args = build_parser().parse_args(["train", "sensor", "--data", "x.csv", "--name", "m"])
    assert training_of(args) == SensorTraining()


def test_the_rul_regressor_learns_that_life_runs_out(tmp_path: Path) -> None:
    config = SensorTraining(
        task="sensor_rul", window=32, stride=8, epochs=8, hidden=16, life_unit="hours", life_alert=1.0
    )
    entry = train_sensor_model(runs_to_failure(4, 400), tmp_path, "rul", "1", config, progress=False)
    assert entry.card.thresholds == {"low_rul": 1.0} and entry.card.life is not None
    assert entry.card.life.unit == "hours" and entry.card.input.pad == "edge"  # type: ignore[union-attr]
    loaded = load_model(tmp_path, "rul", "1")
    [fresh] = runs_to_failure(1, 400, seed=40)
    life = score_series(loaded.module, loaded.card, fresh).scores["rul"]
    assert life[0] > 3.0 and life[-1] < 1.5, life  # ~6.6 h at the start, ~0 at the end


def test_a_fresh_process_loads_any_entry_with_the_registry_alone(tmp_path: Path) -> None:
    import subprocess
    import sys

    train_sensor_model(
        normal_machines(1, 100),
        tmp_path,
        "ae",
        "1",
        SensorTraining(window=16, epochs=1, hidden=8, normal_fraction=1.0),
    )
    code = f"from models.registry import load_model; print(load_model({str(tmp_path)!r}, 'ae').card.task)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "sensor_autoencoder", loaded.stderr[-2000:]


def test_the_autoencoder_scores_its_recent_samples_and_older_entries_whole_windows(tmp_path: Path) -> None:
    from models.sensors.serving import sensor_module

    model = GruAutoencoder(channels=2, hidden=8, score_steps=4)
    windows = torch.randn(3, 10, 2)
    errors = (model.reconstruct(windows) - windows).pow(2)
    assert torch.allclose(model(windows), errors[:, -4:].mean(dim=1))
    entry = train_sensor_model(
        normal_machines(1, 200),
        tmp_path,
        "ae",
        "1",
        SensorTraining(window=16, epochs=1, hidden=8, normal_fraction=1.0),
        progress=False,
    )
    assert int(entry.module.score_steps) == 15  # type: ignore[arg-type]
    older = {k: v for k, v in entry.module.state_dict().items() if k != "score_steps"}
    assert int(sensor_module(entry.card, older).score_steps) == 16  # type: ignore[arg-type]
