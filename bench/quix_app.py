"""What both Quix Streams peers start from: an at-least-once application in a fresh group,
committing as often as Vigil does, reading and writing raw bytes (runs in ``.venv-quix``)."""

from __future__ import annotations

import tempfile
import uuid

from quixstreams import Application
from quixstreams.models import Topic


def peer_app(bootstrap: str, source: str, sink: str) -> tuple[Application, Topic, Topic]:
    """The application, its input topic and its output topic."""
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"quix-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        commit_interval=1.0,  # Vigil's default commit interval
        state_dir=tempfile.mkdtemp(prefix="quix-state-"),  # not the working directory
    )
    source_topic = app.topic(source, value_deserializer="bytes", key_deserializer="bytes")
    sink_topic = app.topic(sink, value_serializer="bytes", key_serializer="bytes")
    return app, source_topic, sink_topic
