"""Where an ``http(s)://`` frame fetch may connect: checked after DNS resolution, then pinned.

A name under an allowed prefix can still resolve to an address the service must never reach:
the cloud metadata service (169.254.169.254), the host itself, or a private network (a name
whose DNS answer an attacker controls, or one that rebinds between check and use). Each
connection resolves its host once, refuses it unless every address is public or inside an
allowed network, and connects to exactly the address it checked.

Allowed beyond public addresses: ``fetch.allowed_networks`` (CIDR blocks, e.g. a plant's
camera network), and any address an allowed prefix names literally
(``http://127.0.0.1:8080/frames/``): the operator wrote it down.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import urllib.request
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressRefused(Exception):
    """The host resolved to an address outside the allowed networks (``disallowed_uri``)."""


class ResolveFailed(OSError):
    """The host did not resolve (transient: DNS may answer on the next try)."""


def _literal(host: str | None) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host or "")
    except ValueError:
        return None


def _public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _public(address.ipv4_mapped)
    return address.is_global and not address.is_multicast


class AddressGuard:
    """Resolves a host and returns the one address to connect to, or refuses it."""

    def __init__(self, allowed_networks: Iterable[object], prefixes: Iterable[str]) -> None:
        networks: list[IPNetwork] = [ipaddress.ip_network(str(n), strict=False) for n in allowed_networks]
        for prefix in prefixes:
            literal = _literal(urlsplit(prefix).hostname)
            if literal is not None:
                networks.append(ipaddress.ip_network(literal))
        self._networks = networks

    def allows(self, address: IPAddress) -> bool:
        """Public, or inside an allowed network."""
        return _public(address) or any(address in network for network in self._networks)

    def resolve(self, host: str, port: int) -> str:
        """The checked address to connect to for ``host``; every address it resolves to must pass."""
        try:
            answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise ResolveFailed(f"{host} did not resolve: {error}") from error
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in answers]
        refused = [str(a) for a in addresses if not self.allows(a)]
        if refused or not addresses:
            raise AddressRefused(
                f"{host} resolves to {', '.join(refused) or 'nothing'}: not a public address and "
                "not in fetch.allowed_networks"
            )
        return str(addresses[0])


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, guard: AddressGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = guard

    def connect(self) -> None:
        address = self._guard.resolve(self.host, self.port)
        self.sock = socket.create_connection((address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, guard: AddressGuard, tls: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(*args, context=tls, **kwargs)
        self._guard = guard
        self._tls = tls

    def connect(self) -> None:
        address = self._guard.resolve(self.host, self.port)
        sock = socket.create_connection((address, self.port), self.timeout)
        # the certificate is checked against the name, the connection goes to the checked address
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


class PinnedHTTPHandler(urllib.request.HTTPHandler):
    """``http://`` through a connection pinned to the address ``guard`` checked."""

    def __init__(self, guard: AddressGuard) -> None:
        super().__init__()
        self._guard = guard

    def http_open(self, req: Any) -> Any:
        return self.do_open(lambda *a, **k: _PinnedHTTPConnection(*a, guard=self._guard, **k), req)


class PinnedHTTPSHandler(urllib.request.HTTPSHandler):
    """``https://`` through a connection pinned to the address ``guard`` checked."""

    def __init__(self, guard: AddressGuard) -> None:
        super().__init__()
        self._guard = guard
        self._tls = ssl.create_default_context()

    def https_open(self, req: Any) -> Any:
        return self.do_open(
            lambda *a, **k: _PinnedHTTPSConnection(*a, guard=self._guard, tls=self._tls, **k), req
        )
