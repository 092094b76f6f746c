"""Dead letters: the original bytes of a failed input, with the reason in headers and body.

A dead letter always fits: the record is sized to the dead-letter topic's limit (the smaller of
the producer's ``max_request_size`` and the topic's ``max.message.bytes``). When the whole
original would not fit, the copy is cut (``original_truncated`` in the body,
``vigil.original.truncated`` in the headers) and the sha256 of the whole value is kept, with
its origin topic, partition and offset, so the original can still be found and checked.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

from consumers.runtime.records import Failure, Headers, InboundRecord, Output
from schemas.messages import DeadLetter

HEADER_PREFIX = "vigil."
MAX_ERROR_MESSAGE = 4096
DEFAULT_RECORD_LIMIT = 1_048_576
RECORD_OVERHEAD = 1024
"""Bytes kept free for the record batch framing around one record."""


def dead_letter_output(
    record: InboundRecord, failure: Failure, dlq_topic: str, record_limit: int = DEFAULT_RECORD_LIMIT
) -> Output:
    """The dead-letter record for ``record``, keyed like the original with its headers kept,
    no larger than ``record_limit`` bytes (see the module docstring)."""
    budget = record_limit - RECORD_OVERHEAD
    message = failure.error_message[:MAX_ERROR_MESSAGE]
    value = record.value or b""
    value_sha256 = hashlib.sha256(value).hexdigest()
    key = record.key
    if key is not None and len(key) > budget // 8:  # a key that big is hostile: keep its hash
        key = hashlib.sha256(key).hexdigest().encode()
    original = tuple(h for h in record.headers if not h[0].startswith(HEADER_PREFIX))
    if _size(original) > budget // 8:
        original = ()
    header_base: Headers = (
        ("vigil.reason", failure.reason.encode()),
        ("vigil.origin.topic", record.topic.encode()),
        ("vigil.origin.partition", str(record.partition).encode()),
        ("vigil.origin.offset", str(record.offset).encode()),
        ("vigil.stage", failure.stage.encode()),
        ("vigil.error.class", failure.error_class.encode()),
        ("vigil.error.message", message.encode("utf-8", errors="replace")[:1024]),
        ("vigil.original.sha256", value_sha256.encode()),
    )

    def letter(copy: bytes | None, truncated: bool) -> DeadLetter:
        return DeadLetter(
            reason=failure.reason,  # type: ignore[arg-type]
            stage=failure.stage,
            error_class=failure.error_class[:128],
            error_message=message,
            origin_topic=record.topic,
            origin_partition=record.partition,
            origin_offset=record.offset,
            original_key_b64=_b64(key),
            original_value_b64=_b64(copy),
            original_size=len(value),
            original_sha256=value_sha256,
            original_truncated=truncated,
            failed_at=datetime.now(UTC),
        )

    headers = header_base + original
    body = letter(record.value, False).to_json_bytes()
    if len(body) + len(key or b"") + _size(headers) > budget:
        headers = (*header_base, ("vigil.original.truncated", b"true"), *original)
        room = budget - len(key or b"") - _size(headers) - len(letter(b"", True).to_json_bytes())
        body = letter(value[: max(0, room) // 4 * 3], True).to_json_bytes()  # base64: 4 chars per 3 bytes
    return Output(dlq_topic, key, body, headers)


def original_value(letter: DeadLetter) -> bytes | None:
    """The bytes of the input that failed (only their start when ``original_truncated``)."""
    return base64.b64decode(letter.original_value_b64) if letter.original_value_b64 else None


def _size(headers: Headers) -> int:
    return sum(len(name) + len(value) + 8 for name, value in headers)


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode() if data is not None else None
