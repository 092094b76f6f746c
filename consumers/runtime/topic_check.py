"""What the runtime checks about its topics before it consumes anything.

Every input and output topic must exist (the fix is named: ``vigil topics create``), and the
dead-letter topic's record limit is read, so a dead letter can always be sized to fit it.
"""

from __future__ import annotations

from collections.abc import Iterable

from kafka.admin import ConfigResource, ConfigResourceType

from consumers.runtime.kafka_clients import make_admin
from schemas.settings import KafkaSettings

BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588


class TopicsMissingError(RuntimeError):
    """Topics the runtime needs do not exist."""


def check_topics(settings: KafkaSettings, inputs: Iterable[str], outputs: Iterable[str]) -> dict[str, int]:
    """Fail when a topic is missing; return each output topic's ``max.message.bytes``."""
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics())
        wanted = [*inputs, *outputs]
        missing = [topic for topic in dict.fromkeys(wanted) if topic not in existing]
        if missing:
            raise TopicsMissingError(
                f"topics missing: {', '.join(missing)}; create them with `vigil topics create` "
                "(with the same --config), or point the configuration at existing topics"
            )
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})
            for topic in dict.fromkeys(outputs)
        ]
        described = admin.describe_configs(resources, config_filter="all").get("topic", {})
    finally:
        admin.close()
    limits = {}
    for topic in dict.fromkeys(outputs):
        entry = described.get(topic, {}).get("max.message.bytes", {})
        value = entry.get("value") if isinstance(entry, dict) else None
        limits[topic] = int(value) if value else BROKER_DEFAULT_MAX_MESSAGE_BYTES
    return limits
