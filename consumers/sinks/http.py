"""What the HTTP alert sinks share: a delivery thread, bounded retries, and a dead-letter path.

Alerts are delivered in order on the sink's own thread, each retried (bounded) with back-off;
the acknowledgement settles once the receiver answered 2xx, and only then may the input's
offset be committed. An alert the receiver still has not taken after the retries (or
refused outright with a 4xx) is parked on the dead-letter topic as reason
``undelivered_alert``, stage ``sink:<name>``, with the input that raised it as its origin and
the alert's JSON as its copy; its acknowledgement settles when Kafka has the dead letter.
Nothing is lost, and the pipeline keeps going: ``vigil dlq redrive --reason
undelivered_alert`` delivers the parked alerts again once the receiver is back. While a
receiver counts as down (``down_for_s`` after a parking) each alert gets one try.

Without a dead-letter path (a sink used on its own, as ``vigil dlq redrive`` does) a delivery
that fails for good fails its acknowledgement instead.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from consumers.runtime.dead_letters import dead_letter_output
from consumers.runtime.records import Failure, InboundRecord, Output
from consumers.sinks.base import Acknowledgement, SinkDelivery, sink_stage
from schemas.messages import Alert
from schemas.settings import HttpSinkSettings

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
UNDELIVERED = "undelivered_alert"

Park = Callable[[Output], Acknowledgement]
"""Sends a dead letter to Kafka (the checkpoint's Kafka sink) and acknowledges it."""


class AlertDeliveryError(RuntimeError):
    """The receiver did not take an alert within the retries, or refused it."""


class HttpAlertSink:
    """Base of the ``Sink`` s that POST alerts to an HTTP receiver; see the module docstring.

    A subclass names itself and says what to post for an alert (``request``).
    """

    name = "http"

    def __init__(self, settings: HttpSinkSettings, alerts_topic: str, endpoint: str) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self._alerts_topic = alerts_topic
        self._park: Park | None = None
        self._dlq_topic = ""
        self._dlq_limit = 0
        self._down_until = 0.0
        self._pending: queue.Queue[tuple[Output, SinkDelivery] | None] = queue.Queue()
        self._idle = threading.Condition()
        self._unsettled = 0
        self._closed = False
        self._thread = threading.Thread(target=self._deliver_all, name=f"vigil-{self.name}", daemon=True)
        self._thread.start()

    def request(self, alert: Alert, output: Output) -> tuple[bytes, dict[str, str]]:
        """The body and headers to POST for ``alert`` (``output`` is its Kafka record)."""
        raise NotImplementedError

    def park_in(self, park: Park, dlq_topic: str, record_limit: int) -> None:
        """Park alerts that cannot be delivered as dead letters through ``park``."""
        self._park, self._dlq_topic, self._dlq_limit = park, dlq_topic, record_limit

    def wants(self, output: Output) -> bool:
        """Alerts only."""
        return output.topic == self._alerts_topic

    def send(self, output: Output) -> SinkDelivery:
        """Queue ``output`` for delivery; the acknowledgement settles on the receiver's answer
        (or, when it fails for good, on Kafka's acknowledgement of the dead letter)."""
        delivery = SinkDelivery()
        with self._idle:
            self._unsettled += 1
        delivery.add_callback(self._settled)
        delivery.add_errback(self._settled)
        self._pending.put((output, delivery))
        return delivery

    def flush(self, timeout_s: float) -> None:
        """Wait (bounded) until every alert sent so far was taken, parked or failed."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._unsettled and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)

    def close(self, timeout_s: float) -> None:
        """Deliver what is queued within ``timeout_s``, then stop (what is left gets one try)."""
        self.flush(timeout_s)
        self._closed = True
        self._pending.put(None)

    def _settled(self, _: object) -> None:
        with self._idle:
            self._unsettled -= 1
            self._idle.notify_all()

    def _deliver_all(self) -> None:
        while (item := self._pending.get()) is not None:
            output, delivery = item
            try:
                self._deliver(output)
                delivery.succeed()
            except Exception as error:
                self._give_up(output, delivery, error)

    def _give_up(self, output: Output, delivery: SinkDelivery, error: Exception) -> None:
        if self._park is None:
            delivery.fail(error)  # handed to whoever sent it (the checkpoint stops the runtime)
            return
        self._down_until = time.monotonic() + self.settings.down_for_s
        try:
            letter = undelivered_alert_letter(output, self.name, error, self._dlq_topic, self._dlq_limit)
            log.error("%s; parked on %s for a redrive", error, self._dlq_topic)
            parked = self._park(letter)
        except Exception as park_error:
            delivery.fail(park_error)
            return
        parked.add_callback(lambda _: delivery.succeed())
        parked.add_errback(delivery.fail)

    def _deliver(self, output: Output) -> None:
        alert = Alert.from_json_bytes(output.value)
        body, headers = self.request(alert, output)
        retries = 0 if time.monotonic() < self._down_until else self.settings.retries
        backoff = BACKOFF_FIRST_S
        for attempt in range(retries + 1):
            try:
                post = urllib.request.Request(
                    self.endpoint, data=body, headers={"Content-Type": "application/json", **headers}
                )
                with urllib.request.urlopen(post, timeout=self.settings.timeout_s) as reply:
                    if 200 <= reply.status < 300:
                        self._down_until = 0.0
                        return
                    problem = f"HTTP {reply.status}"
            except urllib.error.HTTPError as error:
                if 400 <= error.code < 500 and error.code not in (408, 429):
                    raise AlertDeliveryError(
                        f"{self.name} at {self.endpoint} refused alert {alert.alert_id}: HTTP {error.code}"
                    ) from error
                problem = f"HTTP {error.code}"
            except OSError as error:
                problem = repr(error)
            if attempt == retries or self._closed:
                break
            log.warning(
                "%s did not take alert %s (%s); retrying in %.1fs",
                self.name,
                alert.alert_id,
                problem,
                backoff,
            )
            time.sleep(backoff)  # back-off between bounded retries
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        raise AlertDeliveryError(
            f"{self.name} at {self.endpoint} did not take alert {alert.alert_id} "
            f"after {attempt + 1} {'try' if attempt == 0 else 'tries'}: {problem}"
        )


def undelivered_alert_letter(
    output: Output, sink_name: str, error: BaseException, dlq_topic: str, record_limit: int
) -> Output:
    """The dead letter of an alert ``sink_name`` could not deliver: its origin is the input that
    raised the alert, its copy the alert's own record."""
    alert = Alert.from_json_bytes(output.value)
    raised_by = InboundRecord(
        topic=alert.evidence.topic,
        partition=alert.evidence.partition,
        offset=alert.evidence.offset,
        key=output.key,
        value=output.value,
        headers=output.headers,
    )
    failure = Failure.from_exception(UNDELIVERED, sink_stage(sink_name), error)
    return dead_letter_output(raised_by, failure, dlq_topic, record_limit)
