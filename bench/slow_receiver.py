"""A webhook receiver that answers each request after ``--delay-s`` (10 s): how long the
pipeline's commits wait for it, with the default sink settings.

Twenty readings each raise one alert (one source: the worst case, its alerts in order on one
delivery worker); the bench times from the readings' arrival until every input offset is
committed, and counts the requests the receiver got and the alerts parked on the dead-letter
topic. Run it from another checkout for a same-machine baseline:

    python bench/slow_receiver.py
    PYTHONPATH=/tmp/before python bench/slow_receiver.py   # the code of another checkout
"""

from __future__ import annotations

import argparse
import http.server
import sys
import threading
import time
from pathlib import Path

# appended, not put first: PYTHONPATH can name an older checkout to measure the code before
sys.path.append(str(Path(__file__).resolve().parents[1]))

from bench.common import Figure, bench_broker, report
from consumers.ops.topics import create_topics
from consumers.runtime.loop import StreamRuntime
from consumers.runtime.observer import CountingObserver
from consumers.sinks.webhook import WebhookSink
from schemas.messages import SensorReading
from schemas.settings import SinksSettings, VigilSettings, WebhookSinkSettings
from tests import sample_messages as samples
from tests.integration.runtime_harness import running
from tests.integration.test_webhook import alerting_stage
from tests.kafka_helpers import committed_offsets, end_offsets, produce, unique_settings


def slow_receiver(delay_s: float) -> tuple[http.server.ThreadingHTTPServer, list[float]]:
    """A local receiver answering 200 after ``delay_s``; the times its requests arrived."""
    arrivals: list[float] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            arrivals.append(time.monotonic())
            time.sleep(delay_s)  # the slow receiver under test
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            """Quiet."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, arrivals


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--delay-s", type=float, default=10.0)
    parser.add_argument("--alerts", type=int, default=20)
    parser.add_argument("--deadline-s", type=float, default=900.0)
    args = parser.parse_args()
    server, arrivals = slow_receiver(args.delay_s)
    with bench_broker() as broker:
        base = unique_settings(broker.bootstrap)
        hook = WebhookSinkSettings(url=f"http://127.0.0.1:{server.server_address[1]}/hook")
        settings = VigilSettings.model_validate(
            {**base.model_dump(), "sinks": SinksSettings(webhook=hook).model_dump()}
        )
        create_topics(settings)
        sensors, alerts, group = (
            settings.topics.sensors.name,
            settings.topics.alerts.name,
            settings.kafka.group_id,
        )
        observer = CountingObserver()
        runtime = StreamRuntime(settings, {sensors: SensorReading}, alerting_stage(alerts), observer=observer)
        runtime.sinks.append(WebhookSink(hook, alerts))
        with running(runtime):
            started = time.monotonic()
            produce(
                broker.bootstrap,
                sensors,
                [(b"m", samples.reading(i).to_json_bytes()) for i in range(args.alerts)],
            )
            ends = end_offsets(broker.bootstrap, sensors)
            while any(
                committed_offsets(broker.bootstrap, group).get(tp, 0) < end for tp, end in ends.items()
            ):
                if time.monotonic() - started > args.deadline_s:
                    break
                time.sleep(0.5)  # sampling interval of the commit watch
            held_s = time.monotonic() - started
        parked = observer.dead_letters["undelivered_alert"]
    server.shutdown()
    report(
        "slow_receiver",
        [
            Figure(
                "inputs' commit held for",
                held_s,
                "s",
                f"{args.alerts} alerts, receiver {args.delay_s:g} s each",
            ),
            Figure("requests the receiver got", len(arrivals), "", f"{args.alerts} alerts"),
            Figure("alerts parked on the dead-letter topic", parked, "", ""),
        ],
        {"arguments": vars(args)},
    )


if __name__ == "__main__":
    main()
