"""The micro-batcher: one bounded queue per model; batches that never wait for nothing.

A batch whose first item comes ``max_wait_ms`` or more after the last batch closed (items
arriving one at a time, low load) is eager: while the model has nothing to run next (the
executor is idle, or busy with its last batch and none prepared behind it) it closes as soon
as nothing more is queued (or, with ``quiet_ms``, after that long without a new item), so
the item runs at once, alone. Any other batch gathers what arrives until it is full
(``max_batch_size``) or ``max_wait_ms`` after its first item: while items keep arriving,
batches fill as they did before and the model runs no more often than before. While the
model is busy and the next batch is already prepared, the executor wakes an eager batch when
it takes that one. Two threads form a pipeline: the assembler closes a batch and runs
``prepare`` on it (stack, pin, copy to the device) while the executor runs ``execute`` on
the previous one, so preparing batch k+1 overlaps computing batch k. ``execute`` returns one
result or one exception per item. When ``prepare`` or ``execute`` fails for the batch as a
whole, its items run again one by one, so only the items at fault fail, never their
neighbours, and never the process. ``put`` blocks while the queue is full: that is the
backpressure the fetch workers feel.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from consumers.runtime.observer import RuntimeObserver
from schemas.model_card import ModelCard
from schemas.settings import BatchingSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

Prepare = Callable[[Sequence[T]], Any]
Execute = Callable[[Sequence[T], Any], Sequence[R | BaseException]]
Deliver = Callable[[T, R | BaseException], None]

_STOP = object()
_WAKE = object()
"""Put by the executor when it takes the prepared batch: the one gathering may close now."""


class MicroBatcher(Generic[T, R]):
    """Batches items for one model; see the module docstring."""

    def __init__(
        self,
        name: str,
        prepare: Prepare[T],
        execute: Execute[T, R],
        deliver: Deliver[T, R],
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        on_batch: Callable[[int, float, float], None] | None = None,
        close_when_idle: bool = True,
        quiet_ms: float = 0.0,
    ) -> None:
        self.name = name
        self._on_batch = on_batch
        self._prepare = prepare
        self._execute = execute
        self._deliver = deliver
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._ready: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._gathering = False
        """The assembler waits for more items with a partial batch (the executor wakes it)."""
        self.close_when_idle = close_when_idle
        """False: a batch closes only at its size or after ``max_wait_ms``."""
        self.quiet_s = quiet_ms / 1000
        """With ``close_when_idle``: how long no new item means the burst is over."""
        self._last_item = float("-inf")
        """When the last batch closed: a batch opened ``max_wait_ms`` later or more is eager."""
        self.batch_sizes: Counter[int] = Counter()
        self._threads = [
            threading.Thread(target=self._assemble, name=f"{name}-assembler", daemon=True),
            threading.Thread(target=self._run, name=f"{name}-executor", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def put(self, item: T, timeout_s: float | None = None) -> None:
        """Queue ``item``; blocks while the queue is full."""
        self._queue.put((time.monotonic(), item), timeout=timeout_s)

    def depth(self) -> int:
        """Items waiting for a batch."""
        return self._queue.qsize()

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish what is queued, then stop both threads."""
        self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=timeout_s)

    def _assemble(self) -> None:
        while True:
            first = self._queue.get()
            if first is _WAKE:
                continue
            if first is _STOP:
                self._ready.put(_STOP)
                return
            queued_at, item = first
            batch, stop = self._gather(item)
            try:
                prepared = self._prepare(batch)
            except Exception as error:  # a bad batch fails its own items, never the thread
                log.exception("%s: preparing a batch of %d failed", self.name, len(batch))
                prepared = error
            self._ready.put((batch, prepared, queued_at))
            if stop:
                self._ready.put(_STOP)
                return

    def _gather(self, first: T) -> tuple[list[T], bool]:
        """The batch ``first`` opens (see the module docstring), and whether a stop came in it."""
        batch = [first]
        now = time.monotonic()
        deadline = now + self.max_wait_s
        # Items came one at a time, each long after the last: nothing is gained by waiting.
        # While they keep coming, batches fill as before, and the model runs no more often.
        eager = self.close_when_idle and now - self._last_item >= self.max_wait_s
        while len(batch) < self.max_batch_size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                self._gathering = True  # before looking at the model: its wake cannot be missed
                wait = deadline - time.monotonic()
                if eager and self._ready.empty():
                    wait = min(wait, self.quiet_s)  # nothing to run next: only a burst still arriving
                if wait <= 0:
                    self._gathering = False
                    break
                try:
                    item = self._queue.get(timeout=wait)
                except queue.Empty:
                    break
                finally:
                    self._gathering = False
            if item is _STOP:
                return batch, True
            if item is not _WAKE:
                batch.append(item[1])
        self._last_item = time.monotonic()
        return batch, False

    def _run(self) -> None:
        while True:
            entry = self._ready.get()
            if self._gathering and self.close_when_idle:
                # a full queue closes the gathering batch at its size anyway
                with contextlib.suppress(queue.Full):
                    self._queue.put_nowait(_WAKE)
            if entry is _STOP:
                return
            batch, prepared, queued_at = entry
            self.batch_sizes[len(batch)] += 1
            results: Sequence[Any]
            started = time.monotonic()
            waited = started - queued_at  # the batch's oldest item, from its queueing to the model
            if isinstance(prepared, Exception):
                results = self._one_by_one(batch)
            else:
                try:
                    results = self._execute(batch, prepared)
                except Exception:
                    log.exception(
                        "%s: a batch of %d failed; running its items one by one", self.name, len(batch)
                    )
                    results = self._one_by_one(batch)
            if self._on_batch is not None:
                self._on_batch(len(batch), time.monotonic() - started, waited)
            for item, result in zip(batch, results, strict=True):
                self._deliver(item, result)

    def _one_by_one(self, batch: Sequence[T]) -> list[R | BaseException]:
        """After a batch failed as a whole: each item alone, so only the items at fault fail."""
        return [self._alone(item) for item in batch]

    def _alone(self, item: T) -> R | BaseException:
        try:
            return self._execute([item], self._prepare([item]))[0]
        except Exception as error:
            return error


def model_batcher(
    pipeline: str,
    card: ModelCard,
    device: str,
    batching: BatchingSettings,
    prepare: Prepare[T],
    execute: Execute[T, R],
    deliver: Deliver[T, R],
    observer: RuntimeObserver,
    engine: str = "torch",
) -> MicroBatcher[T, R]:
    """The micro-batcher of one served model, reporting its batches, queue depth and identity
    (device and engine) to ``observer``."""
    batcher: MicroBatcher[T, R] = MicroBatcher(
        f"{pipeline}-{card.name}",
        prepare,
        execute,
        deliver,
        batching.max_batch_size,
        batching.max_wait_ms,
        batching.max_queue,
        on_batch=lambda size, seconds, waited: observer.on_batch(card.name, size, seconds, waited),
        close_when_idle=batching.close_when_idle,
        quiet_ms=batching.quiet_ms,
    )
    observer.on_queue(card.name, batcher.depth)
    observer.on_model(pipeline, card.name, card.version, device, engine)
    return batcher
