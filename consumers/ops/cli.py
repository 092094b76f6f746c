"""``vigil``: the command-line entry point (see README for every subcommand)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from rich.table import Table

from consumers.ops.arguments import at_least_one, moment, pipeline_names
from consumers.ops.output import console, errors, json_output, set_output, show
from schemas.messages import DeadLetterReason
from schemas.settings import VigilSettings, load_settings

CONFIG_ENV = "VIGIL_CONFIG"
"""The configuration file when no ``--config`` is given."""

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


def _settings(args: argparse.Namespace) -> VigilSettings:
    from consumers.ops.broker_session import resolve_cluster

    return resolve_cluster(load_settings(args.config))


def registry_of(args: argparse.Namespace, kind: str) -> str:
    """The model registry folder of pipeline ``kind``: ``--registry``, else the configuration's."""
    from consumers.pipelines import pipeline_kinds

    if args.registry:
        return str(args.registry)
    registry = pipeline_kinds()[kind].registry(load_settings(args.config))
    if registry is None:
        raise ValueError(f"pipeline {kind!r} serves no models")
    return registry


def registries(args: argparse.Namespace) -> list[str]:
    """``--registry``, else every pipeline kind's registry folder, each once."""
    from consumers.pipelines import pipeline_kinds

    if args.registry:
        return [str(args.registry)]
    settings = load_settings(args.config)
    found = (kind.registry(settings) for kind in pipeline_kinds().values())
    return list(dict.fromkeys(registry for registry in found if registry is not None))


def registry_holding(args: argparse.Namespace, name: str) -> str:
    """The registry folder (of ``registries``) that holds model ``name``."""
    from models.registry import versions

    searched = registries(args)
    for registry in searched:
        if versions(registry, name):
            return registry
    raise KeyError(f"no model {name!r} in {', '.join(searched)}")


def cmd_kafka(args: argparse.Namespace) -> int:
    from consumers.ops.local_kafka.broker import LocalKafka, resident_memory_bytes

    broker = LocalKafka(args.name)
    if args.action in ("up", "restart"):
        started = time.monotonic()
        info = broker.start() if args.action == "up" else broker.restart()
        console.print(
            f"Kafka {info.version} serving on {info.bootstrap_servers} (pid {info.pid}, "
            f"{time.monotonic() - started:.1f}s); state in {info.state_dir}"
        )
        console.print(f"export KAFKA_BOOTSTRAP_SERVERS={info.bootstrap_servers}")
    elif args.action == "down":
        console.print("stopped" if broker.stop(purge=args.purge) else "no local broker was running")
    else:
        status = broker.status()
        if status is None:
            console.print(f"local broker {args.name!r} is not running")
            return 1
        rss = resident_memory_bytes(status.pid) or 0
        console.print(
            f"running: {status.bootstrap_servers} pid {status.pid} Kafka {status.version} "
            f"RSS {rss / 2**20:.0f} MiB"
        )
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from consumers.ops.topics import create_topics

    settings = _settings(args)
    created = create_topics(settings)
    table = Table(title="topics")
    for column in ("topic", "partitions", "replication factor", "state"):
        table.add_column(
            column, justify="right" if column in ("partitions", "replication factor") else "left"
        )
    for spec in settings.topics.all():
        state = "created" if spec.name in created else "exists"
        table.add_row(spec.name, str(spec.partitions), str(spec.replication_factor), state)
    show(table)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from consumers.ops.service import Service
    from consumers.ops.workers import Supervisor, WorkerSlot, stop_with_supervisor

    settings = _settings(args)
    slot = WorkerSlot.from_environment()
    runner: Service | Supervisor
    if args.workers > 1 and slot is None:
        runner = Supervisor(settings, args.argv, args.workers)
    else:
        if slot is not None:
            settings = slot.settings(settings)
        runner = Service(settings, args.pipeline, processes=slot.count if slot else 1)
        if slot is not None:
            stop_with_supervisor(runner.request_stop)
    server = runner.serve_metrics() if settings.metrics.enabled else None
    if server is not None and slot is None:
        console.print(f"metrics on http://{settings.metrics.host}:{server.port}/metrics (/healthz, /readyz)")
    try:
        return runner.run()
    finally:
        if server is not None:
            server.stop()


