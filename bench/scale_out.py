"""The scale-out drill at a city's size: a sensor topic holding an hour of committed history
(600 assets at 1 Hz, 6 partitions, 2.16 M readings), live readings at 600/s, member A started
and member B started ``--join-after`` seconds after A is ready, both as ``vigil run`` processes.

Reports per member the time to ready and whether it exited, how long the group took to settle
after B started, and the group's commit lag (records not yet committed) during the join,
sampled every second. ``--code DIR`` runs the members from another checkout (the code before a
change, for a same-machine baseline); ``--read-back-only`` leaves the changelog out, so every
moved partition is read back from the input.

    python bench/scale_out.py                      # full size
    python bench/scale_out.py --code /tmp/before   # the same drill on an older checkout
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Figure, bench_broker, bench_settings, report
from models.sensors.synthetic import normal_machines
from models.sensors.training import SensorTraining, train_sensor_model
from schemas.settings import SensorModelBinding, SensorSettings
from tests.faults.drill import Member, committed_history, live_readings
from tests.faults.processes import ROOT
from tests.kafka_helpers import committed_offsets, end_offsets


def group_lag(bootstrap: str, group: str, topic: str) -> int:
    """Records of ``topic`` the group has not committed."""
    ends = end_offsets(bootstrap, topic)
    committed = committed_offsets(bootstrap, group)
    return sum(end - committed.get(tp, 0) for tp, end in ends.items())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--assets", type=int, default=600)
    parser.add_argument("--history-s", type=int, default=3600)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--join-after", type=float, default=20.0)
    parser.add_argument("--settle-for", type=float, default=30.0, help="live load after the group settles")
    parser.add_argument("--deadline", type=float, default=600.0, help="give up on a member after this")
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout the members run from")
    parser.add_argument(
        "--read-back-only",
        action="store_true",
        help="no changelog topic: every moved partition is read back (the baseline of the hand-off)",
    )
    args = parser.parse_args()

    with bench_broker() as broker, tempfile.TemporaryDirectory() as scratch:
        registry = Path(scratch) / "registry"
        training = SensorTraining(window=32, stride=8, epochs=4, hidden=16, normal_fraction=1.0)
        train_sensor_model(normal_machines(4, 600), registry, "machine-ae", "1", training)
        base = bench_settings(broker.bootstrap, sensors=args.partitions)
        sensors = SensorSettings(
            registry=str(registry),
            models=[
                SensorModelBinding(
                    assets="machine-*", sensor_kind="machine", model="machine-ae", model_version="1"
                )
            ],
        )
        settings = base.model_copy(update={"sensors": sensors})
        if args.read_back_only:
            missing = settings.topics.sensor_state.model_copy(update={"name": "no-such-changelog"})
            topics = settings.topics.model_copy(update={"sensor_state": missing})
            settings = settings.model_copy(update={"topics": topics})
        topic, group = settings.topics.sensors.name, settings.kafka.group_id
        started = time.monotonic()
        committed_history(settings, args.assets, args.history_s)
        print(f"history: {args.assets * args.history_s:,} readings in {time.monotonic() - started:.0f}s")

        stop, sent = threading.Event(), []
        load = threading.Thread(
            target=live_readings, args=(topic, broker.bootstrap, args.assets, stop, sent), daemon=True
        )
        load.start()
        lags: list[tuple[float, int]] = []
        members: list[Member] = []
        ready_after: dict[str, float] = {}
        b_started = settled_after = None
        t0 = time.monotonic()
        try:
            a = Member(settings, Path(scratch), "a", root=args.code)
            members.append(a)
            while time.monotonic() - t0 < args.deadline:
                lags.append((time.monotonic() - t0, group_lag(broker.bootstrap, group, topic)))
                now = time.monotonic() - t0
                for name, member in zip("ab", members, strict=False):
                    if name not in ready_after and member.ready():
                        ready_after[name] = now - (0.0 if name == "a" else b_started or 0.0)
                if "a" in ready_after and b_started is None and now >= ready_after["a"] + args.join_after:
                    members.append(Member(settings, Path(scratch), "b", root=args.code))
                    b_started = now
                if b_started is not None and settled_after is None and all(m.ready() for m in members):
                    settled_after = now - b_started
                if settled_after is not None and now >= b_started + settled_after + args.settle_for:
                    break
                if any(m.process.poll() is not None for m in members):
                    break
                time.sleep(1.0)  # the lag sampling interval
        finally:
            stop.set()
            exits = []
            for member in members:
                exited = member.process.poll()
                output = member.stop() if exited is None else member.process.communicate()[0]
                exits.append((exited, output[-2000:]))
        join_lags = [lag for at, lag in lags if b_started is not None and at >= b_started]
        figures = [
            Figure("member A: start to ready", ready_after.get("a", float("nan")), "s", "history read back"),
            Figure("member B: start to ready", ready_after.get("b", float("nan")), "s", ""),
            Figure("group settled after B started", settled_after or float("nan"), "s", "both /readyz 200"),
            Figure("max commit lag during the join", max(join_lags, default=float("nan")), "records", ""),
            Figure(
                "commit lag at the end",
                lags[-1][1] if lags else float("nan"),
                "records",
                "live load 1 s/asset",
            ),
            Figure("members that exited before SIGTERM", sum(e is not None for e, _ in exits), "", "of 2"),
        ]
        report(
            "scale_out-read_back_only" if args.read_back_only else "scale_out",
            figures,
            {
                "arguments": {k: str(v) for k, v in vars(args).items()},
                "lag": lags,
                "live_sent": len(sent),
                "exits": [{"status": e, "output_tail": o} for e, o in exits],
                "readiness": [[(s, body) for s, body, _ in m.readiness[::10]] for m in members],
            },
        )


if __name__ == "__main__":
    main()
