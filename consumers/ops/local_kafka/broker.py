"""A single-node Apache Kafka (KRaft broker + controller) that Vigil starts and stops itself.

Lifecycle of ``LocalKafka(name)``:
1. ``start()`` resolves the jars (see ``provision``), picks two free loopback ports,
   writes ``server.properties``, formats KRaft storage once, launches ``kafka.Kafka`` in
   its own process session with a small heap, and returns when an admin client connects.
   A broker started again after ``stop()`` (or ``kill()``) keeps its data and its ports
   while they are free, so clients reconnect to it as to a broker back from an outage.
2. ``status()`` reads the state file and checks the process and the port.
3. ``stop()`` sends SIGTERM, waits for a clean shutdown, SIGKILLs after a deadline, and
   removes the state file, so no process is left behind (``purge`` also deletes the data).
   ``restart()`` is stop then start; ``kill()`` is a crash (SIGKILL), for outage drills.

State (properties, data, log, ``broker.json``) lives in ``$VIGIL_STATE_DIR/kafka/<name>``
(default ``~/.local/state/vigil``), so the demo's broker and a test run's broker coexist.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from consumers.ops.local_kafka.provision import KAFKA_VERSION, kafka_libs, require_tool

JVM_HEAP = ("-Xms256m", "-Xmx512m")
START_DEADLINE_S = 120.0
STOP_DEADLINE_S = 30.0


@dataclass(frozen=True)
class BrokerInfo:
    """Where a running local broker listens and which process it is."""

    pid: int
    bootstrap_servers: str
    controller_port: int
    version: str
    state_dir: str


def state_root() -> Path:
    """Folder for broker state: ``$VIGIL_STATE_DIR`` or ``~/.local/state/vigil``."""
    env = os.environ.get("VIGIL_STATE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "vigil"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def resident_memory_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` from /proc, or None when unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def server_properties(data_dir: Path, client_port: int, controller_port: int) -> str:
    """Properties for one combined broker+controller whose internal topics fit one node."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "listeners": f"PLAINTEXT://127.0.0.1:{client_port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{client_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        # Internal topics must fit a single broker or group joins and transactions hang.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "log.cleaner.dedupe.buffer.size": "2097152",
        "message.max.bytes": "8388608",
    }
    return "".join(f"{key}={value}\n" for key, value in props.items())


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid``, never one that starts with ``-``: the storage
    tool's argument parser would take it for an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class LocalKafka:
    """One named local broker instance; see the module docstring for its lifecycle."""

    def __init__(self, name: str = "default", version: str = KAFKA_VERSION) -> None:
        self.name = name
        self.version = version
        self.state_dir = state_root() / "kafka" / name
        self._info_file = self.state_dir / "broker.json"
        self._log_file = self.state_dir / "broker.log"

    def status(self) -> BrokerInfo | None:
        """The running broker's info, or None (stale state is cleaned up)."""
        if not self._info_file.exists():
            return None
        info = BrokerInfo(**json.loads(self._info_file.read_text()))
        port = int(info.bootstrap_servers.rsplit(":", 1)[1])
        if process_alive(info.pid) and port_open(port):
            return info
        if not process_alive(info.pid):
            self._info_file.unlink(missing_ok=True)
        return None

    def start(self, deadline_s: float = START_DEADLINE_S) -> BrokerInfo:
        """Start the broker (or return the one already running) and wait until it serves."""
        running = self.status()
        if running is not None:
            return running
        java = require_tool("java")
        libs = kafka_libs(self.version)
        classpath = f"{libs}/*"
        data_dir = self.state_dir / "data"
        props = self.state_dir / "server.properties"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        kept = self._kept_ports(props, data_dir)
        if kept is not None:
            client_port, controller_port = kept  # the same broker again: its data, its ports
        else:
            client_port, controller_port = free_port(), free_port()
            # A fresh log dir: the controller's port is baked into formatted storage.
            shutil.rmtree(data_dir, ignore_errors=True)
            props.write_text(server_properties(data_dir, client_port, controller_port))
            self._format(java, classpath, props)
        with open(self._log_file, "ab") as log:
            process = subprocess.Popen(
                [
                    java,
                    *JVM_HEAP,
                    "-XX:+UseG1GC",
                    "-Djava.awt.headless=true",
                    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                    "-Dorg.slf4j.simpleLogger.log.kafka.server.KafkaRaftServer=info",
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(props),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        info = BrokerInfo(
            pid=process.pid,
            bootstrap_servers=f"127.0.0.1:{client_port}",
            controller_port=controller_port,
            version=self.version,
            state_dir=str(self.state_dir),
        )
        self._info_file.write_text(json.dumps(asdict(info)))
        try:
            self._wait_until_serving(process, info, deadline_s)
        except BaseException:
            self.stop()
            raise
        return info

    @staticmethod
    def _kept_ports(props: Path, data_dir: Path) -> tuple[int, int] | None:
        """The ports of the broker's earlier life, when its storage is formatted and both are free."""
        if not props.is_file() or not (data_dir / "meta.properties").is_file():
            return None
        config = dict(line.split("=", 1) for line in props.read_text().splitlines() if "=" in line)
        ports = tuple(int(address.rsplit(":", 1)[1]) for address in config.get("listeners", "").split(","))
        if len(ports) != 2 or any(port_open(port) for port in ports):
            return None
        return ports[0], ports[1]

    @staticmethod
    def _format(java: str, classpath: str, props: Path) -> None:
        fmt = subprocess.run(
            [
                java,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                new_cluster_id(),
                "-c",
                str(props),
                "--standalone",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise RuntimeError(f"formatting KRaft storage failed:\n{fmt.stdout}{fmt.stderr}")

    def kill(self) -> bool:
        """SIGKILL the broker (a crash, for outage drills); its data and ports are kept for ``start``."""
        if not self._info_file.exists():
            return False
        info = BrokerInfo(**json.loads(self._info_file.read_text()))
        self._signal_group(info.pid, signal.SIGKILL)
        deadline = time.monotonic() + STOP_DEADLINE_S
        while process_alive(info.pid) and time.monotonic() < deadline:
            _reap(info.pid)
            time.sleep(0.05)  # polling interval while waiting on the deadline
        self._info_file.unlink(missing_ok=True)
        return True

    def restart(self, deadline_s: float = START_DEADLINE_S) -> BrokerInfo:
        """Stop cleanly and start again on the same ports with the same data."""
        self.stop()
        return self.start(deadline_s)

    def _wait_until_serving(
        self, process: subprocess.Popen[bytes], info: BrokerInfo, deadline_s: float
    ) -> None:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"Kafka exited with code {process.returncode} during start-up:\n{self.log_tail()}"
                )
            if port_open(int(info.bootstrap_servers.rsplit(":", 1)[1])):
                try:
                    admin = KafkaAdminClient(
                        bootstrap_servers=info.bootstrap_servers,
                        request_timeout_ms=5000,
                        bootstrap_timeout_ms=5000,
                    )
                    admin.describe_cluster()
                    admin.close()
                    return
                except KafkaError:
                    pass
            time.sleep(0.2)  # polling interval while waiting on the deadline
        raise TimeoutError(f"Kafka did not serve within {deadline_s:.0f}s:\n{self.log_tail()}")

    def stop(self, deadline_s: float = STOP_DEADLINE_S, purge: bool = False) -> bool:
        """Stop the broker cleanly (SIGKILL after the deadline). True if one was running.

        ``purge`` also removes the instance's state folder (data and log): for throwaway brokers.
        """
        if not self._info_file.exists():
            if purge:
                shutil.rmtree(self.state_dir, ignore_errors=True)
            return False
        info = BrokerInfo(**json.loads(self._info_file.read_text()))
        was_running = process_alive(info.pid)
        if was_running:
            self._signal_group(info.pid, signal.SIGTERM)
            deadline = time.monotonic() + deadline_s
            while process_alive(info.pid) and time.monotonic() < deadline:
                _reap(info.pid)
                time.sleep(0.1)  # polling interval while waiting on the deadline
            if process_alive(info.pid):
                self._signal_group(info.pid, signal.SIGKILL)
            _reap(info.pid)
        self._info_file.unlink(missing_ok=True)
        if purge:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        return was_running

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the broker's log, for error messages."""
        try:
            return "\n".join(self._log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no broker log)"


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
