"""Restoring a partition's sensor state off the runtime's thread.

When a partition is assigned, its first fetched record marks where live processing resumes.
The stage hands the partition to ``PartitionRestorer``: a worker thread reads the history
before that record back and replays it into a fresh ``PartitionState``, while the runtime
keeps polling, committing and answering the group coordinator, with the partition paused
(``ProcessingStage.restoring``). Readings of the partition that were fetched meanwhile wait
in the ``Restore`` and are admitted, in order, once its state is installed on the runtime's
thread. A restore that fails (the broker away, a read that stalls) is tried again with
back-off; it never fails the pipeline, and ``/readyz`` says what is restoring.

How far back the history is read: as far as the partition's windows and rules can look
(``history_span_s``), not a fixed hour.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from consumers.pipelines.sensors.partition import PartitionState
from consumers.runtime.records import Work
from models.sensors.windows import MAX_GAP_FILL
from schemas.model_card import SeriesInputSpec
from schemas.settings import AlertRule, SensorRule

log = logging.getLogger(__name__)

PartitionKey = tuple[str, int]

MIN_HISTORY_S = 60.0
"""The least history read back: rules' sample-count conditions (``m``) on sources of unknown rate."""

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0


def history_span_s(
    specs: Sequence[tuple[SeriesInputSpec, Sequence[AlertRule]]],
    rules: Sequence[SensorRule],
    lateness_s: float,
) -> float:
    """How much event time a partition's state depends on: per model, a full window plus the
    strides its alert rules look back (``m`` windows) and their cooldown; per value or stale
    rule, its ``for_s`` and cooldown; plus the lateness bound. At least ``MIN_HISTORY_S``."""
    spans = [MIN_HISTORY_S]
    for spec, alert_rules in specs:
        look_back = max((rule.m for rule in alert_rules), default=1) - 1
        cooldown = max((rule.cooldown_s for rule in alert_rules), default=0.0)
        samples = min(spec.window + spec.stride * look_back, MAX_GAP_FILL)
        spans.append(samples * spec.sample_period_s + cooldown)
    spans += [rule.for_s + rule.cooldown_s for rule in rules]
    return max(spans) + lateness_s


@dataclass(eq=False)
class Restore:
    """One partition's restore: up to which offset, its progress, and what waits for it."""

    key: PartitionKey
    until_offset: int
    held: list[Work] = field(default_factory=list)
    """Readings of the partition fetched while it restores (the runtime's thread only)."""
    read: int = 0
    total: int = 0
    replayed: int = 0
    attempts: int = 0
    state: PartitionState | None = None
    source: str = "input"
    """Where the state came from: ``input`` (read back) or ``changelog`` (handed over)."""
    done_below: int = 0
    """Handed over: the offset the state is exact at (records below it were processed)."""
    cancelled: bool = False

    def report(self, read: int, total: int) -> None:
        """Progress of the read back (the worker thread); ``RestoreCancelled`` ends a restore
        no longer wanted."""
        if self.cancelled:
            raise RestoreCancelled(f"{self.key[0]}/{self.key[1]}")
        self.read, self.total = read, total


class RestoreCancelled(Exception):
    """The partition went away (or the stage closes) while it was restoring."""


RestoreOne = Callable[[Restore], PartitionState]
"""Builds the partition's state from its history; may raise (tried again)."""


class PartitionRestorer:
    """Runs restores one at a time on a worker thread; the runtime's thread takes them back
    with ``finished``."""

    def __init__(self, restore_one: RestoreOne, retry_first_s: float = RETRY_FIRST_S) -> None:
        self._restore_one = restore_one
        self._retry_first_s = retry_first_s
        self._jobs: queue.SimpleQueue[Restore | None] = queue.SimpleQueue()
        self._finished: queue.SimpleQueue[Restore] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._current: Restore | None = None

    def start(self, key: PartitionKey, until_offset: int) -> Restore:
        """Queue the restore of ``key`` up to ``until_offset`` (exclusive)."""
        job = Restore(key, until_offset)
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="vigil-sensor-restore", daemon=True)
            self._thread.start()
        self._jobs.put(job)
        return job

    def finished(self) -> list[Restore]:
        """Restores done since the last call, cancelled ones left out."""
        done: list[Restore] = []
        while True:
            try:
                job = self._finished.get_nowait()
            except queue.Empty:
                return done
            if not job.cancelled:
                done.append(job)

    def close(self) -> None:
        """Stop the worker; a restore under way is abandoned at its next retry or record batch."""
        self._stop.set()
        current = self._current
        if current is not None:
            current.cancelled = True
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _work(self) -> None:
        while not self._stop.is_set():
            job = self._jobs.get()
            if job is None:
                return
            self._current, delay = job, self._retry_first_s
            while not job.cancelled and not self._stop.is_set():
                job.attempts += 1
                try:
                    job.state = self._restore_one(job)
                except RestoreCancelled:
                    break
                except Exception as error:  # the broker away, a stalled read: try again
                    log.warning(
                        "restoring %s/%d (attempt %d) failed, trying again in %.0fs: %r",
                        *job.key,
                        job.attempts,
                        delay,
                        error,
                    )
                    self._stop.wait(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                    continue
                self._finished.put(job)
                break
