"""Fetching frame images: only from allowed prefixes, bounded in size and time, retried a bounded number of times.

A frame reference is untrusted input:
- ``file://``: the path is resolved (symlinks and ``..``) and must lie inside an allowed
  folder; the file is then opened without blocking and without following a final symlink,
  and the *opened* file's own path (``/proc/self/fd``) is checked again, so a folder swapped
  for a symlink between the check and the open is caught. Only regular files are read
  (never FIFOs, devices or sockets). Nothing is cached: every access is checked afresh.
- Any URI with a control character (``%00`` included) or a backslash, raw or percent-encoded,
  is refused.
- ``http(s)://`` and ``s3://``: the URI must start with an allowed prefix, carry no ``..``
  segment and no user info; every redirect target gets the same checks as a direct URI. An
  ``http(s)://`` connection goes only to an address checked after DNS resolution, and to
  exactly that address (``addresses``): no link-local, loopback or private address unless
  an allowed prefix names it or it lies in ``fetch.allowed_networks``. No proxy is used.
- Every fetch has a total deadline (``deadline_s``) over all its tries, a bounded number of
  retries with jittered exponential back-off that honours ``Retry-After``, and a size limit.
  Reads go chunk by chunk against the deadline, so a server trickling a byte a second fails
  the fetch instead of holding a worker.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import random
import re
import stat
import threading
import time
import urllib.error
import urllib.request
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from consumers.pipelines.vision.addresses import (
    AddressGuard,
    AddressRefused,
    PinnedHTTPHandler,
    PinnedHTTPSHandler,
    ResolveFailed,
)
from schemas.settings import FetchSettings

_CHUNK = 1 << 16
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
_PROC_FD = Path("/proc/self/fd")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")
"""Control characters and backslashes: never part of a frame URI Vigil fetches."""
FOLDER_RESOLVE_S = 1.0
"""How stale the resolved allowed folders may be (a folder that is a symlink can change)."""


class FetchError(Exception):
    """A frame could not be fetched; ``reason`` is the dead-letter reason.

    ``transient`` marks a failure abandoned only because the fetcher is stopping: the frame
    stays uncommitted for the partition's next owner.
    """

    def __init__(
        self, reason: str, message: str, transient: bool = False, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.transient = transient
        self.retry_after_s = retry_after_s


class FrameFetcher:
    """Reads the bytes behind a frame URI under the rules in the module docstring."""

    def __init__(self, settings: FetchSettings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self._folders = [
            unquote(urlsplit(p).path) for p in settings.allowed_prefixes if p.startswith("file://")
        ]
        self._url_prefixes = [p for p in settings.allowed_prefixes if not p.startswith("file://")]
        self._guard = AddressGuard(settings.allowed_networks, self._url_prefixes)
        self._stop = stop or threading.Event()
        self._resolved: list[str] = []
        self._resolved_at = -FOLDER_RESOLVE_S - 1.0

    def fetch(self, uri: str, sha256: str | None = None) -> bytes:
        """The object's bytes, checked against ``sha256`` (see ``fetch_hashed``)."""
        return self.fetch_hashed(uri, sha256)[0]

    def fetch_hashed(self, uri: str, sha256: str | None = None) -> tuple[bytes, str]:
        """The object's bytes and their sha256, hashed once: checked against ``sha256`` when
        given, and kept for the result's evidence.

        Transient failures are retried up to ``max_retries`` times within ``deadline_s``, then
        the frame is ``fetch_failed``; a stop request abandons the retries (``transient``).
        """
        target = self.check_allowed(uri)
        deadline = time.monotonic() + self.settings.deadline_s
        tries = 0
        while True:
            tries += 1
            try:
                data = self._read(target, deadline)
                break
            except FetchError as error:
                if not error.transient:
                    raise
                delay = self._backoff(tries, error.retry_after_s)
                if tries > self.settings.max_retries or time.monotonic() + delay >= deadline:
                    raise FetchError("fetch_failed", f"{error} (gave up after {tries} tries)") from error
                if self._stop.wait(delay):
                    raise
        digest = hashlib.sha256(data).hexdigest()
        if sha256 is not None and digest != sha256:
            raise FetchError("checksum_mismatch", f"sha256 of {len(data)} bytes does not match the message")
        return data, digest

    def _backoff(self, tries: int, retry_after_s: float | None) -> float:
        """Full-jitter exponential back-off, never shorter than the server's ``Retry-After``."""
        ceiling = min(self.settings.retry_max_s, self.settings.retry_initial_s * 2 ** (tries - 1))
        delay = random.uniform(ceiling / 2, ceiling)
        return max(delay, retry_after_s or 0.0)

    def check_allowed(self, uri: str) -> Path | str:
        """The resolved path (``file://``) or the URL to read; raises ``disallowed_uri``."""
        if _UNSAFE.search(uri) or _UNSAFE.search(unquote(uri)):
            raise FetchError("disallowed_uri", f"{uri!r} has a control character or a backslash")
        parts = urlsplit(uri)
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise FetchError("disallowed_uri", f"file URI with a host is not allowed: {uri}")
            try:
                resolved = os.path.realpath(unquote(parts.path))
            except OSError as error:  # a name too long, a symlink loop
                raise FetchError("unreadable_object", f"{uri}: {error.strerror}") from error
            if self._inside_allowed_folder(resolved):
                return Path(resolved)
            raise FetchError("disallowed_uri", f"{uri} resolves outside the allowed folders")
        if parts.scheme in ("http", "https", "s3"):
            path = unquote(parts.path)
            if (
                "@" in parts.netloc
                or ".." in path.split("/")
                or posixpath.normpath(path or "/") != (path.rstrip("/") or "/")
            ):
                raise FetchError("disallowed_uri", f"{uri} has user info or a non-normal path")
            if any(uri.startswith(prefix) for prefix in self._url_prefixes):
                return uri
            raise FetchError("disallowed_uri", f"{uri} is not under an allowed prefix")
        raise FetchError("disallowed_uri", f"scheme {parts.scheme!r} is not allowed")

    def _inside_allowed_folder(self, resolved: str) -> bool:
        return any(Path(resolved).is_relative_to(folder) for folder in self._resolved_folders())

    def _resolved_folders(self) -> list[str]:
        # An allowed folder may itself be a symlink that changes: resolved again at most once
        # a second (resolving on every frame cost a fifth of the GPU stage's Python time).
        now = time.monotonic()
        if now - self._resolved_at > FOLDER_RESOLVE_S:
            self._resolved = [os.path.realpath(folder) for folder in self._folders]
            self._resolved_at = now
        return self._resolved

    def _read(self, target: Path | str, deadline: float) -> bytes:
        if isinstance(target, Path):
            return self._read_file(target, deadline)
        if target.startswith("s3://"):
            return self._read_s3(target)
        return self._read_http(target, deadline)

    def _too_big(self, size: int, uri: str) -> None:
        if size > self.settings.max_bytes:
            raise FetchError("oversize", f"{uri} is larger than {self.settings.max_bytes} bytes")

    def _read_file(self, path: Path, deadline: float) -> bytes:
        try:
            fd = os.open(path, _OPEN_FLAGS | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError as error:
            raise FetchError("missing_object", f"{path} does not exist") from error
        except OSError as error:  # permission, a symlink swapped in (ELOOP), a name too long
            raise FetchError("unreadable_object", f"{path}: {error.strerror}") from error
        try:
            opened = self._opened_path(fd)
            if opened is not None and not self._inside_allowed_folder(opened):
                raise FetchError(
                    "disallowed_uri", f"{path} was opened as {opened}, outside the allowed folders"
                )
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise FetchError("unreadable_object", f"{path} is not a regular file")
            if info.st_size == 0:
                raise FetchError("empty_object", f"{path} is empty (0 bytes)")
            self._too_big(info.st_size, str(path))
            chunks: list[bytes] = []
            total = 0
            while chunk := os.read(fd, _CHUNK):
                total += len(chunk)
                self._too_big(total, str(path))
                if time.monotonic() > deadline:
                    raise FetchError("fetch_failed", f"reading {path} passed the fetch deadline")
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError as error:
            raise FetchError("unreadable_object", f"{path}: {error.strerror or error}") from error
        finally:
            os.close(fd)

    @staticmethod
    def _opened_path(fd: int) -> str | None:
        """The path of the file behind ``fd``, as the kernel sees it (None where /proc is missing)."""
        try:
            return os.readlink(_PROC_FD / str(fd))
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise

    def _read_http(self, url: str, deadline: float) -> bytes:
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            PinnedHTTPHandler(self._guard),
            PinnedHTTPSHandler(self._guard),
            _CheckedRedirects(self.check_allowed),
        )
        timeout = max(0.01, min(self.settings.timeout_s, deadline - time.monotonic()))
        try:
            with opener.open(url, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                if length and length.isdigit():
                    self._too_big(int(length), url)
                return self._read_stream(response, url, deadline)
        except urllib.error.HTTPError as error:
            if error.code in (404, 410):
                raise FetchError("missing_object", f"{url}: HTTP {error.code}") from error
            if error.code in (408, 429) or error.code >= 500:
                raise FetchError(
                    "fetch_failed",
                    f"{url}: HTTP {error.code}",
                    transient=True,
                    retry_after_s=_retry_after(error.headers.get("Retry-After")),
                ) from error
            raise FetchError("unreadable_object", f"{url}: HTTP {error.code}") from error
        except AddressRefused as error:
            raise FetchError("disallowed_uri", f"{url}: {error}") from error
        except (urllib.error.URLError, TimeoutError, ConnectionError, ResolveFailed) as error:
            raise FetchError("fetch_failed", f"{url}: {error}", transient=True) from error

    def _read_stream(self, response: Any, url: str, deadline: float) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while chunk := response.read1(_CHUNK):  # read1: one socket read, so the deadline is checked often
            total += len(chunk)
            self._too_big(total, url)
            if time.monotonic() > deadline:
                raise FetchError("fetch_failed", f"{url} did not arrive within {self.settings.deadline_s}s")
            chunks.append(chunk)
        if not total:
            raise FetchError("empty_object", f"{url} returned no bytes")
        return b"".join(chunks)

    def _read_s3(self, url: str) -> bytes:
        try:
            import fsspec
        except ImportError as error:
            raise FetchError(
                "unreadable_object", "s3:// needs the s3 extra: pip install 'vigil[s3]'"
            ) from error
        try:
            with fsspec.open(url, "rb", timeout=self.settings.timeout_s) as handle:
                data = handle.read(self.settings.max_bytes + 1)
        except FileNotFoundError as error:
            raise FetchError("missing_object", f"{url} does not exist") from error
        except PermissionError as error:
            raise FetchError("unreadable_object", f"{url}: {error}") from error
        except (TimeoutError, ConnectionError, OSError) as error:
            raise FetchError("fetch_failed", f"{url}: {error}", transient=True) from error
        self._too_big(len(data), url)
        if not data:
            raise FetchError("empty_object", f"{url} is empty (0 bytes)")
        return bytes(data)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only when its target passes the same checks as a direct URI."""

    def __init__(self, check: Any) -> None:
        self._check = check

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        self._check(newurl)  # raises FetchError("disallowed_uri") for a target outside the rules
        return super().redirect_request(req, fp, code, msg, headers, newurl)
