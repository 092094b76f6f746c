"""Image decoding in a child process: a decoder that crashes or hangs on crafted input costs its
frame (``corrupt_image``), never the service.

Each fetch worker owns one ``IsolatedDecoder``: a child process, forked from a fork server that
has torch and torchvision imported once, that decodes, crops and resizes the bytes it is sent
(``decode_and_resize``) and returns the uint8 image, which the parent scales and normalises:
the same steps as ``preprocess``, bit for bit. A child that dies (a segfault in a native
decoder) or does not answer within the timeout is killed and replaced before the next frame;
only the frame it was working on fails, and it is known exactly because the child is the
worker's own.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import threading
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch

from models.vision.preprocess import (
    CorruptImageError,
    Roi,
    RoiOutsideImageError,
    decode_and_resize,
    normalise,
)
from schemas.model_card import ImageInputSpec

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


def _serve(conn: Connection) -> None:
    """The child's loop: bytes in; the resized uint8 image (or an error kind and message) out.

    Only the steps that run native decoders happen here; scaling and normalising (plain torch
    arithmetic) happen in the parent, so a quarter of the bytes cross the pipe.
    """
    torch.set_num_threads(1)
    conn.send(READY)
    while True:
        try:
            data, spec, roi = conn.recv()
        except (EOFError, OSError):
            return  # the parent closed its end or died
        try:
            image = decode_and_resize(data, spec, roi)
        except RoiOutsideImageError as error:
            conn.send(("invalid_roi", str(error)))
            continue
        except Exception as error:  # whatever the decoder raised, the frame is not an image we can use
            conn.send(("corrupt_image", f"{type(error).__name__}: {error}"))
            continue
        conn.send(("ok", tuple(image.shape)))
        conn.send_bytes(image.numpy().tobytes())


class IsolatedDecoder:
    """One child process decoding one image at a time for its owner thread; see the module docstring."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._process: Any = None
        self._conn: Connection | None = None
        self.restarts = 0

    def preprocess(self, data: bytes, spec: ImageInputSpec, roi: Roi | None) -> torch.Tensor:
        """The model input for ``data``; raises ``CorruptImageError`` or ``RoiOutsideImageError``."""
        conn = self._connection()
        try:
            conn.send((data, spec, roi))
        except OSError:  # the child died between two images: not this image's fault, send it again
            self._describe_end()
            conn = self._connection()
            conn.send((data, spec, roi))
        if not conn.poll(self.timeout_s):
            described = self._describe_end()
            raise CorruptImageError(f"decoding did not finish within {self.timeout_s:g}s{described}")
        try:
            kind, payload = conn.recv()
            if kind == "ok":
                pixels = np.frombuffer(conn.recv_bytes(), dtype=np.uint8).reshape(payload)
                return normalise(torch.from_numpy(pixels.copy()), spec)
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
        """Stop the child at once (it holds no state worth waiting for)."""
        self._describe_end()

    def _connection(self) -> Connection:
        if self._process is None or not self._process.is_alive() or self._conn is None:
            self._describe_end()
            context = _fork_server()
            parent, child = context.Pipe(duplex=True)
            process = context.Process(target=_serve, args=(child,), name="vigil-decoder", daemon=True)
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
