"""Peers, same run: Vigil's pass-through against a Quix Streams app doing the same work.

Same broker, same 50,000 readings on the same 6-partition topic, each reader in a fresh
group from the earliest offset: kafka-python's raw consume (the ceiling), Vigil's
pass-through (validate, produce a result, commit), and the Quix Streams peer
(``quix_passthrough.py``, validating with the same pydantic model and producing the same
result record, at-least-once). Runs alternate; each figure is the median of the repeats
with their range. ``make bench-peers`` builds the peer's environment (``.venv-quix``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Figure, bench_broker, bench_settings, report
from bench.foundation import fill_topic, pipeline_rate, raw_consume_rate

PEER_PYTHON = Path(__file__).resolve().parents[1] / ".venv-quix" / "bin" / "python"


def quix_rate(bootstrap: str, source: str, sink: str, count: int) -> float:
    """The Quix Streams peer's messages per second, from its own process and environment."""
    done = subprocess.run(
        [
            str(PEER_PYTHON),
            str(Path(__file__).with_name("quix_passthrough.py")),
            bootstrap,
            source,
            sink,
            str(count),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["rate"])


def spread(values: list[float]) -> str:
    """Median, and the runs."""
    return f"median of {', '.join(f'{v:,.0f}' for v in values)}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not PEER_PYTHON.exists():
        sys.exit(f"no peer environment at {PEER_PYTHON.parent.parent}: run `make bench-peers`")
    raw: list[float] = []
    vigil: list[float] = []
    quix: list[float] = []
    with bench_broker() as broker:
        settings = bench_settings(broker.bootstrap)
        fill_topic(settings, args.messages)
        for _ in range(args.repeats):
            raw.append(raw_consume_rate(settings, args.messages))
            vigil.append(pipeline_rate(settings, args.messages))
            quix.append(
                quix_rate(
                    broker.bootstrap,
                    settings.topics.sensors.name,
                    settings.topics.inferences.name,
                    args.messages,
                )
            )
    r, v, q = (statistics.median(x) for x in (raw, vigil, quix))
    report(
        "peers",
        [
            Figure("kafka-python raw consume", r, "msg/s", spread(raw)),
            Figure("Vigil pass-through", v, "msg/s", f"{spread(vigil)}; {v / r:.2f}x raw consume"),
            Figure("Quix Streams pass-through", q, "msg/s", f"{spread(quix)}; {q / r:.2f}x raw consume"),
            Figure("Vigil / Quix Streams", v / q, "x", "medians, same run"),
        ],
        {"raw": raw, "vigil": vigil, "quix": quix},
    )


if __name__ == "__main__":
    main()
