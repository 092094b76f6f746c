"""Image decoding in a child process: a decoder that crashes or hangs on crafted input costs its
frame (``corrupt_image``), never the service.

Each fetch worker owns one ``IsolatedDecoder``: a child process, forked from a fork server that
has torch and torchvision imported once, that decodes, crops and resizes the bytes it is sent
(``decode_and_resize``) and returns the uint8 image, received straight into a buffer the
parent's tensor then owns; the lane scales and normalises a whole batch at once (the same
steps as ``preprocess``, bit for bit). A child that dies (a segfault in a native
decoder) or does not answer within the timeout is killed and replaced before the next frame;
only the frame it was working on fails, and it is known exactly because the child is the
worker's own.

Built with fetch and decode settings, the child takes whole frames (``frame``): it fetches the
URI under the same rules as the stage (``FrameFetcher``: allow-list, size and time limits),
hashes the bytes once, checks the header, decodes and resizes, and writes the image into a
shared-memory region its parent owns; the serving process then handles a URI and a copy of
the finished pixels, never the file's bytes, their hash or a pipe's worth of pixels. The
region is the worker's own, sized for the largest image it has been asked for, and reused
frame after frame (by a replacement child too); nothing holds it between frames, so a worker
that dies, a rebalance or a reload cannot leave a slot behind.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np
import torch

from consumers.pipelines.vision.fetch import FetchError, FrameFetcher
from models.vision.image_header import ImageRefused, check_header
from models.vision.preprocess import (
    CorruptImageError,
    Roi,
    RoiOutsideImageError,
    decode_and_resize,
    normalise,
)
from schemas.model_card import ImageInputSpec
from schemas.settings import DecodeSettings, FetchSettings

READY = "ready"
START_TIMEOUT_S = 120.0
"""The first child waits for the fork server to import torch; on a busy small machine that can take a while."""

_context_lock = threading.Lock()


class DecoderUnavailableError(RuntimeError):
    """No decoder process could be started (a start-up problem, not a bad image)."""


_context: Any = None


def _fork_server() -> Any:
    """The fork-server context, preloading the decoder so each child starts in milliseconds."""
    global _context
    with _context_lock:
        if _context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["consumers.pipelines.vision.decoder"])
            _context = context
        return _context


@dataclass(frozen=True)
class DecodedFrame:
    """A frame the child fetched and decoded: the resized uint8 image (the parent's own copy),
    the sha256 of the fetched bytes, and the image's declared size."""

    pixels: torch.Tensor
    sha256: str
    height: int
    width: int
    fetch_s: float
    decode_s: float
    """How long the child took to fetch (and hash and check), then to decode."""


def _decoded(data: bytes, spec: ImageInputSpec, roi: Roi | None, header: Any = None) -> tuple[str, Any]:
    """``("ok", image)``, or the dead-letter reason and message of an image that cannot be used."""
    try:
        return "ok", decode_and_resize(data, spec, roi, header)
    except RoiOutsideImageError as error:
        return "invalid_roi", str(error)
    except Exception as error:  # whatever the decoder raised, the frame is not an image we can use
        return "corrupt_image", f"{type(error).__name__}: {error}"


class _Region:
    """The child's view of its parent's shared-memory region, mapped again when it changes."""

    def __init__(self) -> None:
        self.name = ""
        self.view: mmap.mmap | None = None

    def write(self, name: str, image: torch.Tensor) -> None:
        if name != self.name:
            if self.view is not None:
                self.view.close()
            # Opened by path, not with SharedMemory: attaching would register the region with a
            # resource tracker of the child's, which unlinks it when the child exits.
            fd = os.open(f"/dev/shm/{name}", os.O_RDWR)
            try:
                self.view = mmap.mmap(fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
            self.name = name
        assert self.view is not None
        np.frombuffer(self.view, dtype=np.uint8, count=image.numel())[:] = image.numpy().reshape(-1)


def _serve(
    conn: Connection, fetch: FetchSettings | None = None, decode: DecodeSettings | None = None
) -> None:
    """The child's loop. ``bytes`` requests: bytes in, the resized uint8 image out through the
    pipe. ``frame`` requests (with settings): fetch, hash, header check, decode and resize, the
    image into the parent's region; ``fetched`` is said between fetching and decoding, so the
    parent times the two apart.

    Only the steps that touch untrusted bytes happen here; scaling and normalising (plain torch
    arithmetic) happen in the parent, once per batch.
    """
    torch.set_num_threads(1)
    fetcher = FrameFetcher(fetch) if fetch is not None else None
    region = _Region()
    conn.send(READY)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the parent closed its end or died
        if request[0] == "bytes":
            kind, image = _decoded(*request[1:])
            conn.send((kind, tuple(image.shape)) if kind == "ok" else (kind, image))
            if kind == "ok":
                conn.send_bytes(image.numpy().tobytes())
            continue
        _, uri, sha256, spec, roi, region_name = request
        assert fetcher is not None and decode is not None
        try:
            data, digest = fetcher.fetch_hashed(uri, sha256)
            header = check_header(data, decode.formats, decode.max_pixels, decode.max_pixels_per_byte)
        except FetchError as error:
            conn.send(("fetch_error", error.reason, str(error), error.transient))
            continue
        except ImageRefused as error:
            conn.send(("refused", error.reason, str(error)))
            continue
        conn.send(("fetched", digest, header.height, header.width))
        kind, image = _decoded(data, spec, roi, header)
        if kind == "ok":
            region.write(region_name, image)
        conn.send((kind, tuple(image.shape)) if kind == "ok" else (kind, image))


class IsolatedDecoder:
    """One child process decoding one image at a time for its owner thread; see the module
    docstring. With ``fetch`` and ``decode`` settings it also takes whole frames (``frame``)."""

    def __init__(
        self,
        timeout_s: float,
        fetch: FetchSettings | None = None,
        decode: DecodeSettings | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self._settings = (fetch, decode)
        self._stop = stop or threading.Event()
        self._process: Any = None
        self._conn: Connection | None = None
        self._region: SharedMemory | None = None
        self.restarts = 0

    def frame(self, uri: str, sha256: str | None, spec: ImageInputSpec, roi: Roi | None) -> DecodedFrame:
        """Fetch, hash, check and decode the frame at ``uri`` in the child. Raises ``FetchError``
        (transient when the stage stopped meanwhile), ``ImageRefused``, ``CorruptImageError`` or
        ``RoiOutsideImageError``, as the stage's own steps would."""
        fetch, _ = self._settings
        if fetch is None:
            raise ValueError("this decoder was built without fetch settings: it decodes bytes only")
        size = spec.channels * spec.height * spec.width
        region = self._region_of(size)
        started = time.monotonic()
        conn = self._send(("frame", uri, sha256, spec, roi, region.name))
        # the child keeps the fetch deadline itself; a child silent past it (and a margin) is stuck
        reply = self._reply(conn, fetch.deadline_s + self.timeout_s, "fetching")
        fetched = time.monotonic()
        if reply[0] == "fetch_error":
            raise FetchError(reply[1], reply[2], transient=reply[3])
        if reply[0] == "refused":
            raise ImageRefused(reply[1], reply[2])
        _, digest, height, width = reply
        kind, payload = self._reply(conn, self.timeout_s, "decoding")
        if kind == "ok":
            pixels = torch.frombuffer(region.buf, dtype=torch.uint8, count=size).reshape(payload).clone()
            return DecodedFrame(pixels, digest, height, width, fetched - started, time.monotonic() - fetched)
        if kind == "invalid_roi":
            raise RoiOutsideImageError(payload)
        raise CorruptImageError(payload)

    def _region_of(self, size: int) -> SharedMemory:
        """The worker's shared-memory region, replaced by a larger one when ``size`` bytes do not fit."""
        if self._region is None or self._region.size < size:
            self._close_region()
            self._region = SharedMemory(create=True, size=size)
        return self._region

    def _close_region(self) -> None:
        if self._region is not None:
            self._region.close()
            with contextlib.suppress(FileNotFoundError):
                self._region.unlink()
            self._region = None

    def _send(self, request: tuple[Any, ...]) -> Connection:
        """``request`` sent to a live child (one that died since the last frame is replaced first)."""
        conn = self._connection()
        try:
            conn.send(request)
        except OSError:  # the child died between two images: not this image's fault, send it again
            self._describe_end()
            conn = self._connection()
            conn.send(request)
        return conn

    def _reply(self, conn: Connection, timeout_s: float, doing: str) -> Any:
        """The child's next word within ``timeout_s``; a stop request meanwhile abandons the
        frame (``FetchError``, transient) and the child."""
        deadline = time.monotonic() + timeout_s
        while not conn.poll(min(0.1, max(0.0, deadline - time.monotonic()))):
            if self._stop.is_set():
                self._describe_end()
                raise FetchError(
                    "fetch_failed", "the stage stopped while the frame was being read", transient=True
                )
            if time.monotonic() >= deadline:
                described = self._describe_end()
                raise CorruptImageError(f"{doing} did not finish within {timeout_s:g}s{described}")
        try:
            return conn.recv()
        except (EOFError, OSError):
            raise CorruptImageError(
                f"the image decoder crashed on this image{self._describe_end()}"
            ) from None

    def preprocess(self, data: bytes, spec: ImageInputSpec, roi: Roi | None) -> torch.Tensor:
        """The model input for ``data``; raises ``CorruptImageError`` or ``RoiOutsideImageError``."""
        return normalise(self.decode(data, spec, roi), spec)

    def decode(self, data: bytes, spec: ImageInputSpec, roi: Roi | None) -> torch.Tensor:
        """The resized uint8 image (C, H, W) of ``data``, as ``decode_and_resize`` gives it;
        raises ``CorruptImageError`` or ``RoiOutsideImageError``."""
        conn = self._send(("bytes", data, spec, roi))
        kind, payload = self._reply(conn, self.timeout_s, "decoding")
        try:
            if kind == "ok":
                pixels = bytearray(int(np.prod(payload)))
                conn.recv_bytes_into(pixels)
                return torch.frombuffer(pixels, dtype=torch.uint8).reshape(payload)
        except (EOFError, OSError):
            raise CorruptImageError(
                f"the image decoder crashed on this image{self._describe_end()}"
            ) from None
        if kind == "invalid_roi":
            raise RoiOutsideImageError(payload)
        raise CorruptImageError(payload)

    def start(self) -> None:
        """Start the child now rather than at the first image."""
        self._connection()

    def close(self) -> None:
        """Stop the child at once (it holds no state worth waiting for) and free the region."""
        self._describe_end()
        self._close_region()

    def _connection(self) -> Connection:
        if self._process is None or not self._process.is_alive() or self._conn is None:
            self._describe_end()
            context = _fork_server()
            parent, child = context.Pipe(duplex=True)
            process = context.Process(
                target=_serve, args=(child, *self._settings), name="vigil-decoder", daemon=True
            )
            process.start()
            child.close()
            self._process, self._conn = process, parent
            self.restarts += 1
            self._await_ready(parent)
        assert self._conn is not None
        return self._conn

    def _await_ready(self, conn: Connection) -> None:
        """Wait for the child's first word, so a child that cannot start fails the service at
        start-up instead of failing every frame later."""
        try:
            if conn.poll(START_TIMEOUT_S) and conn.recv() == READY:
                return
        except (EOFError, OSError):
            pass
        ended = self._describe_end()
        raise DecoderUnavailableError(
            f"the image decoder process did not start{ended}. A script that builds the vision "
            "pipeline must guard its entry point with `if __name__ == '__main__':` (the fork "
            "server imports the main module in each child); or set vision.decode.isolate: false"
        )

    def _describe_end(self) -> str:
        """Kill and reap the child (if any); say how it ended."""
        process, conn = self._process, self._conn
        self._process, self._conn = None, None
        if conn is not None:
            conn.close()
        if process is None:
            return ""
        if process.is_alive():
            process.kill()
        process.join(timeout=5)
        code = process.exitcode
        if code is not None and code < 0 and code != -signal.SIGKILL:
            with contextlib.suppress(ValueError):
                return f" (it died of {signal.Signals(-code).name})"
        return ""
