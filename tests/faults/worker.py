"""A runtime process for fault tests: pass-through stage, optional SIGKILL before a commit.

Usage: python -m tests.faults.worker SETTINGS_JSON [--kill-before-commit-after N]

With ``--kill-before-commit-after N`` the process flushes its outputs (so the broker has
acknowledged them) and then SIGKILLs itself at the first commit after N inputs were
processed: outputs exist, offsets are not committed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

from consumers.pipelines.passthrough import passthrough_stage
from consumers.runtime.loop import StreamRuntime
from schemas.messages import FrameRef, SensorReading
from schemas.settings import VigilSettings


class KillBeforeCommitRuntime(StreamRuntime):
    """Dies by SIGKILL between 'outputs acknowledged' and 'offsets committed'.

    Run it with a commit interval longer than the test, so no commit happens before.
    """

    def __init__(self, *args: object, kill_after: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._kill_after = kill_after
        self._processed = 0

    def _emit(self, outcomes):  # type: ignore[no-untyped-def]
        super()._emit(outcomes)
        self._processed += len(outcomes)

    def _poll_once(self) -> None:
        super()._poll_once()
        if self._processed >= self._kill_after:
            assert self.checkpoint is not None
            self.checkpoint.flush(30)
            print(f"KILLING after {self._processed} processed", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


def exit_with_parent() -> None:
    """End this worker if the test process that started it goes away (no orphans left spinning)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)  # a watchdog's polling interval
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("settings_json")
    parser.add_argument("--kill-before-commit-after", type=int, default=None)
    parser.add_argument(
        "--default-identity", action="store_true", help="no fixed instance id: the runtime's own default"
    )
    args = parser.parse_args()
    exit_with_parent()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    settings = VigilSettings.model_validate_json(args.settings_json)
    inputs = {settings.topics.frames.name: FrameRef, settings.topics.sensors.name: SensorReading}
    stage = passthrough_stage(settings.topics.inferences.name)
    if args.default_identity:
        runtime = StreamRuntime(settings, inputs, stage)
    elif args.kill_before_commit_after is None:
        runtime = StreamRuntime(settings, inputs, stage, instance_id="worker")
    else:
        runtime = KillBeforeCommitRuntime(
            settings, inputs, stage, instance_id="worker", kill_after=args.kill_before_commit_after
        )
    print("STARTED", flush=True)
    return runtime.run()


if __name__ == "__main__":
    sys.exit(main())
