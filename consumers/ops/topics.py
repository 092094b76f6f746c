"""Create the configured topics, every pipeline kind's own included (idempotent: existing
topics are left as they are)."""

from __future__ import annotations

import contextlib

from kafka.errors import TopicAlreadyExistsError

from consumers.runtime.kafka_clients import make_admin
from schemas.settings import TopicSpec, VigilSettings


def create_topics(settings: VigilSettings, specs: list[TopicSpec] | None = None) -> list[str]:
    """Create each topic that does not exist yet; return the names created."""
    from consumers.pipelines import all_topics

    wanted = specs if specs is not None else all_topics(settings)
    admin = make_admin(settings.kafka)
    try:
        existing = set(admin.list_topics())
        missing = {
            spec.name: {
                "num_partitions": spec.partitions,
                "replication_factor": spec.replication_factor,
                "configs": dict(spec.config),
            }
            for spec in wanted
            if spec.name not in existing
        }
        if missing:
            # another instance may create one between our listing and our request
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing, wait_for_metadata=True)
        return sorted(missing)
    finally:
        admin.close()
