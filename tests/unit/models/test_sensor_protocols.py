"""History files, the one windowing path, the point-wise and life protocols, on generated series."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from consumers.ops.cli import EXIT_DATA, main
from consumers.pipelines.sensors.stage import SensorStage
from consumers.runtime.records import InboundRecord, Work
from models.alert_policy import AlertShape
from models.registry import load_model
from models.sensors.life import evaluate_life, evaluate_life_folds, nasa_score
from models.sensors.pointwise import EVERYTHING, MODEL, PCA, Confusion, evaluate_pointwise
from models.sensors.scoring import replay_alerts, score_series
from models.sensors.series import Series, TableFormat, load_history
from models.sensors.synthetic import fault_profile, machine_values, runs_to_failure
from models.sensors.training import LIFE_CAP_SHARE, SensorTraining, train_sensor_model
from models.sensors.windowing import stagger
from models.sensors.windows import AssetWindow, WindowSpec
from schemas.common import channel_name, channel_names
from schemas.messages import Alert, InferenceResult, SensorReading
from schemas.model_card import SeriesInputSpec
from schemas.settings import BatchingSettings, SensorModelBinding, SensorSettings, VigilSettings

T0 = datetime(2026, 3, 1, 15, 44, 6, tzinfo=UTC)


def test_one_channel_name_rule_for_files_cards_and_messages() -> None:
    assert channel_name("Volume Flow RateRMS") == "Volume_Flow_RateRMS"
    assert channel_name("2nd temp (C)") == "c_2nd_temp_C"
    assert channel_name("temp_c") == "temp_c"
    with pytest.raises(ValueError, match="'a b' and 'a-b' both become channel 'a_b'"):
        channel_names(["a b", "a-b"])
    spec = {"window": 4, "stride": 1, "sample_period_s": 1.0, "mean": [0.0], "std": [1.0]}
    with pytest.raises(ValidationError):
        SeriesInputSpec(channels=["Volume Flow"], **spec)  # trainable once, never servable: refused
    SeriesInputSpec(channels=[channel_name("Volume Flow")], **spec)
    SensorReading(
        asset_id="rig-1",
        sensor_id="rig-1",
        kind="rig",
        event_time=T0,
        values={channel_name("Volume Flow"): 1.0},
    )


def skab_like(path: Path, rows: int = 700, fault: tuple[int, int] = (500, 650), gaps: bool = False) -> None:
    """A ';'-separated rig recording: datetime, two channels (one with a space), two label columns."""
    severity = fault_profile(rows, fault[0], 5, repaired_at=fault[1])
    values = machine_values(rows, seed=3, fault=severity)
    lines = ["datetime;Temp C;Vibration RMS;anomaly;changepoint"]
    for i in range(rows):
        if gaps and i % 97 in (10, 11, 50):
            continue  # missing seconds: the stream fills them on its grid
        stamp = (T0 + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S")
        edge = 1.0 if i in fault else 0.0
        lines.append(f"{stamp};{values[i, 0]:.4f};{values[i, 1]:.4f};{float(severity[i] > 0)};{edge}")
    path.write_text("\n".join(lines) + "\n")


SKAB = TableFormat(separator=";", time_column="datetime", label_columns=("anomaly", "changepoint"))
RUNS_LAYOUT = [
    "--separator",
    "whitespace",
    "--columns",
    "unit,cycle,setting,temp,vibration",
    "--asset-column",
    "unit",
    "--time-column",
    "cycle",
]
"""The CLI flags of the runs-to-failure files these tests write (C-MAPSS's layout, fewer columns)."""


def test_history_files_keep_labels_apart_and_map_channel_names(tmp_path: Path) -> None:
    skab_like(tmp_path / "1.csv", rows=50, fault=(30, 40))
    [series] = load_history(tmp_path / "1.csv", SKAB)
    assert series.asset == "1" and series.channels == ["Temp_C", "Vibration_RMS"]
    assert series.values.shape == (50, 2) and series.period_s == 1.0
    assert series.labels["anomaly"][30:32].tolist() == [0.0, 1.0]  # severity rises after the start
    (tmp_path / "runs.txt").write_text("1 1 5.0 7\n1 2 5.0 8\n2 1 5.0 9\n")
    layout = TableFormat(
        separator="whitespace",
        columns=("unit", "cycle", "flat", "s1"),
        asset_column="unit",
        time_column="cycle",
    )
    runs = load_history(tmp_path / "runs.txt", layout)
    assert [(r.asset, r.times.tolist(), r.values[:, 1].tolist()) for r in runs] == [
        ("1", [1.0, 2.0], [7.0, 8.0]),
        ("2", [1.0], [9.0]),
    ]
    with pytest.raises(ValueError, match="no time column 'timestamp'"):
        load_history(tmp_path / "1.csv", TableFormat(separator=";"))


def test_an_edge_padded_window_is_ready_from_the_first_sample() -> None:
    state = AssetWindow(WindowSpec(("x",), window=4, stride=1, period_s=1.0, pad="edge"))
    first = state.add(0.0, [5.0]).ready
    second = state.add(1.0, [6.0]).ready
    assert first[0].values[:, 0].tolist() == [5.0, 5.0, 5.0, 5.0] and first[0].filled == 3
    assert second[0].values[:, 0].tolist() == [5.0, 5.0, 5.0, 6.0] and second[0].filled == 2


def test_a_history_scored_offline_gives_the_streamed_scores_and_alerts(tmp_path: Path) -> None:
    """Training, offline scoring and the service build windows alike: a file with gaps, replayed
    through the sensor stage, gives the offline scores and the same alerts."""
    skab_like(tmp_path / "rig.csv", rows=900, gaps=True)
    [series] = load_history(tmp_path / "rig.csv", SKAB)
    config = SensorTraining(window=16, stride=4, epochs=3, hidden=8, normal_rows=400)
    train_sensor_model([series], tmp_path / "registry", "rig", "1", config, progress=False)
    model = load_model(tmp_path / "registry", "rig")
    phase = stagger("rig-1", config.stride)
    assert phase != 0, "an asset whose windows are due off the unstaggered grid"
    offline = score_series(model.module, model.card, series, phase=phase)
    alerts = replay_alerts(
        offline.end_s, offline.alerting, AlertShape().rule("anomaly", model.card.thresholds["anomaly"])
    )
    assert alerts.fired_at, "the generated fault should alert"

    sensors = SensorSettings(
        registry=str(tmp_path / "registry"),
        models=[SensorModelBinding(model="rig")],
        batching=BatchingSettings(max_batch_size=8, max_wait_ms=1.0),
        max_past_s=None,
        rebuild_history_s=0.0,
    )
    stage = SensorStage(VigilSettings(sensors=sensors))
    stage.on_assignment({("vigil.sensors", 0)})
    outputs = []
    try:
        for offset, (at, values) in enumerate(zip(series.times, series.values, strict=True)):
            reading = SensorReading(
                asset_id="rig-1",
                sensor_id="rig-1",
                kind="rig",
                event_time=datetime.fromtimestamp(at, UTC),
                values=dict(zip(series.channels, map(float, values), strict=True)),
            )
            record = InboundRecord("vigil.sensors", 0, offset, None, None, (), int(at * 1000))
            stage.submit([Work(record, reading, datetime.now(UTC))])
            outputs.extend(o for outcome in stage.collect(0.0) for o in outcome.outputs)
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while stage.in_flight() and datetime.now(UTC) < deadline:
            outputs.extend(o for outcome in stage.collect(0.05) for o in outcome.outputs)
    finally:
        stage.close()
    results = [InferenceResult.from_json_bytes(o.value) for o in outputs if o.topic == "vigil.inferences"]
    streamed = {r.evidence.window_end.timestamp(): r.score for r in results if r.outcome == "scored"}  # type: ignore[union-attr]
    assert sorted(streamed) == offline.end_s.tolist()
    np.testing.assert_allclose([streamed[t] for t in offline.end_s], offline.alerting, rtol=1e-5, atol=1e-7)
    fired = [Alert.from_json_bytes(o.value) for o in outputs if o.topic == "vigil.alerts"]
    assert [a.evidence.window_end.timestamp() for a in fired if a.state == "firing"] == alerts.fired_at  # type: ignore[union-attr]


def test_the_life_folds_hold_every_run_out_once_with_the_default_cap_and_no_scale_floor(
    tmp_path: Path,
) -> None:
    runs = runs_to_failure(10, 120, period_s=1.0, seed=7)
    config = SensorTraining(task="sensor_rul", window=16, epochs=4, hidden=8, life_unit="cycles")
    assert config.scale_floor == 0.0 and SensorTraining().scale_floor == 0.01  # RUL: none; scorers: 1%
    result = evaluate_life_folds(runs, config, folds=5, cuts=2)
    assert sorted(result.test_units) == sorted(r.asset for r in runs) and len(result.truth) == 20
    cap = round(LIFE_CAP_SHARE * 119)  # of the median run's life (119 cycles after its first)
    assert result.caps == [cap] * 5 and result.cap == str(cap) and result.truth.max() <= cap
    assert set(result.scores) == {"model", "training mean (trivial)", "ridge on window features (baseline)"}
    entry = train_sensor_model(runs, tmp_path, "life", "1", config, progress=False)
    assert entry.card.life is not None and entry.card.life.cap == cap
    uncapped = train_sensor_model(runs, tmp_path, "life", "2", replace(config, life_cap=0), progress=False)
    assert uncapped.card.life is not None and uncapped.card.life.cap is None
    with pytest.raises(ValueError, match="folds"):
        evaluate_life_folds(runs, config, folds=11, cuts=1)


def test_confusion_rates() -> None:
    c = Confusion().add(np.array([1, 1, 0, 0, 1], bool), np.array([1, 0, 1, 0, 1], bool))
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 1, 1)
    assert (
        c.f1 == pytest.approx(4 / 6)
        and c.false_alarm_rate == 0.5
        and c.missed_alarm_rate == pytest.approx(1 / 3)
    )


