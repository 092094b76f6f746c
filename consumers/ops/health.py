"""The HTTP endpoint: ``/metrics`` (Prometheus text or OpenMetrics, as the scraper asks),
``/healthz`` (the process is not wedged) and ``/readyz`` (ready to do its work; the body
says why not).

``/metrics`` can ask for HTTP basic authentication, and the whole endpoint can speak TLS
only (``metrics.basic_auth_*``, ``metrics.tls_*``). The two checks stay open: they reveal
one line of state and are what orchestrators probe without credentials.
"""

from __future__ import annotations

import base64
import hmac
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from schemas.settings import MetricsSettings

Check = Callable[[], bool]
Diagnosis = Callable[[], str | None]
"""None when all is well, else what is wrong."""


def _expected_authorization(settings: MetricsSettings | None) -> bytes | None:
    if settings is None or settings.basic_auth_username is None or settings.basic_auth_password is None:
        return None
    pair = f"{settings.basic_auth_username}:{settings.basic_auth_password.get_secret_value()}"
    return b"Basic " + base64.b64encode(pair.encode())


class MetricsServer:
    """Serves the registry and the two checks on ``host:port`` from a daemon thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        alive: Check,
        not_ready: Diagnosis,
        settings: MetricsSettings | None = None,
    ) -> None:
        server = self
        expected = _expected_authorization(settings)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/metrics":
                    if expected is not None and not self._authorized(expected):
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="vigil metrics"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                    self._reply(200, encoder(server.registry), content_type)
                elif path == "/healthz":
                    ok = alive()
                    self._reply(200 if ok else 503, b"ok\n" if ok else b"wedged\n", "text/plain")
                elif path == "/readyz":
                    reason = not_ready()
                    body = b"ok\n" if reason is None else f"not ready: {reason}\n".encode()
                    self._reply(200 if reason is None else 503, body, "text/plain")
                else:
                    self._reply(404, b"not found\n", "text/plain")

            def _authorized(self, expected: bytes) -> bool:
                given = self.headers.get("Authorization", "").encode()
                return hmac.compare_digest(given, expected)

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
        if settings is not None and settings.tls_cert_file and settings.tls_key_file:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
            # The handshake happens on the handler thread's first read, never in accept().
            self._http.socket = context.wrap_socket(
                self._http.socket, server_side=True, do_handshake_on_connect=False
            )
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
