"""The Alertmanager sink: Vigil's alerts, firing and resolved, posted to Alertmanager's v2 API.

An alert's identity in Alertmanager is its label set, so the labels are what a firing alert
and its resolution share: ``alertname`` (``vigil_<kind>``), ``kind``, ``severity``,
``asset`` (the source id), ``site``, ``rule`` and ``label``. Everything that differs
between the two — the alert id, score, threshold, evidence, explanation — goes in the
annotations. A firing alert starts at its capture time and ends ``firing_for_s`` later
unless its resolution comes first; a resolution ends it at its own capture time (or now,
if that is ahead of our clock).

Deliveries run in order on the sink's own thread, each retried (bounded) with back-off; the
acknowledgement settles once Alertmanager answered 200, and only then may the input's
offset be committed. A delivery that still fails stops the runtime before that offset, so
a restart sends it again: at least once, never lost.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

from consumers.runtime.records import Output
from consumers.sinks.base import SinkDelivery
from schemas.messages import Alert
from schemas.settings import AlertmanagerSinkSettings

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0


class AlertDeliveryError(RuntimeError):
    """Alertmanager did not take an alert within the retries."""


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


class AlertmanagerSink:
    """``Sink`` for the alerts topic's outputs, delivered to Alertmanager; see the module docstring."""

    name = "alertmanager"

    def __init__(self, settings: AlertmanagerSinkSettings, alerts_topic: str) -> None:
        self.settings = settings
        self._alerts_topic = alerts_topic
        self._endpoint = settings.url.rstrip("/") + "/api/v2/alerts"
        self._pending: queue.Queue[tuple[Output, SinkDelivery] | None] = queue.Queue()
        self._idle = threading.Condition()
        self._unsettled = 0
        self._closed = False
        self._thread = threading.Thread(target=self._deliver_all, name="vigil-alertmanager", daemon=True)
        self._thread.start()

    def wants(self, output: Output) -> bool:
        """Alerts only."""
        return output.topic == self._alerts_topic

    def send(self, output: Output) -> SinkDelivery:
        """Queue ``output`` for delivery; the acknowledgement settles on Alertmanager's answer."""
        delivery = SinkDelivery()
        with self._idle:
            self._unsettled += 1
        self._pending.put((output, delivery))
        return delivery

    def flush(self, timeout_s: float) -> None:
        """Wait (bounded) until every alert sent so far was taken or failed for good."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._unsettled and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)

    def close(self, timeout_s: float) -> None:
        """Deliver what is queued within ``timeout_s``, then stop."""
        self.flush(timeout_s)
        self._closed = True
        self._pending.put(None)

    def _deliver_all(self) -> None:
        while (item := self._pending.get()) is not None:
            output, delivery = item
            try:
                self._deliver(output)
                delivery.succeed()
            except Exception as error:  # handed to the checkpoint, which stops the runtime
                delivery.fail(error)
            finally:
                with self._idle:
                    self._unsettled -= 1
                    self._idle.notify_all()

    def _deliver(self, output: Output) -> None:
        alert = Alert.from_json_bytes(output.value)
        body = json.dumps([alertmanager_alert(alert, self.settings)]).encode()
        backoff = BACKOFF_FIRST_S
        for attempt in range(self.settings.retries + 1):
            try:
                request = urllib.request.Request(
                    self._endpoint, data=body, headers={"Content-Type": "application/json"}, method="POST"
                )
                with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as reply:
                    if reply.status == 200:
                        return
                    problem = f"HTTP {reply.status}"
            except urllib.error.HTTPError as error:
                if 400 <= error.code < 500:  # refused as invalid: retrying cannot help
                    raise AlertDeliveryError(
                        f"Alertmanager refused alert {alert.alert_id}: HTTP {error.code}"
                    ) from error
                problem = f"HTTP {error.code}"
            except OSError as error:
                problem = repr(error)
            if attempt == self.settings.retries or self._closed:
                break
            log.warning(
                "Alertmanager did not take alert %s (%s); retrying in %.1fs", alert.alert_id, problem, backoff
            )
            time.sleep(backoff)  # back-off between bounded retries
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        raise AlertDeliveryError(
            f"Alertmanager at {self.settings.url} did not take alert {alert.alert_id} "
            f"after {self.settings.retries + 1} tries: {problem}"
        )
