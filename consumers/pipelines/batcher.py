"""The micro-batcher: one bounded queue per model, batches closed by size or by waiting time.

A batch closes at ``max_batch_size`` items or ``max_wait_ms`` after its first item,
whichever comes first. Two threads form a pipeline: the assembler closes a batch and runs
``prepare`` on it (stack, pin, copy to the device) while the executor runs ``execute`` on
the previous one, so preparing batch k+1 overlaps computing batch k. ``execute`` returns one
result or one exception per item. When ``prepare`` or ``execute`` fails for the batch as a
whole, its items run again one by one, so only the items at fault fail, never their
neighbours, and never the process. ``put`` blocks while the queue is full: that is the
backpressure the fetch workers feel.
"""

from __future__ import annotations

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
        on_batch: Callable[[int, float], None] | None = None,
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
        self.batch_sizes: Counter[int] = Counter()
        self._threads = [
            threading.Thread(target=self._assemble, name=f"{name}-assembler", daemon=True),
            threading.Thread(target=self._run, name=f"{name}-executor", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def put(self, item: T, timeout_s: float | None = None) -> None:
        """Queue ``item``; blocks while the queue is full."""
        self._queue.put(item, timeout=timeout_s)

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
            if first is _STOP:
                self._ready.put(_STOP)
                return
            batch = [first]
            deadline = time.monotonic() + self.max_wait_s
            stop = False
            while len(batch) < self.max_batch_size:
                remaining = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            try:
                prepared = self._prepare(batch)
            except Exception as error:  # a bad batch fails its own items, never the thread
                log.exception("%s: preparing a batch of %d failed", self.name, len(batch))
                prepared = error
            self._ready.put((batch, prepared))
            if stop:
                self._ready.put(_STOP)
                return

    def _run(self) -> None:
        while True:
            entry = self._ready.get()
            if entry is _STOP:
                return
            batch, prepared = entry
            self.batch_sizes[len(batch)] += 1
            results: Sequence[Any]
            started = time.monotonic()
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
                self._on_batch(len(batch), time.monotonic() - started)
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
) -> MicroBatcher[T, R]:
    """The micro-batcher of one served model, reporting its batches, queue depth and identity to ``observer``."""
    batcher: MicroBatcher[T, R] = MicroBatcher(
        f"{pipeline}-{card.name}",
        prepare,
        execute,
        deliver,
        batching.max_batch_size,
        batching.max_wait_ms,
        batching.max_queue,
        on_batch=lambda size, seconds: observer.on_batch(card.name, size, seconds),
    )
    observer.on_queue(card.name, batcher.depth)
    observer.on_model(pipeline, card.name, card.version, device)
    return batcher
