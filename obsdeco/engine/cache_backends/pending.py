"""The write-behind cache over a remote backend (SQL database, Redis).

`put` keeps the response in an in-process pending map and returns; a daemon thread encodes
(and encrypts) it and writes it to the backend, then drops it from the map, the backend
serving it from then on. Until then `get` answers from the map, so a repeat in this process
is a hit as soon as the first call returned. A write the backend refuses is dropped from the
map whole and counted; nothing is retried. The map is bounded (entries and bytes); a `put`
beyond the bound is dropped and counted.

`get` reads the backend on the caller's thread; while the backend is failing it is not asked
(see `Health`) and every read misses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import NamedTuple

from obsdeco.engine.cache_backends.base import (
    CacheCounters,
    CachedResponse,
    Clock,
    Health,
    OnceLog,
    RemoteBackend,
    ResponseCache,
)
from obsdeco.engine.cache_backends.codec import UnreadableValue, decode, encode
from obsdeco.guard import fault
from obsdeco.privacy.encryption import Cipher

logger = logging.getLogger("obsdeco.cache")

DEFAULT_MAX_PENDING = 10_000
DEFAULT_MAX_PENDING_BYTES = 64 * 1024 * 1024
DEFAULT_PURGE_INTERVAL_S = 300.0
_BATCH = 500
_JOIN_TIMEOUT_S = 2.0


class _Pending(NamedTuple):
    response: CachedResponse
    expires_at: float | None
    size: int


class WriteBehindCache(ResponseCache):
    """A `ResponseCache` over a `RemoteBackend`, written off the caller's thread."""

    def __init__(
        self,
        backend: RemoteBackend,
        counters: CacheCounters,
        cipher: Cipher | None,
        *,
        clock: Clock = time.time,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        purge_interval_s: float = DEFAULT_PURGE_INTERVAL_S,
    ) -> None:
        self.backend = backend
        self._counters = counters
        self._cipher = cipher
        self._clock = clock
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes
        self._purge_interval_s = purge_interval_s
        self._health = Health(backend.name, counters, clock)
        self._unreadable = OnceLog(counters)
        self._lock = threading.Lock()
        self._written = threading.Condition(self._lock)
        self._pending: dict[str, _Pending] = {}
        self._pending_bytes = 0
        self._queue: deque[tuple[str, _Pending]] = deque()
        self._expired: deque[str] = deque()
        self._queued = 0
        """Puts accepted and expired keys met so far; `_settled` of them are dealt with."""
        self._settled = 0
        self._full_logged = False
        self._closed = False
        self._wakeup = threading.Event()
        self._next_purge = clock() + purge_interval_s
        self._thread = threading.Thread(target=self._run, name="obsdeco-cache-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return len(self._pending)

    # --- the caller's thread -----------------------------------------------------------------

    def get(self, key: str) -> CachedResponse | None:
        entry = self._pending.get(key)
        if entry is not None:
            if entry.expires_at is None or entry.expires_at > self._clock():
                return entry.response
            return None
        health = self._health
        if self._closed or not health.usable:
            return None
        try:
            value = self.backend.read(key)
        except Exception as exc:
            health.failed(exc, "reading")
            return None
        health.succeeded()
        if value is None:
            return None
        try:
            response, expires_at = decode(key, value, self._cipher)
        except UnreadableValue as exc:
            self._unreadable.note(
                exc.cause, "obsdeco response cache %s: %s", self.backend.name, exc
            )
            return None
        if expires_at is not None and expires_at <= self._clock():
            with self._lock:
                self._expired.append(key)
                self._queued += 1
            self._wakeup.set()
            return None
        return response

    def put(self, key: str, response: CachedResponse, ttl_s: float | None) -> None:
        if ttl_s is not None and not ttl_s > 0:
            return
        entry = _Pending(response, None if ttl_s is None else self._clock() + ttl_s, response.size)
        with self._lock:
            old = self._pending.get(key)
            held = self._pending_bytes - (0 if old is None else old.size) + entry.size
            if (
                self._closed
                or held > self._max_pending_bytes
                or (old is None and len(self._pending) >= self._max_pending)
            ):
                self._drop_full()
                return
            self._pending[key] = entry
            self._pending_bytes = held
            self._queue.append((key, entry))
            self._queued += 1
        if not self._wakeup.is_set():
            self._wakeup.set()

    def _drop_full(self) -> None:
        """Under the lock: count a put that found no room."""
        self._counters.add("writes_dropped")
        if not self._full_logged and not self._closed:
            self._full_logged = True
            logger.warning(
                "obsdeco response cache: %d responses (%d bytes) wait to be written to %s; "
                "new ones are not cached until they are (logged once; counted in "
                "obsdeco.stats().cache_writes_dropped)",
                len(self._pending),
                self._pending_bytes,
                self.backend.name,
            )

    def flush(self, timeout_s: float | None = None) -> bool:
        with self._lock:
            target = self._queued
            if self._settled >= target:
                return True
        self._wakeup.set()
        with self._written:
            return self._written.wait_for(lambda: self._settled >= target, timeout_s)

    def close(self, timeout_s: float | None = None) -> None:
        written = self.flush(timeout_s)
        with self._lock:
            self._closed = True
        if not written:
            lost = self._discard()
            if lost:
                logger.error(
                    "obsdeco response cache: %d responses could not be written to %s in time "
                    "and are not cached",
                    lost,
                    self.backend.name,
                )
        self._wakeup.set()
        if self._thread is not threading.current_thread():
            self._thread.join(_JOIN_TIMEOUT_S if timeout_s is not None else None)

    def _discard(self) -> int:
        """Give up on the writes still queued; returns how many."""
        with self._lock:
            lost = len(self._queue)
            self._queue.clear()
            self._expired.clear()
            self._pending.clear()
            self._pending_bytes = 0
            self._settled = self._queued
            self._written.notify_all()
        self._counters.add("writes_dropped", lost)
        return lost

    def forget_after_fork(self) -> None:
        """In a forked child, whose copy of this cache has no writer thread."""
        self._closed = True
        self.backend.forget_after_fork()

    # --- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wakeup.wait()
            self._wakeup.clear()
            while self._round():
                pass
            if self._closed:
                with self._lock:
                    if self._queue or self._expired:
                        continue
                self._close_backend()
                return

    def _round(self) -> bool:
        """Write one batch of what is queued and remove what was found expired; False when
        there was nothing to do."""
        with self._lock:
            batch: dict[str, _Pending] = {}
            taken = 0
            while self._queue and taken < _BATCH:
                key, entry = self._queue.popleft()
                taken += 1
                if self._pending.get(key) is entry:  # else a later put replaced it
                    batch[key] = entry
            expired = list(self._expired)
            self._expired.clear()
            taken += len(expired)
        try:
            if batch:
                self._write(batch)
            self._delete_expired(expired)
        except Exception:
            fault("WriteBehindCache._round")
        finally:
            with self._lock:
                for key, entry in batch.items():
                    if self._pending.get(key) is entry:
                        del self._pending[key]
                        self._pending_bytes -= entry.size
                self._settled += taken
                self._written.notify_all()
        return taken > 0

    def _write(self, batch: dict[str, _Pending]) -> None:
        now = self._clock()
        items: list[tuple[str, bytes, float | None]] = []
        dropped = 0
        for key, entry in batch.items():
            if entry.expires_at is not None and entry.expires_at <= now:
                continue
            try:
                items.append(
                    (
                        key,
                        encode(key, entry.response, entry.expires_at, self._cipher),
                        entry.expires_at,
                    )
                )
            except (ValueError, TypeError, OverflowError) as exc:  # struct.error is a ValueError
                dropped += 1
                self._unreadable.note(
                    "unencodable", "obsdeco response cache cannot store a response: %s", exc
                )
        if items and self._health.usable:
            try:
                self.backend.write(items, now)
            except Exception as exc:
                self._health.failed(exc, "writing")
                dropped += len(items)
            else:
                self._health.succeeded()
        elif items:
            dropped += len(items)
        if dropped:
            self._counters.add("writes_dropped", dropped)

    def _delete_expired(self, keys: list[str]) -> None:
        now = self._clock()
        if now >= self._next_purge:
            self._next_purge = now + self._purge_interval_s
            keys = []  # every expired entry goes
        elif not keys:
            return
        if not self._health.usable:
            return
        try:
            self.backend.delete_expired(keys, now)
        except Exception as exc:
            self._health.failed(exc, "removing expired responses")
        else:
            self._health.succeeded()

    def _close_backend(self) -> None:
        try:
            self.backend.close()
        except Exception as exc:
            logger.warning("obsdeco response cache could not close %s: %s", self.backend.name, exc)
