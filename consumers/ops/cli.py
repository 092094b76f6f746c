"""``vigil``: the command-line entry point (see README for every subcommand)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from consumers.ops.command_context import CONFIG_ENV, with_config
from consumers.ops.model_commands import add_model_commands
from consumers.ops.output import errors, set_output
from consumers.ops.replay_commands import add_replay_command
from consumers.ops.stream_commands import (
    add_broker_commands,
    add_data_commands,
    add_demo_command,
    add_run_command,
)
from consumers.pipelines import pipeline_kinds

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIGURATION = 3
EXIT_BROKER = 4
EXIT_DATA = 5
"""Exit statuses, listed in the README: a script tells a bad invocation (2, argparse's), a bad
configuration (3), an unreachable broker (4) and bad input data (5) from anything else (1)."""


def exit_status(error: BaseException) -> int:
    """The exit status for a command that failed with ``error``."""
    from consumers.runtime.outage import OutageBudgetExceededError, is_broker_trouble
    from schemas.settings import ConfigurationError

    if isinstance(error, ConfigurationError):
        return EXIT_CONFIGURATION
    if isinstance(error, OutageBudgetExceededError) or is_broker_trouble(error):
        return EXIT_BROKER
    if isinstance(error, ValueError | OSError | KeyError):
        return EXIT_DATA
    return EXIT_FAILURE


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand, built by command group."""
    parser = argparse.ArgumentParser(prog="vigil", description="Streaming inference for plants and cities.")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="what the logs say (default WARNING)",
    )
    parser.add_argument("--version", action="version", version=f"vigil {_version()}")
    with_config(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    add_broker_commands(sub)
    add_run_command(sub)
    add_data_commands(sub)
    train = with_config(sub.add_parser("train", help="train a registry model"))
    train_sub = train.add_subparsers(dest="pipeline", required=True)
    evaluate = with_config(sub.add_parser("eval", help="measure a registry model"))
    eval_sub = evaluate.add_subparsers(dest="pipeline", required=True)
    for kind in pipeline_kinds().values():  # each kind's own training and evaluation
        if kind.commands is not None:
            commands = importlib.import_module(kind.commands)
            commands.add_train(train_sub, with_config)
            commands.add_eval(eval_sub, with_config)
    add_model_commands(sub, with_config)
    add_replay_command(sub, with_config)
    add_demo_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``vigil``."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.config = getattr(args, "config", None) or (
        Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None
    )
    set_output(getattr(args, "output", "table") == "json")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except Exception as error:  # a clear one-line error for the operator; --log-level DEBUG for more
        logging.getLogger("vigil").debug("command failed", exc_info=True)
        errors.print(f"[red]error:[/red] {type(error).__name__}: {error}", highlight=False)
        return exit_status(error)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vigil")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
