"""Dead letters: the original bytes of a failed input, with the reason in headers and body."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from consumers.runtime.records import Failure, InboundRecord, Output
from schemas.messages import DeadLetter

HEADER_PREFIX = "vigil."
MAX_ERROR_MESSAGE = 4096


def dead_letter_output(record: InboundRecord, failure: Failure, dlq_topic: str) -> Output:
    """The dead-letter record for ``record``: keyed like the original, original headers kept."""
    message = failure.error_message[:MAX_ERROR_MESSAGE]
    body = DeadLetter(
        reason=failure.reason,  # type: ignore[arg-type]
        stage=failure.stage,
        error_class=failure.error_class[:128],
        error_message=message,
        origin_topic=record.topic,
        origin_partition=record.partition,
        origin_offset=record.offset,
        original_key_b64=_b64(record.key),
        original_value_b64=_b64(record.value),
        original_size=len(record.value or b""),
        failed_at=datetime.now(UTC),
    )
    headers = (
        ("vigil.reason", failure.reason.encode()),
        ("vigil.origin.topic", record.topic.encode()),
        ("vigil.origin.partition", str(record.partition).encode()),
        ("vigil.origin.offset", str(record.offset).encode()),
        ("vigil.stage", failure.stage.encode()),
        ("vigil.error.class", failure.error_class.encode()),
        ("vigil.error.message", message.encode("utf-8", errors="replace")[:1024]),
    )
    original = tuple(h for h in record.headers if not h[0].startswith(HEADER_PREFIX))
    return Output(dlq_topic, record.key, body.to_json_bytes(), headers + original)


def original_value(letter: DeadLetter) -> bytes | None:
    """The exact bytes of the input that failed."""
    return base64.b64decode(letter.original_value_b64) if letter.original_value_b64 else None


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode() if data is not None else None
