from __future__ import annotations

from pathlib import Path

import pytest

from consumers.ops.local_kafka import provision
from consumers.ops.local_kafka.broker import new_cluster_id, server_properties


def test_properties_fit_a_single_node_with_transactions(tmp_path: Path) -> None:
    props = dict(line.split("=", 1) for line in server_properties(tmp_path, 1234, 5678).splitlines())
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:1234,CONTROLLER://127.0.0.1:5678"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:5678"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert props[key] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_cluster_ids_are_22_url_safe_characters_never_starting_with_a_dash() -> None:
    for _ in range(500):  # one random id in 64 would start with "-" otherwise
        cluster_id = new_cluster_id()
        assert len(cluster_id) == 22 and "=" not in cluster_id and "+" not in cluster_id
        assert not cluster_id.startswith("-")


def test_missing_tools_say_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VIGIL_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(provision.ToolMissingError, match=r"apt-get install .*docker compose"):
        provision.kafka_libs("9.9.9")


def test_a_first_provisioning_says_what_it_downloads() -> None:
    import io

    from consumers.ops.local_kafka.provision import DownloadProgress

    out = io.StringIO()
    progress = DownloadProgress("Apache Kafka 4.3.0", out, every_s=0.0)
    base = "https://repo.maven.apache.org/maven2/org/apache/kafka"
    for line in [
        f"[INFO] Downloading from central: {base}/kafka-clients/4.3.0/kafka-clients-4.3.0.jar",
        f"[INFO] Downloaded from central: {base}/kafka-clients/4.3.0/kafka-clients-4.3.0.jar (2.1 MB at 9.8 MB/s)",
        "[INFO] BUILD SUCCESS",
        f"[INFO] Downloaded from central: {base}/kafka_2.13/4.3.0/kafka_2.13-4.3.0.pom (650 B at 20 kB/s)",
    ]:
        progress.read(line)
    progress.done()
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("1 files, 2.1 MB (kafka-clients-4.3.0.jar)")
    assert lines[-1] == "downloaded Apache Kafka 4.3.0: 2 files, 2.1 MB"
