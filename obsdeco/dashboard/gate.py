"""The dashboard's password gate: every wrong password makes the next attempt wait longer.

One gate serves the whole server process (all browser sessions), so opening more sessions does
not buy more guesses: while the gate is closed no password is even compared.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from enum import StrEnum

FIRST_DELAY_S = 1.0
"""The wait after the first wrong password; it doubles with each further one..."""
MAX_DELAY_S = 300.0
"""...up to this."""


class Attempt(StrEnum):
    """What became of a password attempt."""

    OPEN = "open"
    WRONG = "wrong"
    TOO_SOON = "too soon"


class PasswordGate:
    """Compares passwords in constant time and delays attempts after wrong ones.

    `clock` is a monotonic clock in seconds (injected by tests); the gate never sleeps.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._closed_until = float("-inf")

    @property
    def failures(self) -> int:
        """Wrong passwords since the last right one."""
        return self._failures

    def delay_s(self) -> float:
        """How long the gate closes after the latest wrong password (0 if there was none)."""
        if not self._failures:
            return 0.0
        return min(FIRST_DELAY_S * 2 ** min(self._failures - 1, 64), MAX_DELAY_S)

    def wait_s(self) -> float:
        """Seconds until the next attempt is compared (0: now)."""
        return max(0.0, self._closed_until - self.clock())

    def attempt(self, given: str, expected: str) -> Attempt:
        """Check `given` against `expected`, unless the gate is still closed."""
        with self._lock:
            now = self.clock()
            if now < self._closed_until:
                return Attempt.TOO_SOON
            if hmac.compare_digest(given.encode(), expected.encode()):
                self._failures = 0
                self._closed_until = float("-inf")
                return Attempt.OPEN
            self._failures += 1
            self._closed_until = now + self.delay_s()
            return Attempt.WRONG


SERVER_GATE = PasswordGate()
"""The gate of this server process. Not a `st.cache_resource`: any browser can ask Streamlit to
clear its caches, and that must not reopen the gate."""
