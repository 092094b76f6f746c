"""Which Kafka a command talks to: ``KAFKA_BOOTSTRAP_SERVERS``, the config, or the local broker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from consumers.ops.local_kafka.broker import LocalKafka
from consumers.runtime.kafka_clients import BOOTSTRAP_ENV
from schemas.settings import KafkaSettings, VigilSettings

LOCAL_BROKER = "default"
THROWAWAY_BROKER = "demo"


def with_bootstrap(settings: VigilSettings, bootstrap: str) -> VigilSettings:
    """``settings`` pointing at ``bootstrap``."""
    return settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})}
    )


def resolve_cluster(settings: VigilSettings) -> VigilSettings:
    """Use the running local broker when neither the environment nor the config names a cluster."""
    if os.environ.get(BOOTSTRAP_ENV):
        return with_bootstrap(settings, os.environ[BOOTSTRAP_ENV])
    if settings.kafka.bootstrap_servers == KafkaSettings().bootstrap_servers:
        info = LocalKafka(LOCAL_BROKER).status()
        if info is not None:
            return with_bootstrap(settings, info.bootstrap_servers)
    return settings


@contextmanager
def cluster_for(settings: VigilSettings) -> Iterator[tuple[VigilSettings, bool]]:
    """Yield settings for a reachable cluster, starting a throwaway local broker when none is named.

    A running ``vigil kafka up`` broker is used and left running. Otherwise a broker of its own
    (``demo``) is started fresh and deleted on exit, data included, so a run never sees an
    earlier run's topics and groups. The second value says whether this call started it.
    """
    if os.environ.get(BOOTSTRAP_ENV) or settings.kafka.bootstrap_servers != KafkaSettings().bootstrap_servers:
        yield resolve_cluster(settings), False
        return
    running = LocalKafka(LOCAL_BROKER).status()
    if running is not None:
        yield with_bootstrap(settings, running.bootstrap_servers), False
        return
    broker = LocalKafka(THROWAWAY_BROKER)
    broker.stop(purge=True)  # what a crashed earlier run left behind
    info = broker.start()
    try:
        yield with_bootstrap(settings, info.bootstrap_servers), True
    finally:
        broker.stop(purge=True)
