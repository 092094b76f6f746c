"""``vigil train sensors`` and ``vigil eval sensors`` (``sensor`` still works).

Training defaults are those of ``SensorTraining`` (the CLI and the Python API train the same
model); every history file is read through one ``TableFormat`` given by the same flags.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table

from consumers.ops.arguments import WRITE_VERSION, add_model_version, add_registry
from consumers.ops.command_config import config_from, field_defaults, field_options
from consumers.ops.output import console, show


def _layout_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--separator",
        choices=[",", ";", "tab", "whitespace"],
        default=",",
        help="field separator of text files (default ','); Parquet needs none",
    )
    p.add_argument("--time-column", default="timestamp", help="ISO 8601 times, or numbers (seconds, cycles)")
    p.add_argument("--asset-column", default="asset", help="absent from the file: the file is one asset")
    p.add_argument("--label-columns", default="", help="comma-separated ground-truth columns, never channels")
    p.add_argument("--drop-columns", default="", help="comma-separated columns to ignore")
    p.add_argument("--columns", default="", help="comma-separated names for a file without a header row")


def layout_of(args: argparse.Namespace) -> Any:
    """The ``TableFormat`` the layout flags describe."""
    from models.sensors.series import TableFormat

    def names(text: str) -> tuple[str, ...]:
        return tuple(name.strip() for name in text.split(",") if name.strip())

    return TableFormat(
        separator=args.separator,
        time_column=args.time_column,
        asset_column=args.asset_column,
        label_columns=names(args.label_columns),
        drop_columns=names(args.drop_columns),
        columns=names(args.columns),
    )


_TRAINING_OPTIONS: list[tuple[str, type, str]] = [
    ("window", int, "samples per window"),
    ("stride", int, "samples between scored windows"),
    ("hidden", int, "GRU hidden units"),
    ("layers", int, "default: 1, or 2 for sensor_rul"),
    ("score_steps", int, "anomaly scorers: the score is the error over the window's last N samples"),
    ("epochs", int, "at most; early stopping ends sooner"),
    ("patience", int, "epochs without improvement before stopping"),
    ("batch_size", int, "windows per training step"),
    ("lr", float, "learning rate (Adam)"),
    ("normal_rows", int, "leading normal samples per series"),
    ("normal_span_s", float, "... or leading seconds"),
    ("normal_fraction", float, "... or leading share"),
    (
        "calibration_fraction",
        float,
        "tail of the normal period held out for early stopping and the threshold",
    ),
    ("threshold_quantile", float, "quantile of held-out normal scores the threshold starts from"),
    ("threshold_margin", float, "threshold = quantile x margin"),
    (
        "min_scale",
        float,
        "floor of each channel's scale, as a share of its mean magnitude (default: 0.01; none for sensor_rul)",
    ),
    ("life_unit", str, "sensor_rul: what remaining life is counted in"),
    (
        "life_cap",
        float,
        "piecewise-linear cap of the life target (default: 0.6 of the median run's life; 0: none)",
    ),
    ("life_alert", float, "sensor_rul: alert at this life, in --life-unit"),
    ("validation_fraction", float, "sensor_rul: share of runs held out for early stopping"),
    ("sample_period_s", float, "default: from the data"),
    ("seed", int, "random seed (splits, initialisation)"),
    ("threads", int, "torch threads (default: cores - 1)"),
]


def _training_arguments(p: argparse.ArgumentParser) -> None:
    from models.sensors.training import SENSOR_TASKS, SensorTraining

    p.add_argument(
        "--task",
        choices=SENSOR_TASKS,
        default=field_defaults(SensorTraining)["task"],
        help="sensor_autoencoder (default) or sensor_forecast score anomalies; sensor_rul takes each "
        "asset's series as a run to failure ending at its last sample",
    )
    field_options(p, SensorTraining, _TRAINING_OPTIONS, life_unit=["cycles", "samples", "hours"])


def training_of(args: argparse.Namespace) -> Any:
    """The ``SensorTraining`` the training flags describe."""
    from models.sensors.training import SensorTraining

    return config_from(SensorTraining, args)


def add_train(train_sub: Any, with_config: Callable[[argparse.ArgumentParser], Any]) -> None:
    """``vigil train sensors`` (``sensor`` still works)."""
    p = with_config(
        train_sub.add_parser(
            "sensors", aliases=["sensor"], help="a GRU forecaster, autoencoder or life regressor"
        )
    )
    p.add_argument("--data", type=Path, required=True, help="history: CSV or other text table, or Parquet")
    p.add_argument("--name", required=True, help="model name in the registry")
    add_model_version(p, WRITE_VERSION, default="1")
    add_registry(p, "sensors.registry")
    _layout_arguments(p)
    _training_arguments(p)
    p.set_defaults(func=cmd_train_sensor)


def cmd_train_sensor(args: argparse.Namespace) -> int:
    from consumers.ops.command_context import registry_of
    from models.sensors.training import train_sensor_model

    entry = train_sensor_model(
        args.data, registry_of(args, "sensors"), args.name, args.version, training_of(args), layout_of(args)
    )
    thresholds = ", ".join(f"{label} {value:.4g}" for label, value in entry.card.thresholds.items())
    metrics = ", ".join(
        f"{k} {v:.4g}" for k, v in (entry.card.training.metrics if entry.card.training else {}).items()
    )
    console.print(f"wrote {entry.folder}; thresholds: {thresholds}; {metrics}")
    return 0


def add_eval(eval_sub: Any, with_config: Callable[[argparse.ArgumentParser], Any]) -> None:
    """``vigil eval sensors`` (``sensor`` still works)."""
    p = with_config(
        eval_sub.add_parser(
            "sensors",
            aliases=["sensor"],
            help="nab: a registry model on labelled windows; pointwise: train per series, flag samples; "
            "rul: train on some runs, estimate the others' life",
        )
    )
    p.add_argument(
        "--protocol",
        choices=["nab", "pointwise", "rul"],
        default="nab",
        help="nab: windows scored by a registry model; pointwise: SKAB-style F1/FAR/MAR; rul: remaining life",
    )
    p.add_argument("--data", type=Path, nargs="+", required=True, help="history files")
    p.add_argument("--labels", type=Path, default=None, help="nab: combined_windows.json")
    p.add_argument("--name", default=None, help="nab: the registry model")
    add_model_version(p, default=None)
    add_registry(p, "sensors.registry")
    p.add_argument("--label", default=None, help="pointwise: the label column scored (default: the first)")
    p.add_argument("--holdout", type=float, default=0.2, help="rul: share of runs held out for testing")
    p.add_argument("--cuts", type=int, default=5, help="rul: random cuts of each held-out run")
    p.add_argument(
        "--folds",
        type=int,
        default=None,
        help="rul: k-fold over runs instead of one --holdout split (every run held out once)",
    )
    p.add_argument(
        "--test",
        type=Path,
        default=None,
        help="rul, the published protocol: runs that end before failure (train on every --data run)",
    )
    p.add_argument(
        "--truth",
        type=Path,
        default=None,
        help="rul with --test: each test run's life left at its last cycle, one per line, in the "
        "order the runs first appear",
    )
    p.add_argument("--alert-n", type=int, default=2, help="alert rule: fire when N of the last M scores ...")
    p.add_argument("--alert-m", type=int, default=3, help="... reach the threshold")
    p.add_argument(
        "--alert-resolve", type=float, default=1.0, help="resolve below this share of the threshold"
    )
    p.add_argument(
        "--alert-cooldown-s", type=float, default=0.0, help="no new alert this long after a resolve"
    )
    p.add_argument("--plots", type=Path, default=None, help="write PNG plots here")
    _layout_arguments(p)
    _training_arguments(p)
    p.set_defaults(func=cmd_eval_sensor)


def _histories(args: argparse.Namespace) -> list[Any]:
    from models.sensors.series import load_history

    layout = layout_of(args)
    return [s for path in args.data for s in load_history(path, layout)]


def _eval_life_on_test(args: argparse.Namespace, config: Any) -> int:
    """The published RUL protocol: ``--test`` runs scored at their last cycle against ``--truth``."""
    import numpy as np

    from models.sensors.life import evaluate_life_on_test
    from models.sensors.series import load_history

    testing = load_history(args.test, layout_of(args))
    truth = np.loadtxt(args.truth, ndmin=1, dtype=float)
    result = evaluate_life_on_test(_histories(args), testing, truth, config)
    cap = f"truth capped at {result.cap}" if result.cap != "none" else None
    table = Table(
        title=f"remaining useful life, published protocol: trained on {len(result.train_units)} runs, "
        f"{len(result.test_units)} test runs scored at their last cycle; life in {config.life_unit}"
    )
    columns = ["estimator", "RMSE", *([f"RMSE, {cap}"] if cap else []), "NASA score", "mean bias"]
    for column in columns:
        table.add_column(column, justify="left" if column == "estimator" else "right")
    for name, score in result.scores.items():
        capped = [f"{score.rmse_capped:.2f}"] if cap and score.rmse_capped is not None else []
        table.add_row(name, f"{score.rmse:.2f}", *capped, f"{score.nasa:,.0f}", f"{score.bias:+.2f}")
    show(table)
    console.print(f"training and scoring took {result.seconds:.1f} s (mean bias > 0: late estimates)")
    return 0


def cmd_eval_sensor(args: argparse.Namespace) -> int:
    from models.alert_policy import AlertShape

    shape = AlertShape(args.alert_n, args.alert_m, args.alert_resolve, args.alert_cooldown_s)
    if args.protocol == "nab":
        return _eval_nab(args, shape)
    if args.protocol == "pointwise":
        return _eval_pointwise(args, shape)
    return _eval_life(args)


def _eval_nab(args: argparse.Namespace, shape: Any) -> int:
    from consumers.ops.command_context import registry_of
    from models.registry import load_model
    from models.sensors.nab import compare, labelled_windows
    from models.sensors.series import load_history

    if args.labels is None or args.name is None:
        raise ValueError(
            "the nab protocol needs --labels (combined_windows.json) and --name (a registry model)"
        )
    model = load_model(registry_of(args, "sensors"), args.name, args.version)
    for path in args.data:
        table = Table(title=f"{path.name}: {args.name} {model.card.version}; alert rule: {shape.describe()}")
        for column in ("detector", "windows detected", "false alerts / day", "mean delay (h)"):
            table.add_column(
                column,
                justify="right"
                if column in ("windows detected", "false alerts / day", "mean delay (h)")
                else "left",
            )
        spans = labelled_windows(args.labels, path)
        for series in load_history(path, layout_of(args)):
            for r in compare(model.module, model.card, series, spans, shape, args.normal_fraction):
                table.add_row(
                    r.detector,
                    f"{r.windows_detected}/{r.windows_total}",
                    f"{r.false_alerts_per_day:.3f}",
                    f"{r.mean_delay_h:.1f}",
                )
        show(table)
    return 0


def _eval_pointwise(args: argparse.Namespace, shape: Any) -> int:
    from models.sensors.pointwise import evaluate_pointwise

    series = _histories(args)
    label = args.label or (layout_of(args).label_columns or (None,))[0]
    if label is None:
        raise ValueError("the pointwise protocol needs a label column: --label-columns (and --label)")
    config = training_of(args)
    result = evaluate_pointwise(series, label, config, shape)
    table = Table(
        title=f"point-wise, {len(series)} series, label '{label}'; {config.task}; alert rule: {shape.describe()}"
    )
    for column in ("detector", "F1", "false-alarm rate", "missed-alarm rate", "TP", "FP", "FN", "TN"):
        table.add_column(
            column,
            justify="right"
            if column in ("F1", "false-alarm rate", "missed-alarm rate", "TP", "FP", "FN", "TN")
            else "left",
        )
    for name, c in result.confusion.items():
        table.add_row(
            name,
            f"{c.f1:.3f}",
            f"{c.false_alarm_rate:.1%}",
            f"{c.missed_alarm_rate:.1%}",
            *(str(v) for v in (c.tp, c.fp, c.fn, c.tn)),
        )
    show(table)
    if result.repeats:
        console.print(
            f"{result.repeats} samples repeat the time of the one before: not scored "
            "(the service refuses them as duplicates)"
        )
    console.print(f"training and scoring took {result.seconds:.1f} s")
    if args.plots is not None:
        from models.sensors.plots import pointwise_plots

        console.print(f"plots: {len(pointwise_plots(result, args.plots))} PNGs in {args.plots}")
    return 0


def _eval_life(args: argparse.Namespace) -> int:
    config = training_of(args)
    if config.task != "sensor_rul":
        config = dataclasses.replace(config, task="sensor_rul")
    if (args.test is None) != (args.truth is None):
        raise ValueError("--test and --truth go together (the published protocol)")
    if args.test is not None:
        return _eval_life_on_test(args, config)
    from models.sensors.life import evaluate_life, evaluate_life_folds

    runs = _histories(args)
    if args.folds:
        result = evaluate_life_folds(runs, config, args.folds, args.cuts)
        split = f"{args.folds}-fold over {len(runs)} runs (each held out once)"
    else:
        result = evaluate_life(runs, config, args.holdout, args.cuts)
        split = f"trained on {len(result.train_units)} runs, {len(result.test_units)} held out"
    table = Table(
        title=f"remaining useful life: {split}, {args.cuts} cuts each; life in {config.life_unit}, "
        f"truth capped at {result.cap}; seed {config.seed}"
    )
    for column in ("estimator", "RMSE", "NASA score", "mean bias"):
        table.add_column(column, justify="left" if column == "estimator" else "right")
    for name, score in result.scores.items():
        table.add_row(name, f"{score.rmse:.2f}", f"{score.nasa:,.0f}", f"{score.bias:+.2f}")
    show(table)
    held = "" if args.folds else f"held-out runs: {', '.join(result.test_units)}; "
    console.print(f"{held}training and scoring took {result.seconds:.1f} s (mean bias > 0: late estimates)")
    if args.plots is not None:
        from models.sensors.plots import life_plot

        console.print(f"plot: {life_plot(result, args.plots)}")
    return 0
