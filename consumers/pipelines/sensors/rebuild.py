"""Rebuilding a partition's state when it is assigned: its recent history replayed through the
same admission and scoring as live readings, with a silent tally and the outputs discarded,
so the same input gives the same alerts whether or not the consumer restarted."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, datetime

from consumers.pipelines.sensors.admission import Admission
from consumers.pipelines.sensors.outputs import SensorOutputs
from consumers.pipelines.sensors.partition import PartitionState
from consumers.pipelines.sensors.tally import Tally
from consumers.pipelines.sensors.windows import WindowItem
from consumers.runtime.decoding import decode_record
from consumers.runtime.records import Failure, InboundRecord, Work
from schemas.messages import SensorReading

SCORE_EVERY = 1024
"""Windows gathered before they are scored in one go."""

ADMIT_EVERY = 512
"""Readings admitted together, as a poll batch would be."""


def rebuild(
    state: PartitionState,
    history: Iterable[InboundRecord],
    admission: Admission,
    outputs: SensorOutputs,
    max_message_bytes: int,
) -> int:
    """Replay ``history`` (in offset order) into ``state``; returns how many readings it held."""
    tally = Tally.silent()
    waiting: list[WindowItem] = []
    replayed = 0
    now = datetime.now(UTC)
    decoded = (
        Work(record, message, now)
        for record in history
        # a record that cannot be decoded went to the dead-letter topic the first time
        if not isinstance(message := decode_record(record, SensorReading, max_message_bytes), Failure)
    )
    while chunk := list(itertools.islice(decoded, ADMIT_EVERY)):
        for admitted in admission.admit(chunk, state, tally):
            if isinstance(admitted, Failure):
                continue
            replayed += 1
            waiting.extend(admitted.windows)
        if len(waiting) >= SCORE_EVERY:
            _score(waiting, outputs, tally)
            waiting = []
    _score(waiting, outputs, tally)
    return replayed


def _score(windows: list[WindowItem], outputs: SensorOutputs, tally: Tally) -> None:
    """Score ``windows`` at once, lane by lane, in this thread, feeding each asset's alert policy."""
    lanes = {id(item.lane): item.lane for item in windows}
    for lane in lanes.values():
        mine = [item for item in windows if item.lane is lane]
        for item, output in zip(mine, lane.score_now([item.window.values for item in mine]), strict=True):
            outputs.scored_window(item, output, tally)
