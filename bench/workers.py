"""``vigil run --workers N`` against one worker, same run: the pass-through (Python-bound).

Each run is ``vigil run`` as an operator starts it, on the same records in a fresh group;
the clock runs from the first record read to the last result acknowledged, read from the
supervisor's gathered ``/metrics``. Runs alternate; each figure is a median with its runs.
The machine's cores and what else runs on them (the broker) bound the gain: the report
says how many cores there are.

Usage: python bench/workers.py [--messages N] [--workers 2] [--repeats 3] [--client kafka-python]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Figure, bench_broker, bench_settings, report
from bench.foundation import fill_topic
from bench.peers import spread
from schemas.settings import VigilSettings

ROOT = Path(__file__).resolve().parents[1]


def _totals(port: int) -> tuple[float, float]:
    """Records read and results acknowledged, summed over the workers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            text = reply.read().decode()
    except OSError:
        return 0.0, 0.0
    consumed = produced = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vigil_messages_consumed_total":
                consumed += sample.value
            elif sample.name == "vigil_messages_produced_total":
                produced += sample.value
    return consumed, produced


def run_rate(settings: VigilSettings, count: int, workers: int) -> float:
    """Records per second through ``vigil run --workers workers``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    document = json.loads(settings.model_dump_json())
    document["kafka"]["group_id"] = f"workers-{uuid.uuid4().hex[:6]}"
    document["metrics"] = {"enabled": True, "host": "127.0.0.1", "port": port}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
        json.dump(document, config)
    command = [sys.executable, "-m", "consumers.ops.cli", "run", "--config", config.name]
    if workers > 1:
        command += ["--workers", str(workers)]
    service = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        started = None
        while time.monotonic() < deadline:
            consumed, produced = _totals(port)
            now = time.monotonic()
            if consumed and started is None:
                started = now
            if produced >= count and started is not None:
                return count / (now - started)
            time.sleep(0.05)  # scraping the endpoint as Prometheus would, only more often
        raise TimeoutError(f"--workers {workers} did not finish {count} records in 300 s")
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(120)
        os.unlink(config.name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--client", choices=["kafka-python", "confluent"], default="kafka-python")
    args = parser.parse_args()
    one: list[float] = []
    many: list[float] = []
    with bench_broker() as broker:
        base = bench_settings(broker.bootstrap)
        settings = base.model_copy(update={"kafka": base.kafka.model_copy(update={"client": args.client})})
        fill_topic(settings, args.messages)
        for _ in range(args.repeats):
            one.append(run_rate(settings, args.messages, 1))
            many.append(run_rate(settings, args.messages, args.workers))
    a, b = statistics.median(one), statistics.median(many)
    cores = os.cpu_count()
    report(
        "workers",
        [
            Figure(f"pass-through, 1 worker ({args.client})", a, "msg/s", spread(one)),
            Figure(
                f"pass-through, {args.workers} workers ({args.client})",
                b,
                "msg/s",
                f"{spread(many)}; {b / a:.2f}x one worker; {cores} cores, the broker on them too",
            ),
        ],
        {"one": one, "many": many, "cores": cores, "client": args.client},
    )


if __name__ == "__main__":
    main()
