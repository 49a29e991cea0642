"""`memory://`: responses in a dictionary of this process, least recently used evicted first.

Bounded by entries and bytes (10 000 responses and 128 MiB by default, whichever is reached
first); a response larger than the byte bound is not kept. Expired entries are never served
and are removed when met, or evicted like any other. Nothing is written anywhere else, so
nothing is encrypted: the responses live only in this process's memory and die with it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import NamedTuple

from obsdeco.engine.cache_backends.base import CacheCounters, CachedResponse, Clock, ResponseCache

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_BYTES = 128 * 1024 * 1024


class _Entry(NamedTuple):
    response: CachedResponse
    expires_at: float | None
    size: int


class MemoryCache(ResponseCache):
    """An in-process LRU cache of responses with expiry."""

    def __init__(
        self,
        counters: CacheCounters,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Clock = time.time,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a memory cache needs max_entries and max_bytes of at least 1")
        self._counters = counters
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._closed = False

    @property
    def entries(self) -> int:
        """How many responses are held (expired ones not yet removed included)."""
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """Roughly how many bytes the responses held take."""
        return self._bytes

    @property
    def pending(self) -> int:
        return 0

    def get(self, key: str) -> CachedResponse | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.expires_at is not None and entry.expires_at <= self._clock():
                del self._entries[key]
                self._bytes -= entry.size
                return None
            self._entries.move_to_end(key)
            return entry.response

    def put(self, key: str, response: CachedResponse, ttl_s: float | None) -> None:
        if ttl_s is not None and not ttl_s > 0:
            return
        size = response.size
        if self._closed or size > self.max_bytes:
            self._counters.add("writes_dropped")
            return
        entry = _Entry(response, None if ttl_s is None else self._clock() + ttl_s, size)
        entries = self._entries
        with self._lock:
            old = entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            entries[key] = entry
            self._bytes += size
            while len(entries) > self.max_entries or self._bytes > self.max_bytes:
                _, evicted = entries.popitem(last=False)
                self._bytes -= evicted.size

    def flush(self, timeout_s: float | None = None) -> bool:
        return True

    def close(self, timeout_s: float | None = None) -> None:
        with self._lock:
            self._closed = True
            self._entries.clear()
            self._bytes = 0
