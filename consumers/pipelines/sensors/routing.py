"""Which model lane and which value rules watch an asset of a sensor kind: the first model
binding whose patterns match, and every rule (but ``stale``) that applies; matched once per
(asset, kind)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Generic, TypeVar

from schemas.settings import SensorModelBinding, SensorRule

L = TypeVar("L")


@dataclass(frozen=True)
class Route(Generic[L]):
    """The lane that scores an asset's windows (None: rules only), and its value rules."""

    lane: L | None
    rules: list[SensorRule] = field(default_factory=list)
    verdicts: dict[tuple[str, ...], object] = field(default_factory=dict, compare=False, repr=False)
    """What the channel check said of each set of channel names seen (kept by admission)."""


class Router(Generic[L]):
    """Routes (asset, sensor kind) to a lane of ``lanes`` (one per binding, in order) and rules."""

    def __init__(
        self, bindings: Sequence[SensorModelBinding], lanes: Sequence[L], rules: Sequence[SensorRule]
    ) -> None:
        self._bound = list(zip(bindings, lanes, strict=True))
        self._value_rules = [rule for rule in rules if rule.kind != "stale"]
        self._routes: dict[tuple[str, str], Route[L]] = {}

    def rebind(self, old: L, new: L) -> None:
        """Route to ``new`` wherever ``old`` was routed to (a hot reload)."""
        self._bound = [(binding, new if lane is old else lane) for binding, lane in self._bound]
        for key, route in list(self._routes.items()):  # a restore may route new assets meanwhile
            if route.lane is old:
                self._routes[key] = Route(new, route.rules)

    def route(self, asset_id: str, sensor_kind: str) -> Route[L]:
        """The route of ``asset_id`` of ``sensor_kind``, matched on first use."""
        key = (asset_id, sensor_kind)
        route = self._routes.get(key)
        if route is None:
            lane = next(
                (
                    lane
                    for binding, lane in self._bound
                    if fnmatchcase(asset_id, binding.assets) and fnmatchcase(sensor_kind, binding.sensor_kind)
                ),
                None,
            )
            rules = [rule for rule in self._value_rules if rule.applies(asset_id, sensor_kind)]
            route = self._routes[key] = Route(lane, rules)
        return route
