from __future__ import annotations

import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.vision.fetch import FetchError, FrameFetcher
from schemas.settings import FetchSettings


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


class _Server(http.server.BaseHTTPRequestHandler):
    failures_left = 2

    def do_GET(self) -> None:
        if self.path == "/frames/flaky.png" and _Server.failures_left > 0:
            _Server.failures_left -= 1
            self.send_error(503)
        elif self.path in ("/frames/ok.png", "/frames/flaky.png"):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"served")
        elif self.path == "/frames/redirect.png":
            self.send_response(302)
            self.send_header("Location", "/private/key")
            self.end_headers()
        else:
            self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_base() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_fetching_with_retries_and_redirect_rules(http_base: str) -> None:
    f = fetcher(f"{http_base}/frames/")
    assert f.fetch(f"{http_base}/frames/ok.png") == b"served"
    _Server.failures_left = 2
    assert f.fetch(f"{http_base}/frames/flaky.png") == b"served"  # two 503s, then success
    assert reason(lambda: f.fetch(f"{http_base}/frames/gone.png")) == "missing_object"
    assert reason(lambda: f.fetch(f"{http_base}/frames/redirect.png")) == "disallowed_uri"
    assert reason(lambda: f.fetch(f"{http_base}/private/key")) == "disallowed_uri"
    assert reason(lambda: f.fetch(f"{http_base}/frames/../private/key")) == "disallowed_uri"
