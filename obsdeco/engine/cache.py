"""`obsdeco.cache(...)`: the scope in which LLM calls are answered from the response cache.

Only calls made inside a scope read or write the cache. The scope is a context variable, so it
follows the code that entered it into threads started with a copied context and asyncio tasks,
and nested scopes take the innermost one's settings.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, TypeVar

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
