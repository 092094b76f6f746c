"""``SinkDelivery``: callbacks fire once, whether added before or after the delivery settled."""

from __future__ import annotations

from consumers.sinks import SinkDelivery


def test_callbacks_added_before_and_after_success_each_fire_once() -> None:
    heard: list[tuple[str, object]] = []
    delivery = SinkDelivery()
    delivery.add_callback(lambda tag, result: heard.append((tag, result)), "before")
    delivery.add_errback(lambda tag, error: heard.append(("error", error)), "before")
    delivery.succeed()
    delivery.succeed()
    delivery.fail(RuntimeError("too late"))  # a settled delivery stays settled
    delivery.add_callback(lambda tag, result: heard.append((tag, result)), "after")
    assert heard == [("before", None), ("after", None)]
    assert delivery.wait(0)


def test_a_failure_reaches_the_errbacks_only() -> None:
    heard: list[object] = []
    delivery = SinkDelivery()
    delivery.add_callback(lambda result: heard.append("success"))
    delivery.add_errback(heard.append)
    error = ConnectionError("refused")
    delivery.fail(error)
    delivery.add_errback(heard.append)
    assert heard == [error, error]
