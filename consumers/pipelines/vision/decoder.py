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
hashes the bytes once, checks the header, decodes, resizes and normalises, and writes the
model input, in the engine's memory layout, into a shared-memory region its parent owns; the
serving process then handles a URI and a view of the finished input, never the file's bytes,
their hash, a pipe's worth of pixels or a per-pixel pass of its own: the batch is stacked
straight from the slots. The region is a ring of ``SLOTS`` fixed-size slots, the worker's own,
sized for the largest input asked of it and kept across children (a replacement writes into
the same slots). A frame holds its slot from the request until its outcome is built; a
worker whose slots are all held waits for one, which bounds the memory frames in flight take.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
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
SLOTS = 16
"""Slots per worker: frames one worker may have between its request and their outcome (eight
workers' 128 cover four batches of 32 in flight)."""
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
    """A frame the child fetched and decoded: the model input, the sha256 of the fetched bytes,
    and the image's declared size."""

    pixels: torch.Tensor
    """A view of the frame's slot: valid until ``release``."""
    sha256: str
    height: int
    width: int
    fetch_s: float
    decode_s: float
    """How long the child took to fetch (and hash and check), then to decode."""
    release: Callable[[], None]
    """Gives the slot back (once; again does nothing): when the frame's outcome is built."""


class SlotRing:
    """A worker's slots in one shared-memory region: taken by a frame's request, given back by
    its outcome. The region grows (to a new one) only while no slot is held."""

    def __init__(self, count: int = SLOTS) -> None:
        self.count = count
        self.region: SharedMemory | None = None
        self.slot_bytes = 0
        self._free = list(range(count))
        self._changed = threading.Condition()
        self._retired: list[SharedMemory] = []

    def take(self, size: int, stop: threading.Event) -> int:
        """A free slot of at least ``size`` bytes, waiting for one; a stop request meanwhile
        abandons the frame (``FetchError``, transient)."""
        with self._changed:
            while True:
                if stop.is_set():
                    raise FetchError(
                        "fetch_failed", "the stage stopped while the frame waited", transient=True
                    )
                if size > self.slot_bytes and len(self._free) == self.count:
                    self._grow(size)
                if size <= self.slot_bytes and self._free:
                    return self._free.pop()
                self._changed.wait(0.1)

    def lease(self, index: int) -> Callable[[], None]:
        """What gives slot ``index`` back, once."""
        given = threading.Event()

        def release() -> None:
            if not given.is_set():
                given.set()
                with self._changed:
                    self._free.append(index)
                    self._changed.notify_all()

        return release

    def held(self) -> int:
        """Slots taken and not given back."""
        with self._changed:
            return self.count - len(self._free)

    def _grow(self, size: int) -> None:
        self._retire()
        self.region = SharedMemory(create=True, size=size * self.count)
        self.slot_bytes = size

    def _retire(self) -> None:
        if self.region is not None:
            with contextlib.suppress(FileNotFoundError):
                self.region.unlink()
            self._retired.append(self.region)
            self.region = None
        for old in list(self._retired):
            with contextlib.suppress(BufferError):  # a tensor still views it: unmapped later
                old.close()
                self._retired.remove(old)

    def close(self) -> None:
        """Unlink the region; unmap it once nothing views it."""
        self._retire()


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

    def write(self, name: str, offset: int, image: torch.Tensor) -> None:
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
        target = np.frombuffer(self.view, dtype=np.float32, count=image.numel(), offset=offset)
        np.copyto(target.reshape(image.shape), image.numpy())  # laid out as the view is ordered


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
        _, uri, sha256, spec, roi, channels_last, region_name, offset = request
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
            model_input = normalise(image, spec)
            region.write(region_name, offset, model_input.permute(1, 2, 0) if channels_last else model_input)
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
        slots: int = SLOTS,
    ) -> None:
        self.timeout_s = timeout_s
        self._settings = (fetch, decode)
        self._stop = stop or threading.Event()
        self._process: Any = None
        self._conn: Connection | None = None
        self.slots = SlotRing(slots)
        self.restarts = 0

    def frame(
        self, uri: str, sha256: str | None, spec: ImageInputSpec, roi: Roi | None, channels_last: bool = False
    ) -> DecodedFrame:
        """Fetch, hash, check, decode, resize and normalise the frame at ``uri`` in the child:
        the model input (C, H, W), its memory channels-last where asked (the engine's layout,
        so a batch of them stacks without a transpose). Raises ``FetchError`` (transient when
        the stage stopped meanwhile), ``ImageRefused``, ``CorruptImageError`` or
        ``RoiOutsideImageError``, as the stage's own steps would."""
        fetch, _ = self._settings
        if fetch is None:
            raise ValueError("this decoder was built without fetch settings: it decodes bytes only")
        count = spec.channels * spec.height * spec.width
        index = self.slots.take(4 * count, self._stop)
        release = self.slots.lease(index)
        try:
            return self._frame_in_slot(index, release, count, channels_last, (uri, sha256, spec, roi))
        except BaseException:
            release()  # no outcome will: the frame failed here
            raise

    def _frame_in_slot(
        self,
        index: int,
        release: Callable[[], None],
        count: int,
        channels_last: bool,
        request: tuple[Any, ...],
    ) -> DecodedFrame:
        fetch, _ = self._settings
        assert fetch is not None
        region, offset = self.slots.region, index * self.slots.slot_bytes
        assert region is not None
        started = time.monotonic()
        conn = self._send(("frame", *request, channels_last, region.name, offset))
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
            channels, rows, columns = payload
            view = torch.frombuffer(region.buf, dtype=torch.float32, count=count, offset=offset)
            pixels = (
                view.reshape(rows, columns, channels).permute(2, 0, 1)
                if channels_last
                else view.reshape(payload)
            )
            return DecodedFrame(
                pixels, digest, height, width, fetched - started, time.monotonic() - fetched, release
            )
        if kind == "invalid_roi":
            raise RoiOutsideImageError(payload)
        raise CorruptImageError(payload)

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
        self.slots.close()

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