def cmd_simulate(args: argparse.Namespace) -> int:
    from consumers.ops.simulate import publish, synthetic_frames, synthetic_readings
    from consumers.runtime.kafka_clients import make_producer

    if args.images is not None:
        from models.vision.synthetic import write_dataset

        written = write_dataset(args.images, args.per_class, args.size)
        console.print(
            f"wrote {sum(map(len, written.values()))} images under {args.images}: {', '.join(written)}"
        )
        return 0
    settings = _settings(args)
    producer = make_producer(settings.kafka)
    sent = publish(
        producer,
        settings,
        list(synthetic_frames(args.frames)),
        list(synthetic_readings(args.readings)),
        poison=args.poison,
    )
    producer.flush()
    producer.close()
    console.print(f"sent {sent} records")
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from consumers.ops.tail import follow

    try:
        lines = follow(_settings(args), args.topic, args.from_beginning, args.idle_timeout, json_output())
        for line in lines:
            write_line(line)
    except KeyboardInterrupt:
        pass
    return 0


def write_line(line: str) -> None:
    """One record's line: styled on a terminal, plain and unwrapped into a pipe or a file
    (``vigil tail | grep`` must see whole lines), and always plain in JSON."""
    if sys.stdout.isatty() and not json_output():
        console.print(line, highlight=False)
    else:
        print(line, flush=True)


