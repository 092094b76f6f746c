"""``vigil tail``: a readable live view of an output topic."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from consumers.runtime.kafka_clients import RuntimeConsumer, consumer_config
from schemas.common import Message
from schemas.messages import Alert, DeadLetter, InferenceResult
from schemas.settings import VigilSettings

TOPIC_MESSAGES: dict[str, type[Message]] = {"alerts": Alert, "inferences": InferenceResult, "dlq": DeadLetter}


def describe(message: Any) -> str:
    """One line for an operator."""
    if isinstance(message, Alert):
        return (
            f"ALERT {message.state:8} {message.severity:8} {message.kind:14} {message.source_id:12} "
            f"{message.label} score={message.score:.2f} thr={message.threshold:.2f} id={message.alert_id[:8]}"
        )
    if isinstance(message, InferenceResult):
        score = "" if message.score is None else f" score={message.score:.3f}"
        return (
            f"RESULT {message.pipeline:11} {message.source_id:12} {message.label or '-'}{score} "
            f"from {message.evidence.topic}[{message.evidence.partition}]@{message.evidence.offset}"
        )
    if isinstance(message, DeadLetter):
        return (
            f"DEAD   {message.reason:17} {message.origin_topic}[{message.origin_partition}]"
            f"@{message.origin_offset} {message.stage}: {message.error_class}: {message.error_message[:120]}"
        )
    return repr(message)


def follow(
    settings: VigilSettings,
    which: str,
    from_beginning: bool = False,
    idle_timeout_s: float | None = None,
    as_json: bool = False,
) -> Iterator[str]:
    """Yield a line per record of the ``which`` output topic (alerts, inferences, dlq): for an
    operator, or (``as_json``) the message itself as one line of JSON."""
    message_type = TOPIC_MESSAGES[which]
    topic = getattr(settings.topics, which).name
    config = consumer_config(settings.kafka)
    config.update(group_id=None, auto_offset_reset="earliest" if from_beginning else "latest")
    consumer = RuntimeConsumer(**config)  # its poll does not sleep through buffered records
    consumer.subscribe([topic])
    last = time.monotonic()
    try:
        while idle_timeout_s is None or time.monotonic() - last < idle_timeout_s:
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    last = time.monotonic()
                    try:
                        message = message_type.from_json_bytes(record.value)
                    except ValidationError as error:
                        yield _unreadable(topic, record, error, as_json)
                        continue
                    yield message.model_dump_json() if as_json else describe(message)
    finally:
        consumer.close()


def _unreadable(topic: str, record: Any, error: ValidationError, as_json: bool) -> str:
    """The line of a record that is not the topic's message."""
    if as_json:
        where = {"topic": topic, "partition": record.partition, "offset": record.offset}
        return json.dumps({"unreadable": where, "errors": error.error_count()})
    return f"UNREADABLE {topic}[{record.partition}]@{record.offset}: {error.error_count()} errors"
