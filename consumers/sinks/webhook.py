"""The webhook sink: each Vigil alert's JSON, as on the alerts topic, POSTed to a URL and signed.

Headers: ``X-Vigil-Alert-Id`` (the receiver's idempotency key: delivery is at least once, so
an alert may arrive twice), ``X-Vigil-Alert-State`` (``firing``/``resolved``) and, with a
``secret``, ``X-Vigil-Signature: t=<unix seconds>,v1=<hex>``, the HMAC-SHA256 of
``<unix seconds>.<body>`` under the secret. The time is signed so that a captured request
cannot be replayed later: receivers check it is recent (``verify_signature``).
Delivery, retries and the dead-letter path are ``HttpAlertSink``'s.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

from consumers.runtime.records import Output
from consumers.sinks.http import HttpAlertSink
from schemas.messages import Alert
from schemas.settings import WebhookSinkSettings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Vigil-Signature"
DEFAULT_TOLERANCE_S = 300


class WebhookSink(HttpAlertSink):
    """``Sink`` for the alerts topic's outputs, POSTed to ``settings.url``; see the module docstring."""

    name = "webhook"
    settings: WebhookSinkSettings

    def __init__(self, settings: WebhookSinkSettings, alerts_topic: str) -> None:
        super().__init__(settings, alerts_topic, settings.url)
        if settings.secret is None:
            log.warning("the webhook sink has no secret: alerts to %s go unsigned", settings.url)

    def request(self, alert: Alert, output: Output) -> tuple[bytes, dict[str, str]]:
        """The alert's own JSON, with its id, state and (given a secret) signature in headers."""
        headers = {"X-Vigil-Alert-Id": alert.alert_id, "X-Vigil-Alert-State": alert.state}
        if self.settings.secret is not None:
            secret = self.settings.secret.get_secret_value().encode()
            headers[SIGNATURE_HEADER] = signature(secret, output.value, int(time.time()))
        return output.value, headers


def signature(secret: bytes, body: bytes, at: int) -> str:
    """The ``X-Vigil-Signature`` value of ``body`` sent at unix time ``at``."""
    digest = hmac.new(secret, f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def verify_signature(
    secret: bytes,
    body: bytes,
    header: str,
    now: float | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """Whether ``header`` signs ``body`` under ``secret`` and was made within ``tolerance_s``
    of ``now``: what a receiver checks before trusting an alert."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        at = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - at) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, body, at), f"t={at},v1={fields.get('v1', '')}")
