"""Run a ``StreamRuntime`` in a background thread for an integration test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from consumers.ops.topics import create_topics
from consumers.pipelines.passthrough import passthrough_stage
from consumers.runtime.loop import StreamRuntime
from consumers.runtime.observer import CountingObserver
from schemas.messages import FrameRef, SensorReading
from schemas.settings import VigilSettings


def passthrough_runtime(settings: VigilSettings) -> StreamRuntime:
    """A runtime over both input topics with the pass-through stage."""
    create_topics(settings)
    inputs = {settings.topics.frames.name: FrameRef, settings.topics.sensors.name: SensorReading}
    stage = passthrough_stage(settings.topics.inferences.name)
    return StreamRuntime(settings, inputs, stage, observer=CountingObserver())


@contextmanager
def running(runtime: StreamRuntime) -> Iterator[StreamRuntime]:
    """Run ``runtime`` in a thread; on exit stop it, join it and re-raise its error."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            runtime.run(install_signal_handlers=False)
        except BaseException as error:  # surfaced in the test thread below
            errors.append(error)

    thread = threading.Thread(target=target, name="vigil-runtime", daemon=True)
    thread.start()
    try:
        yield runtime
    finally:
        runtime.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), "runtime did not stop within 60s"
        if errors:
            raise errors[0]
