"""``vigil dlq redrive`` on the real broker: dead letters back to their original topic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumers.ops.cli import main
from consumers.ops.topics import create_topics
from consumers.runtime.dead_letters import dead_letter_output
from consumers.runtime.records import Failure, InboundRecord
from tests.kafka_helpers import end_offsets, read_all, unique_settings

pytestmark = pytest.mark.integration


def _letters(settings, values: list[tuple[str, bytes]], record_limit: int = 1_048_576) -> None:  # type: ignore[no-untyped-def]
    """Dead letters of records 0, 1, ... of the sensors topic, as the runtime writes them."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    for offset, (reason, value) in enumerate(values):
        record = InboundRecord(
            settings.topics.sensors.name, 0, offset, b"pump-1", value, (("trace", b"t-%d" % offset),), None
        )
        letter = dead_letter_output(
            record,
            Failure(reason, "decode", "ValidationError", "bad"),
            settings.topics.dlq.name,
            record_limit,
        )
        producer.send(letter.topic, key=letter.key, value=letter.value, headers=list(letter.headers))
    producer.flush()
    producer.close()


def test_redrive_publishes_the_chosen_letters_to_their_topic_with_their_origin(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = unique_settings(kafka_bootstrap)
    create_topics(settings)
    config = tmp_path / "vigil.yaml"
    config.write_text(settings.model_dump_json())
    _letters(
        settings,
        [("schema_violation", b'{"v": 1}'), ("invalid_json", b"{oops"), ("schema_violation", b'{"v": 3}')],
    )
    arguments = ["dlq", "redrive", "--config", str(config), "--reason", "schema_violation"]

    assert main([*arguments, "--dry-run", "--output", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)["rows"]
    assert row == {
        "original topic": settings.topics.sensors.name,
        "reason": "schema_violation",
        "would publish": 2,
    }
    assert (
        sum(end_offsets(kafka_bootstrap, settings.topics.sensors.name).values()) == 0
    )  # a dry run publishes nothing

    assert main(arguments) == 0
    redriven = read_all(kafka_bootstrap, settings.topics.sensors.name, 2)
    assert sorted(r.value for r in redriven) == [b'{"v": 1}', b'{"v": 3}']  # the exact original bytes
    for record in redriven:
        headers = dict(record.headers)
        assert record.key == b"pump-1" and headers["trace"] in (b"t-0", b"t-2")  # key and headers kept
        assert headers["vigil.origin"].decode() in (
            f"{settings.topics.sensors.name}[0]@0",
            f"{settings.topics.sensors.name}[0]@2",
        )
        assert headers["vigil.redrive.from"].decode().startswith(f"{settings.topics.dlq.name}[0]@")
        assert headers["vigil.redrive.reason"] == b"schema_violation"

    # A second redrive skips what the first published (the redrive log), saying so; --again does not.
    capsys.readouterr()
    assert main(arguments) == 0
    assert capsys.readouterr().out.count("redriven before (--again redrives it)") == 2
    assert sum(end_offsets(kafka_bootstrap, settings.topics.sensors.name).values()) == 2
    assert main([*arguments, "--again"]) == 0
    assert sum(end_offsets(kafka_bootstrap, settings.topics.sensors.name).values()) == 4


def test_a_truncated_letter_is_redriven_from_its_original_record(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    from kafka import KafkaProducer

    settings = unique_settings(kafka_bootstrap)
    create_topics(settings)
    big = b'{"blob": "' + b"x" * 50_000 + b'"}'
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    producer.send(settings.topics.sensors.name, key=b"pump-1", value=big, partition=0).get(timeout=30)
    producer.close()
    _letters(settings, [("oversize", big)], record_limit=8_192)  # the letter keeps only its start
    config = tmp_path / "vigil.yaml"
    config.write_text(settings.model_dump_json())
    assert main(["dlq", "redrive", "--config", str(config)]) == 0
    values = [r.value for r in read_all(kafka_bootstrap, settings.topics.sensors.name, 2)]
    assert values == [big, big]  # the original, then its redriven copy, whole
