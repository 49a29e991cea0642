"""`obsdeco.cache(...)`: the scope in which LLM calls are answered from the response cache, and
the plan of one call made inside it (its key, where its answer is looked up and kept).

Only calls made inside a scope read or write the cache. The scope is a context variable, so it
follows the code that entered it into threads started with a copied context and asyncio tasks,
and nested scopes take the innermost one's settings.
"""

from __future__ import annotations

import functools
import inspect
import math
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from obsdeco.engine.cache_store import CachedResponse, ResponseCache

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class CacheScope:
    """The settings of the innermost `obsdeco.cache(...)` scope."""

    ttl_s: float | None


_scope: ContextVar[CacheScope | None] = ContextVar("obsdeco_cache_scope", default=None)


def current_scope() -> CacheScope | None:
    """The cache scope this code runs in, if any."""
    return _scope.get()


def _checked_ttl(ttl_s: float | None) -> float | None:
    if ttl_s is None:
        return None
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float):
        raise ValueError(f"cache ttl_s must be a number of seconds or None, got {ttl_s!r:.80}")
    if not math.isfinite(ttl_s) or ttl_s <= 0:
        raise ValueError(f"cache ttl_s must be a positive number of seconds, got {ttl_s!r}")
    return float(ttl_s)


class cache:
    """Answer identical successful LLM requests made inside this scope from the response cache.

    A context manager, and a decorator of sync and async functions. `ttl_s` is how long an
    answer stays valid (None: until evicted). The cache is chosen by `configure(cache_url=...)`
    (memory:// by default). It acts on the calls obsdeco captures (`patch_all()` or a
    `wrap_*` client).
    """

    def __init__(self, ttl_s: float | None = None) -> None:
        self._scope = CacheScope(_checked_ttl(ttl_s))
        self._tokens: list[Token[CacheScope | None]] = []

    def __enter__(self) -> cache:
        self._tokens.append(_scope.set(self._scope))
        return self

    def __exit__(self, *_exc: object) -> None:
        _scope.reset(self._tokens.pop())

    async def __aenter__(self) -> cache:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__(*exc)

    def __call__(self, function: F) -> F:
        scope = self._scope
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                token = _scope.set(scope)
                try:
                    return await function(*args, **kwargs)
                finally:
                    _scope.reset(token)

            return run_async  # type: ignore[return-value]

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            token = _scope.set(scope)
            try:
                return function(*args, **kwargs)
            finally:
                _scope.reset(token)

        return run  # type: ignore[return-value]


STREAM_TAIL = 256
"""How many last bytes of a stream are searched for its format's end marker."""
_UNSTORED_HEADERS = frozenset({"set-cookie", "transfer-encoding", "connection", "keep-alive"})
_DECODED_HEADERS = frozenset({"content-encoding", "content-length"})
"""Headers that no longer describe a body the library has already decoded."""


@dataclass(frozen=True, slots=True)
class CachePlan:
    """Where a call made inside a cache scope is looked up, and how its answer is kept."""

    key: str
    ttl_s: float | None
    store: ResponseCache
    stream_finished: Callable[[bytes], bool]
    """Whether the last bytes of a stream end the answer (its provider format says)."""

    def lookup(self) -> CachedResponse | None:
        return self.store.get(self.key)

    def keep_read(self, response: Any) -> None:
        """Store an answer whose body the library has read (and decoded), if it succeeded."""
        if response.status_code < 400:
            headers = _headers(response.headers, _DECODED_HEADERS)
            self._put(response.status_code, headers, response.content)

    def keep_streamed(self, status: int, headers: Any, raw: bytes, whole: bool) -> None:
        """Store a streamed answer as its raw bytes (still encoded as its headers say): read to
        its end (`whole`), or closed once its format's last event arrived."""
        if not whole and (
            headers.get("content-encoding", "identity") != "identity"
            or not self.stream_finished(raw[-STREAM_TAIL:])
        ):
            return
        if status < 400:
            self._put(status, _headers(headers, frozenset({"content-length"})), raw)

    def _put(self, status: int, headers: tuple[tuple[str, str], ...], body: bytes) -> None:
        self.store.put(self.key, CachedResponse(status, headers, body, time.time()), self.ttl_s)


def _headers(headers: Any, dropped: frozenset[str]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (name, value)
        for name, value in headers.items()
        if name.lower() not in dropped and name.lower() not in _UNSTORED_HEADERS
    )


def replayed(entry: CachedResponse, request: Any, response_type: type) -> Any:
    """A stored answer as the HTTP library's response to `request` (its body already read)."""
    response = response_type(
        status_code=entry.status, headers=list(entry.headers), content=entry.body, request=request
    )
    response.elapsed = timedelta(0)
    return response
