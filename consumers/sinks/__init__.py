"""Where outputs leave Vigil: the Kafka topic sink, the seam other sinks plug into, and the
sinks the configuration names (``sinks``)."""

from consumers.sinks.base import Acknowledgement, Sink, SinkDelivery
from consumers.sinks.kafka import KafkaTopicSink
from schemas.settings import VigilSettings

__all__ = ["Acknowledgement", "KafkaTopicSink", "Sink", "SinkDelivery", "configured_sinks"]


def configured_sinks(settings: VigilSettings) -> list[Sink]:
    """New instances of the sinks ``settings.sinks`` names, besides Kafka (one set per runtime)."""
    sinks: list[Sink] = []
    if settings.sinks.alertmanager is not None:
        from consumers.sinks.alertmanager import AlertmanagerSink

        sinks.append(AlertmanagerSink(settings.sinks.alertmanager, settings.topics.alerts.name))
    if settings.sinks.webhook is not None:
        from consumers.sinks.webhook import WebhookSink

        sinks.append(WebhookSink(settings.sinks.webhook, settings.topics.alerts.name))
    return sinks
