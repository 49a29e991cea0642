"""What every response cache shares: the cached response, the cache interface, the interface a
remote backend implements, the process-wide counters, and the outage bookkeeping."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

logger = logging.getLogger("obsdeco.cache")

Clock = Callable[[], float]
"""Seconds since the epoch (`time.time`); expiry and retry times are read from it."""

_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 30.0


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A successful HTTP response as it came off the wire."""

    status: int
    """Always below 400: only successful responses are cached."""
    headers: tuple[tuple[str, str], ...]
    body: bytes
    """The raw body bytes (possibly compressed; the headers say how)."""
    stored_at: float
    """`time.time()` when the response was stored."""

    @property
    def size(self) -> int:
        """Roughly how many bytes the response takes in memory."""
        return len(self.body) + sum(len(name) + len(value) for name, value in self.headers) + 200


class ResponseCache(ABC):
    """Responses by key. No method raises: a fault is a miss or a dropped write, logged and
    counted in `obsdeco.stats()`."""

    @abstractmethod
    def get(self, key: str) -> CachedResponse | None:
        """The response stored under `key` and not expired, else None."""

    @abstractmethod
    def put(self, key: str, response: CachedResponse, ttl_s: float | None) -> None:
        """Store `response` under `key` for `ttl_s` seconds (None: no expiry; 0 or less: not
        stored). `get` sees it in this process as soon as this returns."""

    @abstractmethod
    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every `put` made so far is written; False if `timeout_s` ran out first."""

    @abstractmethod
    def close(self, timeout_s: float | None = None) -> None:
        """Write what is pending (waiting at most `timeout_s`; what is left is dropped and
        counted), then release the backend. Later puts are dropped, later gets miss."""

    @property
    @abstractmethod
    def pending(self) -> int:
        """Entries stored with `put` and not yet written to the backend."""


class RemoteBackend(Protocol):
    """Bytes by key in a store outside the process; any method may raise on a fault."""

    name: str
    """The backend as shown in logs (its URL without password)."""

    def read(self, key: str) -> bytes | None:
        """The value stored under `key`, if any (expired or not)."""
        ...

    def write(self, items: Sequence[tuple[str, bytes, float | None]], now: float) -> None:
        """Store each (key, value, expires_at) whole, replacing what the key held; `now` is the
        time expiry is reckoned from."""
        ...

    def delete_expired(self, keys: Sequence[str], now: float) -> None:
        """Remove these keys if they are expired at `now`; with no keys, every expired entry."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's connections without closing them."""
        ...


@dataclass
class CacheCounters:
    """Process-wide counts of the response cache's faults (reported by `obsdeco.stats()`)."""

    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    errors: int = 0
    """Backend operations that failed and values that could not be read."""
    writes_dropped: int = 0
    """Responses `put` but never written (backend fault, pending writes full, closed)."""

    def add(self, name: str, amount: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + amount)


class Health:
    """Whether a backend is reachable. After a fault the backend is left alone for a while
    (0.5 s, doubling up to 30 s): reads miss and writes are dropped without trying. The outage
    is logged when it starts and when the backend answers again."""

    def __init__(self, name: str, counters: CacheCounters, clock: Clock) -> None:
        self._name = name
        self._counters = counters
        self._clock = clock
        self._lock = threading.Lock()
        self._down = False
        self._retry_at = 0.0
        self._delay = _RETRY_FIRST_S

    @property
    def usable(self) -> bool:
        """True unless the backend failed recently (then the next try is due later)."""
        return not self._down or self._clock() >= self._retry_at

    def failed(self, exc: Exception, action: str) -> None:
        """Count a fault met while doing `action`; log it if it starts an outage."""
        self._counters.add("errors")
        with self._lock:
            first = not self._down
            if first:
                self._down = True
                self._delay = _RETRY_FIRST_S
            else:
                self._delay = min(self._delay * 2, _RETRY_MAX_S)
            self._retry_at = self._clock() + self._delay
        if first:
            logger.warning(
                "obsdeco response cache cannot use %s (%s: %s, while %s): responses are not "
                "served from it and new ones are not stored until it answers again; counted in "
                "obsdeco.stats().cache_errors and cache_writes_dropped",
                self._name,
                type(exc).__name__,
                str(exc).partition("\n")[0],
                action,
            )

    def succeeded(self) -> None:
        """Note that the backend answered; logs the end of an outage."""
        if not self._down:
            return
        with self._lock:
            was_down, self._down = self._down, False
        if was_down:
            logger.warning("obsdeco response cache %s answers again; caching resumed", self._name)


class OnceLog:
    """Logs a problem the first time it happens for each cause, and counts every time."""

    def __init__(self, counters: CacheCounters) -> None:
        self._counters = counters
        self._lock = threading.Lock()
        self._causes: set[str] = set()

    def note(self, cause: str, message: str, *args: object) -> None:
        self._counters.add("errors")
        with self._lock:
            first = cause not in self._causes
            self._causes.add(cause)
        if first:
            logger.warning(
                message + " (logged once; counted in obsdeco.stats().cache_errors)", *args
            )
