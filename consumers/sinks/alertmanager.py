"""The Alertmanager sink: Vigil's alerts, firing and resolved, posted to Alertmanager's v2 API.

An alert's identity in Alertmanager is its label set, so the labels are what a firing alert
and its resolution share: ``alertname`` (``vigil_<kind>``), ``kind``, ``severity``,
``asset`` (the source id), ``site``, ``rule`` and ``label``. Everything that differs
between the two — the alert id, score, threshold, evidence, explanation — goes in the
annotations. A firing alert starts at its capture time and ends ``firing_for_s`` later
unless its resolution comes first; a resolution ends it at its own capture time (or now,
if that is ahead of our clock).

Delivery, retries and the dead-letter path of alerts Alertmanager does not take are
``HttpAlertSink``'s (``consumers/sinks/http.py``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from consumers.runtime.records import Output
from consumers.sinks.http import HttpAlertSink
from schemas.messages import Alert
from schemas.settings import AlertmanagerSinkSettings


def alertmanager_alert(alert: Alert, settings: AlertmanagerSinkSettings) -> dict[str, Any]:
    """The v2 API's postable alert for ``alert``."""
    labels = {
        "alertname": f"vigil_{alert.kind}",
        "kind": alert.kind,
        "severity": alert.severity,
        "asset": alert.source_id,
        "rule": alert.rule,
        "label": alert.label,
    }
    if alert.site:
        labels["site"] = alert.site
    evidence = alert.evidence
    annotations = {
        "summary": alert.message
        or f"{alert.kind} on {alert.source_id}: {alert.label} score {alert.score:.3g} (threshold {alert.threshold:.3g})",
        "alert_id": alert.alert_id,
        "score": f"{alert.score:.6g}",
        "threshold": f"{alert.threshold:.6g}",
        "evidence": f"{evidence.topic}[{evidence.partition}]@{evidence.offset}",
    }
    if evidence.frame_uri:
        annotations["frame_uri"] = evidence.frame_uri
    if alert.explanation:
        annotations["explanation"] = json.dumps(alert.explanation, sort_keys=True)
    if alert.model is not None:
        annotations["model"] = f"{alert.model.name}:{alert.model.version}"
    at = alert.timestamps.captured_at
    posted: dict[str, Any] = {"labels": labels, "annotations": annotations}
    if alert.state == "firing":
        posted["startsAt"] = at.isoformat()
        posted["endsAt"] = (at + timedelta(seconds=settings.firing_for_s)).isoformat()
    else:
        # Alertmanager keeps a later end from the firing alert unless this one has ended
        # already: a source clock ahead of ours must not keep the alert open.
        ended = min(at, datetime.now(UTC))
        posted["startsAt"] = ended.isoformat()
        posted["endsAt"] = ended.isoformat()
    if settings.link:
        posted["generatorURL"] = settings.link.replace("{alert_id}", alert.alert_id)
    return posted


class AlertmanagerSink(HttpAlertSink):
    """``Sink`` for the alerts topic's outputs, delivered to Alertmanager; see the module docstring."""

    name = "alertmanager"
    settings: AlertmanagerSinkSettings

    def __init__(self, settings: AlertmanagerSinkSettings, alerts_topic: str) -> None:
        super().__init__(settings, alerts_topic, settings.url.rstrip("/") + "/api/v2/alerts")

    def request(self, alert: Alert, output: Output) -> tuple[bytes, dict[str, str]]:
        """A list of one postable alert."""
        return json.dumps([alertmanager_alert(alert, self.settings)]).encode(), {}
