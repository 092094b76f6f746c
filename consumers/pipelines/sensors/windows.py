"""An asset's samples into its event-time window: put in order within the lateness bound,
late and duplicate samples named, windows made ready handed on with what scores them."""

from __future__ import annotations

from dataclasses import dataclass

from consumers.pipelines.sensors.intake import Sample
from consumers.pipelines.sensors.lanes import SensorLane
from consumers.pipelines.sensors.partition import PartitionState
from consumers.runtime.records import Work
from models.sensors.windowing import stagger, window_spec
from models.sensors.windows import AssetWindow, ReadyWindow


@dataclass(frozen=True, slots=True)
class WindowItem:
    """A ready window of one asset, waiting for its score: the reading that completed it, its
    index among that reading's windows, and the partition state its alerts belong to."""

    work: Work
    index: int
    asset_id: str
    lane: SensorLane[WindowItem]
    state: PartitionState
    window: ReadyWindow


@dataclass(frozen=True, slots=True)
class Placed:
    """Where a sample went: ``accepted``, ``late`` or ``duplicate``; the windows it made ready;
    whether it was put back in order (within the lateness bound)."""

    outcome: str
    ready: list[ReadyWindow]
    out_of_order: bool = False


def place(
    state: PartitionState,
    asset_id: str,
    lane: SensorLane[WindowItem] | None,
    sample: Sample,
    newest: float | None,
    lateness_s: float,
    staggered: bool = True,
) -> Placed:
    """Add ``sample`` to the asset's window (assets without a model keep none: a sample older
    than the asset's ``newest`` is then late, an equal one a duplicate); a new window takes the
    asset's own phase when ``staggered``."""
    if lane is None:
        if newest is None or sample.time_s > newest:
            return Placed("accepted", [])
        return Placed("duplicate" if sample.time_s == newest else "late", [])
    window = state.windows.get(asset_id)
    if window is None:
        phase = stagger(asset_id, lane.spec.stride) if staggered else 0
        window = state.windows[asset_id] = AssetWindow(window_spec(lane.spec, lateness_s, phase=phase))
    added = window.add(sample.time_s, [sample.values[c] for c in lane.channels])
    reordered = added.outcome == "accepted" and newest is not None and sample.time_s < newest
    return Placed(added.outcome, added.ready, reordered)
