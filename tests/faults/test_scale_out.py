"""Scale-out drill, scaled down: a sensor topic holding history that a previous member already
processed, live readings arriving, member A started, member B joining once A is ready.

What an operator needs from it: neither member exits; each restores its partitions' state
(A from the input, B from the changelog A wrote as it handed partitions over) while its loop
keeps going round (``/healthz`` 200, ``/readyz`` 503 "restoring ..."); the
group settles with the partitions shared; every live window is scored once, none lost."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from consumers.ops.topics import create_topics
from schemas.messages import InferenceResult
from schemas.settings import SensorModelBinding, SensorRule, SensorSettings
from tests.faults.drill import Member, committed_history, live_readings
from tests.kafka_helpers import committed_offsets, end_offsets, read_until_quiet, unique_settings, wait_for
from tests.sensor_fixtures import SensorModels

pytestmark = [pytest.mark.integration, pytest.mark.faults]

ASSETS = 48
HISTORY_S = 900
"""Event time of history before the members start; a rule that looks back this far makes the
whole of it part of the state to restore."""


def test_a_member_joining_a_group_with_history_restores_without_stopping_the_world(
    kafka_bootstrap: str, sensor_models: SensorModels, tmp_path: Path
) -> None:
    base = unique_settings(kafka_bootstrap, partitions=6)
    sensors = SensorSettings(
        registry=str(sensor_models.registry),
        models=[
            SensorModelBinding(assets="machine-*", sensor_kind="machine", model=sensor_models.autoencoder)
        ],
        rules=[SensorRule(name="overheat", kind="threshold", channel="temp_c", limit=1e6, for_s=HISTORY_S)],
    )
    settings = base.model_copy(update={"sensors": sensors})
    create_topics(settings)
    topic = settings.topics.sensors.name

    committed_history(settings, ASSETS, HISTORY_S)  # processed by a previous member

    stop, sent = threading.Event(), []
    load = threading.Thread(
        target=live_readings, args=(topic, kafka_bootstrap, ASSETS, stop, sent), daemon=True
    )
    load.start()
    members: list[Member] = []
    try:
        a = Member(settings, tmp_path, "a")
        members.append(a)
        try:
            wait_for(a.ready, 240, interval_s=0.2, what="member A ready")
        except TimeoutError as error:
            raise AssertionError(f"member A said {a.readiness[-3:]}") from error
        b = Member(settings, tmp_path, "b")
        members.append(b)
        wait_for(lambda: b.ready() and a.ready(), 120, interval_s=0.2, what="both members ready")
        settled = len(sent)
        wait_for(lambda: len(sent) >= settled + 3 * ASSETS, 30, what="live load on the settled group")
        stop.set()
        load.join(30)
        ends = end_offsets(kafka_bootstrap, topic)
        wait_for(
            lambda: committed_offsets(kafka_bootstrap, settings.kafka.group_id) == ends,
            120,
            what="every live reading committed",
        )
        assert all(m.process.poll() is None for m in members), "no member exits"
        restores = [m.restores() for m in members]
        outputs = [m.stop() for m in members]
    finally:
        stop.set()
        for member in members:
            if member.process.poll() is None:
                member.process.kill()
    assert [m.process.returncode for m in members] == [0, 0], outputs
    # A read its partitions back (no member handed them over); B took over partitions A handed
    # over through the changelog when it revoked them.
    assert restores[0].get("input", 0) >= 1 and restores[1].get("changelog", 0) >= 1, restores

    for member in members:
        restoring = [alive for status, body, alive in member.readiness if "restoring" in body]
        assert restoring, member.readiness[:20]
        assert set(restoring) == {200}, "the loop kept going round while it restored"

    results = [
        InferenceResult.from_json_bytes(r.value)
        for r in read_until_quiet(kafka_bootstrap, settings.topics.inferences.name)
    ]
    scored = [r for r in results if r.outcome == "scored"]
    repeated = [k for k, n in Counter((r.source_id, r.evidence.window_end) for r in scored).items() if n > 1]
    # At least once: a moved partition's work since its last commit can be scored again by its
    # next owner when kafka-python's coordinator starts the follow-up join before the revoking
    # member's commit lands (seen once in eight runs on a loaded machine: 3 windows). Bounded
    # by what one commit interval holds, never a partition's history.
    assert len(repeated) <= len(scored) // 50, f"{len(repeated)} windows scored twice: {repeated[:5]}"
    ends_by_asset: dict[str, list[datetime]] = defaultdict(list)
    for result in scored:
        assert result.evidence.window_end is not None
        ends_by_asset[result.source_id].append(result.evidence.window_end)
    live_by_asset: dict[str, int] = Counter(r.asset_id for r in sent)
    assert set(ends_by_asset) == set(live_by_asset)
    stride = timedelta(seconds=sensor_models.stride)
    for asset, window_ends in ends_by_asset.items():
        window_ends[:] = sorted(set(window_ends))  # repeats are counted above
        assert all(b - a == stride for a, b in pairwise(window_ends)), f"{asset}: a window lost"
        # every stride of live readings completed a window (the history made them full from the start)
        assert len(window_ends) >= live_by_asset[asset] // sensor_models.stride, asset
