"""What the HTTP alert sinks share: delivery workers, bounded retries within a budget, and a
dead-letter path.

Alerts are delivered by ``concurrency`` worker threads of the sink's own; one source's alerts
always go through the same worker, in order (a resolve never overtakes its firing). Each
alert is tried, retried with back-off, and settles once the receiver answered 2xx; only then
may the input's offset be committed. Every alert has a budget, ``deliver_within_s`` from the
moment it was handed to the sink: one not taken by then (the receiver slow, down, or alerts
queued behind it) is parked on the dead-letter topic as reason ``undelivered_alert``, stage
``sink:<name>``, with the input that raised it as its origin and the alert's JSON as its copy,
and its acknowledgement settles when Kafka has the dead letter. So a slow receiver costs its
own queue, never the partitions' progress for longer than the budget. A try that got no
answer within ``timeout_s`` keeps listening while the budget lasts: a late 2xx counts as
delivered, so an alert the receiver took is never also parked. While a receiver counts as
down (``down_for_s`` after a parking) each alert gets one try (the circuit half open).
Receivers should treat ``X-Vigil-Alert-Id`` as an idempotency key: a retry after a lost
answer delivers an alert twice (at least once, as everywhere in Vigil).

``vigil dlq redrive --reason undelivered_alert`` delivers the parked alerts again once the
receiver is back. Without a dead-letter path (a sink used on its own, as ``vigil dlq redrive``
does) a delivery that fails for good fails its acknowledgement instead.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from consumers.runtime.dead_letters import dead_letter_output
from consumers.runtime.records import Failure, InboundRecord, Output
from consumers.runtime.sink import Acknowledgement, OutputSink, SinkDelivery, sink_stage
from schemas.messages import Alert
from schemas.settings import HttpSinkSettings

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
UNDELIVERED = "undelivered_alert"
NO_ANSWER = "no answer within the try's timeout"

Park = Callable[[Output], Acknowledgement]
"""Sends a dead letter to Kafka (the checkpoint's Kafka sink) and acknowledges it."""


class AlertDeliveryError(RuntimeError):
    """The receiver did not take an alert within the retries, or refused it."""


class HttpAlertSink(OutputSink):
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
        self._queues: list[queue.SimpleQueue[tuple[Output, SinkDelivery, float] | None]] = [
            queue.SimpleQueue() for _ in range(settings.concurrency)
        ]
        self._tries = ThreadPoolExecutor(
            settings.concurrency * 4, thread_name_prefix=f"vigil-{self.name}-try"
        )
        self._idle = threading.Condition()
        self._unsettled = 0
        self._closed = False
        self._workers = [
            threading.Thread(target=self._deliver_all, args=(q,), name=f"vigil-{self.name}-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]
        for worker in self._workers:
            worker.start()

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
        """Queue ``output`` for delivery (never waits); the acknowledgement settles on the
        receiver's answer or, when it fails for good, on Kafka's acknowledgement of the dead letter."""
        delivery = SinkDelivery()
        with self._idle:
            self._unsettled += 1
        delivery.add_callback(self._settled)
        delivery.add_errback(self._settled)
        lane = zlib.crc32(output.key or b"") % len(self._queues)  # one source, one worker: in order
        self._queues[lane].put((output, delivery, time.monotonic()))
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
        for pending in self._queues:
            pending.put(None)
        self._tries.shutdown(wait=False, cancel_futures=True)

    def _settled(self, _: object) -> None:
        with self._idle:
            self._unsettled -= 1
            self._idle.notify_all()

    def _deliver_all(self, pending: queue.SimpleQueue[tuple[Output, SinkDelivery, float] | None]) -> None:
        while (item := pending.get()) is not None:
            output, delivery, handed_at = item
            try:
                self._deliver(output, handed_at + self.settings.deliver_within_s)
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

    def _deliver(self, output: Output, deadline: float) -> None:
        """Try, and retry, until the receiver takes the alert or the budget ends at ``deadline``."""
        alert = Alert.from_json_bytes(output.value)
        if time.monotonic() >= deadline:
            raise AlertDeliveryError(
                f"{self.name} at {self.endpoint} did not take alert {alert.alert_id} within "
                f"{self.settings.deliver_within_s:.0f}s: it waited behind other alerts"
            )
        body, headers = self.request(alert, output)
        post = urllib.request.Request(
            self.endpoint, data=body, headers={"Content-Type": "application/json", **headers}
        )
        retries = 0 if time.monotonic() < self._down_until else self.settings.retries
        backoff = BACKOFF_FIRST_S
        listening: set[Future[int]] = set()
        problem: str | None = "no try"
        for attempt in range(retries + 1):
            listening.add(self._tries.submit(self._post, post, deadline))
            problem = self._outcome(listening, time.monotonic() + self.settings.timeout_s, alert)
            if problem is None:
                self._down_until = 0.0
                return
            if attempt == retries or self._closed or time.monotonic() + backoff >= deadline:
                break
            log.warning(
                "%s did not take alert %s (%s); retrying in %.1fs",
                self.name,
                alert.alert_id,
                problem,
                backoff,
            )
            if self._outcome(listening, time.monotonic() + backoff, alert) is None:  # a late answer
                self._down_until = 0.0
                return
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        if listening and self._outcome(listening, deadline, alert) is None:  # the last word: late 2xx
            self._down_until = 0.0
            return
        raise AlertDeliveryError(
            f"{self.name} at {self.endpoint} did not take alert {alert.alert_id} "
            f"after {attempt + 1} {'try' if attempt == 0 else 'tries'}: {problem}"
        )

    def _outcome(self, listening: set[Future[int]], until: float, alert: Alert) -> str | None:
        """Wait until ``until`` for a try still listening to be taken (None) or to fail; what
        went wrong otherwise. Tries that ended are dropped from ``listening``."""
        problem = NO_ANSWER
        while listening and (left := until - time.monotonic()) > 0:
            done, _ = wait(listening, timeout=left, return_when=FIRST_COMPLETED)
            if not done:
                break
            for future in done:
                listening.discard(future)
                try:
                    status = future.result()
                except urllib.error.HTTPError as error:
                    if 400 <= error.code < 500 and error.code not in (408, 429):
                        raise AlertDeliveryError(
                            f"{self.name} at {self.endpoint} refused alert {alert.alert_id}: HTTP {error.code}"
                        ) from error
                    problem = f"HTTP {error.code}"
                except OSError as error:
                    problem = repr(error)
                else:
                    if 200 <= status < 300:
                        return None
                    problem = f"HTTP {status}"
            if problem != NO_ANSWER:
                return problem
        return problem

    def _post(self, post: urllib.request.Request, deadline: float) -> int:
        """One try, listening for its answer while the alert's budget lasts."""
        with urllib.request.urlopen(
            post, timeout=max(self.settings.timeout_s, deadline - time.monotonic())
        ) as reply:
            return int(reply.status)


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
