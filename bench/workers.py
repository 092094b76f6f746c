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
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Figure, bench_broker, bench_settings, report, scrape, spread, vigil_run
from bench.foundation import fill_topic
from schemas.settings import VigilSettings

ROOT = Path(__file__).resolve().parents[1]


def run_rate(settings: VigilSettings, count: int, workers: int) -> float:
    """Records per second through ``vigil run --workers workers``."""
    extra = ["--workers", str(workers)] if workers > 1 else []
    with vigil_run(settings, "workers", *extra) as port:
        deadline = time.monotonic() + 300
        started = None
        while time.monotonic() < deadline:
            totals = scrape(port, "vigil_messages_consumed_total", "vigil_messages_produced_total")
            now = time.monotonic()
            if totals["vigil_messages_consumed_total"] and started is None:
                started = now
            if totals["vigil_messages_produced_total"] >= count and started is not None:
                return count / (now - started)
            time.sleep(0.05)  # scraping the endpoint as Prometheus would, only more often
        raise TimeoutError(f"--workers {workers} did not finish {count} records in 300 s")


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