def cmd_dlq(args: argparse.Namespace) -> int:
    from consumers.ops.redrive import redrive

    report = redrive(_settings(args), args.reason or (), args.since, args.until, args.dry_run, args.again)
    verb = "would publish" if args.dry_run else "published"
    table = Table(title=f"dead letters redriven{' (dry run)' if args.dry_run else ''}")
    for column in ("original topic", "reason", verb):
        table.add_column(column, justify="right" if column == verb else "left")
    for (topic, reason), count in sorted(report.published.items()):
        table.add_row(topic, reason, str(count))
    show(table)
    for line in report.skipped:
        console.print(f"skipped {line}", highlight=False)
    for line in report.already:
        console.print(f"skipped {line}: redriven before (--again redrives it)", highlight=False)
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    from consumers.pipelines import message_types
    from schemas.export import export_json_schemas

    for path in export_json_schemas(args.directory, message_types()):
        console.print(str(path))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from consumers.ops.broker_session import cluster_for
    from consumers.ops.demo import run_demo

    started = time.monotonic()
    with cluster_for(load_settings(args.config)) as (settings, started_here):
        where = "local broker started" if started_here else "using"
        console.print(
            f"[bold]{where} {settings.kafka.bootstrap_servers}[/bold] ({time.monotonic() - started:.1f}s)"
        )
        try:
            summary = run_demo(
                settings,
                args.duration,
                args.frames_per_s,
                console,
                real_images=args.images,
                simulate=not args.no_simulate,
            )
        except KeyboardInterrupt:
            console.print("interrupted")
            return 130
    return 0 if sum(summary.results.values()) > 0 else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from consumers.ops.model_commands import add_model_commands
    from consumers.ops.replay_commands import add_replay_command
    from consumers.ops.sensor_commands import add_eval_sensor, add_train_sensor
    from consumers.ops.vision_commands import add_eval_vision, add_train_vision

    parser = argparse.ArgumentParser(prog="vigil", description="Streaming inference for plants and cities.")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="what the logs say (default WARNING)",
    )
    parser.add_argument("--version", action="version", version=f"vigil {_version()}")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        # SUPPRESS: a subcommand without the option keeps the value given before it
        p.add_argument(
            "--config",
            type=Path,
            default=argparse.SUPPRESS,
            help=f"YAML configuration file (default: ${CONFIG_ENV}, else built-in defaults)",
        )
        p.add_argument(
            "--output",
            choices=["table", "json"],
            default=argparse.SUPPRESS,
            help="table (default) for people; json: each table as a JSON line on stdout, messages on stderr",
        )
        return p

    with_config(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    kafka = with_config(sub.add_parser("kafka", help="the local Apache Kafka broker"))
    kafka.add_argument(
        "action",
        choices=["up", "down", "restart", "status"],
        help="up: provision and start; down: stop (data and ports kept for the next up); restart: down then up",
    )
    kafka.add_argument("--name", default="default", help="broker instance name")
    kafka.add_argument("--purge", action="store_true", help="down: also delete the instance's data and log")
    kafka.set_defaults(func=cmd_kafka)

    topics = with_config(sub.add_parser("topics", help="create the configured topics"))
    topics.add_argument("action", choices=["create"])
    topics.set_defaults(func=cmd_topics)

    run = with_config(sub.add_parser("run", help="consume, infer, publish"))
    from consumers.pipelines import pipeline_kinds

    kinds = pipeline_kinds()
    run.add_argument(
        "--pipeline",
        type=pipeline_names,
        default=["passthrough"],
        help="one or more of, comma-separated: "
        + "; ".join(f"{name}: {kind.summary}" for name, kind in kinds.items()),
    )
    run.add_argument(
        "--workers",
        type=at_least_one,
        default=1,
        help="member processes of the same consumer groups (Kafka shares the partitions among "
        "them); one metrics endpoint gathers theirs",
    )
    run.set_defaults(func=cmd_run)

    simulate = with_config(sub.add_parser("simulate", help="produce synthetic inputs"))
    simulate.add_argument("--frames", type=int, default=40, help="frame references to produce")
    simulate.add_argument("--readings", type=int, default=60, help="sensor readings to produce")
    simulate.add_argument("--poison", type=int, default=0, help="malformed records to add")
    simulate.add_argument(
        "--images",
        type=Path,
        default=None,
        help="instead: write a synthetic product-image dataset (one folder per class) here",
    )
    simulate.add_argument("--per-class", type=int, default=100, help="--images: images per class")
    simulate.add_argument("--size", type=int, default=128, help="--images: side of each image, pixels")
    simulate.set_defaults(func=cmd_simulate)

    tail = with_config(sub.add_parser("tail", help="follow an output topic"))
    tail.add_argument("topic", choices=["alerts", "inferences", "dlq"], nargs="?", default="alerts")
    tail.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest record, not the newest"
    )
    tail.add_argument("--idle-timeout", type=float, default=None, help="stop after this many idle seconds")
    tail.set_defaults(func=cmd_tail)

    dlq = with_config(sub.add_parser("dlq", help="the dead-letter topic: redrive letters after a fix"))
    dlq.add_argument(
        "action", choices=["redrive"], help="redrive: publish dead letters to their original topic again"
    )
    dlq.add_argument(
        "--reason",
        action="append",
        choices=list(get_args(DeadLetterReason)),
        help="only letters with this reason (repeat for several; default: every reason)",
    )
    dlq.add_argument(
        "--since", type=moment, default=None, help="only letters that failed at or after this ISO 8601 time"
    )
    dlq.add_argument(
        "--until", type=moment, default=None, help="only letters that failed at or before this ISO 8601 time"
    )
    dlq.add_argument("--dry-run", action="store_true", help="count what would be published, publish nothing")
    dlq.add_argument(
        "--again", action="store_true", help="also letters an earlier redrive published (the redrive log)"
    )
    dlq.set_defaults(func=cmd_dlq)

    schemas = with_config(sub.add_parser("schemas", help="JSON Schema export"))
    schemas.add_argument("action", choices=["export"])
    schemas.add_argument("directory", type=Path)
    schemas.set_defaults(func=cmd_schemas)

    train = with_config(sub.add_parser("train", help="train a registry model"))
    train_sub = train.add_subparsers(dest="pipeline", required=True)
    add_train_vision(train_sub, with_config)

    add_train_sensor(train_sub, with_config)

    evaluate = with_config(sub.add_parser("eval", help="measure a registry model"))
    eval_sub = evaluate.add_subparsers(dest="pipeline", required=True)
    add_eval_vision(eval_sub, with_config)
    add_eval_sensor(eval_sub, with_config)

    add_model_commands(sub, with_config)
    add_replay_command(sub, with_config)

    demo = with_config(sub.add_parser("demo", help="the one-command tour"))
    demo.add_argument("--duration", type=float, default=40.0, help="seconds")
    demo.add_argument("--frames-per-s", type=int, default=16, help="simulated camera frames per second")
    demo.add_argument(
        "--images",
        type=Path,
        default=None,
        help="serve these real images (JPEG/PNG, any depth) instead of simulated ones",
    )
    demo.add_argument(
        "--no-simulate",
        action="store_true",
        help="publish nothing: watch what arrives on the configured topics (KAFKA_BOOTSTRAP_SERVERS, --config)",
    )
    demo.set_defaults(func=cmd_demo)
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
