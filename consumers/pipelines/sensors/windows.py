"""An asset's event-time window, and a window made ready, handed on with what scores it."""

from __future__ import annotations

from dataclasses import dataclass

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


def window_of(
    state: PartitionState,
    asset_id: str,
    lane: SensorLane[WindowItem],
    lateness_s: float,
    staggered: bool = True,
) -> AssetWindow:
    """The asset's window, made on its first sample; a new one takes the asset's own phase
    when ``staggered``."""
    window = state.windows.get(asset_id)
    if window is None:
        phase = stagger(asset_id, lane.spec.stride) if staggered else 0
        window = state.windows[asset_id] = AssetWindow(window_spec(lane.spec, lateness_s, phase=phase))
    return window
