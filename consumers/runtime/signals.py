"""SIGTERM and SIGINT: the first asks for a drain and a final commit, the second exits at once."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)


def drain_on_signals(stop: Callable[[], None]) -> None:
    """Install the handlers (main thread only): the first signal calls ``stop``; a second
    exits without committing anything more."""
    signalled = False

    def handle(signum: int, frame: FrameType | None) -> None:
        nonlocal signalled
        if signalled:
            os._exit(128 + signum)
        signalled = True
        log.info("signal %s: draining and committing", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
