from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.pipelines.vision.fetch import FetchError, FrameFetcher
from schemas.settings import FetchSettings
from tests.frame_server import FrameServer, frame_server


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"image-bytes")
    (tmp_path / "secret.txt").write_text("do not read")
    os.symlink(tmp_path / "secret.txt", folder / "link.png")
    return folder


def fetcher(*prefixes: str, **settings: object) -> FrameFetcher:
    return FrameFetcher(FetchSettings(allowed_prefixes=list(prefixes), retry_initial_s=0.01, **settings))  # type: ignore[arg-type]


def reason(call) -> str:
    with pytest.raises(FetchError) as caught:
        call()
    return caught.value.reason


def test_files_under_the_allowed_folder_are_read(frames: Path) -> None:
    data = fetcher(f"file://{frames}/").fetch(
        f"file://{frames}/a.png", hashlib.sha256(b"image-bytes").hexdigest()
    )
    assert data == b"image-bytes"


def test_the_bytes_are_hashed_once_for_the_check_and_the_evidence(
    frames: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = hashlib.sha256

    def counted(data: bytes = b"") -> object:
        calls.append(len(data))
        return real(data)

    digest = real(b"image-bytes").hexdigest()
    monkeypatch.setattr(hashlib, "sha256", counted)
    f = fetcher(f"file://{frames}/")
    assert f.fetch_hashed(f"file://{frames}/a.png", digest) == (b"image-bytes", digest)
    assert f.fetch_hashed(f"file://{frames}/a.png") == (b"image-bytes", digest)  # unchecked, still hashed
    assert calls == [11, 11]


def test_escapes_are_disallowed(frames: Path) -> None:
    f = fetcher(f"file://{frames}/")
    for uri in (
        "file:///etc/passwd",
        f"file://{frames}/../secret.txt",
        f"file://{frames}/link.png",  # a symlink pointing outside
        f"file://{frames}/%2e%2e/secret.txt",
        "file://otherhost/etc/passwd",
        "http://169.254.169.254/latest/meta-data/",
        "ftp://example.com/a.png",
    ):
        assert reason(lambda uri=uri: f.fetch(uri)) == "disallowed_uri", uri


def test_missing_unreadable_oversize_and_checksum(frames: Path) -> None:
    f = fetcher(f"file://{frames}/", max_bytes=5)
    assert reason(lambda: f.fetch(f"file://{frames}/none.png")) == "missing_object"
    assert reason(lambda: f.fetch(f"file://{frames}/a.png")) == "oversize"
    (frames / "dir.png").mkdir()
    assert (
        reason(lambda: fetcher(f"file://{frames}/").fetch(f"file://{frames}/dir.png")) == "unreadable_object"
    )
    assert (
        reason(lambda: fetcher(f"file://{frames}/").fetch(f"file://{frames}/a.png", "0" * 64))
        == "checksum_mismatch"
    )


def test_an_allowed_folder_swapped_for_a_symlink_after_first_use_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "frames"
    (root / "cam-1").mkdir(parents=True)
    (root / "cam-1" / "a.png").write_bytes(b"first")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "a.png").write_bytes(b"secret")
    f = fetcher(f"file://{root}/")
    assert f.fetch(f"file://{root}/cam-1/a.png") == b"first"
    (root / "cam-1" / "a.png").unlink()
    (root / "cam-1").rmdir()
    os.symlink(secret, root / "cam-1")  # the same sub-folder now leads out of the store
    assert reason(lambda: f.fetch(f"file://{root}/cam-1/a.png")) == "disallowed_uri"


def test_only_regular_files_are_read_and_never_block(frames: Path) -> None:
    os.mkfifo(frames / "pipe.png")  # opening a FIFO for reading would block until a writer comes
    f = fetcher(f"file://{frames}/")
    assert reason(lambda: f.fetch(f"file://{frames}/pipe.png")) == "unreadable_object"


def test_empty_and_unnameable_files_get_their_own_reasons(frames: Path) -> None:
    (frames / "empty.png").write_bytes(b"")
    f = fetcher(f"file://{frames}/")
    assert reason(lambda: f.fetch(f"file://{frames}/empty.png")) == "empty_object"
    assert reason(lambda: f.fetch(f"file://{frames}/{'x' * 300}.png")) == "unreadable_object"


@pytest.fixture
def http_base() -> Iterator[str]:
    with frame_server() as base:
        yield base


