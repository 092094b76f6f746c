from __future__ import annotations

import hashlib
import http.server
import os
import threading
import time
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


class _Server(http.server.BaseHTTPRequestHandler):
    failures_left = 2
    requests: list[str] = []  # noqa: RUF012  (shared by the handler instances of one test)

    def do_GET(self) -> None:
        _Server.requests.append(self.path)
        if self.path == "/frames/down.png":
            self.send_response(503)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/frames/trickle.png":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.05)  # the slow server under test, not synchronisation
        elif self.path == "/frames/escape.png":
            self.send_response(302)
            self.send_header("Location", "/frames/../private/key")
            self.end_headers()
        elif self.path == "/private/key":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"secret")
        elif self.path == "/frames/flaky.png" and _Server.failures_left > 0:
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


def test_a_server_down_for_good_costs_a_bounded_number_of_tries(http_base: str) -> None:
    _Server.requests = []
    f = fetcher(f"{http_base}/frames/", max_retries=2, deadline_s=20)
    assert reason(lambda: f.fetch(f"{http_base}/frames/down.png")) == "fetch_failed"
    assert _Server.requests.count("/frames/down.png") == 3  # the first try and two retries


def test_a_trickling_server_fails_the_fetch_at_its_deadline(http_base: str) -> None:
    f = fetcher(f"{http_base}/frames/", deadline_s=1.0, timeout_s=5)
    with pytest.raises(FetchError) as caught:  # a per-read timeout alone would wait for all 1000 bytes
        f.fetch(f"{http_base}/frames/trickle.png")
    assert caught.value.reason == "fetch_failed" and "did not arrive within 1.0s" in str(caught.value)


def test_a_redirect_target_gets_the_checks_of_a_direct_uri(http_base: str) -> None:
    _Server.requests = []
    f = fetcher(f"{http_base}/frames/")
    assert reason(lambda: f.fetch(f"{http_base}/frames/escape.png")) == "disallowed_uri"
    assert "/private/key" not in _Server.requests  # the listener proves nothing was read there
