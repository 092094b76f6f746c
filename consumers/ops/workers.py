"""``vigil run --workers N``: N member processes of the same consumer groups, one endpoint.

Kafka shares the partitions among the members; there is no coordination here beyond
starting, watching and stopping processes. Each worker is a whole ``vigil run`` (its own
interpreter, so its own GIL) told which worker it is through ``VIGIL_WORKER``:

- its instance id gets ``-w<i>`` appended when one is configured (``runtime.instance_id``,
  ``kafka.group_instance_id``), so static membership and transactional ids stay distinct;
  unset, each worker's default (host and process id) already is;
- torch gets ``default_torch_threads`` of the worker's share of the cores, unless
  ``runtime.torch_threads`` is set;
- it serves its metrics and checks on a loopback port of its own.

The supervisor serves the configured endpoint: ``/metrics`` gathers every worker's series
with a ``worker`` label, ``/healthz`` and ``/readyz`` hold when every worker's do. SIGTERM
or SIGINT is passed on to every worker (which drain and commit); a second one too (they
exit at once). A worker that ends on its own stops the others, and the exit status is the
worst of theirs: restarting the set is the process manager's job, as for one process. A
supervisor killed outright (SIGKILL) leaves no orphans: its workers notice, drain and stop.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType

from prometheus_client.core import CollectorRegistry, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from consumers.ops.health import MetricsServer
from schemas.settings import VigilSettings

log = logging.getLogger(__name__)

WORKER_ENV = "VIGIL_WORKER"
"""``<index>/<count>:<metrics port>`` in a worker's environment."""

SCRAPE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class WorkerSlot:
    """Which worker a process is, of how many, and where it serves its metrics."""

    index: int
    count: int
    metrics_port: int

    def encode(self) -> str:
        return f"{self.index}/{self.count}:{self.metrics_port}"

    @classmethod
    def from_environment(cls) -> WorkerSlot | None:
        """The slot ``VIGIL_WORKER`` names, or None in a process that is not a worker."""
        value = os.environ.get(WORKER_ENV)
        if not value:
            return None
        share, port = value.split(":")
        index, count = share.split("/")
        return cls(int(index), int(count), int(port))

    def settings(self, settings: VigilSettings) -> VigilSettings:
        """The worker's settings: its own instance ids and a private loopback metrics endpoint."""
        runtime, kafka = settings.runtime, settings.kafka
        suffix = f"-w{self.index}"
        return settings.model_copy(
            update={
                "runtime": runtime.model_copy(
                    update={"instance_id": runtime.instance_id and runtime.instance_id + suffix}
                ),
                "kafka": kafka.model_copy(
                    update={"group_instance_id": kafka.group_instance_id and kafka.group_instance_id + suffix}
                ),
                "metrics": settings.metrics.model_copy(
                    update={
                        "enabled": True,
                        "host": "127.0.0.1",
                        "port": self.metrics_port,
                        "basic_auth_username": None,
                        "basic_auth_password": None,
                        "tls_cert_file": None,
                        "tls_key_file": None,
                    }
                ),
            }
        )


def stop_with_supervisor(stop: Callable[[], None], interval_s: float = 1.0) -> None:
    """In a worker: call ``stop`` (drain and commit, as SIGTERM does) once the supervisor is
    gone, killed without passing a signal on; the worker is then an orphan of another parent."""
    supervisor = os.getppid()

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(interval_s)  # a parent's death has no portable notification; poll it
        log.warning("the supervisor (pid %d) is gone: draining and stopping", supervisor)
        stop()

    threading.Thread(target=watch, name="vigil-supervisor-watch", daemon=True).start()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=SCRAPE_TIMEOUT_S) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return 0, f"unreachable: {error}"


class WorkerMetrics(Collector):
    """Every worker's series, each with a ``worker`` label, merged into one family per name."""

    def __init__(self, ports: Sequence[int]) -> None:
        self._ports = list(ports)

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for index, port in enumerate(self._ports):
            status, text = _get(port, "/metrics")
            if status != 200:
                continue  # a worker starting or gone: its series are absent, /readyz says why
            for family in text_string_to_metric_families(text):
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                for sample in family.samples:
                    merged.add_sample(
                        sample.name, {**sample.labels, "worker": str(index)}, sample.value, sample.timestamp
                    )
        yield from families.values()


class Supervisor:
    """Starts the workers, serves their gathered endpoint, passes signals on, and waits."""

    def __init__(self, settings: VigilSettings, argv: Sequence[str], count: int) -> None:
        self.settings = settings
        self.slots = [WorkerSlot(i, count, _free_port()) for i in range(count)]
        self._argv = list(argv)
        self.workers: list[subprocess.Popen[bytes]] = []
        self._signals = 0

    def start(self) -> None:
        """Start every worker in a session of its own: a terminal's Ctrl-C reaches the
        supervisor only, which passes it on once."""
        for slot in self.slots:
            environment = {**os.environ, WORKER_ENV: slot.encode()}
            self.workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "consumers.ops.cli", *self._argv],
                    env=environment,
                    start_new_session=True,
                )
            )
        log.info("started %d workers: pids %s", len(self.workers), [w.pid for w in self.workers])

    def alive(self) -> bool:
        """Every worker runs and answers ``/healthz``."""
        return all(
            worker.poll() is None and _get(slot.metrics_port, "/healthz")[0] == 200
            for worker, slot in zip(self.workers, self.slots, strict=True)
        )

    def not_ready(self) -> str | None:
        """Why the set is not ready: the first worker that is not, and its own reason."""
        for worker, slot in zip(self.workers, self.slots, strict=True):
            if worker.poll() is not None:
                return f"worker {slot.index} exited ({worker.returncode})"
            status, body = _get(slot.metrics_port, "/readyz")
            if status != 200:
                return f"worker {slot.index}: {body.strip()}"
        return None

    def serve_metrics(self) -> MetricsServer:
        """The configured endpoint, over every worker's."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(WorkerMetrics([slot.metrics_port for slot in self.slots]))
        config = self.settings.metrics
        return MetricsServer(registry, config.host, config.port, self.alive, self.not_ready, config).start()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Pass ``sig`` on to every worker still running."""
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(sig)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        log.info("signal %s: passed on to %d workers", signal.Signals(signum).name, len(self.workers))
        self.stop(signal.SIGTERM)

    def run(self) -> int:
        """Run until every worker has ended; the exit status is the worst of theirs."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.start()
        stopping = False
        while any(worker.poll() is None for worker in self.workers):
            ended = [w for w in self.workers if w.returncode is not None]
            if ended and not stopping and not self._signals:
                log.error("worker pid %d exited (%d): stopping the others", ended[0].pid, ended[0].returncode)
                self.stop(signal.SIGTERM)
                stopping = True
            time.sleep(0.2)  # watching child processes; signals interrupt the wait
        return max(abs(worker.returncode) for worker in self.workers)
