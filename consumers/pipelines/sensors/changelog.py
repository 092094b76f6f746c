"""The sensor state changelog: a partition's state handed to its next owner through a compacted topic.

When a partition leaves a member cleanly (revoked in a rebalance, or at shutdown) with
nothing of it in flight and its offsets committed, its state is written to
``topics.sensor_state``: one record per asset (key ``<topic>/<partition>/<asset>``: the
window, what the rules and alert policies remember of the asset), then a marker (key
``<topic>/<partition>``) naming the offset the state is exact at (every record below it
complete, its outputs acknowledged), the offset the member last committed (lower when that
commit lost a race with the rebalance), how many asset records belong to it, and a
fingerprint of what shaped the state (models, their versions and rules, the sensor settings). Records of one hand-off share its id, so records left over from
an earlier hand-off (an asset gone since) are never taken for current ones.

The next owner reads the changelog partition (``read_handoff``) and installs that state when
the fingerprint matches and it resumes either exactly at the state's offset, or at the
offset the old owner last committed: the records between were processed and their outputs
acknowledged by the old owner, so the new one completes them without processing them again
(nothing is repeated, where a read-back would repeat them). Anything else (a crash, a member
that processed further without handing off, offsets reset by an operator, other models or
settings, a hand-off cut short) falls back to the bounded read-back of the input, which gives
the same state from the readings themselves.

The changelog has as many partitions as the sensor topic (``vigil topics create``); input
partition ``p`` goes to changelog partition ``p`` modulo its partition count.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from consumers.pipelines.sensors.history import Progress, read_whole
from consumers.pipelines.sensors.partition import PartitionState
from consumers.runtime.records import Output, Settled
from models.sensors.windows import AssetWindow
from schemas.settings import KafkaSettings

FORMAT = 1
"""The layout of the records; a marker of another layout is not used."""

STALL_S = 15.0
"""A changelog read that gets no record this long falls back to the read-back."""

PartitionKey = tuple[str, int]


def fingerprint(parts: Iterable[Any]) -> str:
    """A digest of what shaped a state (models, versions, rules, settings): a state is installed
    only under the same."""
    return hashlib.sha256(json.dumps(list(parts), sort_keys=True, default=repr).encode()).hexdigest()[:32]


def marker_key(key: PartitionKey) -> str:
    """The marker's key of an input partition: ``<topic>/<partition>``."""
    return f"{key[0]}/{key[1]}"


def handoff_outputs(
    changelog: str,
    changelog_partitions: int,
    key: PartitionKey,
    settled: Settled,
    state: PartitionState,
    shaped_by: str,
) -> list[Output]:
    """The records that hand ``state`` (exact where ``settled`` says) over: assets, then the marker."""
    handoff = uuid.uuid4().hex
    partition = key[1] % changelog_partitions
    prefix = marker_key(key)
    rules = state.rules.snapshot()
    policies = {
        **{f"model:{name}": policy.snapshot() for name, policy in state.model_policies.items()},
        **{f"rule:{name}": policy.snapshot() for name, policy in state.rule_policies.items()},
    }
    assets = set(state.windows) | set(rules) | {a for tracks in policies.values() for a in tracks}
    outputs = []
    for asset in sorted(assets):
        window = state.windows.get(asset)
        value = {
            "handoff": handoff,
            "asset": asset,
            "window": None if window is None else window.snapshot(),
            "rules": rules.get(asset),
            "policies": {name: tracks[asset] for name, tracks in policies.items() if asset in tracks},
        }
        outputs.append(Output(changelog, f"{prefix}/{asset}".encode(), _json(value), (), partition))
    marker = {
        "format": FORMAT,
        "handoff": handoff,
        "offset": settled.exact,
        "committed": settled.committed,
        "assets": len(assets),
        "shaped_by": shaped_by,
        "clock_s": state.clock_s,
        "stale_checked": state.stale_checked,
    }
    outputs.append(Output(changelog, prefix.encode(), _json(marker), (), partition))
    return outputs


@dataclass
class Handoff:
    """The latest hand-off of a partition found in the changelog: its marker and asset records."""

    marker: dict[str, Any] | None = None
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, key: PartitionKey, records: Iterable[tuple[bytes | None, bytes | None]]) -> Handoff:
        """The latest hand-off of input partition ``key`` among changelog ``records`` (key, value),
        in offset order: a later record of a key replaces an earlier one, a tombstone removes it."""
        prefix, found = marker_key(key), cls()
        for record_key, value in records:
            name = record_key.decode("utf-8", "replace") if record_key else ""
            if name == prefix:
                found.marker = _loaded(value)
            elif name.startswith(prefix + "/"):
                asset = _loaded(value)
                if asset is None:
                    found.assets.pop(name, None)
                else:
                    found.assets[name] = asset
        return found

    def state_at(
        self, resume: int, shaped_by: str, fresh: PartitionState
    ) -> tuple[PartitionState, int] | None:
        """``fresh`` filled with the handed-over state, and the offset it is exact at, when a
        partition resuming at ``resume`` may take it under the same ``shaped_by`` (see the
        module docstring); None otherwise (the caller reads the input back instead)."""
        marker = self.marker
        if marker is None or marker.get("format") != FORMAT or marker.get("shaped_by") != shaped_by:
            return None
        exact = marker.get("offset")
        if not isinstance(exact, int) or resume not in (exact, marker.get("committed")) or resume > exact:
            return None
        mine = [asset for asset in self.assets.values() if asset.get("handoff") == marker["handoff"]]
        if len(mine) != marker["assets"]:
            return None  # the hand-off was cut short
        fresh.clock_s = float(marker["clock_s"])
        fresh.stale_checked = marker["stale_checked"]
        for asset in mine:
            asset_id = asset["asset"]
            if asset["window"] is not None:
                fresh.windows[asset_id] = AssetWindow.restore(asset["window"])
            if asset["rules"] is not None:
                fresh.rules.restore(asset_id, asset["rules"])
            for name, rows in asset["policies"].items():
                kind, _, policy_name = name.partition(":")
                policy = (fresh.model_policies if kind == "model" else fresh.rule_policies).get(policy_name)
                if policy is not None:
                    policy.restore(asset_id, rows)
        return fresh, exact


def read_handoff(
    kafka: KafkaSettings,
    changelog: str,
    changelog_partitions: int,
    key: PartitionKey,
    progress: Progress | None = None,
) -> Handoff:
    """The latest hand-off of input partition ``key`` in the changelog (empty when there is none)."""
    records = read_whole(kafka, changelog, key[1] % changelog_partitions, STALL_S, progress)
    return Handoff.of(key, ((record.key, record.value) for record in records))


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _loaded(value: bytes | None) -> dict[str, Any] | None:
    """A record's JSON object; None for a tombstone or a record that is not one."""
    if value is None:
        return None
    try:
        loaded = json.loads(value)
    except ValueError:
        return None
    return loaded if isinstance(loaded, dict) else None
