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
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    Figure,
    bench_broker,
    bench_settings,
    check_below,
    report,
    require_peers,
    run_peer,
    spread,
)
from bench.foundation import fill_topic, pipeline_rate, raw_consume_rate
from schemas.settings import KafkaSettings


def quix_rate(bootstrap: str, source: str, sink: str, count: int) -> float:
    """The Quix Streams peer's messages per second, from its own process and environment."""
    return float(run_peer("quix_passthrough.py", bootstrap, source, sink, str(count))["rate"])


CLIENTS = ("kafka-python", "confluent")
DEFAULT_CLIENT = KafkaSettings.model_fields["client"].default


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    require_peers()
    raw: dict[str, list[float]] = {client: [] for client in CLIENTS}
    vigil: dict[str, list[float]] = {client: [] for client in CLIENTS}
    quix: list[float] = []
    with bench_broker() as broker:
        base = bench_settings(broker.bootstrap)
        fill_topic(base, args.messages)
        settings = {
            client: base.model_copy(update={"kafka": base.kafka.model_copy(update={"client": client})})
            for client in CLIENTS
        }

        def run_quix() -> None:
            quix.append(
                quix_rate(
                    broker.bootstrap, base.topics.sensors.name, base.topics.inferences.name, args.messages
                )
            )

        contenders: list[Callable[[], None]] = [run_quix]
        for client in CLIENTS:
            contenders.append(lambda c=client: raw[c].append(raw_consume_rate(settings[c], args.messages)))
            contenders.append(lambda c=client: vigil[c].append(pipeline_rate(settings[c], args.messages)))
        for round_ in range(args.repeats):
            # each round in another order: a machine whose load drifts favours no contender
            shift = round_ % len(contenders)
            for run in contenders[shift:] + contenders[:shift]:
                run()
            for client in CLIENTS:
                check_below(f"Vigil on {client}", vigil[client][-1], "its raw consume", raw[client][-1])
    q = statistics.median(quix)
    figures = []
    for client in CLIENTS:
        r, v = statistics.median(raw[client]), statistics.median(vigil[client])
        figures += [
            Figure(f"{client} raw consume", r, "msg/s", spread(raw[client])),
            Figure(
                f"Vigil pass-through on {client}" + (" (the default)" if client == DEFAULT_CLIENT else ""),
                v,
                "msg/s",
                f"{spread(vigil[client])}; {v / r:.2f}x its raw consume; "
                f"{statistics.median(x / y for x, y in zip(vigil[client], quix, strict=True)):.2f}x Quix "
                "Streams (median of the rounds' ratios)",
            ),
        ]
    figures.append(Figure("Quix Streams pass-through (confluent-kafka)", q, "msg/s", f"{spread(quix)}"))
    report("peers", figures, {"raw": raw, "vigil": vigil, "quix": quix})


if __name__ == "__main__":
    main()
