"""Turn a record's bytes into a validated message, or a precise reason why not."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pydantic import ValidationError

from consumers.runtime.records import Failure, InboundRecord, Outcome, Work
from schemas.common import Message, describe_errors

STAGE = "decode"


def decode_record(record: InboundRecord, message_type: type[Message], max_bytes: int) -> Message | Failure:
    """Validate ``record`` as ``message_type``; a ``Failure`` names the first thing wrong."""
    value = record.value
    if value is None:
        return Failure("undecodable", STAGE, "EmptyValue", "record has no value (tombstone)")
    if len(value) > max_bytes:
        return Failure(
            "oversize",
            STAGE,
            "OversizeMessage",
            f"value is {len(value)} bytes, the limit is {max_bytes}",
        )
    try:
        # The bytes go to pydantic as they are (one pass, no ``str`` in between); invalid UTF-8
        # fails there as invalid JSON and is told apart on that rare path only.
        return message_type.from_json_bytes(value)
    except ValidationError as error:
        if any(e["type"] == "json_invalid" for e in error.errors()):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as undecodable:
                return Failure.from_exception("undecodable", STAGE, undecodable)
            return Failure("invalid_json", STAGE, "ValidationError", describe_errors(error))
        return Failure("schema_violation", STAGE, "ValidationError", describe_errors(error))


def decode_records(
    records: Iterable[InboundRecord], message_type: type[Message], max_bytes: int, received_at: datetime
) -> tuple[list[Work], list[Outcome]]:
    """``decode_record`` over a poll batch: the work of the valid records, and a dead-letter
    outcome for each of the others. A valid record costs one call into pydantic and nothing
    else; only a record that fails is looked at again, to say why."""
    validate = message_type.from_json_bytes
    work: list[Work] = []
    poison: list[Outcome] = []
    for record in records:
        value = record.value
        if value is not None and len(value) <= max_bytes:
            try:
                work.append(Work(record, validate(value), received_at))
                continue
            except ValidationError:
                pass
        failure = decode_record(record, message_type, max_bytes)
        assert isinstance(failure, Failure)  # the same checks failed just above
        poison.append(Outcome(record, failure=failure))
    return work, poison
