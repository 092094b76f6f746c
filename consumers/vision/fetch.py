"""Fetching frame images: only from allowed prefixes, bounded in size and time, retried when transient.

A frame reference is untrusted input. Before any read, a ``file://`` URI's path is resolved
(symlinks and ``..`` included) and must lie inside an allowed folder; ``http(s)://`` and
``s3://`` URIs must start with an allowed prefix, carry no ``..`` segment and no user info,
and HTTP redirects must stay under the allowed prefixes. Anything else is ``disallowed_uri``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from schemas.settings import FetchSettings


class FetchError(Exception):
    """A frame could not be fetched; ``reason`` is the dead-letter reason."""

    def __init__(self, reason: str, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.transient = transient


@dataclass(frozen=True)
class _Allowed:
    folders: tuple[Path, ...]
    url_prefixes: tuple[str, ...]


def _allowed(prefixes: list[str]) -> _Allowed:
    folders = []
    urls = []
    for prefix in prefixes:
        if prefix.startswith("file://"):
            folders.append(Path(os.path.realpath(unquote(urlsplit(prefix).path))))
        else:
            urls.append(prefix)
    return _Allowed(tuple(folders), tuple(urls))


class FrameFetcher:
    """Reads the bytes behind a frame URI under the rules in the module docstring."""

    def __init__(self, settings: FetchSettings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self._allowed = _allowed(settings.allowed_prefixes)
        self._stop = stop or threading.Event()

    def fetch(self, uri: str, sha256: str | None = None) -> bytes:
        """The object's bytes, checked against ``sha256``; transient failures are retried with
        exponential backoff until they succeed or the fetcher is stopped."""
        target = self.check_allowed(uri)
        delay = self.settings.retry_initial_s
        while True:
            try:
                data = self._read(uri, target)
                break
            except FetchError as error:
                if not error.transient or self._stop.wait(delay):
                    raise
                delay = min(delay * 2, self.settings.retry_max_s)
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise FetchError("checksum_mismatch", f"sha256 of {len(data)} bytes does not match the message")
        return data

    def check_allowed(self, uri: str) -> Path | str:
        """The resolved path (``file://``) or the URL to read; raises ``disallowed_uri``."""
        parts = urlsplit(uri)
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise FetchError("disallowed_uri", f"file URI with a host is not allowed: {uri}")
            resolved = _resolve(unquote(parts.path))
            if any(resolved.is_relative_to(folder) for folder in self._allowed.folders):
                return resolved
            raise FetchError("disallowed_uri", f"{uri} resolves outside the allowed folders")
        if parts.scheme in ("http", "https", "s3"):
            path = unquote(parts.path)
            if (
                "@" in parts.netloc
                or ".." in path.split("/")
                or posixpath.normpath(path or "/") != (path.rstrip("/") or "/")
            ):
                raise FetchError("disallowed_uri", f"{uri} has user info or a non-normal path")
            if self._url_allowed(uri):
                return uri
            raise FetchError("disallowed_uri", f"{uri} is not under an allowed prefix")
        raise FetchError("disallowed_uri", f"scheme {parts.scheme!r} is not allowed")

    def _url_allowed(self, url: str) -> bool:
        return any(url.startswith(prefix) for prefix in self._allowed.url_prefixes)

    def _read(self, uri: str, target: Path | str) -> bytes:
        if isinstance(target, Path):
            return self._read_file(target)
        if target.startswith("s3://"):
            return self._read_s3(target)
        return self._read_http(target)

    def _limit(self, data: bytes, uri: str) -> bytes:
        if len(data) > self.settings.max_bytes:
            raise FetchError("oversize", f"{uri} is larger than {self.settings.max_bytes} bytes")
        return data

    def _read_file(self, path: Path) -> bytes:
        try:
            if path.stat().st_size > self.settings.max_bytes:
                raise FetchError("oversize", f"{path} is larger than {self.settings.max_bytes} bytes")
            with open(path, "rb") as handle:
                return self._limit(handle.read(self.settings.max_bytes + 1), str(path))
        except FileNotFoundError as error:
            raise FetchError("missing_object", f"{path} does not exist") from error
        except (PermissionError, IsADirectoryError) as error:
            raise FetchError("unreadable_object", f"{path}: {error.strerror}") from error

    def _read_http(self, url: str) -> bytes:
        opener = urllib.request.build_opener(_PrefixRedirects(self._url_allowed))
        try:
            with opener.open(url, timeout=self.settings.timeout_s) as response:
                return self._limit(response.read(self.settings.max_bytes + 1), url)
        except urllib.error.HTTPError as error:
            if error.code in (404, 410):
                raise FetchError("missing_object", f"{url}: HTTP {error.code}") from error
            if error.code in (408, 429) or error.code >= 500:
                raise FetchError("fetch_failed", f"{url}: HTTP {error.code}", transient=True) from error
            raise FetchError("unreadable_object", f"{url}: HTTP {error.code}") from error
        except _RedirectRefused as error:
            raise FetchError("disallowed_uri", str(error)) from error
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            raise FetchError("fetch_failed", f"{url}: {error}", transient=True) from error

    def _read_s3(self, url: str) -> bytes:
        try:
            import fsspec
        except ImportError as error:
            raise FetchError(
                "unreadable_object", "s3:// needs the s3 extra: pip install 'vigil[s3]'"
            ) from error
        try:
            with fsspec.open(url, "rb", timeout=self.settings.timeout_s) as handle:
                return self._limit(handle.read(self.settings.max_bytes + 1), url)
        except FileNotFoundError as error:
            raise FetchError("missing_object", f"{url} does not exist") from error
        except PermissionError as error:
            raise FetchError("unreadable_object", f"{url}: {error}") from error
        except (TimeoutError, ConnectionError, OSError) as error:
            raise FetchError("fetch_failed", f"{url}: {error}", transient=True) from error


@functools.lru_cache(maxsize=4096)
def _resolved_folder(folder: str) -> str:
    return os.path.realpath(folder)


def _resolve(path: str) -> Path:
    """``realpath`` of ``path``, with its folder's resolution cached (a frame store has few folders).

    The caller reads the returned path, never the original, so what is checked is what is read.
    """
    folder, name = os.path.split(os.path.normpath(path))
    candidate = os.path.join(_resolved_folder(folder), name)
    if name in ("", ".", "..") or os.path.islink(candidate):
        return Path(os.path.realpath(candidate))
    return Path(candidate)


class _RedirectRefused(Exception):
    pass


class _PrefixRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only when its target is under an allowed prefix."""

    def __init__(self, allowed: Any) -> None:
        self._allowed = allowed

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if not self._allowed(newurl):
            raise _RedirectRefused(f"redirect to {newurl} leaves the allowed prefixes")
        return super().redirect_request(req, fp, code, msg, headers, newurl)
