"""The response cache's storage: the cache for the settings in force, chosen from `cache_url`.

- `memory://`: `MemoryCache`, in this process only.
- `sqlite:///path`, `postgresql+psycopg://...`: `WriteBehindCache` over `DatabaseBackend`.
- `redis://`, `rediss://`: `WriteBehindCache` over `RedisBackend` (needs the `redis` package).

One cache serves the process while `cache_url` and `encryption_key` stay the same; a replaced
one writes what it holds to its own backend and closes. `obsdeco.flush()` waits for pending
cache writes, and the exit hooks write them (within the exit timeout) before the process ends:
the writer threads are daemons, so what they hold would otherwise be lost at exit.
"""

from __future__ import annotations

import importlib
import os
import threading
import time

from obsdeco.config import Settings, key_bytes
from obsdeco.engine.cache_backends.base import (
    CacheCounters,
    CachedResponse,
    Clock,
    RemoteBackend,
    ResponseCache,
)
from obsdeco.engine.cache_backends.database import DatabaseBackend
from obsdeco.engine.cache_backends.memory import MemoryCache
from obsdeco.engine.cache_backends.pending import WriteBehindCache
from obsdeco.privacy.encryption import Cipher

_REDIS_SCHEMES = ("redis", "rediss")


def open_cache(
    url: str,
    counters: CacheCounters,
    encryption_key: str | None = None,
    *,
    clock: Clock = time.time,
) -> ResponseCache:
    """A new cache for `url` (as `normalise_cache_url` accepts it), counting into `counters`.

    `encryption_key` (URL-safe base64, as configured) encrypts what leaves the process."""
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        return MemoryCache(counters, clock=clock)
    cipher = None if encryption_key is None else Cipher(key_bytes(encryption_key))
    backend: RemoteBackend
    if scheme in _REDIS_SCHEMES:
        # Imported here: the redis package is an optional dependency (obsdeco[redis]).
        backend = importlib.import_module("obsdeco.engine.cache_backends.redis").RedisBackend(url)
    else:
        backend = DatabaseBackend(url)
    return WriteBehindCache(backend, counters, cipher, clock=clock)


class _Caches:
    """The process's cache and the replaced ones still writing."""

    def __init__(self) -> None:
        self._start_clean()

    def _start_clean(self) -> None:
        self._lock = threading.Lock()
        self.counters = CacheCounters()
        self._settings: Settings | None = None
        self._identity: tuple[str, str | None] | None = None
        self._current: ResponseCache | None = None
        self._retired: list[ResponseCache] = []

    def get(self, settings: Settings) -> ResponseCache:
        current = self._current
        if current is not None and self._settings is settings:
            return current
        key = settings.encryption_key
        identity = (settings.cache_url, None if key is None else key.get_secret_value())
        with self._lock:
            if self._current is None or self._identity != identity:
                if self._current is not None:
                    self._retire(self._current)
                self._current = open_cache(identity[0], self.counters, identity[1])
                self._identity = identity
            self._settings = settings
            return self._current

    def _retire(self, cache: ResponseCache) -> None:
        """Under the lock: let `cache` write what it holds and close, off this thread."""
        self._retired = [old for old in self._retired if old.pending]
        self._retired.append(cache)
        threading.Thread(target=cache.close, name="obsdeco-cache-close", daemon=True).start()

    def all(self) -> list[ResponseCache]:
        with self._lock:
            caches = list(self._retired)
            if self._current is not None:
                caches.append(self._current)
            return caches

    def flush(self, timeout_s: float | None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for cache in self.all():
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not cache.flush(remaining):
                return False
        return True

    def close_all(self, timeout_s: float) -> None:
        """At exit: write what is pending within `timeout_s`, drop the rest, close."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            caches = [*self._retired, *([] if self._current is None else [self._current])]
            self._retired, self._current, self._settings, self._identity = [], None, None, None
        for cache in caches:
            cache.close(max(0.0, deadline - time.monotonic()))

    def reset_after_fork(self) -> None:
        """A forked child has none of its parent's writer threads: start clean."""
        for cache in (*self._retired, *([] if self._current is None else [self._current])):
            if isinstance(cache, WriteBehindCache):
                cache.forget_after_fork()
        self._start_clean()


caches = _Caches()
os.register_at_fork(after_in_child=caches.reset_after_fork)


def response_cache(settings: Settings) -> ResponseCache:
    """The process's cache for `settings.cache_url` and `settings.encryption_key` (the same
    object while they do not change); thread-safe."""
    return caches.get(settings)


def flush_caches(timeout_s: float | None = None) -> bool:
    """Wait until every response put so far is written; False if `timeout_s` ran out first."""
    return caches.flush(timeout_s)


def close_caches(timeout_s: float) -> None:
    """Write pending responses within `timeout_s` (the rest dropped, counted), then close."""
    caches.close_all(timeout_s)


def cache_counters() -> CacheCounters:
    """The process's response-cache fault counts."""
    return caches.counters


def cache_pending() -> int:
    """Responses put and not yet written, over every cache of the process."""
    return sum(cache.pending for cache in caches.all())


__all__ = [
    "CacheCounters",
    "CachedResponse",
    "ResponseCache",
    "cache_counters",
    "cache_pending",
    "close_caches",
    "flush_caches",
    "open_cache",
    "response_cache",
]
