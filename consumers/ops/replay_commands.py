"""``vigil replay``: a range of an input topic through a pinned model, with the alert diff."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from rich.table import Table

from consumers.ops.arguments import add_model_version, moment
from consumers.ops.output import console, show

CHANGE_ROWS = 50


def add_replay_command(sub: Any, with_config: Callable[..., Any]) -> None:
    """Register ``vigil replay``."""
    replay = with_config(
        sub.add_parser(
            "replay",
            help="re-run a range of a pipeline's input topic through a pinned model into separate "
            "topics and compare its alerts with production's",
        )
    )
    from consumers.ops.replay import replayable

    replay.add_argument("pipeline", choices=replayable(), help="the pipeline to run the range through")
    add_model_version(replay, "the model version (or alias, resolved now) to pin", required=True)
    replay.add_argument(
        "--model",
        default=None,
        help="the model to pin (default: the pipeline's only one); others stay at their alias's version",
    )
    replay.add_argument(
        "--since", type=moment, default=None, help="first record time, ISO 8601 (default: the topic's start)"
    )
    replay.add_argument(
        "--until", type=moment, default=None, help="last record time, ISO 8601 (default: the topic's end now)"
    )
    replay.add_argument(
        "--from-offset", type=int, default=None, help="first offset, on every partition chosen"
    )
    replay.add_argument(
        "--to-offset", type=int, default=None, help="last offset (inclusive), on every partition chosen"
    )
    replay.add_argument(
        "--partition",
        type=int,
        action="append",
        default=None,
        help="only this partition (repeat for several)",
    )
    replay.add_argument(
        "--into",
        default=None,
        help="prefix of the run's output topics (default: vigil.replay.<pipeline>.<time>)",
    )
    replay.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds the run may take (default: 3600)"
    )
    replay.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    """Run the replay and print its summary and the alerts it changed."""
    from consumers.ops.command_context import command_settings
    from consumers.ops.replay import find_range, input_topic, replay

    settings = command_settings(args)
    topic = input_topic(settings, args.pipeline)
    span = find_range(
        settings,
        topic,
        args.since,
        args.until,
        args.from_offset,
        args.to_offset,
        args.partition or (),
    )
    console.print(f"replaying {span.records} records of {topic} through {args.pipeline}", highlight=False)
    report = replay(settings, args.pipeline, span, args.version, args.model, args.into, args.timeout)
    diff = report.diff
    summary = Table(title="replay")
    for column in (
        "topic",
        "records",
        "models",
        "results",
        "dead letters",
        "alerts topic",
        "added",
        "removed",
        "changed",
        "same",
    ):
        numbers = ("records", "results", "dead letters", "added", "removed", "changed", "same")
        summary.add_column(column, justify="right" if column in numbers else "left")
    summary.add_row(
        topic,
        str(span.records),
        ", ".join(f"{name}:{version}" for name, version in sorted(report.models.items())),
        str(report.results),
        str(report.dead_letters),
        report.topics["alerts"],
        str(len(diff.added)),
        str(len(diff.removed)),
        str(len(diff.changed)),
        str(diff.same),
    )
    show(summary)
    changes = Table(title=f"alerts that differ from production (first {CHANGE_ROWS})")
    for column in (
        "change",
        "source",
        "rule",
        "label",
        "state",
        "evidence",
        "production score",
        "replay score",
    ):
        changes.add_column(column, justify="right" if column.endswith("score") else "left")
    rows = (
        [("added", c) for c in diff.added]
        + [("removed", c) for c in diff.removed]
        + [("changed", c) for c in diff.changed]
    )
    for change, item in rows[:CHANGE_ROWS]:
        source, rule, label, state, partition, offset = item.key
        changes.add_row(
            change,
            source,
            rule,
            label,
            state,
            f"{topic}[{partition}]@{offset}",
            "" if item.production is None else f"{item.production.score:.4g}",
            "" if item.replayed is None else f"{item.replayed.score:.4g}",
        )
    show(changes)
    return 0
