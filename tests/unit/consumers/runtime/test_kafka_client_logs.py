"""kafka-python's benign close race is not reported as an error; real transport errors are."""

from __future__ import annotations

import logging

import pytest

import consumers.runtime.kafka_clients  # noqa: F401  (installs the filter)


def failing(error: BaseException, transport: str) -> None:
    try:
        raise error
    except BaseException:
        logging.getLogger("kafka.net.transport").exception(
            "%s: Error receiving network data closing socket", transport
        )


def test_a_read_on_a_transport_just_closed_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="kafka.net.transport"):
        failing(
            AttributeError("'NoneType' object has no attribute 'recv'"), "<KafkaTCPTransport [none] (closed)>"
        )
        failing(ConnectionResetError("reset by peer"), "<KafkaTCPTransport [127.0.0.1:9092] (connected)>")
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [ConnectionResetError]
