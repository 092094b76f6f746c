"""The commands around the stream: the local broker and topics (``kafka``, ``topics``), the
service (``run``), inputs and outputs (``simulate``, ``tail``, ``dlq``, ``schemas``) and the
tour (``demo``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, get_args

from rich.table import Table

from consumers.ops.arguments import at_least_one, moment, pipeline_names
from consumers.ops.command_context import command_settings, with_config
from consumers.ops.output import console, json_output, show
from schemas.messages import DeadLetterReason
from schemas.settings import load_settings


def add_broker_commands(sub: Any) -> None:
    """``kafka`` and ``topics``."""
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


def add_run_command(sub: Any) -> None:
    """``run``."""
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


def add_data_commands(sub: Any) -> None:
    """``simulate``, ``tail``, ``dlq`` and ``schemas``."""
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


def add_demo_command(sub: Any) -> None:
    """``demo``."""
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

    settings = command_settings(args)
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

    settings = command_settings(args)
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
    settings = command_settings(args)
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
        lines = follow(
            command_settings(args), args.topic, args.from_beginning, args.idle_timeout, json_output()
        )
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

    report = redrive(
        command_settings(args), args.reason or (), args.since, args.until, args.dry_run, args.again
    )
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
