"""The command line as scripts use it: exit statuses, stderr, --config and VIGIL_CONFIG, --version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumers.ops.cli import (
    CONFIG_ENV,
    EXIT_BROKER,
    EXIT_CONFIGURATION,
    EXIT_DATA,
    EXIT_USAGE,
    build_parser,
    main,
)
from consumers.ops.stream_commands import write_line


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    config = tmp_path / "bad.yaml"
    config.write_text("runtime:\n  delivery: sometimes\n")
    return config


def test_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("vigil ")


def test_a_bad_log_level_is_a_usage_error_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--log-level", "loud", "schemas", "export", "/tmp/x"])
    assert exit_.value.code == EXIT_USAGE
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["topics", "create", "--config", "{config}"],
        ["--config", "{config}", "topics", "create"],  # before the subcommand: honoured too
        ["--config", "{config}", "train", "vision", "--data", "/nowhere", "--name", "m"],
        ["--config", "{config}", "models", "list"],
    ],
)
def test_the_configuration_is_honoured_wherever_it_is_given(
    argv: list[str], bad_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([a.replace("{config}", str(bad_config)) for a in argv]) == EXIT_CONFIGURATION
    captured = capsys.readouterr()
    assert "delivery" in captured.err and "delivery" not in captured.out


@pytest.mark.parametrize(
    ("command", "rest"),
    [
        (["eval", "sensor"], ["--protocol", "rul", "--data", "f.csv"]),
        (["train", "sensor"], ["--data", "f.csv", "--name", "m"]),
        (["run"], ["--pipeline", "sensors"]),
        (["demo"], []),
    ],
)
def test_a_config_before_the_subcommand_reaches_it(command: list[str], rest: list[str]) -> None:
    args = build_parser().parse_args(["--config", "plant.yaml", *command, *rest])
    assert args.config == Path("plant.yaml")
    args = build_parser().parse_args([*command, "--config", "line.yaml", *rest])
    assert args.config == Path("line.yaml")


def test_vigil_config_names_the_file_when_no_option_does(
    bad_config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(bad_config))
    assert main(["topics", "create"]) == EXIT_CONFIGURATION
    assert "delivery" in capsys.readouterr().err


@pytest.mark.slow
def test_an_unreachable_broker_has_its_own_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("VIGIL_KAFKA__REQUEST_TIMEOUT_MS", "1500")
    assert main(["topics", "create"]) == EXIT_BROKER


def test_missing_input_data_has_its_own_status(tmp_path: Path) -> None:
    assert main(["train", "sensor", "--data", str(tmp_path / "missing.csv"), "--name", "m"]) == EXIT_DATA


def test_every_option_has_help_text() -> None:
    missing: list[str] = []

    def visit(parser, path: str) -> None:  # type: ignore[no-untyped-def]
        for action in parser._actions:  # argparse keeps no public list of its actions
            if action.option_strings and not action.help and action.dest != "help":
                missing.append(f"{path} {action.option_strings[0]}")
            choices = getattr(action, "choices", None)
            for name, child in choices.items() if isinstance(choices, dict) else ():
                if hasattr(child, "_actions"):
                    visit(child, f"{path} {name}")

    visit(build_parser(), "vigil")
    assert not missing, missing


def test_every_command_takes_config_and_output() -> None:
    lacking: list[str] = []

    def visit(parser, path: str) -> None:  # type: ignore[no-untyped-def]
        options = {option for action in parser._actions for option in action.option_strings}
        commands = [a.choices for a in parser._actions if isinstance(getattr(a, "choices", None), dict)]
        if not commands:  # a command that runs
            lacking.extend(f"{path} {o}" for o in ("--config", "--output") if o not in options)
        for children in commands:
            for name, child in children.items():
                visit(child, f"{path} {name}")

    visit(build_parser(), "vigil")
    assert not lacking, lacking


def test_tail_lines_are_whole_in_a_pipe(capsys: pytest.CaptureFixture[str]) -> None:
    line = "DEAD   schema_violation  vigil.sensors[3]@12345 decode: ValidationError: " + "x" * 150
    write_line(line)
    assert capsys.readouterr().out == line + "\n"  # not wrapped at 80 columns, no styling


def test_tables_are_json_lines_for_scripts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from rich.table import Table

    from consumers.ops.output import table_document

    table = Table(title="models in /r")
    table.add_column("name")
    table.add_column("version")
    table.add_column("threshold", justify="right")
    table.add_column("scored", justify="right")
    table.add_row("[bold]press-ae[/bold]", "1.10", "0.27", "12,345")
    assert table_document(table) == {  # a version stays a string; declared numbers are numbers
        "title": "models in /r",
        "rows": [{"name": "press-ae", "version": "1.10", "threshold": 0.27, "scored": 12345}],
    }
    assert main(["models", "list", "--registry", str(tmp_path), "--output", "json"]) == 0
    listing = json.loads(capsys.readouterr().out)  # stdout holds the JSON and nothing else
    assert listing["title"].startswith("models in") and listing["rows"] == []


def test_json_output_is_set_per_command_not_left_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "list", "--registry", str(tmp_path), "--output", "json"]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--registry", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "models in" in captured.out and not captured.out.startswith("{")


@pytest.mark.parametrize(
    "arguments",
    [
        ["run", "--workers", "0"],
        ["run", "--pipeline", "sensors,no-such-kind"],
        ["dlq", "redrive", "--since", "yesterday"],
        ["dlq", "redrive", "--until", "2026-13-01"],
    ],
)
def test_a_bad_argument_is_a_usage_error_before_anything_runs(
    arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(arguments)
    assert exit_.value.code == EXIT_USAGE
    assert "error: argument" in capsys.readouterr().err


def test_sensor_models_train_into_and_are_found_in_the_sensor_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.registry import versions
    from models.sensors.synthetic import normal_machines

    history = tmp_path / "machines.csv"
    series = normal_machines(2, 200)
    lines = [",".join(["asset", "timestamp", *series[0].channels])]
    for one in series:
        for time_s, row in zip(one.times, one.values, strict=True):
            lines.append(",".join([one.asset, str(time_s), *map(str, row)]))
    history.write_text("\n".join(lines) + "\n")
    config = tmp_path / "vigil.yaml"
    vision, sensors = tmp_path / "vision-models", tmp_path / "sensor-models"
    config.write_text(f"vision:\n  registry: {vision}\nsensors:\n  registry: {sensors}\n")
    common = ["--config", str(config)]
    trained = main(
        [
            "train",
            "sensor",
            "--data",
            str(history),
            "--name",
            "ae",
            "--epochs",
            "1",
            "--window",
            "16",
            *common,
        ]
    )
    assert trained == 0 and versions(sensors, "ae") == ["1"] and not vision.exists()
    assert main(["models", "promote", "ae", "1", *common]) == 0
    assert main(["models", "show", "ae", "--output", "json", *common]) == 0
    card = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert card["name"] == "ae" and card["version"] == "1"


def test_a_models_version_is_model_version_and_sensors_is_spelt_as_the_pipeline() -> None:
    parser = build_parser()
    for command in (["train", "sensors"], ["train", "sensor"]):  # the old spelling still works
        args = parser.parse_args([*command, "--data", "f.csv", "--name", "m", "--model-version", "1.10"])
        assert args.version == "1.10"
    args = parser.parse_args(["replay", "vibration", "--model-version", "staging"])
    assert args.version == "staging"
