"""The HTTP endpoint: ``/metrics`` (Prometheus text or OpenMetrics, as the scraper asks),
``/healthz`` (the loop is going round) and ``/readyz`` (partitions assigned, models warm)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

Check = Callable[[], bool]


class MetricsServer:
    """Serves the registry and the two checks on ``host:port`` from a daemon thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, alive: Check, ready: Check) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/metrics":
                    encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                    self._reply(200, encoder(server.registry), content_type)
                elif path in ("/healthz", "/readyz"):
                    ok = alive() if path == "/healthz" else ready()
                    self._reply(200 if ok else 503, b"ok\n" if ok else b"not ready\n", "text/plain")
                else:
                    self._reply(404, b"not found\n", "text/plain")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Scrapes are not worth a log line each."""

        self.registry = registry
        self._http = ThreadingHTTPServer((host, port), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, name="vigil-metrics", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful when 0 was asked for)."""
        return int(self._http.server_address[1])

    def start(self) -> MetricsServer:
        """Serve in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)
