"""A bounded pool of daemon worker threads whose shutdown never waits past a deadline.

``concurrent.futures.ThreadPoolExecutor`` joins its threads at interpreter exit, so one worker
stuck in a read (a hung network mount, a device) would keep the process from ever exiting.
These workers are daemon threads: ``shutdown`` waits for them up to a deadline and then
leaves the stragglers behind; their items stay uncommitted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_STOP = object()


class WorkerPool:
    """``size`` daemon threads running submitted calls in order of submission."""

    def __init__(self, size: int, name: str, initializer: Callable[[], None] | None = None) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._initializer = initializer
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, function: Callable[..., None], *args: Any) -> None:
        """Run ``function(*args)`` on a worker; exceptions are logged (callers report their own)."""
        self._queue.put((function, args))

    def shutdown(self, deadline_s: float) -> int:
        """Drop queued calls, let running ones finish within ``deadline_s``; returns the stragglers."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._queue.put(_STOP)
        deadline = time.monotonic() + deadline_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = sum(thread.is_alive() for thread in self._threads)
        if stuck:
            log.warning("%d worker(s) still busy after %.0fs; leaving them behind", stuck, deadline_s)
        return stuck

    def _work(self) -> None:
        if self._initializer is not None:
            self._initializer()
        while True:
            entry = self._queue.get()
            if entry is _STOP:
                return
            function, args = entry
            try:
                function(*args)
            except Exception:
                log.exception("a worker call failed")
