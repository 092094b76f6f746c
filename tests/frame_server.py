"""A local HTTP frame store with hostile routes, for fetch tests; it records every path asked for."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class FrameServer(http.server.BaseHTTPRequestHandler):
    """Routes under /frames/ that behave as a healthy, a flaky, a dead, a slow and a hostile store."""

    failures_left = 2
    requests: list[str] = []  # noqa: RUF012  (shared by the handler instances of one test)

    def do_GET(self) -> None:
        FrameServer.requests.append(self.path)
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
        elif self.path == "/frames/flaky.png" and FrameServer.failures_left > 0:
            FrameServer.failures_left -= 1
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


@contextmanager
def frame_server() -> Iterator[str]:
    """Serve ``FrameServer`` on a free loopback port; yields its base URL."""
    FrameServer.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FrameServer)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
