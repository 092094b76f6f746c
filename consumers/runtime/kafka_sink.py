"""The Kafka topic sink: every output goes to the topic it names, through one producer.

The producer is the runtime's (transactional in exactly-once mode, and replaced when a lost
transaction is reset), so the sink is handed a way to reach the current one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from consumers.runtime.ports import ProducerPort
from consumers.runtime.records import Output
from consumers.runtime.sink import Acknowledgement


class KafkaTopicSink:
    """``Sink`` for Kafka topics, through the runtime's ``ProducerPort``."""

    name = "kafka"
    label = "Kafka"

    def __init__(self, producer: Callable[[], ProducerPort]) -> None:
        self._producer = producer

    def wants(self, output: Output) -> bool:
        """Every output names a topic: the Kafka sink takes them all."""
        return True

    def counted_as(self, outputs: Sequence[Output]) -> Iterable[str]:
        """Each output under its topic."""
        return [output.topic for output in outputs]

    def send(self, output: Output) -> Acknowledgement:
        """Hand ``output`` to the producer."""
        future: Acknowledgement = self._producer().send(
            output.topic,
            value=output.value,
            key=output.key,
            headers=list(output.headers),
            partition=output.partition,
        )
        return future

    def send_all(self, outputs: Sequence[Output], report: Callable[..., None]) -> None:
        """Hand ``outputs`` to the producer, in order; the client calls ``report(None, ...)`` as
        each is delivered and ``report(error, ...)`` as one fails for good (on the thread serving
        its reports). Nothing is made per output: this is the path every result and alert takes."""
        self._producer().send_all(outputs, report)

    def delivery_error(self, error: Any) -> BaseException:
        """The runtime's error for what the client reported of a failed delivery (kafka-python
        reports its own errors; confluent's are translated)."""
        return self._producer().delivery_error(error)

    def serve_reports(self) -> None:
        """Settle the acknowledgements the producer has received, on the caller's thread where
        the client allows it (confluent); kafka-python settles them on its own I/O thread."""
        self._producer().serve_reports()

    def flush(self, timeout_s: float) -> None:
        """Wait until the broker acknowledged everything sent (``KafkaTimeoutError`` past ``timeout_s``)."""
        self._producer().flush(timeout=timeout_s)

    def park_in(self, park: Callable[[Output], Acknowledgement], dlq_topic: str, record_limit: int) -> None:
        """Nothing: dead letters are parked in Kafka, so a failed send here fails the runtime."""

    def close(self, timeout_s: float) -> None:
        """Close the producer, sending what it still holds within ``timeout_s``."""
        self._producer().close(timeout=timeout_s)
