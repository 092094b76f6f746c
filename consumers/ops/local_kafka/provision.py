"""Resolve Apache Kafka's jars from Maven Central into a cache outside the repository.

The first run asks the machine's Maven to copy the broker and its runtime dependencies
into ``<cache>/kafka/<version>/libs``, saying on stderr what it downloads and how much;
later runs find the folder complete and reuse it.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar, TextIO

KAFKA_VERSION = "4.3.0"
_POM = Path(__file__).with_name("pom.xml")
_COMPLETE_MARKER = ".complete"


class ToolMissingError(RuntimeError):
    """A program the local broker needs (java, mvn) is not installed."""


def cache_root() -> Path:
    """Where provisioned jars live: ``$VIGIL_CACHE_DIR`` or ``~/.cache/vigil``."""
    env = os.environ.get("VIGIL_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "vigil"


def require_tool(name: str) -> str:
    """Return the path of ``name`` or explain what to install."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissingError(
            f"`{name}` was not found on PATH. The local Kafka broker needs a Java 17+ runtime "
            "and Apache Maven (Debian: `apt-get install openjdk-17-jre-headless maven`). "
            "Alternatively run Kafka with `docker compose up kafka` and set "
            "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092, or point that variable at any "
            "existing cluster."
        )
    return path


class DownloadProgress:
    """What Maven downloads on a first provisioning, on stderr as it goes: a first run
    fetches about 44 MB of jars from Maven Central and must not look hung for minutes."""

    _DOWNLOADED = re.compile(r"Downloaded from \S+: (\S+) \(([\d.,]+) (B|kB|KB|MB)")
    _UNITS: ClassVar[dict[str, float]] = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6}

    def __init__(self, what: str, out: TextIO | None = None, every_s: float = 2.0) -> None:
        self.what = what
        self.files = 0
        self.bytes = 0.0
        self._out = out or sys.stderr
        self._every_s = every_s
        self._last = 0.0

    def read(self, line: str) -> None:
        """One line of Maven's output."""
        match = self._DOWNLOADED.search(line)
        if match is None:
            return
        url, size, unit = match.groups()
        self.files += 1
        self.bytes += float(size.replace(",", "")) * self._UNITS[unit]
        now = time.monotonic()
        if now - self._last >= self._every_s:
            self._last = now
            name = url.rsplit("/", 1)[-1]
            self._say(
                f"downloading {self.what} from Maven Central: {self.files} files, {self.bytes / 1e6:.1f} MB ({name})"
            )

    def done(self) -> None:
        """The summary line, when anything was downloaded."""
        if self.files:
            self._say(f"downloaded {self.what}: {self.files} files, {self.bytes / 1e6:.1f} MB")

    def _say(self, text: str) -> None:
        print(text, file=self._out, flush=True)


def kafka_libs(version: str = KAFKA_VERSION) -> Path:
    """Return the folder of Kafka jars for ``version``, resolving it with Maven if needed."""
    target = cache_root() / "kafka" / version / "libs"
    if (target / _COMPLETE_MARKER).exists():
        return target
    require_tool("java")
    mvn = require_tool("mvn")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be provisioning the same version
        if (target / _COMPLETE_MARKER).exists():
            return target
        staging = Path(tempfile.mkdtemp(prefix="libs-", dir=target.parent))
        command = [
            mvn,
            "-B",
            "-f",
            str(_POM),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        progress = DownloadProgress(f"Apache Kafka {version}")
        maven = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert maven.stdout is not None
        tail: list[str] = []
        for line in maven.stdout:
            progress.read(line)
            tail = [*tail[-80:], line]
        progress.done()
        if maven.wait() != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            raise RuntimeError(f"Maven could not resolve Apache Kafka {version}:\n{''.join(tail)[-4000:]}")
        (staging / _COMPLETE_MARKER).write_text(version)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target
