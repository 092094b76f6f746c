"""Where outputs leave Vigil besides Kafka: the sinks the configuration names (``sinks``),
each built from its section by the class its name stands for. The seam they plug into
(``Sink``, ``Acknowledgement``, ``SinkDelivery``) is the runtime's (``consumers.runtime.sink``)."""

from collections.abc import Callable
from typing import Any

from consumers.runtime.sink import Acknowledgement, Sink, SinkDelivery
from schemas.settings import VigilSettings

__all__ = ["Acknowledgement", "Sink", "SinkDelivery", "configured_sinks", "sink_classes"]


def sink_classes() -> dict[str, Callable[[Any, str], Sink]]:
    """Each ``sinks.<name>`` section's sink class, called with the section and the alerts topic."""
    from consumers.sinks.alertmanager import AlertmanagerSink
    from consumers.sinks.webhook import WebhookSink

    return {"alertmanager": AlertmanagerSink, "webhook": WebhookSink}


def configured_sinks(settings: VigilSettings) -> list[Sink]:
    """New instances of the sinks ``settings.sinks`` configures, besides Kafka (one set per runtime)."""
    sections = {name: getattr(settings.sinks, name) for name in type(settings.sinks).model_fields}
    return [
        build(sections[name], settings.topics.alerts.name)
        for name, build in sink_classes().items()
        if sections[name] is not None
    ]