def test_http_fetching_with_retries_and_redirect_rules(http_base: str) -> None:
    f = fetcher(f"{http_base}/frames/")
    assert f.fetch(f"{http_base}/frames/ok.png") == b"served"
    FrameServer.failures_left = 2
    assert f.fetch(f"{http_base}/frames/flaky.png") == b"served"  # two 503s, then success
    assert reason(lambda: f.fetch(f"{http_base}/frames/gone.png")) == "missing_object"
    assert reason(lambda: f.fetch(f"{http_base}/frames/redirect.png")) == "disallowed_uri"
    assert reason(lambda: f.fetch(f"{http_base}/private/key")) == "disallowed_uri"
    assert reason(lambda: f.fetch(f"{http_base}/frames/../private/key")) == "disallowed_uri"


def test_a_server_down_for_good_costs_a_bounded_number_of_tries(http_base: str) -> None:
    FrameServer.requests = []
    f = fetcher(f"{http_base}/frames/", max_retries=2, deadline_s=20)
    assert reason(lambda: f.fetch(f"{http_base}/frames/down.png")) == "fetch_failed"
    assert FrameServer.requests.count("/frames/down.png") == 3  # the first try and two retries


def test_a_trickling_server_fails_the_fetch_at_its_deadline(http_base: str) -> None:
    f = fetcher(f"{http_base}/frames/", deadline_s=1.0, timeout_s=5)
    with pytest.raises(FetchError) as caught:  # a per-read timeout alone would wait for all 1000 bytes
        f.fetch(f"{http_base}/frames/trickle.png")
    assert caught.value.reason == "fetch_failed" and "did not arrive within 1.0s" in str(caught.value)


def test_a_redirect_target_gets_the_checks_of_a_direct_uri(http_base: str) -> None:
    FrameServer.requests = []
    f = fetcher(f"{http_base}/frames/")
    assert reason(lambda: f.fetch(f"{http_base}/frames/escape.png")) == "disallowed_uri"
    assert "/private/key" not in FrameServer.requests  # the listener proves nothing was read there


def test_control_characters_and_backslashes_are_disallowed_not_errors(frames: Path, http_base: str) -> None:
    f = fetcher(f"file://{frames}/", f"{http_base}/frames/")
    for uri in (
        f"file://{frames}/a.png%00.jpg",
        f"file://{frames}/a%0a.png",
        f"{http_base}/frames/..%5c..%5cprivate/key",
        f"{http_base}/frames\\..\\private/key",
    ):
        assert reason(lambda uri=uri: f.fetch(uri)) == "disallowed_uri", uri


def test_addresses_are_checked_after_resolution_and_the_connection_pinned(
    http_base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    port = int(http_base.rsplit(":", 1)[1])
    lookups: list[str] = []
    real = socket.getaddrinfo

    def resolver(host: str, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        lookups.append(host)
        if host == "frames.plant.test":  # a name whose DNS answer is the host itself
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    named = f"http://frames.plant.test:{port}/frames/"
    # under an allowed prefix, but it resolves to loopback: refused before a byte is sent
    FrameServer.requests = []
    assert reason(lambda: fetcher(named).fetch(f"{named}ok.png")) == "disallowed_uri"
    assert FrameServer.requests == []
    # the operator lists the network: fetched, from the address checked (one lookup, no second)
    lookups.clear()
    assert fetcher(named, allowed_networks=["127.0.0.0/8"]).fetch(f"{named}ok.png") == b"served"
    assert [host for host in lookups if not host[0].isdigit()] == [
        "frames.plant.test"
    ]  # the connect's own is the literal
    # a prefix naming the address literally allows it
    assert fetcher(f"{http_base}/frames/").fetch(f"{http_base}/frames/ok.png") == b"served"


def test_only_public_addresses_pass_unless_listed() -> None:
    from ipaddress import ip_address

    from consumers.pipelines.vision.addresses import AddressGuard

    guard = AddressGuard(["10.20.0.0/16"], ["http://192.168.7.9:8080/frames/", "http://cams.example/"])
    for refused in (
        "169.254.169.254",
        "127.0.0.1",
        "10.0.0.5",
        "172.16.3.4",
        "::1",
        "fe80::1",
        "::ffff:127.0.0.1",
    ):
        assert not guard.allows(ip_address(refused)), refused
    for allowed in ("93.184.216.34", "10.20.1.2", "192.168.7.9", "2606:4700::1111"):
        assert guard.allows(ip_address(allowed)), allowed
