"""Helpers shared by the capture tests."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import obsdeco
from obsdeco import LLMCall, ModelProvider, Session

CALL_FACTS = (
    "provider",
    "api",
    "model",
    "response_model",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "streamed",
    "success",
    "error_type",
)
"""What the capture tests compare of a recorded call, besides what a test adds."""


def call_facts(call: LLMCall, *more: str) -> dict[str, Any]:
    """`CALL_FACTS` (and `more`) of a recorded call, by name."""
    return {name: getattr(call, name) for name in (*CALL_FACTS, *more)}


def in_session(run: Callable[[], Any]) -> tuple[Any, list[LLMCall]]:
    """Run `run()` inside a fresh observed session; its value and the session's records."""
    box: dict[str, str] = {}

    @obsdeco.observe_session
    def session() -> Any:
        box["id"] = obsdeco.current_session().id
        return run()

    value = session()
    obsdeco.flush()
    return value, obsdeco.get_calls(box["id"])


async def in_async_session(run: Callable[[], Awaitable[Any]]) -> tuple[Any, list[LLMCall]]:
    """The async twin of `in_session`."""
    box: dict[str, str] = {}

    @obsdeco.observe_session
    async def session() -> Any:
        box["id"] = obsdeco.current_session().id
        return await run()

    value = await session()
    obsdeco.flush()
    return value, obsdeco.get_calls(box["id"])


async def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`function(...)`, awaited when it is an async SDK method."""
    result = function(*args, **kwargs)
    if inspect.isawaitable(result):
        return await result
    return result


async def drain(iterable: Any) -> list[Any]:
    """Every item of a sync or async iterable."""
    if hasattr(iterable, "__aiter__"):
        return [item async for item in iterable]
    return list(iterable)


async def take(iterable: Any, count: int) -> list[Any]:
    """The first `count` items, read the way users do: a for loop they break out of."""
    seen: list[Any] = []
    if hasattr(iterable, "__aiter__"):
        async for item in iterable:
            seen.append(item)
            if len(seen) == count:
                break
    else:
        for item in iterable:
            seen.append(item)
            if len(seen) == count:
                break
    return seen


@contextlib.asynccontextmanager
async def entered(manager: Any) -> AsyncIterator[Any]:
    """`async with manager` for an async context manager, else `with manager`."""
    if inspect.iscoroutinefunction(getattr(type(manager), "__aenter__", None)):
        async with manager as value:
            yield value
    else:
        with manager as value:
            yield value


def dumped(items: list[Any]) -> list[dict[str, Any]]:
    return [item.model_dump() for item in items]


def stored_call(session: Session, moment: datetime, **fields: Any) -> LLMCall:
    """A gpt-4o call of `session` at `moment` (100 prompt and 10 completion tokens, 200 ms),
    with `fields` changed, as a store is given it."""
    values = {
        "session_id": session.id,
        "project_name": session.project_name,
        "timestamp": moment,
        "provider": ModelProvider.OPENAI,
        "model": "gpt-4o",
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "latency_ms": 200.0,
    }
    values.update(fields)
    return LLMCall(**values)