def test_the_pointwise_protocol_beats_flagging_everything_on_generated_faults(tmp_path: Path) -> None:
    for k in range(3):
        skab_like(tmp_path / f"{k}.csv", fault=(480 + 20 * k, 640))
    lines = (tmp_path / "0.csv").read_text().splitlines(keepends=True)
    (tmp_path / "0.csv").write_text("".join(lines[:600] + lines[590:600] + lines[600:]))  # 10 repeats
    series = [s for k in range(3) for s in load_history(tmp_path / f"{k}.csv", SKAB)]
    config = SensorTraining(window=16, epochs=5, hidden=8, normal_rows=400)
    result = evaluate_pointwise(series, "anomaly", config, AlertShape())
    model, everything = result.confusion[MODEL], result.confusion[EVERYTHING]
    assert everything.false_alarm_rate == 1.0 and everything.missed_alarm_rate == 0.0
    # every sample after the first 400, the repeated times set aside as the service's duplicates
    assert result.repeats == 10 and model.tp + model.fp + model.fn + model.tn == 3 * 300
    assert model.f1 > everything.f1 and model.false_alarm_rate < 0.2, model
    assert PCA in result.confusion and len(result.outcomes) == 3


def test_the_life_protocol_cuts_held_out_runs_and_beats_the_constant(tmp_path: Path) -> None:
    runs = runs_to_failure(10, 120, period_s=1.0, seed=5)
    runs = [
        Series(
            r.asset,
            [*r.channels, "flat"],
            r.times,
            np.concatenate([r.values, np.ones((len(r.times), 1), np.float32)], 1),
        )
        for r in runs
    ]
    runs.append(
        Series("short", runs[0].channels, runs[0].times[:10], runs[0].values[-10:])
    )  # shorter than a window
    config = SensorTraining(
        task="sensor_rul", window=32, epochs=15, hidden=16, life_unit="cycles", life_cap=50
    )
    result = evaluate_life(runs, config, holdout=0.3, cuts=4)
    assert len(result.test_units) == 3 and len(result.truth) == 12 and result.truth.max() <= 50
    scores = {name: s.rmse for name, s in result.scores.items()}
    assert scores["model"] < scores["training mean (trivial)"], scores
    entry = train_sensor_model(runs, tmp_path, "life", "1", config, progress=False)
    assert entry.card.input.ignored == ["flat"] and entry.card.input.channels == ["temp_c", "vibration_mm_s"]  # type: ignore[union-attr]
    assert entry.card.life is not None and (entry.card.life.unit, entry.card.life.cap) == ("cycles", 50)
    short = score_series(entry.module, entry.card, runs[-1].select(entry.card.input.channels))  # type: ignore[union-attr]
    assert len(short.end_s) > 0  # padded: estimates before a full window


