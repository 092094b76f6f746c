"""``vigil run``: one or more pipelines in one process, one metrics endpoint, signals handled.

Each pipeline is its own ``StreamRuntime`` and consumer group (``group_id`` alone for a
single pipeline, ``group_id.<pipeline>`` for several), on its own thread. The first SIGTERM
or SIGINT asks every runtime to drain and commit; a second exits at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import torch

from consumers.ops.health import MetricsServer
from consumers.ops.metrics import PrometheusObserver, VigilMetrics
from consumers.pipelines import build_pipeline, pipeline_kinds
from consumers.runtime.loop import StreamRuntime
from consumers.runtime.signals import drain_on_signals
from consumers.sinks import configured_sinks
from models.engine import default_torch_threads
from schemas.settings import VigilSettings

log = logging.getLogger(__name__)


class Service:
    """The pipelines named, sharing one ``VigilMetrics``; ``processes`` is how many workers
    of the same set share the machine (``vigil run --workers``)."""

    def __init__(
        self,
        settings: VigilSettings,
        names: Sequence[str],
        group_of: Callable[[str], str] | None = None,
        processes: int = 1,
    ) -> None:
        group = settings.kafka.group_id
        default_group = (lambda name: group) if len(names) == 1 else (lambda name: f"{group}.{name}")
        group_of = group_of or default_group
        self.settings = settings
        kinds = pipeline_kinds()
        unknown = [name for name in names if name not in kinds]
        if unknown:
            raise KeyError(f"unknown pipeline {', '.join(map(repr, unknown))}; known: {', '.join(kinds)}")
        models = sum(1 for name in names if kinds[name].serves_models)
        threads = settings.runtime.torch_threads or default_torch_threads(models, processes)
        torch.set_num_threads(threads)  # process-wide: the pipelines' lanes share one pool
        log.info("torch uses %d threads for %d model pipelines", threads, models)
        self.metrics = VigilMetrics()
        self.observers: dict[str, PrometheusObserver] = {name: self.metrics.observer(name) for name in names}
        self.runtimes: dict[str, StreamRuntime] = {}
        for name, observer in self.observers.items():
            pipeline = build_pipeline(name, settings, observer)
            self.runtimes[name] = StreamRuntime(
                settings,
                pipeline.inputs,
                pipeline.stage,
                observer=observer,
                group_id=group_of(name),
                sinks=configured_sinks(settings),
            )
        self._threads: list[threading.Thread] = []
        self._status: dict[str, int] = {}

    def alive(self) -> bool:
        """Every runtime's loop is going round."""
        return all(o.alive() for o in self.observers.values())

    def not_ready(self) -> str | None:
        """Why the service is not ready (the first pipeline that is not), or None."""
        runtime = self.settings.runtime
        for name, observer in self.observers.items():
            reason = observer.not_ready(runtime.stuck_item_s, runtime.commit_stale_s)
            if reason is not None:
                return f"{name}: {reason}"
        return None

    def ready(self) -> bool:
        """Every runtime is ready (see ``PrometheusObserver.not_ready``)."""
        return self.not_ready() is None

    def serve_metrics(self, host: str | None = None, port: int | None = None) -> MetricsServer:
        """Start ``/metrics``, ``/healthz`` and ``/readyz`` (on the configured address by default)."""
        config = self.settings.metrics
        return MetricsServer(
            self.metrics.registry,
            config.host if host is None else host,
            config.port if port is None else port,
            self.alive,
            self.not_ready,
            config,
        ).start()

    def start(self) -> None:
        """Run every pipeline on its own thread."""
        for name, runtime in self.runtimes.items():
            thread = threading.Thread(
                target=self._run_one, args=(name, runtime), name=f"vigil-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _run_one(self, name: str, runtime: StreamRuntime) -> None:
        try:
            self._status[name] = runtime.run(install_signal_handlers=False)
        except Exception:
            log.exception("pipeline %s failed", name)
            self._status[name] = 1
            self.request_stop()  # one failed pipeline takes the process down: its partitions go to healthy members

    def request_stop(self) -> None:
        """Ask every runtime to drain and commit."""
        for runtime in self.runtimes.values():
            runtime.stop()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Ask every runtime to drain and commit, and wait for them."""
        self.request_stop()
        for thread in self._threads:
            thread.join(timeout=timeout_s)

    def run(self) -> int:
        """Run until a signal (or a failed pipeline); the exit status is the worst of the pipelines'."""

        drain_on_signals(self.request_stop)
        self.start()
        for thread in self._threads:
            while thread.is_alive():
                thread.join(timeout=0.5)  # short joins keep the main thread free for signals
        return max(self._status.values(), default=1)
