"""The retention thread: applies `retention_days` to a runtime's store when it opens and every
hour after, off the callers' and the writer's threads."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from obsdeco.config import Settings
from obsdeco.guard import fault
from obsdeco.storage.retention import RetentionPolicy, RetentionResult

logger = logging.getLogger("obsdeco.maintenance")

RETENTION_INTERVAL_S = 3_600.0


@runtime_checkable
class RetainingBackend(Protocol):
    """A store that can remove what a retention policy no longer keeps."""

    def apply_retention(self, policy: RetentionPolicy, now: datetime) -> RetentionResult: ...


def policy_of(settings: Settings) -> RetentionPolicy | None:
    """The retention `settings` ask for, None when everything is kept."""
    if settings.retention_days is None:
        return None
    rollup_days = settings.rollup_retention_days or settings.retention_days
    return RetentionPolicy(days=settings.retention_days, rollup_days=rollup_days)


class RetentionRunner:
    """Owns the thread applying one policy to one store until `stop()`."""

    def __init__(
        self,
        backend: RetainingBackend,
        policy: RetentionPolicy,
        interval_s: float = RETENTION_INTERVAL_S,
    ) -> None:
        self.backend = backend
        self.policy = policy
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.first_pass = threading.Event()
        """Set once the pass made at start has ended (whatever its outcome)."""
        self._thread = threading.Thread(target=self._run, name="obsdeco-retention", daemon=True)
        self._thread.start()

    def run_once(self, now: datetime) -> RetentionResult:
        """One pass, on the calling thread."""
        result = self.backend.apply_retention(self.policy, now)
        if result.dropped_partitions or result.deleted:
            logger.info(
                "obsdeco retention (%d days): dropped partitions %s, deleted rows %s",
                self.policy.days,
                result.dropped_partitions,
                dict(result.deleted),
            )
        return result

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once(datetime.now(UTC))
            except Exception:
                fault("retention")
            self.first_pass.set()
            self._stop.wait(self._interval_s)


def start_retention(backend: object, settings: Settings) -> RetentionRunner | None:
    """The runner of `settings`' retention on `backend`, if they ask for one."""
    policy = policy_of(settings)
    if policy is None:
        return None
    if not isinstance(backend, RetainingBackend):
        logger.warning(
            "obsdeco cannot apply retention_days=%d: the store %s removes nothing",
            policy.days,
            type(backend).__name__,
        )
        return None
    return RetentionRunner(backend, policy)