def test_the_nasa_score_punishes_late_estimates_more() -> None:
    truth = np.array([50.0])
    assert nasa_score(np.array([60.0]), truth) == pytest.approx(np.e - 1)
    assert nasa_score(np.array([37.0]), truth) == pytest.approx(np.e - 1)
    assert nasa_score(np.array([60.0]), truth) > nasa_score(np.array([40.0]), truth)


def test_eval_sensor_runs_each_protocol_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for k in range(2):
        skab_like(tmp_path / f"{k}.csv")
    pointwise = ["eval", "sensor", "--protocol", "pointwise", "--separator", ";", "--time-column", "datetime"]
    files = [str(tmp_path / f"{k}.csv") for k in range(2)]
    small = ["--window", "16", "--epochs", "2", "--hidden", "8", "--normal-rows", "400"]
    code = main(
        [
            *pointwise,
            "--data",
            *files,
            "--label-columns",
            "anomaly,changepoint",
            *small,
            "--plots",
            str(tmp_path / "plots"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "flag every" in out and "PCA T²+Q" in out and "2 of 3" in out
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["pointwise-0.png", "pointwise-1.png"]

    lines = []
    for unit, run in enumerate(runs_to_failure(5, 60, period_s=1.0)):
        lines += [f"{unit} {k + 1} 100.0 {v[0]:.3f} {v[1]:.3f}" for k, v in enumerate(run.values)]
    (tmp_path / "runs.txt").write_text("\n".join(lines) + "\n")
    rul = [
        "eval",
        "sensor",
        "--protocol",
        "rul",
        "--data",
        str(tmp_path / "runs.txt"),
    ]
    code = main(
        [
            *rul,
            *RUNS_LAYOUT,
            "--life-unit",
            "cycles",
            "--life-cap",
            "40",
            "--window",
            "8",
            "--epochs",
            "2",
            "--plots",
            str(tmp_path / "plots"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "ridge on window features" in out and "capped at 40" in out, out
    assert (tmp_path / "plots" / "life.png").stat().st_size > 0


def test_eval_rul_scores_test_runs_against_a_truth_file_as_published(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """C-MAPSS's layout: a training file of runs to failure, a test file of runs cut short, and
    a truth file with each test run's life left at its last cycle."""
    from consumers.ops import sensor_commands

    monkeypatch.setattr(sensor_commands.console, "width", 250)
    runs = runs_to_failure(8, 60, period_s=1.0)
    train_lines, test_lines, truth = [], [], []
    for unit, run in enumerate(runs[:5]):
        train_lines += [f"{unit + 1} {k + 1} 100.0 {v[0]:.3f} {v[1]:.3f}" for k, v in enumerate(run.values)]
    for unit, run in enumerate(runs[5:]):
        cut = 20 + 10 * unit  # cycles seen before the test file ends
        test_lines += [
            f"{unit + 1} {k + 1} 100.0 {v[0]:.3f} {v[1]:.3f}" for k, v in enumerate(run.values[:cut])
        ]
        truth.append(f"{len(run.values) - cut}  ")  # C-MAPSS's RUL files end their lines with spaces
    for name, lines in (("train.txt", train_lines), ("test.txt", test_lines), ("truth.txt", truth)):
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    small = ["--life-unit", "cycles", "--life-cap", "30", "--window", "8", "--epochs", "2"]
    rul = [
        "eval",
        "sensors",
        "--protocol",
        "rul",
        "--data",
        str(tmp_path / "train.txt"),
        *RUNS_LAYOUT,
        *small,
    ]
    code = main([*rul, "--test", str(tmp_path / "test.txt"), "--truth", str(tmp_path / "truth.txt")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 test runs scored at their last" in out and "truth capped at 30" in out
    assert "ridge on window features" in out and "training mean" in out and "mean bias" in out

    (tmp_path / "short.txt").write_text("12\n")
    assert (
        main([*rul, "--test", str(tmp_path / "test.txt"), "--truth", str(tmp_path / "short.txt")])
        == EXIT_DATA
    )
    assert "the truth file has 1 values for 3 test runs" in capsys.readouterr().err


def test_the_life_protocol_on_test_runs_scores_the_last_cycle() -> None:
    from models.sensors.life import CONSTANT, evaluate_life_on_test
    from models.sensors.training import SensorTraining

    runs = runs_to_failure(6, 50, period_s=1.0)
    testing = [run.head(30) for run in runs[4:]]
    config = SensorTraining(
        task="sensor_rul", window=8, stride=2, epochs=1, hidden=8, life_unit="cycles", life_cap=None
    )
    result = evaluate_life_on_test(runs[:4], testing, np.array([20.0, 20.0]), config)
    assert result.test_units == [r.asset for r in testing] and len(result.scores[CONSTANT].estimates) == 2
    mean = float(result.scores[CONSTANT].estimates[0])
    assert result.scores[CONSTANT].bias == pytest.approx(mean - 20.0)
