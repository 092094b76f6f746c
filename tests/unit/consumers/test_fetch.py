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
