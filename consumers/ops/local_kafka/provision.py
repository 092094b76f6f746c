"""Resolve Apache Kafka's jars from Maven Central into a cache outside the repository.

The first run asks the machine's Maven to copy the broker and its runtime dependencies
into ``<cache>/kafka/<version>/libs``; later runs find the folder complete and reuse it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

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
            "-q",
            "-B",
            "-f",
            str(_POM),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            raise RuntimeError(
                f"Maven could not resolve Apache Kafka {version}:\n"
                f"{result.stdout[-4000:]}{result.stderr[-4000:]}"
            )
        (staging / _COMPLETE_MARKER).write_text(version)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target
