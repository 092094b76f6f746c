"""Broker outages: how long the broker has been failing us, against the outage budget.

Commits and transaction steps that fail for broker reasons (unreachable, timed out, the
coordinator moving) are not fatal: the runtime keeps going round, retries at its commit
interval, and reports the outage (``/readyz`` fails). Only an outage longer than
``runtime.outage_budget_s`` ends the process, with a non-zero status: an operator should
look, and another member can take the partitions. Nothing past the last commit is lost.
"""

from __future__ import annotations

import logging
import time

from kafka import errors as Errors

log = logging.getLogger(__name__)


class OutageBudgetExceededError(RuntimeError):
    """The broker has failed the runtime for longer than the outage budget."""


def is_broker_trouble(error: BaseException) -> bool:
    """Whether ``error`` says 'the broker is unreachable or busy', which waiting can cure."""
    return isinstance(error, Errors.KafkaError) and bool(getattr(error, "retriable", False))


class BrokerOutage:
    """The current outage, if any, measured from its first failure."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.since: float | None = None
        self.last_success = time.monotonic()

    @property
    def ongoing(self) -> bool:
        """Whether the last broker call the runtime depends on failed."""
        return self.since is not None

    def failed(self, step: str, error: BaseException) -> None:
        """A broker call failed; raises ``OutageBudgetExceededError`` past the budget."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
            log.warning(
                "%s failed, the broker seems unreachable; retrying for up to %.0fs: %r",
                step,
                self.budget_s,
                error,
            )
        elapsed = now - self.since
        if elapsed > self.budget_s:
            raise OutageBudgetExceededError(
                f"{step} has failed for {elapsed:.0f}s, longer than runtime.outage_budget_s={self.budget_s:g}: {error!r}"
            ) from error

    def succeeded(self) -> None:
        """A broker call the runtime depends on succeeded."""
        now = time.monotonic()
        if self.since is not None:
            log.warning("the broker answers again after %.1fs", now - self.since)
            self.since = None
        self.last_success = now
