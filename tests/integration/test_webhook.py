"""The webhook sink against a local HTTP receiver, and undeliverable alerts through a real broker."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from consumers.ops.redrive import redrive
from consumers.ops.topics import create_topics
from consumers.runtime.dead_letters import original_value
from consumers.runtime.loop import StreamRuntime
from consumers.runtime.observer import CountingObserver
from consumers.runtime.records import Outcome, Output, Work
from consumers.runtime.sink import SinkDelivery
from consumers.runtime.stage import SyncStage
from consumers.sinks.http import AlertDeliveryError
from consumers.sinks.webhook import SIGNATURE_HEADER, WebhookSink, verify_signature
from schemas.common import Evidence
from schemas.messages import Alert, AlertTimestamps, DeadLetter, SensorReading
from schemas.settings import SinksSettings, VigilSettings, WebhookSinkSettings
from tests import sample_messages as samples
from tests.http_helpers import free_port
from tests.integration.runtime_harness import running
from tests.kafka_helpers import committed_offsets, produce, read_all, unique_settings, wait_for

ALERTS = "vigil.alerts"
SECRET = "s3cret-for-tests"

pytestmark = pytest.mark.integration


class Receiver:
    """A local webhook receiver: records every request and answers from a script (then 200)."""

    def __init__(self, port: int, answers: Sequence[int] = (), delay_s: float = 0.0) -> None:
        self.port = port
        self.answers = list(answers)
        self.delay_s = delay_s
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.requests.append((dict(self.headers.items()), body))
                    status = receiver.answers.pop(0) if receiver.answers else 200
                time.sleep(receiver.delay_s)  # a slow receiver, answering late
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                """Quiet."""

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/vigil"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def receiving(
    port: int | None = None, answers: Sequence[int] = (), delay_s: float = 0.0
) -> Iterator[Receiver]:
    receiver = Receiver(port or free_port(), answers, delay_s)
    try:
        yield receiver
    finally:
        receiver.stop()


def _alert_output(alert_id: str = "a-1") -> Output:
    alert = samples.alert().model_copy(update={"alert_id": alert_id})
    return Output(ALERTS, alert.source_id.encode(), alert.to_json_bytes())


def _delivered(sink: WebhookSink, output: Output) -> BaseException | None:
    delivery = sink.send(output)
    assert delivery.wait(60), "the delivery never settled"
    return delivery.error


def test_an_alert_reaches_the_webhook_signed() -> None:
    with receiving() as receiver:
        sink = WebhookSink(WebhookSinkSettings(url=receiver.url, secret=SecretStr(SECRET)), ALERTS)
        try:
            output = _alert_output()
            assert _delivered(sink, output) is None
        finally:
            sink.close(5)
    [(headers, body)] = receiver.requests
    assert body == output.value and Alert.from_json_bytes(body).alert_id == "a-1"
    assert headers["X-Vigil-Alert-Id"] == "a-1" and headers["X-Vigil-Alert-State"] == "firing"
    signed = headers[SIGNATURE_HEADER]
    assert verify_signature(SECRET.encode(), body, signed)
    assert not verify_signature(b"another secret", body, signed)
    assert not verify_signature(SECRET.encode(), body.replace(b"crack", b"crock"), signed)
    at = int(signed.split(",")[0].removeprefix("t="))
    assert not verify_signature(SECRET.encode(), body, signed, now=at + 3600), "a replayed request passed"


def test_retries_are_bounded_and_a_receiver_that_recovers_gets_the_alert_once() -> None:
    with receiving(answers=[503, 500]) as receiver:
        sink = WebhookSink(WebhookSinkSettings(url=receiver.url, retries=2), ALERTS)
        try:
            assert _delivered(sink, _alert_output()) is None
        finally:
            sink.close(5)
    assert len(receiver.requests) == 3

    with receiving(answers=[503] * 10) as receiver:
        sink = WebhookSink(WebhookSinkSettings(url=receiver.url, retries=2), ALERTS)
        try:
            error = _delivered(sink, _alert_output())
        finally:
            sink.close(0)
    assert isinstance(error, AlertDeliveryError) and "after 3 tries: HTTP 503" in str(error)
    assert len(receiver.requests) == 3, "more tries than the bound"


def test_an_alert_the_receiver_refuses_is_not_retried() -> None:
    with receiving(answers=[400]) as receiver:
        sink = WebhookSink(WebhookSinkSettings(url=receiver.url, retries=3), ALERTS)
        try:
            error = _delivered(sink, _alert_output())
        finally:
            sink.close(0)
    assert isinstance(error, AlertDeliveryError) and "refused" in str(error) and "HTTP 400" in str(error)
    assert len(receiver.requests) == 1


def alerting_stage(alerts_topic: str) -> SyncStage:
    """One firing alert per reading, its evidence the reading's record: what the sink path needs
    from a pipeline, without a model."""

    def process(batch: Sequence[Work]) -> list[Outcome]:
        outcomes = []
        for work in batch:
            record, now = work.record, datetime.now(UTC)
            alert = samples.alert().model_copy(
                update={
                    "alert_id": f"a-{record.partition}-{record.offset}",
                    "evidence": Evidence(
                        topic=record.topic, partition=record.partition, offset=record.offset
                    ),
                    "timestamps": AlertTimestamps(
                        captured_at=now, received_at=now, inferred_at=now, published_at=now
                    ),
                }
            )
            outcomes.append(Outcome(record, (Output(alerts_topic, b"cam-1", alert.to_json_bytes()),)))
        return outcomes

    return SyncStage("alerting", process)


def alerting_runtime(
    bootstrap: str, base: VigilSettings, hook: WebhookSinkSettings, readings: int
) -> tuple[VigilSettings, StreamRuntime]:
    """Settings with ``hook`` as the webhook sink, and a runtime raising one alert per reading
    through it, ``readings`` readings already on its input topic."""
    settings = VigilSettings.model_validate(
        {**base.model_dump(), "sinks": SinksSettings(webhook=hook).model_dump()}
    )
    create_topics(settings)
    sensors, alerts = settings.topics.sensors.name, settings.topics.alerts.name
    runtime = StreamRuntime(
        settings, {sensors: SensorReading}, alerting_stage(alerts), observer=CountingObserver()
    )
    runtime.sinks.append(WebhookSink(hook, alerts))
    produce(bootstrap, sensors, [(b"m", samples.reading(i).to_json_bytes()) for i in range(readings)])
    return settings, runtime


def test_a_receiver_that_is_down_parks_alerts_on_the_dlq_and_a_redrive_delivers_them(
    kafka_bootstrap: str,
) -> None:
    port = free_port()  # nobody listens here until the redrive
    base = unique_settings(kafka_bootstrap)
    hook = WebhookSinkSettings(
        url=f"http://127.0.0.1:{port}/hooks/vigil", retries=1, secret=SecretStr(SECRET)
    )
    settings, runtime = alerting_runtime(kafka_bootstrap, base, hook, 6)
    sensors, alerts = settings.topics.sensors.name, settings.topics.alerts.name
    with running(runtime):
        wait_for(
            lambda: sum(committed_offsets(kafka_bootstrap, settings.kafka.group_id).values()) == 6,
            120,
            what="every reading committed although the receiver is down",
        )
    raised = {Alert.from_json_bytes(r.value).alert_id for r in read_all(kafka_bootstrap, alerts, 6)}
    letters = [
        DeadLetter.from_json_bytes(r.value) for r in read_all(kafka_bootstrap, settings.topics.dlq.name, 6)
    ]
    assert {(d.reason, d.stage, d.origin_topic) for d in letters} == {
        ("undelivered_alert", "sink:webhook", sensors)
    }
    assert sorted(d.origin_offset for d in letters) == list(range(6))
    parked = {Alert.from_json_bytes(original_value(d) or b"").alert_id for d in letters}
    assert parked == raised, "an alert was lost between the pipeline and the dead-letter topic"
    assert runtime.observer.dead_letters["undelivered_alert"] == 6  # type: ignore[attr-defined]

    with receiving(port) as receiver:
        report = redrive(settings, reasons=["undelivered_alert"])
        assert report.published[("sink:webhook", "undelivered_alert")] == 6 and not report.skipped
        # the redrive log: a second redrive delivers nothing twice, a dry run says so
        again = redrive(settings, reasons=["undelivered_alert"])
        assert not again.published and len(again.already) == 6
        dry = redrive(settings, reasons=["undelivered_alert"], dry_run=True, again=True)
        assert dry.published[("sink:webhook", "undelivered_alert")] == 6
    delivered = [Alert.from_json_bytes(body).alert_id for _, body in receiver.requests]
    assert sorted(delivered) == sorted(raised), "each parked alert delivered once"
    assert all(verify_signature(SECRET.encode(), body, h[SIGNATURE_HEADER]) for h, body in receiver.requests)


def test_a_late_answer_after_a_tries_timeout_counts_as_delivered_and_nothing_is_parked() -> None:
    parked: list[Output] = []

    def park(letter: Output) -> SinkDelivery:
        parked.append(letter)
        done = SinkDelivery()
        done.succeed()
        return done

    with receiving(delay_s=1.5) as receiver:
        hook = WebhookSinkSettings(url=receiver.url, timeout_s=0.5, retries=5, deliver_within_s=10)
        sink = WebhookSink(hook, ALERTS)
        sink.park_in(park, "dlq", 1 << 20)
        try:
            assert _delivered(sink, _alert_output()) is None
        finally:
            sink.close(5)
    assert parked == [], "an alert the receiver took was parked too"
    assert 1 <= len(receiver.requests) <= 3  # tries went out while the first was unanswered


def test_a_slow_receiver_holds_commits_no_longer_than_the_alerts_budget(kafka_bootstrap: str) -> None:
    base = unique_settings(kafka_bootstrap)
    with receiving(delay_s=2.0) as receiver:
        hook = WebhookSinkSettings(url=receiver.url, timeout_s=0.5, deliver_within_s=4.0)
        settings, runtime = alerting_runtime(kafka_bootstrap, base, hook, 10)
        alerts = settings.topics.alerts.name
        with running(runtime):
            # ten alerts of one source at 2 s each would hold the commit for 20 s and more; each
            # waits at most its 4 s budget, then is parked
            wait_for(
                lambda: sum(committed_offsets(kafka_bootstrap, settings.kafka.group_id).values()) == 10,
                20,  # without the budget: 18 s for the first alert's tries alone
                what="every reading committed although the receiver is slow",
            )
    raised = {Alert.from_json_bytes(r.value).alert_id for r in read_all(kafka_bootstrap, alerts, 10)}
    letters = read_all(kafka_bootstrap, settings.topics.dlq.name, 1)
    parked = {
        Alert.from_json_bytes(original_value(DeadLetter.from_json_bytes(r.value)) or b"").alert_id
        for r in letters
    }
    delivered = {Alert.from_json_bytes(body).alert_id for _, body in receiver.requests}
    assert parked and delivered, "some were taken, the rest parked"
    assert parked | delivered == raised, "an alert was lost"


def test_the_secret_never_shows_in_the_settings_text() -> None:
    hook = WebhookSinkSettings(url="http://hooks.plant/x", secret=SecretStr(SECRET))
    assert hook.secret is not None and hook.secret.get_secret_value() == SECRET
    assert SECRET not in repr(hook) and SECRET not in hook.model_dump_json()
