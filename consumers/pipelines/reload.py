"""Hot reload: lanes bound to a registry alias follow its promotions without a restart.

A lane is bound to an alias when its configured version is one (``production``,
``staging``), or when no version is configured and the model has a ``production`` alias.
Every ``reload_interval_s`` the reloader resolves each binding; when the alias names another
version it loads that version and builds its lane (warm-up included) on its own thread,
then hands the lane to the stage, which switches between batches and drains the old lane:
items already queued on the old model finish on it and carry its version, items after the
switch carry the new one. A version that fails to load or to build keeps the old lane, is
logged with the reason and counted (``vigil_model_switches_total{outcome="failed"}``), and
is not tried again until the alias moves. Lanes pinned to a version never change.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from consumers.runtime.observer import RuntimeObserver
from models.registry import DEFAULT_ALIAS, LoadedModel, ModelLoader, aliases, resolve_version

log = logging.getLogger(__name__)

L = TypeVar("L")


@dataclass(frozen=True)
class Binding:
    """A lane's place in its stage (``key``), the model it serves and the version or alias configured."""

    key: str
    name: str
    requested: str | None
    serving: str
    """The version its lane serves now."""


def follows_alias(registry: str, name: str, requested: str | None) -> str | None:
    """The alias a binding follows, or None when it is pinned (a version, or no alias to follow)."""
    named = aliases(registry, name)
    alias = requested or DEFAULT_ALIAS
    return alias if alias in named else None


class BuiltLanes(Generic[L]):
    """Lanes the reloader built, held until the runtime's thread installs them between batches
    (``put`` is the reloader's ``install`` for stages whose lanes only that thread touches)."""

    def __init__(self) -> None:
        self._built: queue.SimpleQueue[tuple[Binding, L]] = queue.SimpleQueue()

    def put(self, binding: Binding, lane: L) -> None:
        """Hold ``lane`` for ``binding`` (the reloader's thread)."""
        self._built.put((binding, lane))

    def take(self) -> list[tuple[Binding, L]]:
        """What was built since the last call (the runtime's thread)."""
        taken = []
        with contextlib.suppress(queue.Empty):
            while True:
                taken.append(self._built.get_nowait())
        return taken


def retire(close: Callable[[], None], pipeline: str) -> None:
    """Close a replaced lane on a thread of its own: its queued batches finish, nobody waits."""
    threading.Thread(target=close, name=f"vigil-{pipeline}-retire", daemon=True).start()


def warn_if_unpinned(registry: str, name: str, requested: str | None, serving: str) -> None:
    """Say so when a model is served at whatever version is newest: nothing pins it."""
    try:
        follows = follows_alias(registry, name, requested)
    except (OSError, ValueError):
        return
    if requested is None and follows is None:
        log.warning(
            "model %s is not pinned and has no %s alias: serving its newest version, %s; pin a "
            "version or promote one (vigil models promote %s %s)",
            name,
            DEFAULT_ALIAS,
            serving,
            name,
            serving,
        )


class ModelReloader(Generic[L]):
    """Polls the registry for the stage's bindings; see the module docstring."""

    def __init__(
        self,
        pipeline: str,
        registry: str,
        interval_s: float,
        bindings: Callable[[], Sequence[Binding]],
        build: Callable[[Binding, LoadedModel], L],
        install: Callable[[Binding, L], None],
        loader: ModelLoader,
        observer: RuntimeObserver,
    ) -> None:
        self._pipeline = pipeline
        self._registry = registry
        self._interval_s = interval_s
        self._bindings = bindings
        self._build = build
        self._install = install
        self._loader = loader
        self._observer = observer
        self._failed: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"vigil-reload-{pipeline}", daemon=True)

    def start(self) -> None:
        """Start polling (nothing when the interval is 0)."""
        if self._interval_s > 0:
            self._thread.start()

    def stop(self) -> None:
        """Stop polling; a switch under way finishes first."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def check(self) -> None:
        """One round: switch every binding whose alias moved."""
        for binding in self._bindings():
            if self._stop.is_set():
                return
            try:
                if follows_alias(self._registry, binding.name, binding.requested) is None:
                    continue
                target = resolve_version(self._registry, binding.name, binding.requested)
            except (OSError, ValueError) as error:
                log.warning("cannot read the aliases of model %s: %s", binding.name, error)
                continue
            if target != binding.serving and self._failed.get(binding.key) != target:
                self._switch(binding, target)

    def _watch(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.check()

    def _switch(self, binding: Binding, target: str) -> None:
        started = time.monotonic()
        try:
            lane = self._build(binding, self._loader(binding.name, target))
        except Exception as error:  # any failure keeps the lane that works
            self._failed[binding.key] = target
            log.error(
                "%s keeps model %s version %s: version %s failed to load: %s",
                self._pipeline,
                binding.name,
                binding.serving,
                target,
                error,
            )
            self._observer.on_model_switch(self._pipeline, binding.name, binding.serving, target, "failed")
            return
        self._install(binding, lane)
        self._failed.pop(binding.key, None)
        log.info(
            "%s switched model %s from version %s to %s (loaded and warmed up in %.2fs)",
            self._pipeline,
            binding.name,
            binding.serving,
            target,
            time.monotonic() - started,
        )
        self._observer.on_model_switch(self._pipeline, binding.name, binding.serving, target, "switched")
